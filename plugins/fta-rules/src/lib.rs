//! Sonde's default fault tree: a `fault-rule` component (WIT world `sonde:plugin/fault-rule`).
//!
//! Each branch looks at one candidate the engine found abnormal and says whether its kind of
//! fault explains it: network on a call edge, a slow downstream, CPU or memory saturation, a
//! saturated machine, a slow database, failing DNS, errors in the service's own code, a recent
//! change. Confidence grows with the evidence; a missing metric is unknown, never zero.
//!
//! Built for `wasm32-wasip2` this crate is the component the daemon embeds and runs in its
//! sandbox; built natively it is a plain library, so the same rules run in unit tests.

use sonde_sdk::fault_rule::{
    Category, Diagnosis, Evidence, FaultRule, Metric, Neighbour, Relation, RuleInput, RuleInfo, SubjectKind, find,
    metric as m,
};

/// The default tree.
pub struct DefaultTree;

impl FaultRule for DefaultTree {
    fn info() -> RuleInfo {
        RuleInfo {
            name: "sonde-default-tree".into(),
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
            ],
        }
    }

    fn evaluate(input: &RuleInput) -> Vec<Diagnosis> {
        evaluate(input)
    }
}

sonde_sdk::export_fault_rule!(DefaultTree);

/// Every branch of the tree on one candidate, most confident first.
pub fn evaluate(input: &RuleInput) -> Vec<Diagnosis> {
    let mut out: Vec<Diagnosis> = [network, downstream, cpu, memory, node, database, dns, code_error, recent_change]
        .iter()
        .filter_map(|branch| branch(input))
        .collect();
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out
}

/// A metric that the detector flagged and that went up.
fn rose<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a Metric> {
    find(metrics, name).filter(|x| x.anomalous && x.after > x.before)
}

fn evidence(x: &Metric, note: &str) -> Evidence {
    Evidence { metric: x.name.clone(), before: x.before, after: x.after, note: note.into() }
}

fn fmt(name: &str, v: f64) -> String {
    if name.ends_with("_ratio") || name.ends_with("error_rate") {
        format!("{:.1}%", v * 100.0)
    } else if name.ends_with("_ms") {
        format!("{v:.1} ms")
    } else if name.ends_with("_rate") {
        format!("{v:.1}/s")
    } else {
        format!("{v:.2}")
    }
}

fn change(x: &Metric) -> String {
    format!("{} {} → {}", x.name, fmt(&x.name, x.before), fmt(&x.name, x.after))
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn neighbours(input: &RuleInput, relation: Relation) -> impl Iterator<Item = &Neighbour> {
    input.neighbours.iter().filter(move |n| n.relation == relation)
}

/// Network: the caller waits longer (or fails to connect) while the callee's own latency is
/// normal; retransmits, RTT, drops or resets on the edge make it certain.
fn network(input: &RuleInput) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Edge {
        return None;
    }
    let ms = &input.subject.metrics;
    let caller = rose(ms, m::CALLER_LATENCY_MS).or(rose(ms, m::CALLER_ERROR_RATE)).or(rose(ms, m::CONNECT_FAIL_RATE))?;
    let callee_normal = match find(ms, m::CALLEE_LATENCY_MS) {
        Some(callee) => !callee.anomalous || (callee.after - callee.before) < 0.5 * (caller.after - caller.before),
        None => true,
    };
    if !callee_normal {
        return None;
    }
    let net: Vec<&Metric> = [m::RETRANSMIT_RATE, m::RTT_MS, m::DROP_RATE, m::RESET_RATE, m::CONNECT_FAIL_RATE]
        .iter()
        .filter_map(|n| rose(ms, n))
        .collect();
    let mut ev = vec![evidence(caller, "seen by the caller")];
    if let Some(callee) = find(ms, m::CALLEE_LATENCY_MS) {
        ev.push(evidence(callee, "the callee's own time"));
    }
    ev.extend(net.iter().map(|x| evidence(x, "network")));
    let confidence = if net.is_empty() { 0.5 } else { (0.8 + 0.05 * net.len() as f64).min(0.95) };
    let why = match net.first() {
        Some(x) => format!("; {}", change(x)),
        None => String::new(),
    };
    Some(Diagnosis {
        category: Category::Network,
        confidence,
        evidence: ev,
        explanation: format!(
            "Network problem on {}: the caller sees {} while the callee's own latency is normal{}",
            input.subject.id,
            change(caller),
            why
        ),
    })
}

