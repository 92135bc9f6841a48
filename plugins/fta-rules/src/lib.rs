//! Sonde's default fault tree: a `fault-rule` component (WIT world `sonde:plugin/fault-rule`).
//!
//! Each branch looks at one candidate the engine found abnormal and says whether its kind of
//! fault explains it: network on a call edge ([`network`]), a slow downstream
//! ([`downstream`]), CPU or memory saturation of a service or a saturated machine
//! ([`resources`]), a slow database or failing DNS ([`dependency`]), errors in the service's
//! own code ([`code_error`]), a recent change ([`recent_change`]). Confidence grows with the
//! evidence; a missing metric is unknown, never zero.
//!
//! Each branch's thresholds and confidences are named parameters with defaults ([`RULES`]),
//! which the daemon sets from `[live.rules.<rule>]`; the helpers the branches are written with
//! are the SDK's (`sonde_sdk::fault_rule::helpers`), so a rule of one's own reads the same.
//!
//! Built for `wasm32-wasip2` this crate is the component the daemon embeds and runs in its
//! sandbox; built natively it is a plain library, so the same rules run in unit tests.

use sonde_sdk::fault_rule::params::{Params, RuleParams, RuleSpec, Settings};
use sonde_sdk::fault_rule::{Category, Diagnosis, FaultRule, RuleInfo, RuleInput};

pub mod code_error;
pub mod dependency;
pub mod downstream;
pub mod network;
pub mod recent_change;
pub mod resources;

/// The default tree.
pub struct DefaultTree;

/// The name the component reports in `info` (and reports show next to its diagnoses).
pub const NAME: &str = "sonde-default-tree";

impl FaultRule for DefaultTree {
    fn info() -> RuleInfo {
        RuleInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            categories: vec![
                Category::Network,
                Category::DownstreamSlow,
                Category::CpuSaturation,
                Category::MemoryPressure,
                Category::NodeSaturation,
                Category::DatabaseSlow,
                Category::DnsFailure,
                Category::CodeError,
                Category::RecentChange,
                Category::Other(code_error::SERVICE_SLOW.into()),
            ],
        }
    }

    fn evaluate(input: &RuleInput) -> Vec<Diagnosis> {
        evaluate(input)
    }

    fn parameters() -> &'static [RuleSpec] {
        RULES
    }

    fn evaluate_with(input: &RuleInput, params: &Params) -> Vec<Diagnosis> {
        evaluate_with(input, params)
    }
}

sonde_sdk::export_fault_rule!(DefaultTree);

/// A branch of the tree: a diagnosis of its kind, or nothing.
pub type Branch = fn(&RuleInput, &Params) -> Option<Diagnosis>;

/// The tunables of every branch, in branch order (`[live.rules.<name>]`).
pub const RULES: &[RuleSpec] = &[
    network::SPEC,
    downstream::SPEC,
    resources::CPU_SPEC,
    resources::MEMORY_SPEC,
    resources::NODE_SPEC,
    dependency::DATABASE_SPEC,
    dependency::DNS_SPEC,
    code_error::CODE_ERROR_SPEC,
    code_error::SERVICE_SLOW_SPEC,
    recent_change::SPEC,
];

/// [`RULES`] in the form a component reports them (what the daemon checks its configuration
/// against without loading the component).
pub fn parameters() -> Vec<RuleParams> {
    RULES.iter().map(RuleParams::from).collect()
}

/// The checked values of `settings` (`[live.rules]`): an unknown rule or parameter, or a value
/// out of its range, is a one-line error.
pub fn params(settings: &Settings) -> Result<Params, String> {
    Params::new(RULES, settings)
}

/// The branches, in the order ties are broken.
pub const BRANCHES: &[Branch] = &[
    network::network,
    downstream::downstream,
    resources::cpu,
    resources::memory,
    resources::node,
    dependency::database,
    dependency::dns,
    code_error::code_error,
    code_error::slow_code,
    recent_change::recent_change,
];

/// Every branch of the tree on one candidate, most confident first, with the default
/// parameters.
pub fn evaluate(input: &RuleInput) -> Vec<Diagnosis> {
    evaluate_with(input, &Params::default())
}

/// [`evaluate`] with configured parameters.
pub fn evaluate_with(input: &RuleInput, params: &Params) -> Vec<Diagnosis> {
    let mut out: Vec<Diagnosis> = BRANCHES
        .iter()
        .filter_map(|branch| branch(input, params))
        .collect();
    // Stable: equal confidences keep the branch order.
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out
}

#[cfg(test)]
pub(crate) mod test_util {
    use sonde_sdk::fault_rule::{
        Category, Incident, Metric, Neighbour, Relation, RuleInput, Subject, SubjectKind,
    };

    pub(crate) const START_MS: u64 = 3_600_000;

    pub(crate) fn metric(name: &str, before: f64, after: f64, anomalous: bool) -> Metric {
        Metric {
            name: name.into(),
            before,
            after,
            anomalous,
        }
    }

    pub(crate) fn input(kind: SubjectKind, id: &str, metrics: Vec<Metric>) -> RuleInput {
        RuleInput {
            incident: Incident {
                id: "i".into(),
                entry: "gw".into(),
                kpi: "latency_mean_ms".into(),
                started_at_ms: START_MS,
            },
            subject: Subject {
                kind,
                id: id.into(),
                metrics,
                labels: vec![],
            },
            neighbours: vec![],
            attributions: vec![],
            changes: vec![],
        }
    }

