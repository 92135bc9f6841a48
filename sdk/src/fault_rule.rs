//! The `fault-rule` world: a fault-tree rule looks at one candidate (a service, a call edge or a
//! machine) that the analysis engine found abnormal during an incident, together with the status
//! of its neighbours, and returns diagnoses: a fault category, a confidence, the evidence and a
//! one-sentence explanation.
//!
//! Metrics are passed by name (see [`metric`] for the vocabulary the daemon fills in), each with
//! its value before the incident, its value during it, and whether the engine's detector found
//! it anomalous. Rules must treat a missing metric as "unknown", never as zero.

use serde::{Deserialize, Serialize};

pub mod helpers;
pub mod params;

use params::{Params, RuleSpec};

/// What kind of thing a [`Subject`] or [`Neighbour`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    /// A service (workload): RED metrics on its server side, resource metrics of its containers.
    Service,
    /// A call edge `caller -> callee`: caller-side and callee-side RED metrics and the network
    /// metrics of the connections between them.
    Edge,
    /// A machine (node) that hosts services.
    Node,
}

/// How a neighbour relates to the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    /// The subject (a service) calls this neighbour (a service).
    Downstream,
    /// This neighbour (a service) calls the subject.
    Upstream,
    /// The subject (a service) runs on this neighbour (a node).
    Host,
    /// This neighbour (a service) runs on the subject (a node).
    Hosted,
    /// The neighbour is the calling service of the subject (an edge).
    Caller,
    /// The neighbour is the called service of the subject (an edge).
    Callee,
}

/// One named metric of a subject or neighbour over the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// A name from [`metric`] (or a plugin-specific one).
    pub name: String,
    /// Typical value before the incident (the detector's baseline).
    pub before: f64,
    /// Value during the incident.
    pub after: f64,
    /// Whether the detector flagged this metric as anomalous during the incident.
    pub anomalous: bool,
}

/// The candidate a rule is asked about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub kind: SubjectKind,
    /// Service name, `caller->callee` for an edge, node name for a machine.
    pub id: String,
    pub metrics: Vec<Metric>,
    /// Free labels: `protocol` (http, mysql, dns…), `namespace`, `kind` (e.g. `database`).
    pub labels: Vec<(String, String)>,
}

/// A neighbour of the subject in the topology and whether the engine found it abnormal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    pub kind: SubjectKind,
    pub id: String,
    pub relation: Relation,
    pub abnormal: bool,
    /// The engine's anomaly score for this neighbour (0 = normal; larger = more abnormal).
    pub score: f64,
    pub metrics: Vec<Metric>,
    pub labels: Vec<(String, String)>,
}

/// A dimension-value combination that explains part of a KPI change at the subject,
/// found by dimensional attribution (e.g. `endpoint=/checkout` explains 97% of new errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// The KPI that was attributed, a [`metric`] name such as `error_rate`.
    pub kpi: String,
    /// `(dimension, value)` pairs, all of which hold for the explaining leaves.
    pub elements: Vec<(String, String)>,
    /// Share of the KPI change this combination explains (can exceed 1 when others offset it).
    pub explanatory_power: f64,
    pub before: f64,
    pub after: f64,
}

/// A change event near the incident (a deploy, a config reload, a plugin swap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The service, node or edge the change applies to.
    pub subject: String,
    pub description: String,
}

/// The incident under analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    /// The service where the anomaly was first seen.
    pub entry: String,
    /// The KPI that opened the incident, a [`metric`] name.
    pub kpi: String,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
}

/// Everything a rule sees about one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleInput {
    pub incident: Incident,
    pub subject: Subject,
    pub neighbours: Vec<Neighbour>,
    pub attributions: Vec<Attribution>,
    pub changes: Vec<Change>,
}