/// Downstream: the service is slow or failing because a service it calls is.
fn downstream(input: &RuleInput) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let ms = &input.subject.metrics;
    let own = rose(ms, m::LATENCY_MEAN_MS).or(rose(ms, m::LATENCY_P99_MS)).or(rose(ms, m::ERROR_RATE))?;
    let culprit = neighbours(input, Relation::Downstream)
        .filter(|n| n.abnormal)
        .max_by(|a, b| a.score.total_cmp(&b.score).then_with(|| b.id.cmp(&a.id)))?;
    let seen = rose(&culprit.metrics, m::CALLER_LATENCY_MS)
        .or(rose(&culprit.metrics, m::LATENCY_MEAN_MS))
        .or(rose(&culprit.metrics, m::CALLER_ERROR_RATE))
        .or(rose(&culprit.metrics, m::ERROR_RATE));
    let mut ev = vec![evidence(own, "the service")];
    ev.extend(seen.map(|x| evidence(x, &format!("calls to {}", culprit.id))));
    Some(Diagnosis {
        category: Category::DownstreamSlow,
        confidence: if seen.is_some() { 0.7 } else { 0.4 },
        evidence: ev,
        explanation: format!("{} is affected by its downstream {}: {}", input.subject.id, culprit.id, change(own)),
    })
}

/// CPU: throttling by the container's quota, or usage pinned.
fn cpu(input: &RuleInput) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let ms = &input.subject.metrics;
    let throttled = rose(ms, m::CPU_THROTTLED_RATIO).filter(|x| x.after >= 0.05)?;
    let mut ev = vec![evidence(throttled, "CFS throttling")];
    ev.extend(rose(ms, m::CPU_USAGE_CORES).map(|x| evidence(x, "usage")));
    ev.extend(rose(ms, m::LATENCY_MEAN_MS).map(|x| evidence(x, "symptom")));
    Some(Diagnosis {
        category: Category::CpuSaturation,
        confidence: (0.6 + throttled.after).min(0.95),
        evidence: ev,
        explanation: format!("{} is CPU-throttled: {}", input.subject.id, change(throttled)),
    })
}

/// Memory: usage near the limit, or OOM kills.
fn memory(input: &RuleInput) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let ms = &input.subject.metrics;
    let oom = rose(ms, m::OOM_KILLS);
    let high = rose(ms, m::MEMORY_USAGE_RATIO).filter(|x| x.after >= 0.85);
    let first = oom.or(high)?;
    let mut ev: Vec<Evidence> = oom.iter().map(|x| evidence(x, "OOM kills")).collect();
    ev.extend(high.map(|x| evidence(x, "of the memory limit")));
    Some(Diagnosis {
        category: Category::MemoryPressure,
        confidence: if oom.is_some() { 0.9 } else { 0.7 },
        evidence: ev,
        explanation: format!("{} is under memory pressure: {}", input.subject.id, change(first)),
    })
}

