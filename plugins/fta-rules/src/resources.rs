//! Resource saturation: a service's containers throttled or at their CPU limit, under memory
//! pressure, or a whole machine saturated so that every service on it suffers.

use sonde_sdk::fault_rule::{
    Category, Diagnosis, Evidence, Metric, Relation, RuleInput, SubjectKind, find, metric as m,
};

use sonde_sdk::fault_rule::helpers::{
    all_rose, change, evidence, first_rose, format_value as fmt, neighbours, rose,
};
use sonde_sdk::fault_rule::params::{ParamSpec, Params, RuleSpec};

/// `[live.rules.cpu-saturation]`.
pub const CPU_SPEC: RuleSpec = RuleSpec {
    name: "cpu-saturation",
    doc: "A service's containers CPU-throttled or at their CPU limit.",
    params: &[
        ParamSpec {
            name: "throttled_min",
            default: 0.05,
            min: 0.0,
            max: 1.0,
            doc: "Throttled share of CFS periods below which throttling is noise",
        },
        ParamSpec {
            name: "at_limit",
            default: 0.9,
            min: 0.0,
            max: 10.0,
            doc: "Usage over limit that counts as at the limit",
        },
        ParamSpec {
            name: "confidence_throttled_at_limit",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "Throttled and at the limit: this plus the throttled share, capped at max_confidence",
        },
        ParamSpec {
            name: "confidence_throttled",
            default: 0.6,
            min: 0.0,
            max: 1.0,
            doc: "Throttled: this plus the throttled share, capped at max_confidence",
        },
        ParamSpec {
            name: "confidence",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "At the limit without throttling",
        },
        ParamSpec {
            name: "max_confidence",
            default: 0.95,
            min: 0.0,
            max: 1.0,
            doc: "Cap of the throttled confidences",
        },
    ],
};
/// `[live.rules.memory-pressure]`.
pub const MEMORY_SPEC: RuleSpec = RuleSpec {
    name: "memory-pressure",
    doc: "A service's containers near their memory limit or OOM-killed.",
    params: &[
        ParamSpec {
            name: "high",
            default: 0.85,
            min: 0.0,
            max: 1.0,
            doc: "Memory usage over limit that counts as pressure",
        },
        ParamSpec {
            name: "critical",
            default: 0.95,
            min: 0.0,
            max: 1.0,
            doc: "Memory usage over limit that counts as critical",
        },
        ParamSpec {
            name: "confidence_oom_and_high",
            default: 0.95,
            min: 0.0,
            max: 1.0,
            doc: "OOM kills and usage at least high",
        },
        ParamSpec {
            name: "confidence",
            default: 0.9,
            min: 0.0,
            max: 1.0,
            doc: "OOM kills",
        },
        ParamSpec {
            name: "confidence_critical",
            default: 0.8,
            min: 0.0,
            max: 1.0,
            doc: "Usage at least critical",
        },
        ParamSpec {
            name: "confidence_high",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "Usage at least high",
        },
    ],
};
/// `[live.rules.node-saturation]`.
pub const NODE_SPEC: RuleSpec = RuleSpec {
    name: "node-saturation",
    doc: "A machine saturated so that the services on it suffer.",
    params: &[
        ParamSpec {
            name: "min_services",
            default: 2.0,
            min: 1.0,
            max: 1000000.0,
            doc: "Abnormal services on a saturated machine for confidence (fewer: confidence_fewer)",
        },
        ParamSpec {
            name: "confidence",
            default: 0.9,
            min: 0.0,
            max: 1.0,
            doc: "A saturated machine with at least min_services abnormal services on it",
        },
        ParamSpec {
            name: "confidence_fewer",
            default: 0.6,
            min: 0.0,
            max: 1.0,
            doc: "A saturated machine with fewer abnormal services on it",
        },
        ParamSpec {
            name: "confidence_service",
            default: 0.5,
            min: 0.0,
            max: 1.0,
            doc: "A service on a saturated machine (pointing at the machine)",
        },
    ],
};

/// Machine-wide saturation metrics.
const NODE: &[&str] = &[
    m::NODE_CPU_RATIO,
    m::NODE_MEMORY_RATIO,
    m::NODE_RUNQUEUE_DELAY_MS,
    m::SOFTIRQ_DELAY_MS,
];

