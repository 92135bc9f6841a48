//! Sonde's default fault tree: a `fault-rule` component (WIT world `sonde:plugin/fault-rule`).
//!
//! Each branch looks at one candidate the engine found abnormal and says whether its kind of
//! fault explains it: network on a call edge ([`network`]), a slow downstream
//! ([`downstream`]), CPU or memory saturation of a service or a saturated machine
//! ([`resources`]), a slow database or failing DNS ([`dependency`]), errors in the service's
//! own code ([`code_error`]), a recent change ([`recent_change`]). Confidence grows with the
//! evidence; a missing metric is unknown, never zero.
//!
//! Built for `wasm32-wasip2` this crate is the component the daemon embeds and runs in its
//! sandbox; built natively it is a plain library, so the same rules run in unit tests.

use sonde_sdk::fault_rule::{Category, Diagnosis, FaultRule, RuleInfo, RuleInput};

pub mod code_error;
pub mod dependency;
pub mod downstream;
pub mod network;
pub mod recent_change;
pub mod resources;
mod util;

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
}

sonde_sdk::export_fault_rule!(DefaultTree);

/// A branch of the tree: a diagnosis of its kind, or nothing.
pub type Branch = fn(&RuleInput) -> Option<Diagnosis>;

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

/// Every branch of the tree on one candidate, most confident first.
pub fn evaluate(input: &RuleInput) -> Vec<Diagnosis> {
    let mut out: Vec<Diagnosis> = BRANCHES.iter().filter_map(|branch| branch(input)).collect();
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