/// Machine: a node with CPU, memory or run-queue anomalies under two or more abnormal services
/// (or one, with less confidence); a service on such a node points at it.
fn node(input: &RuleInput) -> Option<Diagnosis> {
    let node_symptom = |ms: &[Metric]| -> Vec<Evidence> {
        [m::NODE_CPU_RATIO, m::NODE_MEMORY_RATIO, m::NODE_RUNQUEUE_DELAY_MS, m::SOFTIRQ_DELAY_MS]
            .iter()
            .filter_map(|n| rose(ms, n))
            .map(|x| evidence(x, "machine"))
            .collect()
    };
    match input.subject.kind {
        SubjectKind::Node => {
            let ev = node_symptom(&input.subject.metrics);
            if ev.is_empty() {
                return None;
            }
            let hurt: Vec<&str> = neighbours(input, Relation::Hosted).filter(|n| n.abnormal).map(|n| n.id.as_str()).collect();
            if hurt.is_empty() {
                return None;
            }
            let confidence = if hurt.len() >= 2 { 0.9 } else { 0.6 };
            let first = &ev[0];
            Some(Diagnosis {
                category: Category::NodeSaturation,
                confidence,
                evidence: ev.clone(),
                explanation: format!(
                    "Machine {} is saturated ({} {} → {}) and slows {} service(s) on it: {}",
                    input.subject.id,
                    first.metric,
                    fmt(&first.metric, first.before),
                    fmt(&first.metric, first.after),
                    hurt.len(),
                    hurt.join(", ")
                ),
            })
        }
        SubjectKind::Service => {
            let host = neighbours(input, Relation::Host).find(|n| n.abnormal && !node_symptom(&n.metrics).is_empty())?;
            Some(Diagnosis {
                category: Category::NodeSaturation,
                confidence: 0.5,
                evidence: node_symptom(&host.metrics),
                explanation: format!("{} runs on machine {}, which is saturated", input.subject.id, host.id),
            })
        }
        SubjectKind::Edge => None,
    }
}

/// Database: the subject is a database whose latency or errors rose, or a service whose own
/// database calls slowed.
fn database(input: &RuleInput) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let ms = &input.subject.metrics;
    let is_db = label(&input.subject.labels, "kind") == Some("database")
        || matches!(label(&input.subject.labels, "protocol"), Some("mysql" | "postgres" | "redis" | "mongodb"));
    if is_db {
        let x = rose(ms, m::LATENCY_MEAN_MS).or(rose(ms, m::LATENCY_P99_MS)).or(rose(ms, m::ERROR_RATE))?;
        let mut ev = vec![evidence(x, "database")];
        ev.extend(rose(ms, m::DB_SLOW_QUERY_RATE).map(|s| evidence(s, "slow queries")));
        return Some(Diagnosis {
            category: Category::DatabaseSlow,
            confidence: 0.85,
            evidence: ev,
            explanation: format!("Database {} is slow: {}", input.subject.id, change(x)),
        });
    }
    let x = rose(ms, m::DB_QUERY_LATENCY_MS).or(rose(ms, m::DB_SLOW_QUERY_RATE)).or(rose(ms, m::DB_ERROR_RATE))?;
    // When the database itself is in the map and abnormal, it is the cause; this service is
    // only its caller.
    let db_in_map = neighbours(input, Relation::Downstream)
        .any(|n| n.abnormal && (label(&n.labels, "kind") == Some("database")));
    Some(Diagnosis {
        category: Category::DatabaseSlow,
        confidence: if db_in_map { 0.4 } else { 0.75 },
        evidence: vec![evidence(x, "queries from this service")],
        explanation: format!("{}'s database calls degraded: {}", input.subject.id, change(x)),
    })
}

/// DNS: lookups fail or slow down.
fn dns(input: &RuleInput) -> Option<Diagnosis> {
    let ms = &input.subject.metrics;
    let x = rose(ms, m::DNS_ERROR_RATE).or(rose(ms, m::DNS_LATENCY_MS))?;
    Some(Diagnosis {
        category: Category::DnsFailure,
        confidence: if x.name == m::DNS_ERROR_RATE { 0.85 } else { 0.65 },
        evidence: vec![evidence(x, "name resolution")],
        explanation: format!("Name resolution fails for {}: {}", input.subject.id, change(x)),
    })
}

