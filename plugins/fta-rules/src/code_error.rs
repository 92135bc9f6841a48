//! Code error: the service's errors rose, concentrated on specific operations, without
//! resource, dependency or network symptoms and without an abnormal downstream or host.

use sonde_sdk::fault_rule::{
    Attribution, Category, Diagnosis, Evidence, Relation, RuleInput, SubjectKind, metric as m,
};

use sonde_sdk::fault_rule::helpers::{change, evidence, first_rose, neighbours, rose};
use sonde_sdk::fault_rule::params::{ParamSpec, Params, RuleSpec};

/// Attribution dimensions that name an operation of the service's own code.
const OPERATION_DIMS: &[&str] = &[
    "endpoint",
    "operation",
    "method",
    "route",
    "path",
    "rpc",
    "query",
    "command",
];

/// Symptoms that point elsewhere: resources, dependencies.
const OTHER_SYMPTOMS: &[&str] = &[
    m::CPU_THROTTLED_RATIO,
    m::MEMORY_USAGE_RATIO,
    m::OOM_KILLS,
    m::DB_QUERY_LATENCY_MS,
    m::DB_SLOW_QUERY_RATE,
    m::DB_ERROR_RATE,
    m::DNS_ERROR_RATE,
    m::DNS_LATENCY_MS,
];

/// `[live.rules.code-error]`.
pub const CODE_ERROR_SPEC: RuleSpec = RuleSpec {
    name: "code-error",
    doc: "A service returning errors without resource, dependency or downstream symptoms.",
    params: &[
        ParamSpec {
            name: "concentrated",
            default: 0.5,
            min: 0.0,
            max: 100.0,
            doc: "Share of the error change an attributed combination must explain to count as concentrated",
        },
        ParamSpec {
            name: "confidence",
            default: 0.85,
            min: 0.0,
            max: 1.0,
            doc: "Errors concentrated on an operation (endpoint, route, query…)",
        },
        ParamSpec {
            name: "confidence_instance",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "Errors concentrated on something else (a pod, a version)",
        },
        ParamSpec {
            name: "confidence_unattributed",
            default: 0.55,
            min: 0.0,
            max: 1.0,
            doc: "Errors not concentrated anywhere",
        },
    ],
};

pub fn code_error(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let p = params.of(&CODE_ERROR_SPEC);
    let ms = &input.subject.metrics;
    let errors = rose(ms, m::ERROR_RATE)?;
    if symptoms_elsewhere(input) {
        return None;
    }
    let focus = input
        .attributions
        .iter()
        .filter(|a| a.kpi == m::ERROR_RATE && a.explanatory_power >= p.get("concentrated"))
        .max_by(|a, b| {
            operational(a)
                .cmp(&operational(b))
                .then(a.explanatory_power.total_cmp(&b.explanatory_power))
        });
    let mut ev = vec![evidence(errors, "server side")];
    let (confidence, place) = match focus {
        Some(a) => {
            let what = focus_evidence(m::ERROR_RATE, a, &mut ev);
            // Concentrated on an operation: its code. On a pod or version: likelier a bad
            // instance or build, still the service's own.
            let confidence = if operational(a) {
                p.get("confidence")
            } else {
                p.get("confidence_instance")
            };
            (
                confidence,
                format!(
                    ", concentrated in {} ({:.0}% of the change)",
                    what,
                    a.explanatory_power * 100.0
                ),
            )
        }
        None => (p.get("confidence_unattributed"), String::new()),
    };
    Some(Diagnosis {
        category: Category::CodeError,
        confidence,
        evidence: ev,
        explanation: format!(
            "{} returns errors{}: {}; no resource, dependency or downstream symptom",
            input.subject.id,
            place,
            change(errors)
        ),
    })
}

/// The fault class of a service that is slow in its own code.
pub const SERVICE_SLOW: &str = "service-slow";

/// `[live.rules.service-slow]`.
pub const SERVICE_SLOW_SPEC: RuleSpec = RuleSpec {
    name: "service-slow",
    doc: "A service slow in its own code, without resource, dependency or downstream symptoms.",
    params: &[
        ParamSpec {
            name: "concentrated",
            default: 0.5,
            min: 0.0,
            max: 100.0,
            doc: "Share of the latency change an attributed combination must explain to count as concentrated",
        },
        ParamSpec {
            name: "confidence",
            default: 0.75,
            min: 0.0,
            max: 1.0,
            doc: "The slowness is concentrated (on an endpoint…)",
        },
        ParamSpec {
            name: "confidence_unattributed",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "The slowness is not concentrated anywhere",
        },
    ],
};

/// Slow code: the service's own (server-side) latency rose without resource, dependency or
/// downstream symptoms and without an abnormal host: the time goes in its own code (a slow
/// release, a lock, a sleep). Attribution to an endpoint makes it more certain.
pub fn slow_code(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let p = params.of(&SERVICE_SLOW_SPEC);
    let ms = &input.subject.metrics;
    let slow = first_rose(ms, &[m::LATENCY_MEAN_MS, m::LATENCY_P99_MS])?;
    // A database answering slowly is the database branch's case.
    let database = input
        .subject
        .labels
        .iter()
        .any(|(k, v)| k == "kind" && v == "database");
    if symptoms_elsewhere(input) || database {
        return None;
    }
    let focus = input
        .attributions
        .iter()
        .filter(|a| a.kpi == m::LATENCY_MEAN_MS && a.explanatory_power >= p.get("concentrated"))
        .max_by(|a, b| a.explanatory_power.total_cmp(&b.explanatory_power));
    let mut ev = vec![evidence(slow, "server side")];
    let (confidence, place) = match focus {
        Some(a) => {
            let what = focus_evidence(m::LATENCY_MEAN_MS, a, &mut ev);
            (p.get("confidence"), format!(" in {what}"))
        }
        None => (p.get("confidence_unattributed"), String::new()),
    };
    Some(Diagnosis {
        category: Category::Other(SERVICE_SLOW.into()),
        confidence,
        evidence: ev,
        explanation: format!(
            "{} is slow in its own code{}: {}; no resource, dependency or downstream symptom",
            input.subject.id,
            place,
            change(slow)
        ),
    })
}