/// Fault categories of the default tree; operators' rules may add their own with `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Packet loss, retransmits, RTT or drops on a call edge.
    Network,
    /// The subject is slow or failing because a service it calls is.
    DownstreamSlow,
    /// CPU throttling or saturation of the service's containers.
    CpuSaturation,
    /// Memory pressure: usage near the limit, OOM kills, reclaim.
    MemoryPressure,
    /// The machine itself is saturated and every service on it suffers.
    NodeSaturation,
    /// A database dependency is slow or failing (slow queries, errors).
    DatabaseSlow,
    /// Name resolution fails or is slow.
    DnsFailure,
    /// The service's own code returns errors on specific operations, without resource symptoms.
    CodeError,
    /// A recent change (deploy, config) lines up with the incident.
    RecentChange,
    Other(String),
}

impl Category {
    /// A stable kebab-case name (`network`, `cpu-saturation`, …; `Other` gives its own text).
    pub fn name(&self) -> &str {
        match self {
            Category::Network => "network",
            Category::DownstreamSlow => "downstream-slow",
            Category::CpuSaturation => "cpu-saturation",
            Category::MemoryPressure => "memory-pressure",
            Category::NodeSaturation => "node-saturation",
            Category::DatabaseSlow => "database-slow",
            Category::DnsFailure => "dns-failure",
            Category::CodeError => "code-error",
            Category::RecentChange => "recent-change",
            Category::Other(name) => name,
        }
    }
}

/// One fact a diagnosis rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub metric: String,
    pub before: f64,
    pub after: f64,
    pub note: String,
}

/// A rule's verdict on a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub category: Category,
    /// 0..=1.
    pub confidence: f64,
    pub evidence: Vec<Evidence>,
    /// One sentence for a human, e.g. "Packet loss between cart and redis: retransmits 0 → 41/s".
    pub explanation: String,
}

/// What a rule component says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub name: String,
    pub version: String,
    pub categories: Vec<Category>,
}

/// A fault-tree rule. Implement it on a unit struct and export it with the SDK's export macro.
pub trait FaultRule {
    fn info() -> RuleInfo;
    /// Diagnoses for one candidate; an empty list means "not my kind of fault".
    fn evaluate(input: &RuleInput) -> Vec<Diagnosis>;
    /// The rules of this component that have tunable parameters (thresholds, confidences),
    /// each with its defaults and ranges. The daemon checks `[live.rules.<rule>]` against
    /// these and refuses anything else. None by default.
    fn parameters() -> &'static [RuleSpec] {
        &[]
    }
    /// [`evaluate`](Self::evaluate) with the configured parameter values (checked against
    /// [`parameters`](Self::parameters); unset ones have their defaults). A rule with
    /// parameters implements this and has `evaluate` call it with `&Params::default()`.
    fn evaluate_with(input: &RuleInput, params: &Params) -> Vec<Diagnosis> {
        let _ = params;
        Self::evaluate(input)
    }
}

