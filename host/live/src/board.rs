//! What the live engine publishes: incident summaries and reports (`/api/incidents`,
//! `sonde incidents`, `sonde report`), its counters, the latest values, and the source of
//! error-log templates it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sonde_analysis::demarcation::Element;
use sonde_analysis::report::Report;

/// (side, address) pairs of one service: `server` and `ip:port`, or `client` and `ip`.
pub type Addresses = BTreeSet<(String, String)>;

/// The first root cause, for lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopCause {
    pub element: Element,
    pub category: String,
    pub confidence: f64,
    pub explanation: String,
    /// The node(s) it is on (`node-c`, `node-a,node-b`), when the placement says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// An incident in the exception event list (`/api/incidents`, `sonde incidents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentSummary {
    pub id: String,
    /// The service whose users see the problem (the most upstream anomalous one).
    pub entry: String,
    pub kpi: String,
    /// The service whose anomaly opened the incident.
    pub trigger: String,
    /// When the anomaly started (its first anomalous step), and when it was confirmed.
    pub start_unix_ms: u64,
    pub opened_unix_ms: u64,
    pub report_unix_ms: Option<u64>,
    pub resolved_unix_ms: Option<u64>,
    /// `open` or `resolved`.
    pub state: String,
    pub top_cause: Option<TopCause>,
    /// The open incident this one arose under (a second fault during it, or it changing).
    #[serde(default)]
    pub parent: Option<String>,
}

/// A statement that was at least `slow_query_ms` slow during the incident, from one service to
/// one server: how often, how slow on average and at worst.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowSql {
    pub service: String,
    pub server: String,
    pub statement: String,
    pub count: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
    /// Of these, the ones that failed, with the last error.
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_unix_ms: u64,
}

/// Error-log lines of one template, from one service, during the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogTemplate {
    pub service: String,
    pub template: String,
    pub count: u64,
    pub sample: String,
}

/// What `/api/incidents/<id>` serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetail {
    pub incident: IncidentSummary,
    pub report: Option<Report>,
    /// Slow SQL of the services on the propagation path and the databases they call.
    pub slow_queries: Vec<SlowSql>,
    /// Error-log templates of the services involved, most frequent first.
    pub log_templates: Vec<LogTemplate>,
    /// Where the incident's bundle was written (replay it with `sonde analyze`).
    pub bundle_dir: Option<String>,
    /// The analysis could not run (kept so the incident still says why it has no report).
    pub error: Option<String>,
    /// Later incidents under this one whose report found the same first root cause, folded
    /// into it (they are not listed on their own).
    #[serde(default)]
    pub merged: Vec<IncidentSummary>,
}

impl IncidentDetail {
    /// The report as a person reads it.
    pub fn to_text(&self) -> String {
        let i = &self.incident;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Incident {} [{}] entry {} ({}), opened by {}",
            i.id, i.state, i.entry, i.kpi, i.trigger
        );
        if let Some(parent) = &i.parent {
            let _ = writeln!(s, "Arose while incident {parent} was open");
        }
        if let Some(at) = i.report_unix_ms {
            let _ = writeln!(
                s,
                "Report {:.1} s after the anomaly started",
                at.saturating_sub(i.start_unix_ms) as f64 / 1e3
            );
        }
        match &self.report {
            Some(r) => s.push_str(&r.to_text()),
            None => {
                let _ = writeln!(
                    s,
                    "No report yet{}",
                    self.error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
        }
        if !self.slow_queries.is_empty() {
            let _ = writeln!(s, "Slow SQL:");
            for q in self.slow_queries.iter().take(5) {
                let _ = writeln!(
                    s,
                    "  {:>5}×  mean {:>7.1} ms  max {:>7.1} ms  {} → {}  {}",
                    q.count, q.mean_ms, q.max_ms, q.service, q.server, q.statement
                );
                if let Some(e) = &q.last_error {
                    let _ = writeln!(s, "         {} failed, last: {e}", q.errors);
                }
            }
        }
        if !self.log_templates.is_empty() {
            let _ = writeln!(s, "Error logs:");
            for t in self.log_templates.iter().take(5) {
                let _ = writeln!(s, "  {} lines in {}: `{}`", t.count, t.service, t.template);
            }
        }
        for m in &self.merged {
            let _ = writeln!(
                s,
                "Also: {} of {} turned anomalous {:.1} s in; same first root cause (merged {})",
                m.kpi,
                m.trigger,
                m.start_unix_ms.saturating_sub(i.start_unix_ms) as f64 / 1e3,
                m.id
            );
        }
        if let Some(dir) = &self.bundle_dir {
            let _ = writeln!(s, "Bundle: {dir} (replay: sonde analyze {dir})");
        }
        s
    }
}

/// Counters of the live engine, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStats {
    pub steps: u64,
    pub series: usize,
    pub points: usize,
    pub series_refused: u64,
    pub incidents_opened: u64,
    /// Incidents folded into the one they arose under (same first root cause).
    pub incidents_merged: u64,
    pub incidents_open: usize,
    pub reports: u64,
    pub analysis_errors: u64,
    pub last_step_ms: f64,
    pub last_analysis_ms: f64,
}

/// Breakdown key: (service, measure, dimension names, dimension values).
pub type LeafKey = (String, String, Vec<String>, Vec<String>);

/// What is known of a service: its protocol as a server, and the nodes it runs on.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ServiceFacts {
    /// Protocol of its server-side records (`http`, `mysql`…); empty for a pure client, whose
    /// KPIs are not watched.
    pub protocol: String,
    /// `database` when it answers a database protocol.
    pub kind: String,
    /// The nodes its processes run on (where machine causes attach).
    pub nodes: BTreeSet<String>,
    /// Its Kubernetes namespace and the pods of its latest processes (at most 8), when the
    /// correlation layer knows them.
    pub namespace: String,
    pub pods: BTreeSet<String>,
}

/// What the daemon publishes for the HTTP endpoint.
#[derive(Debug, Clone, Default)]
pub struct LiveBoard {
    pub incidents: Vec<IncidentDetail>,
    pub stats: LiveStats,
    /// The last step's value of every series (`/api/live`, and the `sonde_live_*_value`
    /// series a hub reads): (entity, metric, value).
    pub latest: Vec<(String, String, f64)>,
    /// The last step's endpoint breakdowns (`sonde_live_endpoint_value`).
    pub leaves: Vec<(LeafKey, f64)>,
    /// The services seen (`sonde_live_service_info`).
    pub services: BTreeMap<String, ServiceFacts>,
    /// The node these values are from (empty on the hub, whose values span nodes).
    pub node: String,
    /// Where this node's services are reached (`server`, `ip:port`) and call from (`client`,
    /// `ip`), per service (`sonde_live_service_address_info`), and how many addresses the
    /// per-service cap left out in the last step.
    pub addresses: BTreeMap<String, Addresses>,
    pub addresses_left_out: u64,
}

impl LiveBoard {
    pub fn summaries(&self) -> Vec<IncidentSummary> {
        self.incidents.iter().map(|d| d.incident.clone()).collect()
    }

    pub fn detail(&self, id: &str) -> Option<&IncidentDetail> {
        self.incidents.iter().find(|d| d.incident.id == id)
    }
}

/// Supplies error-log templates of services over a time range (the log miner).
pub trait LogSource: Send {
    fn error_templates(
        &self,
        services: &[String],
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Vec<LogTemplate>;
}