/// Code: errors rose, concentrated on specific operations, without resource or network
/// symptoms and without an abnormal downstream.
fn code_error(input: &RuleInput) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let ms = &input.subject.metrics;
    let errors = rose(ms, m::ERROR_RATE)?;
    let resource = [m::CPU_THROTTLED_RATIO, m::MEMORY_USAGE_RATIO, m::OOM_KILLS].iter().any(|n| rose(ms, n).is_some());
    let downstream_bad = neighbours(input, Relation::Downstream).any(|n| n.abnormal);
    let host_bad = neighbours(input, Relation::Host).any(|n| n.abnormal);
    if resource || downstream_bad || host_bad {
        return None;
    }
    let focus = input
        .attributions
        .iter()
        .filter(|a| a.kpi == m::ERROR_RATE && a.explanatory_power >= 0.5)
        .max_by(|a, b| a.explanatory_power.total_cmp(&b.explanatory_power));
    let mut ev = vec![evidence(errors, "server side")];
    let (confidence, place) = match focus {
        Some(a) => {
            let what: Vec<String> = a.elements.iter().map(|(d, v)| format!("{d}={v}")).collect();
            ev.push(Evidence {
                metric: format!("{} [{}]", m::ERROR_RATE, what.join(" & ")),
                before: a.before,
                after: a.after,
                note: format!("explains {:.0}% of the change", a.explanatory_power * 100.0),
            });
            (0.85, format!(", concentrated in {} ({:.0}% of the change)", what.join(" & "), a.explanatory_power * 100.0))
        }
        None => (0.55, String::new()),
    };
    Some(Diagnosis {
        category: Category::CodeError,
        confidence,
        evidence: ev,
        explanation: format!(
            "{} returns errors{}: {}; no resource, network or downstream symptom",
            input.subject.id,
            place,
            change(errors)
        ),
    })
}