/// CPU: throttling by the container's quota, or usage pinned at the limit.
pub fn cpu(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let p = params.of(&CPU_SPEC);
    let ms = &input.subject.metrics;
    let throttled = rose(ms, m::CPU_THROTTLED_RATIO).filter(|x| x.after >= p.get("throttled_min"));
    let at_limit = at_cpu_limit(ms, p.get("at_limit"));
    if throttled.is_none() && at_limit.is_none() {
        return None;
    }
    let mut ev = Vec::new();
    ev.extend(throttled.map(|x| evidence(x, "CFS throttling")));
    ev.extend(rose(ms, m::CPU_USAGE_CORES).map(|x| evidence(x, "usage")));
    ev.extend(at_limit.map(|(_, limit)| evidence(limit, "limit")));
    ev.extend(
        first_rose(ms, &[m::LATENCY_MEAN_MS, m::LATENCY_P99_MS]).map(|x| evidence(x, "symptom")),
    );
    let (confidence, what) = match (throttled, at_limit) {
        (Some(t), Some(_)) => (
            (p.get("confidence_throttled_at_limit") + t.after).min(p.get("max_confidence")),
            format!("CPU-throttled at its limit: {}", change(t)),
        ),
        (Some(t), None) => (
            (p.get("confidence_throttled") + t.after).min(p.get("max_confidence")),
            format!("CPU-throttled: {}", change(t)),
        ),
        (None, Some((usage, limit))) => (
            p.get("confidence"),
            format!(
                "at its CPU limit: {} of {:.2} cores",
                change(usage),
                limit.after
            ),
        ),
        (None, None) => unreachable!(),
    };
    Some(Diagnosis {
        category: Category::CpuSaturation,
        confidence,
        evidence: ev,
        explanation: format!("{} is {what}", input.subject.id),
    })
}

/// Usage that rose to `at_limit` times a known limit: (usage, limit).
fn at_cpu_limit(ms: &[Metric], at_limit: f64) -> Option<(&Metric, &Metric)> {
    let usage = rose(ms, m::CPU_USAGE_CORES)?;
    let limit = find(ms, m::CPU_LIMIT_CORES).filter(|l| l.after > 0.0)?;
    (usage.after >= at_limit * limit.after).then_some((usage, limit))
}

/// Memory: usage near the limit, or OOM kills.
pub fn memory(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let p = params.of(&MEMORY_SPEC);
    let ms = &input.subject.metrics;
    let oom = rose(ms, m::OOM_KILLS);
    let high = rose(ms, m::MEMORY_USAGE_RATIO).filter(|x| x.after >= p.get("high"));
    let first = oom.or(high)?;
    let mut ev: Vec<Evidence> = oom.iter().map(|x| evidence(x, "OOM kills")).collect();
    ev.extend(high.map(|x| evidence(x, "of the memory limit")));
    let confidence = match (oom, high) {
        (Some(_), Some(_)) => p.get("confidence_oom_and_high"),
        (Some(_), None) => p.get("confidence"),
        (None, Some(h)) if h.after >= p.get("critical") => p.get("confidence_critical"),
        _ => p.get("confidence_high"),
    };
    Some(Diagnosis {
        category: Category::MemoryPressure,
        confidence,
        evidence: ev,
        explanation: format!(
            "{} is under memory pressure: {}",
            input.subject.id,
            change(first)
        ),
    })
}

