//! Network problem on a call edge: the caller waits longer (or fails) while the callee's own
//! latency is normal; retransmits, RTT, drops or resets on the edge make it certain.

use sonde_sdk::fault_rule::{
    Category, Diagnosis, Metric, Relation, RuleInput, SubjectKind, find, metric as m,
};

use sonde_sdk::fault_rule::helpers::{all_rose, change, evidence, neighbours, rose};
use sonde_sdk::fault_rule::params::{ParamSpec, Params, RuleSpec};

/// Network-quality metrics of an edge, strongest signal first.
const NETWORK: &[&str] = &[
    m::RETRANSMIT_RATE,
    m::DROP_RATE,
    m::RTT_MS,
    m::RESET_RATE,
    m::CONNECT_FAIL_RATE,
];

/// `[live.rules.network]`.
pub const SPEC: RuleSpec = RuleSpec {
    name: "network",
    doc: "A call edge where the caller waits (or fails) while the callee is normal.",
    params: &[
        ParamSpec {
            name: "callee_explains",
            default: 0.5,
            min: 0.0,
            max: 100.0,
            doc: "The callee's own rise, as a share of the caller's, that makes it the callee's fault, not the network's",
        },
        ParamSpec {
            name: "caller_over_callee",
            default: 2.0,
            min: 1.0,
            max: 1000.0,
            doc: "Without network metrics: how many times the callee's own latency the caller must wait to blame the wire",
        },
        ParamSpec {
            name: "confidence",
            default: 0.8,
            min: 0.0,
            max: 1.0,
            doc: "Network metrics rose and the callee side is measured (plus confidence_per_signal per further metric)",
        },
        ParamSpec {
            name: "confidence_unmeasured_callee",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "Network metrics rose, the callee side is not measured (plus confidence_per_signal per further metric)",
        },
        ParamSpec {
            name: "confidence_per_signal",
            default: 0.05,
            min: 0.0,
            max: 1.0,
            doc: "Added per network metric that rose",
        },
        ParamSpec {
            name: "max_confidence",
            default: 0.95,
            min: 0.0,
            max: 1.0,
            doc: "Cap of confidence with its per-signal additions",
        },
        ParamSpec {
            name: "max_confidence_unmeasured_callee",
            default: 0.85,
            min: 0.0,
            max: 1.0,
            doc: "Cap of confidence_unmeasured_callee with its per-signal additions",
        },
        ParamSpec {
            name: "confidence_connect_fail",
            default: 0.6,
            min: 0.0,
            max: 1.0,
            doc: "Connects fail and nothing else is known",
        },
        ParamSpec {
            name: "confidence_caller_only",
            default: 0.5,
            min: 0.0,
            max: 1.0,
            doc: "No network metric rose; the caller waits caller_over_callee times what the callee works",
        },
    ],
};

pub fn network(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    let p = params.of(&SPEC);
    if input.subject.kind != SubjectKind::Edge {
        return None;
    }
    let ms = &input.subject.metrics;
    // The caller's symptom, and the callee-side measure of the same thing (a failed connect
    // never reaches the callee, so it has none).
    let (caller, counterpart) = if let Some(x) = rose(ms, m::CALLER_LATENCY_MS) {
        (
            x,
            callee_side(input, m::CALLEE_LATENCY_MS, m::LATENCY_MEAN_MS),
        )
    } else if let Some(x) = rose(ms, m::CALLER_ERROR_RATE) {
        (x, callee_side(input, m::CALLEE_ERROR_RATE, m::ERROR_RATE))
    } else {
        (rose(ms, m::CONNECT_FAIL_RATE)?, None)
    };
    let caller_rise = caller.after - caller.before;
    // The callee's own numbers explain the caller's: a slow callee, not the network.
    if let Some(callee) = counterpart
        && callee.anomalous
        && callee.after - callee.before >= p.get("callee_explains") * caller_rise
    {
        return None;
    }
    let net: Vec<&Metric> = all_rose(ms, NETWORK)
        .into_iter()
        .filter(|x| x.name != caller.name)
        .collect();
    let per_signal = p.get("confidence_per_signal");
    let confidence = match (net.len(), counterpart) {
        (0, None) if caller.name == m::CONNECT_FAIL_RATE => p.get("confidence_connect_fail"),
        // Nothing but the caller's view and no callee-side measure: unknown.
        (0, None) => return None,
        (0, Some(callee)) => {
            if caller.after < p.get("caller_over_callee") * callee.after.max(f64::MIN_POSITIVE) {
                return None;
            }
            p.get("confidence_caller_only")
        }
        (n, Some(_)) => (p.get("confidence") + per_signal * n as f64).min(p.get("max_confidence")),
        (n, None) => (p.get("confidence_unmeasured_callee") + per_signal * n as f64)
            .min(p.get("max_confidence_unmeasured_callee")),
    };
    let mut ev = vec![evidence(caller, "seen by the caller")];
    ev.extend(counterpart.map(|x| evidence(x, "the callee's own")));
    ev.extend(net.iter().map(|x| evidence(x, "network")));
    let detail = match (net.first(), counterpart) {
        (Some(x), _) => format!("; {}", change(x)),
        (None, Some(callee)) => format!(" (the callee's own {})", change(callee)),
        (None, None) => String::new(),
    };
    let callee_state = if counterpart.is_some() {
        "is normal"
    } else {
        "is not measured"
    };
    Some(Diagnosis {
        category: Category::Network,
        confidence,
        evidence: ev,
        explanation: format!(
            "Network problem on {}: the caller sees {} while the callee's side {callee_state}{detail}",
            input.subject.id,
            change(caller),
        ),
    })
}