/// Change: a deploy or config change on the subject within 15 minutes before the incident.
fn recent_change(input: &RuleInput) -> Option<Diagnosis> {
    const WINDOW_MS: u64 = 15 * 60 * 1000;
    let start = input.incident.started_at_ms;
    let c = input
        .changes
        .iter()
        .filter(|c| c.subject == input.subject.id && c.at_ms <= start && start - c.at_ms <= WINDOW_MS)
        .max_by_key(|c| c.at_ms)?;
    let minutes = (start - c.at_ms) as f64 / 60_000.0;
    Some(Diagnosis {
        category: Category::RecentChange,
        confidence: if minutes <= 5.0 { 0.7 } else { 0.5 },
        evidence: vec![Evidence { metric: "change".into(), before: 0.0, after: minutes, note: c.description.clone() }],
        explanation: format!("{} changed {:.0} min before the incident: {}", input.subject.id, minutes, c.description),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_sdk::fault_rule::{Attribution, Change, Incident, Subject};

    fn metric(name: &str, before: f64, after: f64, anomalous: bool) -> Metric {
        Metric { name: name.into(), before, after, anomalous }
    }

    fn input(kind: SubjectKind, id: &str, metrics: Vec<Metric>) -> RuleInput {
        RuleInput {
            incident: Incident { id: "i".into(), entry: "gw".into(), kpi: "latency_mean_ms".into(), started_at_ms: 3_600_000 },
            subject: Subject { kind, id: id.into(), metrics, labels: vec![] },
            neighbours: vec![],
            attributions: vec![],
            changes: vec![],
        }
    }

    fn top(i: &RuleInput) -> Category {
        evaluate(i).first().map(|d| d.category.clone()).unwrap_or(Category::Other("none".into()))
    }

    #[test]
    fn network_needs_a_normal_callee() {
        let mut i = input(
            SubjectKind::Edge,
            "gw->cart",
            vec![
                metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true),
                metric(m::CALLEE_LATENCY_MS, 6.0, 6.0, false),
                metric(m::RETRANSMIT_RATE, 0.0, 30.0, true),
            ],
        );
        let d = evaluate(&i);
        assert_eq!(d[0].category, Category::Network);
        assert!(d[0].confidence > 0.8);
        assert!(d[0].explanation.contains("retransmit_rate"));
        // The callee's own latency explains the caller's: not the network.
        i.subject.metrics = vec![metric(m::CALLER_LATENCY_MS, 6.0, 200.0, true), metric(m::CALLEE_LATENCY_MS, 6.0, 195.0, true)];
        assert!(evaluate(&i).iter().all(|d| d.category != Category::Network));
    }

    #[test]
    fn cpu_memory_dns() {
        let i = input(SubjectKind::Service, "cart", vec![metric(m::CPU_THROTTLED_RATIO, 0.0, 0.4, true), metric(m::LATENCY_MEAN_MS, 5.0, 50.0, true)]);
        assert_eq!(top(&i), Category::CpuSaturation);
        let i = input(SubjectKind::Service, "cart", vec![metric(m::OOM_KILLS, 0.0, 2.0, true)]);
        assert_eq!(top(&i), Category::MemoryPressure);
        let i = input(SubjectKind::Service, "cart", vec![metric(m::DNS_ERROR_RATE, 0.0, 0.5, true)]);
        assert_eq!(top(&i), Category::DnsFailure);
        // Nothing anomalous: nothing to say.
        let i = input(SubjectKind::Service, "cart", vec![metric(m::CPU_THROTTLED_RATIO, 0.3, 0.3, false)]);
        assert!(evaluate(&i).is_empty());
    }

    #[test]
    fn node_with_two_hurt_services() {
        let mut i = input(SubjectKind::Node, "n2", vec![metric(m::NODE_CPU_RATIO, 0.4, 0.99, true)]);
        for s in ["cart", "product"] {
            i.neighbours.push(Neighbour {
                kind: SubjectKind::Service,
                id: s.into(),
                relation: Relation::Hosted,
                abnormal: true,
                score: 10.0,
                metrics: vec![],
                labels: vec![],
            });
        }
        let d = evaluate(&i);
        assert_eq!(d[0].category, Category::NodeSaturation);
        assert!(d[0].confidence >= 0.9);
        assert!(d[0].explanation.contains("cart, product"));
    }

    #[test]
    fn code_error_names_the_endpoint_and_yields_to_resources() {
        let mut i = input(SubjectKind::Service, "cart", vec![metric(m::ERROR_RATE, 0.001, 0.06, true)]);
        i.attributions.push(Attribution {
            kpi: m::ERROR_RATE.into(),
            elements: vec![("endpoint".into(), "/checkout".into())],
            explanatory_power: 0.98,
            before: 0.001,
            after: 0.2,
        });
        let d = evaluate(&i);
        assert_eq!(d[0].category, Category::CodeError);
        assert!(d[0].explanation.contains("endpoint=/checkout"));
        i.subject.metrics.push(metric(m::CPU_THROTTLED_RATIO, 0.0, 0.5, true));
        assert_eq!(top(&i), Category::CpuSaturation);
        assert!(evaluate(&i).iter().all(|d| d.category != Category::CodeError));
    }

    #[test]
    fn database_and_recent_change() {
        let mut i = input(SubjectKind::Service, "mysql", vec![metric(m::LATENCY_MEAN_MS, 2.0, 120.0, true)]);
        i.subject.labels.push(("kind".into(), "database".into()));
        assert_eq!(top(&i), Category::DatabaseSlow);
        i.changes.push(Change { at_ms: 3_600_000 - 120_000, subject: "mysql".into(), description: "schema migration".into() });
        assert!(evaluate(&i).iter().any(|d| d.category == Category::RecentChange && d.explanation.contains("schema migration")));
        // An hour-old change is not recent.
        i.changes[0].at_ms = 0;
        assert!(evaluate(&i).iter().all(|d| d.category != Category::RecentChange));
    }
}