/// Machine: a node with CPU, memory or run-queue anomalies under two or more (`min_services`)
/// abnormal services (or fewer, with less confidence); a service on such a node points at it.
///
/// Run-queue delay counts as saturation only with busy CPUs: tasks that wait while the CPUs
/// are not busy wait for their own cgroup's quota (kernel PSI counts throttled tasks too),
/// which is the CPU branch's case on the throttled service, not the machine's.
pub fn node(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    let p = params.of(&NODE_SPEC);
    let symptoms = |ms: &[Metric]| -> Vec<Evidence> {
        let rose = all_rose(ms, NODE);
        let busy = rose.iter().any(|x| x.name != m::NODE_RUNQUEUE_DELAY_MS);
        rose.into_iter()
            .filter(|x| busy || x.name != m::NODE_RUNQUEUE_DELAY_MS)
            .map(|x| evidence(x, "machine"))
            .collect()
    };
    match input.subject.kind {
        SubjectKind::Node => {
            let ev = symptoms(&input.subject.metrics);
            let first = ev.first()?;
            let hurt: Vec<&str> = neighbours(input, Relation::Hosted)
                .filter(|n| n.abnormal)
                .map(|n| n.id.as_str())
                .collect();
            if hurt.is_empty() {
                return None;
            }
            let confidence = if hurt.len() as f64 >= p.get("min_services") {
                p.get("confidence")
            } else {
                p.get("confidence_fewer")
            };
            let explanation = format!(
                "Machine {} is saturated ({} {} → {}) and slows {} service(s) on it: {}",
                input.subject.id,
                first.metric,
                fmt(&first.metric, first.before),
                fmt(&first.metric, first.after),
                hurt.len(),
                hurt.join(", ")
            );
            Some(Diagnosis {
                category: Category::NodeSaturation,
                confidence,
                evidence: ev,
                explanation,
            })
        }
        SubjectKind::Service => {
            let host = neighbours(input, Relation::Host)
                .find(|n| n.abnormal && !symptoms(&n.metrics).is_empty())?;
            let ev = symptoms(&host.metrics);
            let first = &ev[0];
            let explanation = format!(
                "{} runs on machine {}, which is saturated ({} {} → {})",
                input.subject.id,
                host.id,
                first.metric,
                fmt(&first.metric, first.before),
                fmt(&first.metric, first.after)
            );
            Some(Diagnosis {
                category: Category::NodeSaturation,
                confidence: p.get("confidence_service"),
                evidence: ev,
                explanation,
            })
        }
        SubjectKind::Edge => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn cpu(i: &RuleInput) -> Option<Diagnosis> {
        super::cpu(i, &Params::default())
    }

    fn memory(i: &RuleInput) -> Option<Diagnosis> {
        super::memory(i, &Params::default())
    }

    fn node(i: &RuleInput) -> Option<Diagnosis> {
        super::node(i, &Params::default())
    }

    fn service(metrics: Vec<Metric>) -> RuleInput {
        input(SubjectKind::Service, "cart", metrics)
    }

    #[test]
    fn throttling_is_cpu_saturation() {
        let i = service(vec![
            metric(m::CPU_THROTTLED_RATIO, 0.0, 0.4, true),
            metric(m::LATENCY_MEAN_MS, 5.0, 50.0, true),
        ]);
        let d = cpu(&i).unwrap();
        assert_eq!(top(&i), Some(Category::CpuSaturation));
        assert_eq!(d.confidence, 0.95, "0.6 + the throttled share, capped");
        assert!(
            d.explanation.contains("cpu_throttled_ratio 0.0% → 40.0%"),
            "{}",
            d.explanation
        );
        // Throttling that stays negligible, or was already there, is no evidence.
        assert!(
            cpu(&service(vec![metric(
                m::CPU_THROTTLED_RATIO,
                0.0,
                0.01,
                true
            )]))
            .is_none()
        );
        assert!(
            cpu(&service(vec![metric(
                m::CPU_THROTTLED_RATIO,
                0.3,
                0.3,
                false
            )]))
            .is_none()
        );
    }

    #[test]
    fn usage_at_the_limit_is_cpu_saturation() {
        let i = service(vec![
            metric(m::CPU_USAGE_CORES, 0.5, 1.95, true),
            metric(m::CPU_LIMIT_CORES, 2.0, 2.0, false),
        ]);
        let d = cpu(&i).unwrap();
        assert_eq!(d.confidence, 0.7);
        assert!(
            d.explanation.contains("at its CPU limit") && d.explanation.contains("2.00 cores"),
            "{}",
            d.explanation
        );
        // Well under the limit, or no known limit: not saturation.
        assert!(
            cpu(&service(vec![
                metric(m::CPU_USAGE_CORES, 0.5, 1.0, true),
                metric(m::CPU_LIMIT_CORES, 2.0, 2.0, false)
            ]))
            .is_none()
        );
        assert!(cpu(&service(vec![metric(m::CPU_USAGE_CORES, 0.5, 1.95, true)])).is_none());
    }

    #[test]
    fn oom_kills_and_high_memory_are_memory_pressure() {
        let i = service(vec![metric(m::OOM_KILLS, 0.0, 2.0, true)]);
        assert_eq!(top(&i), Some(Category::MemoryPressure));
        assert_eq!(memory(&i).unwrap().confidence, 0.9);
        let both = service(vec![
            metric(m::OOM_KILLS, 0.0, 2.0, true),
            metric(m::MEMORY_USAGE_RATIO, 0.5, 0.97, true),
        ]);
        assert_eq!(memory(&both).unwrap().confidence, 0.95);
        assert_eq!(memory(&both).unwrap().evidence.len(), 2);
        assert_eq!(
            memory(&service(vec![metric(
                m::MEMORY_USAGE_RATIO,
                0.5,
                0.9,
                true
            )]))
            .unwrap()
            .confidence,
            0.7
        );
        assert_eq!(
            memory(&service(vec![metric(
                m::MEMORY_USAGE_RATIO,
                0.5,
                0.97,
                true
            )]))
            .unwrap()
            .confidence,
            0.8
        );
        // Up but with room to spare.
        assert!(
            memory(&service(vec![metric(
                m::MEMORY_USAGE_RATIO,
                0.3,
                0.6,
                true
            )]))
            .is_none()
        );
    }

    #[test]
    fn a_node_with_two_hurt_services_is_saturated() {
        let mut i = input(
            SubjectKind::Node,
            "n2",
            vec![metric(m::NODE_CPU_RATIO, 0.4, 0.99, true)],
        );
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "cart",
            Relation::Hosted,
            true,
            vec![],
        ));
        assert_eq!(
            node(&i).unwrap().confidence,
            0.6,
            "one hurt service: less sure"
        );
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "product",
            Relation::Hosted,
            true,
            vec![],
        ));
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "idle",
            Relation::Hosted,
            false,
            vec![],
        ));
        let d = node(&i).unwrap();
        assert_eq!(top(&i), Some(Category::NodeSaturation));
        assert!(d.confidence >= 0.9);
        assert!(
            d.explanation.contains("n2")
                && d.explanation.contains("2 service(s) on it: cart, product"),
            "{}",
            d.explanation
        );
        // A busy machine nobody suffers from is not a fault.
        i.neighbours.iter_mut().for_each(|n| n.abnormal = false);
        assert!(node(&i).is_none());
    }

    #[test]
    fn a_service_on_a_saturated_node_points_at_it() {
        let mut i = service(vec![metric(m::LATENCY_MEAN_MS, 5.0, 50.0, true)]);
        i.neighbours.push(neighbour(
            SubjectKind::Node,
            "n2",
            Relation::Host,
            true,
            vec![
                metric(m::NODE_RUNQUEUE_DELAY_MS, 0.1, 9.0, true),
                metric(m::NODE_CPU_RATIO, 0.4, 0.98, true),
            ],
        ));
        let d = node(&i).unwrap();
        assert_eq!(
            (d.category.clone(), d.confidence),
            (Category::NodeSaturation, 0.5)
        );
        assert!(
            d.explanation.contains("machine n2") && d.explanation.contains("node_cpu_ratio"),
            "{}",
            d.explanation
        );
        // Tasks waiting while the CPUs are not busy: a quota, not the machine.
        i.neighbours[0].metrics.truncate(1);
        assert!(node(&i).is_none());
        // An abnormal host without machine symptoms says nothing about saturation.
        i.neighbours[0].metrics.clear();
        assert!(node(&i).is_none());
    }

    #[test]
    fn a_throttled_service_is_not_a_saturated_node() {
        // PSI's run-queue delay rose because product's cgroup is throttled; the CPUs idle.
        let mut n = input(
            SubjectKind::Node,
            "vm",
            vec![
                metric(m::NODE_RUNQUEUE_DELAY_MS, 90.0, 720.0, true),
                metric(m::NODE_CPU_RATIO, 0.3, 0.31, false),
            ],
        );
        n.neighbours.push(neighbour(
            SubjectKind::Service,
            "product",
            Relation::Hosted,
            true,
            vec![metric(m::CPU_THROTTLED_RATIO, 0.0, 1.0, true)],
        ));
        assert!(node(&n).is_none());
        let mut p = service(vec![
            metric(m::LATENCY_MEAN_MS, 5.0, 500.0, true),
            metric(m::CPU_THROTTLED_RATIO, 0.0, 1.0, true),
        ]);
        p.subject.id = "product".into();
        assert_eq!(top(&p), Some(Category::CpuSaturation));
    }
}