/// Symptoms that point away from the service's own code: a resource or dependency metric
/// that rose, an abnormal downstream or host.
fn symptoms_elsewhere(input: &RuleInput) -> bool {
    first_rose(&input.subject.metrics, OTHER_SYMPTOMS).is_some()
        || neighbours(input, Relation::Downstream).any(|n| n.abnormal)
        || neighbours(input, Relation::Host).any(|n| n.abnormal)
}

/// The evidence of the attribution the change concentrates in (`kpi [dim=value & …]`),
/// pushed onto `ev`; returns its elements as `dim=value & …`.
fn focus_evidence(kpi: &str, a: &Attribution, ev: &mut Vec<Evidence>) -> String {
    let what: Vec<String> = a.elements.iter().map(|(d, v)| format!("{d}={v}")).collect();
    let what = what.join(" & ");
    ev.push(Evidence {
        metric: format!("{kpi} [{what}]"),
        before: a.before,
        after: a.after,
        note: format!("explains {:.0}% of the change", a.explanatory_power * 100.0),
    });
    what
}

fn operational(a: &Attribution) -> bool {
    a.elements
        .iter()
        .any(|(d, _)| OPERATION_DIMS.contains(&d.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn code_error(i: &RuleInput) -> Option<Diagnosis> {
        super::code_error(i, &Params::default())
    }

    fn slow_code(i: &RuleInput) -> Option<Diagnosis> {
        super::slow_code(i, &Params::default())
    }
    use sonde_sdk::fault_rule::Metric;

    fn attribution(dim: &str, value: &str, power: f64) -> Attribution {
        Attribution {
            kpi: m::ERROR_RATE.into(),
            elements: vec![(dim.into(), value.into())],
            explanatory_power: power,
            before: 0.001,
            after: 0.2,
        }
    }

    fn errors() -> RuleInput {
        input(
            SubjectKind::Service,
            "cart",
            vec![metric(m::ERROR_RATE, 0.001, 0.06, true)],
        )
    }

    #[test]
    fn slow_on_its_own_is_slow_code() {
        let mut i = input(
            SubjectKind::Service,
            "cart",
            vec![metric(m::LATENCY_MEAN_MS, 3.0, 250.0, true)],
        );
        let d = slow_code(&i).unwrap();
        assert_eq!(d.category, Category::Other(SERVICE_SLOW.into()));
        assert!(
            d.explanation.contains("cart is slow in its own code"),
            "{}",
            d.explanation
        );
        // Throttled: the CPU branch's case, not slow code.
        i.subject
            .metrics
            .push(metric(m::CPU_THROTTLED_RATIO, 0.0, 0.8, true));
        assert!(slow_code(&i).is_none());
        assert_eq!(top(&i), Some(Category::CpuSaturation));
    }

    #[test]
    fn errors_on_one_endpoint_are_code() {
        let mut i = errors();
        i.attributions
            .push(attribution("endpoint", "/checkout", 0.98));
        i.attributions.push(attribution("pod", "cart-1", 0.6));
        let d = code_error(&i).unwrap();
        assert_eq!(top(&i), Some(Category::CodeError));
        assert_eq!(d.confidence, 0.85);
        assert!(
            d.explanation
                .contains("endpoint=/checkout (98% of the change)"),
            "{}",
            d.explanation
        );
        assert_eq!(d.evidence[1].metric, "error_rate [endpoint=/checkout]");
    }

    #[test]
    fn weaker_without_an_operation() {
        let mut i = errors();
        assert_eq!(code_error(&i).unwrap().confidence, 0.55);
        i.attributions
            .push(attribution("endpoint", "/checkout", 0.3));
        assert_eq!(
            code_error(&i).unwrap().confidence,
            0.55,
            "30% is not concentrated"
        );
        i.attributions.push(attribution("pod", "cart-1", 0.9));
        assert_eq!(code_error(&i).unwrap().confidence, 0.7);
    }

    #[test]
    fn yields_to_resources_dependencies_and_downstreams() {
        let with = |extra: Metric| {
            let mut i = errors();
            i.subject.metrics.push(extra);
            i
        };
        let i = with(metric(m::CPU_THROTTLED_RATIO, 0.0, 0.5, true));
        assert!(code_error(&i).is_none());
        assert_eq!(top(&i), Some(Category::CpuSaturation));
        assert!(code_error(&with(metric(m::DB_ERROR_RATE, 0.0, 0.5, true))).is_none());
        assert!(code_error(&with(metric(m::DNS_ERROR_RATE, 0.0, 0.5, true))).is_none());
        // A flagged-but-unchanged resource metric is no symptom.
        assert!(code_error(&with(metric(m::MEMORY_USAGE_RATIO, 0.5, 0.5, true))).is_some());
        let mut i = errors();
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "payments",
            Relation::Downstream,
            true,
            vec![],
        ));
        assert!(code_error(&i).is_none());
        assert_eq!(top(&i), Some(Category::DownstreamSlow));
    }
}