/// The metric names the daemon fills in. Latencies are in milliseconds, rates per second,
/// ratios in 0..=1.
pub mod metric {
    /// What a metric's value is measured in, read from its name's suffix (`_ratio` and
    /// `error_rate`: a share in 0..=1; `_ms`; other `_rate`: per second; `_cores`). The one
    /// place that knows the convention: detector floors and every formatter use it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Unit {
        Ratio,
        Milliseconds,
        PerSecond,
        Cores,
        Other,
    }

    pub fn unit(name: &str) -> Unit {
        if name.ends_with("_ratio") || name.ends_with("error_rate") {
            Unit::Ratio
        } else if name.ends_with("_ms") {
            Unit::Milliseconds
        } else if name.ends_with("_rate") {
            Unit::PerSecond
        } else if name.ends_with("_cores") {
            Unit::Cores
        } else {
            Unit::Other
        }
    }

    // Service (server side) and edge (caller side / callee side) RED metrics.
    pub const REQUEST_RATE: &str = "request_rate";
    pub const ERROR_RATE: &str = "error_rate";
    pub const LATENCY_MEAN_MS: &str = "latency_mean_ms";
    pub const LATENCY_P99_MS: &str = "latency_p99_ms";
    // Edge: the same call measured at each end.
    pub const CALLER_LATENCY_MS: &str = "caller_latency_ms";
    pub const CALLEE_LATENCY_MS: &str = "callee_latency_ms";
    pub const CALLER_ERROR_RATE: &str = "caller_error_rate";
    pub const CALLEE_ERROR_RATE: &str = "callee_error_rate";
    // Edge network quality.
    pub const RETRANSMIT_RATE: &str = "retransmit_rate";
    pub const RTT_MS: &str = "rtt_ms";
    pub const DROP_RATE: &str = "drop_rate";
    pub const CONNECT_FAIL_RATE: &str = "connect_fail_rate";
    pub const RESET_RATE: &str = "reset_rate";
    // Service containers.
    pub const CPU_USAGE_CORES: &str = "cpu_usage_cores";
    pub const CPU_THROTTLED_RATIO: &str = "cpu_throttled_ratio";
    /// The containers' CPU limit (quota / period), when they have one.
    pub const CPU_LIMIT_CORES: &str = "cpu_limit_cores";
    pub const MEMORY_USAGE_RATIO: &str = "memory_usage_ratio";
    pub const OOM_KILLS: &str = "oom_kills";
    // Node.
    pub const NODE_CPU_RATIO: &str = "node_cpu_ratio";
    pub const NODE_MEMORY_RATIO: &str = "node_memory_ratio";
    pub const NODE_RUNQUEUE_DELAY_MS: &str = "node_runqueue_delay_ms";
    pub const SOFTIRQ_DELAY_MS: &str = "softirq_delay_ms";
    // Dependencies seen from the calling service.
    pub const DB_QUERY_LATENCY_MS: &str = "db_query_latency_ms";
    pub const DB_SLOW_QUERY_RATE: &str = "db_slow_query_rate";
    pub const DB_ERROR_RATE: &str = "db_error_rate";
    pub const DNS_ERROR_RATE: &str = "dns_error_rate";
    pub const DNS_LATENCY_MS: &str = "dns_latency_ms";
}

/// Look up a metric by name.
pub fn find<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a Metric> {
    metrics.iter().find(|m| m.name == name)
}

/// Conversions between the generated WIT types and the plain ones (wasm32 only).
#[cfg(all(target_arch = "wasm32", feature = "fault-rule"))]
#[doc(hidden)]
pub mod wit {
    use super::*;
    use crate::__fault_rule_bindings::sonde::plugin::fault_params as p;
    use crate::__fault_rule_bindings::sonde::plugin::fault_types as w;

    fn kind(k: w::SubjectKind) -> SubjectKind {
        match k {
            w::SubjectKind::Service => SubjectKind::Service,
            w::SubjectKind::Edge => SubjectKind::Edge,
            w::SubjectKind::Node => SubjectKind::Node,
        }
    }

    fn relation(r: w::Relation) -> Relation {
        match r {
            w::Relation::Downstream => Relation::Downstream,
            w::Relation::Upstream => Relation::Upstream,
            w::Relation::Host => Relation::Host,
            w::Relation::Hosted => Relation::Hosted,
            w::Relation::Caller => Relation::Caller,
            w::Relation::Callee => Relation::Callee,
        }
    }

    fn metrics(ms: Vec<w::Metric>) -> Vec<Metric> {
        ms.into_iter()
            .map(|m| Metric {
                name: m.name,
                before: m.before,
                after: m.after,
                anomalous: m.anomalous,
            })
            .collect()
    }