/// The edge's callee-side metric, or else the callee service's own.
fn callee_side<'a>(
    input: &'a RuleInput,
    edge_metric: &str,
    service_metric: &str,
) -> Option<&'a Metric> {
    find(&input.subject.metrics, edge_metric).or_else(|| {
        neighbours(input, Relation::Callee).find_map(|n| find(&n.metrics, service_metric))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn network(i: &RuleInput) -> Option<Diagnosis> {
        super::network(i, &Params::default())
    }

    fn edge(metrics: Vec<Metric>) -> RuleInput {
        input(SubjectKind::Edge, "gw->cart", metrics)
    }

    #[test]
    fn retransmits_with_a_normal_callee_are_the_network() {
        let i = edge(vec![
            metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true),
            metric(m::CALLEE_LATENCY_MS, 6.0, 6.0, false),
            metric(m::RETRANSMIT_RATE, 0.0, 30.0, true),
            metric(m::RTT_MS, 0.2, 40.0, true),
        ]);
        let d = network(&i).unwrap();
        assert_eq!(top(&i), Some(Category::Network));
        assert!(d.confidence >= 0.9, "{d:?}");
        assert!(
            d.explanation.contains("gw->cart")
                && d.explanation.contains("retransmit_rate 0.0/s → 30.0/s"),
            "{}",
            d.explanation
        );
        let metrics: Vec<&str> = d.evidence.iter().map(|e| e.metric.as_str()).collect();
        assert_eq!(
            metrics,
            [
                m::CALLER_LATENCY_MS,
                m::CALLEE_LATENCY_MS,
                m::RETRANSMIT_RATE,
                m::RTT_MS
            ]
        );
    }

    #[test]
    fn a_slow_callee_is_not_the_network() {
        let i = edge(vec![
            metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true),
            metric(m::CALLEE_LATENCY_MS, 6.0, 195.0, true),
            metric(m::RETRANSMIT_RATE, 0.0, 1.0, true),
        ]);
        assert!(network(&i).is_none());
        // Measured on the callee service when the edge lacks it.
        let mut i = edge(vec![metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true)]);
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "cart",
            Relation::Callee,
            true,
            vec![metric(m::LATENCY_MEAN_MS, 5.0, 190.0, true)],
        ));
        assert!(network(&i).is_none());
    }

    #[test]
    fn without_network_metrics_only_a_large_gap_counts_and_weakly() {
        let i = edge(vec![
            metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true),
            metric(m::CALLEE_LATENCY_MS, 5.0, 6.0, false),
        ]);
        let d = network(&i).unwrap();
        assert_eq!(d.confidence, 0.5);
        assert!(
            d.explanation.contains("callee_latency_ms 5.0 ms → 6.0 ms"),
            "{}",
            d.explanation
        );
        // Caller barely above the callee: not enough.
        let i = edge(vec![
            metric(m::CALLER_LATENCY_MS, 6.0, 9.0, true),
            metric(m::CALLEE_LATENCY_MS, 5.0, 6.0, false),
        ]);
        assert!(network(&i).is_none());
        // No callee-side measure and no network metric: unknown, no verdict.
        let i = edge(vec![metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true)]);
        assert!(network(&i).is_none());
    }

    #[test]
    fn network_metrics_without_a_callee_measure_are_less_certain() {
        let i = edge(vec![
            metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true),
            metric(m::DROP_RATE, 0.0, 12.0, true),
        ]);
        let d = network(&i).unwrap();
        assert!((0.7..0.9).contains(&d.confidence), "{d:?}");
        assert!(d.explanation.contains("is not measured"));
    }

    #[test]
    fn errors_and_failed_connects_count_too() {
        let i = edge(vec![
            metric(m::CALLER_ERROR_RATE, 0.0, 0.3, true),
            metric(m::CALLEE_ERROR_RATE, 0.0, 0.0, false),
            metric(m::RESET_RATE, 0.0, 8.0, true),
        ]);
        assert_eq!(
            network(&i).unwrap().evidence[0].metric,
            m::CALLER_ERROR_RATE
        );
        let i = edge(vec![metric(m::CONNECT_FAIL_RATE, 0.0, 5.0, true)]);
        let d = network(&i).unwrap();
        assert_eq!(d.confidence, 0.6);
        assert_eq!(
            d.evidence.len(),
            1,
            "the symptom is not counted twice: {d:?}"
        );
    }

    #[test]
    fn only_edges() {
        let i = input(
            SubjectKind::Service,
            "cart",
            vec![metric(m::RETRANSMIT_RATE, 0.0, 30.0, true)],
        );
        assert!(network(&i).is_none());
    }
}