    pub(crate) fn neighbour(
        kind: SubjectKind,
        id: &str,
        relation: Relation,
        abnormal: bool,
        metrics: Vec<Metric>,
    ) -> Neighbour {
        Neighbour {
            kind,
            id: id.into(),
            relation,
            abnormal,
            score: if abnormal { 10.0 } else { 0.0 },
            metrics,
            labels: vec![],
        }
    }

    /// The most confident category of the whole tree.
    pub(crate) fn top(i: &RuleInput) -> Option<Category> {
        super::evaluate(i).first().map(|d| d.category.clone())
    }

    pub(crate) fn categories(i: &RuleInput) -> Vec<Category> {
        super::evaluate(i).into_iter().map(|d| d.category).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use sonde_sdk::fault_rule::{SubjectKind, metric as m};

    #[test]
    fn every_diagnosis_is_well_formed() {
        let inputs = [
            input(
                SubjectKind::Edge,
                "gw->cart",
                vec![
                    metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true),
                    metric(m::RETRANSMIT_RATE, 0.0, 30.0, true),
                ],
            ),
            input(
                SubjectKind::Service,
                "cart",
                vec![
                    metric(m::CPU_THROTTLED_RATIO, 0.0, 0.9, true),
                    metric(m::OOM_KILLS, 0.0, 3.0, true),
                ],
            ),
            input(
                SubjectKind::Service,
                "cart",
                vec![
                    metric(m::DNS_ERROR_RATE, 0.0, 0.5, true),
                    metric(m::ERROR_RATE, 0.0, 0.5, true),
                ],
            ),
        ];
        for i in &inputs {
            let ds = evaluate(i);
            assert!(!ds.is_empty());
            for d in &ds {
                assert!((0.0..=1.0).contains(&d.confidence), "{d:?}");
                assert!(!d.evidence.is_empty(), "{d:?}");
                assert!(d.explanation.contains(&i.subject.id), "{d:?}");
                assert!(
                    !d.explanation.contains('\n') && d.explanation.len() < 300,
                    "one sentence: {d:?}"
                );
                assert!(DefaultTree::info().categories.contains(&d.category));
            }
            assert!(
                ds.windows(2).all(|w| w[0].confidence >= w[1].confidence),
                "sorted"
            );
        }
    }

    fn set(rule: &str, name: &str, v: f64) -> Params {
        let mut s = Settings::new();
        s.entry(rule.into()).or_default().insert(name.into(), v);
        params(&s).unwrap()
    }

    #[test]
    fn parameters_move_thresholds_and_confidences() {
        let throttled = input(
            SubjectKind::Service,
            "cart",
            vec![metric(m::CPU_THROTTLED_RATIO, 0.0, 0.2, true)],
        );
        let cpu = |p: &Params| {
            evaluate_with(&throttled, p)
                .into_iter()
                .find(|d| d.category == Category::CpuSaturation)
        };
        let d = cpu(&Params::default()).expect("20% throttled is saturation");
        assert!((d.confidence - 0.8).abs() < 1e-9, "0.6 + 0.2: {d:?}");
        assert!(
            cpu(&set("cpu-saturation", "throttled_min", 0.3)).is_none(),
            "a raised threshold: 20% is noise"
        );
        let d = cpu(&set("cpu-saturation", "confidence_throttled", 0.1)).unwrap();
        assert!((d.confidence - 0.3).abs() < 1e-9, "{d:?}");
        // Another rule's parameters leave this one alone.
        assert_eq!(
            cpu(&set("memory-pressure", "high", 0.5)),
            cpu(&Params::default())
        );
        let dns = input(
            SubjectKind::Service,
            "cart",
            vec![metric(m::DNS_ERROR_RATE, 0.0, 0.5, true)],
        );
        let d = evaluate_with(&dns, &set("dns-failure", "confidence", 0.42));
        assert_eq!(d[0].confidence, 0.42);
    }

    #[test]
    fn every_rule_declares_sane_parameters() {
        let mut names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BRANCHES.len(), "one spec per branch, unique");
        for r in RULES {
            assert!(!r.params.is_empty() && !r.doc.is_empty(), "{}", r.name);
            for p in r.params {
                assert!(
                    p.min <= p.default && p.default <= p.max && !p.doc.is_empty(),
                    "{}.{}",
                    r.name,
                    p.name
                );
            }
            // Every rule's defaults pass its own check.
            let defaults: Settings = [(
                r.name.to_string(),
                r.params
                    .iter()
                    .map(|p| (p.name.to_string(), p.default))
                    .collect(),
            )]
            .into();
            assert_eq!(
                params(&defaults).unwrap().of(r).get(r.params[0].name),
                r.params[0].default
            );
        }
        assert!(params(&[("cpu".to_string(), Default::default())].into()).is_err());
    }

    #[test]
    fn nothing_anomalous_nothing_to_say() {
        for kind in [SubjectKind::Service, SubjectKind::Edge, SubjectKind::Node] {
            let quiet = [
                m::LATENCY_MEAN_MS,
                m::ERROR_RATE,
                m::CALLER_LATENCY_MS,
                m::RETRANSMIT_RATE,
                m::CPU_THROTTLED_RATIO,
                m::MEMORY_USAGE_RATIO,
                m::NODE_CPU_RATIO,
                m::DNS_ERROR_RATE,
                m::DB_QUERY_LATENCY_MS,
            ]
            .iter()
            .map(|n| metric(n, 0.5, 0.5, false))
            .collect();
            assert!(evaluate(&input(kind, "x", quiet)).is_empty(), "{kind:?}");
            assert!(
                evaluate(&input(kind, "x", vec![])).is_empty(),
                "missing metrics are unknown, not evidence"
            );
        }
    }
}