    pub fn input_from_wit(i: w::RuleInput) -> RuleInput {
        RuleInput {
            incident: Incident {
                id: i.incident.id,
                entry: i.incident.entry,
                kpi: i.incident.kpi,
                started_at_ms: i.incident.started_at_ms,
            },
            subject: Subject {
                kind: kind(i.subject.kind),
                id: i.subject.id,
                metrics: metrics(i.subject.metrics),
                labels: i.subject.labels,
            },
            neighbours: i
                .neighbours
                .into_iter()
                .map(|n| Neighbour {
                    kind: kind(n.kind),
                    id: n.id,
                    relation: relation(n.relation),
                    abnormal: n.abnormal,
                    score: n.score,
                    metrics: metrics(n.metrics),
                    labels: n.labels,
                })
                .collect(),
            attributions: i
                .attributions
                .into_iter()
                .map(|a| Attribution {
                    kpi: a.kpi,
                    elements: a.elements,
                    explanatory_power: a.explanatory_power,
                    before: a.before,
                    after: a.after,
                })
                .collect(),
            changes: i
                .changes
                .into_iter()
                .map(|c| Change {
                    at_ms: c.at_ms,
                    subject: c.subject,
                    description: c.description,
                })
                .collect(),
        }
    }

    pub fn category_to_wit(c: Category) -> w::Category {
        match c {
            Category::Network => w::Category::Network,
            Category::DownstreamSlow => w::Category::DownstreamSlow,
            Category::CpuSaturation => w::Category::CpuSaturation,
            Category::MemoryPressure => w::Category::MemoryPressure,
            Category::NodeSaturation => w::Category::NodeSaturation,
            Category::DatabaseSlow => w::Category::DatabaseSlow,
            Category::DnsFailure => w::Category::DnsFailure,
            Category::CodeError => w::Category::CodeError,
            Category::RecentChange => w::Category::RecentChange,
            Category::Other(s) => w::Category::Other(s),
        }
    }

    pub fn diagnosis_to_wit(d: Diagnosis) -> w::Diagnosis {
        w::Diagnosis {
            category: category_to_wit(d.category),
            confidence: d.confidence,
            evidence: d
                .evidence
                .into_iter()
                .map(|e| w::Evidence {
                    metric: e.metric,
                    before: e.before,
                    after: e.after,
                    note: e.note,
                })
                .collect(),
            explanation: d.explanation,
        }
    }

    pub fn info_to_wit(i: RuleInfo) -> w::RuleInfo {
        w::RuleInfo {
            name: i.name,
            version: i.version,
            categories: i.categories.into_iter().map(category_to_wit).collect(),
        }
    }

    /// The values `configure` accepted (a component instance is single-threaded; the mutex
    /// only satisfies `static`).
    static PARAMS: std::sync::Mutex<Option<params::Params>> = std::sync::Mutex::new(None);

    fn current_params() -> params::Params {
        PARAMS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    pub fn parameters<R: FaultRule>() -> Vec<p::RuleParams> {
        R::parameters()
            .iter()
            .map(|r| p::RuleParams {
                rule: r.name.into(),
                doc: r.doc.into(),
                params: r
                    .params
                    .iter()
                    .map(|x| p::ParamSpec {
                        name: x.name.into(),
                        default: x.default,
                        min: x.min,
                        max: x.max,
                        doc: x.doc.into(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Checks the values against [`FaultRule::parameters`] and keeps them for `evaluate`.
    pub fn configure<R: FaultRule>(
        settings: Vec<(String, Vec<(String, f64)>)>,
    ) -> Result<(), String> {
        let checked = params::Params::new(R::parameters(), &params::settings_from_list(settings))?;
        *PARAMS.lock().unwrap_or_else(|e| e.into_inner()) = Some(checked);
        Ok(())
    }

    pub fn evaluate<R: FaultRule>(inputs: Vec<w::RuleInput>) -> Vec<Vec<w::Diagnosis>> {
        let params = current_params();
        inputs
            .into_iter()
            .map(|i| {
                R::evaluate_with(&input_from_wit(i), &params)
                    .into_iter()
                    .map(diagnosis_to_wit)
                    .collect()
            })
            .collect()
    }
}
