//! Live diagnosis: the daemon's own history of every golden-metric, resource and network
//! series it produces, a streaming detector on every service's KPIs, incidents, and the
//! root-cause engine (`sonde-analysis`) run on each incident with the sandboxed fault-tree
//! rules, exactly as `sonde analyze` runs on a bundle.
//!
//! ```text
//!  records ─► sample::StepAccumulator ─┐ every step_ms:
//!  /api/map edges ─► edges::EdgeRates ─┼─► history::History (ring per series, retention_steps)
//!  cgroups, /proc ─► resources ────────┘        │
//!                    detectors per service KPI ─┤ anomalous run ≥ open_after, and a rise that
//!                                               │ matters (min_* settings) → climb to the most
//!                                               │ upstream anomalous caller = the entry
//!                                               ▼
//!                    incident (open) ── window_steps later ──► Bundle from the history ──►
//!                    replay::analyze_bundle (attribution, demarcation, rules) ──► report,
//!                    + slow SQL and error-log templates of the window ──► /api/incidents
//! ```
//!
//! Memory: `retention_steps × max_series` points of 8 bytes for the series (defaults: 720 ×
//! 4000, at most 23 MiB; an hour at the default 5 s step) plus the same bound for endpoint
//! breakdowns, and `max_incidents` reports.
#![forbid(unsafe_code)]

mod board;
mod edges;
pub mod engine;
mod history;
mod resources;
mod sample;
pub mod series;
mod settings;
mod slow_sql;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use sonde_analysis::rules::RuleEngine;
use sonde_sdk::attributes as attr;
use sonde_sdk::protocol_parser::ConnInfo;

use sonde_netmap::export::Topology;
use sonde_parse::{Record, TaggedRecord};

pub use board::{
    Addresses, IncidentDetail, IncidentSummary, LeafKey, LiveBoard, LiveStats, LogSource,
    LogTemplate, ServiceFacts, SlowSql, TopCause,
};
pub use engine::{Engine, Extras, NoExtras, StepInput};
pub use history::History;
pub use sample::service_of;
pub use settings::{LiveSettings, MIN_OPEN_SECONDS};
use slow_sql::{SlowSample, slow_sql_of};

/// The daemon's live diagnosis: this node's records, map edges and resources turned into one
/// step's values for the shared [`Engine`]; the daemon loop owns it.
pub struct Live {
    engine: Engine,
    node: String,
    acc: sample::StepAccumulator,
    edges: edges::EdgeRates,
    resources: resources::Resources,
    slow: VecDeque<SlowSample>,
    slow_query_ms: f64,
    logs: Option<Box<dyn LogSource>>,
    addresses: BTreeMap<String, Addresses>,
    addresses_left_out: u64,
}

/// Slow SQL entries kept for reports.
const SLOW_KEPT: usize = 512;

/// The daemon's report extras: slow SQL and error-log templates of the involved services.
struct NodeExtras<'a> {
    slow: &'a VecDeque<SlowSample>,
    logs: Option<&'a dyn LogSource>,
}

impl Extras for NodeExtras<'_> {
    fn enrich(
        &self,
        detail: &mut IncidentDetail,
        involved: &BTreeSet<String>,
        from_ms: u64,
        now_ms: u64,
    ) {
        detail.slow_queries = slow_sql_of(self.slow, from_ms, involved, 20);
        if let Some(logs) = self.logs {
            let list: Vec<String> = involved.iter().cloned().collect();
            detail.log_templates = logs.error_templates(&list, from_ms, now_ms, 10);
        }
    }
}

impl Live {
    pub fn new(
        settings: LiveSettings,
        node: String,
        rules: Box<dyn RuleEngine + Send>,
        slow_query_ms: u64,
    ) -> Self {
        Self {
            engine: Engine::new(settings, rules),
            acc: sample::StepAccumulator::new(slow_query_ms),
            edges: edges::EdgeRates::default(),
            resources: resources::Resources::new(),
            slow: VecDeque::new(),
            slow_query_ms: slow_query_ms as f64,
            logs: None,
            node,
            addresses: BTreeMap::new(),
            addresses_left_out: 0,
        }
    }

    pub fn settings(&self) -> &LiveSettings {
        self.engine.settings()
    }

    pub fn set_log_source(&mut self, logs: Box<dyn LogSource>) {
        self.logs = Some(logs);
    }

    /// Account a batch of records (cheap: counters per service and endpoint).
    pub fn on_records(&mut self, records: &[TaggedRecord], now_unix_ms: u64) {
        for r in records {
            self.acc.record(&r.conn, &r.record);
            self.note_slow(&r.conn, &r.record, now_unix_ms);
        }
    }

    fn note_slow(&mut self, conn: &Arc<ConnInfo>, r: &Record, now_unix_ms: u64) {
        if !sample::is_db_call(conn, r) {
            return;
        }
        let Some(ms) = sample::latency_ms(r).filter(|ms| *ms >= self.slow_query_ms) else {
            return;
        };
        if self.slow.len() >= SLOW_KEPT {
            self.slow.pop_front();
        }
        self.slow.push_back(SlowSample {
            unix_ms: now_unix_ms,
            service: service_of(conn).to_string(),
            server: conn
                .remote
                .as_ref()
                .map(|e| format!("{}:{}", e.ip, e.port))
                .unwrap_or_default(),
            statement: r
                .attr(attr::DB_QUERY_TEXT)
                .unwrap_or(r.operation())
                .to_string(),
            ms,
            error: r.error().map(str::to_string),
        });
    }

    /// Close one step at `now_unix_ms`: this node's values into the engine (history,
    /// detection, incidents, due reports). Returns true when the incident list changed.
    pub fn step(&mut self, now_unix_ms: u64, topology: &Topology) -> bool {
        let settings = self.engine.settings();
        let step_s = settings.step_s();
        let values = self.acc.finish(step_s as f64, settings.min_requests);
        let (edge_values, calls) = self.edges.step(topology, step_s as f64);
        (self.addresses, self.addresses_left_out) = edges::addresses_of(topology);
        let pids: BTreeMap<String, Vec<u32>> = self
            .acc
            .known
            .iter()
            .map(|(k, v)| (k.clone(), v.pids.clone()))
            .collect();
        let resource_values = self.resources.step(&pids, &self.node, step_s as f64);
        let services = self
            .acc
            .known
            .iter()
            .map(|(name, info)| {
                let nodes = if info.pids.is_empty() {
                    BTreeSet::new()
                } else {
                    BTreeSet::from([self.node.clone()])
                };
                let facts = ServiceFacts {
                    protocol: info.protocol.clone(),
                    kind: info.kind.clone(),
                    nodes,
                    namespace: info.namespace.clone(),
                    pods: info.pods.iter().cloned().collect(),
                };
                (name.clone(), facts)
            })
            .collect();
        let input = StepInput {
            series: values
                .series
                .into_iter()
                .chain(edge_values)
                .chain(resource_values)
                .collect(),
            leaves: values.leaves,
            calls,
            services,
            nodes: BTreeSet::from([self.node.clone()]),
        };
        let extras = NodeExtras {
            slow: &self.slow,
            logs: self.logs.as_deref(),
        };
        self.engine.step(now_unix_ms, input, &extras)
    }

    /// The incidents, oldest first, the counters and the last step's values.
    pub fn board(&self) -> LiveBoard {
        LiveBoard {
            node: self.node.clone(),
            addresses: self.addresses.clone(),
            addresses_left_out: self.addresses_left_out,
            ..self.engine.board()
        }
    }

    /// Publish the last step onto `board`: all of it when the incidents changed, else the
    /// counters and values only (the reports are not copied every step).
    pub fn publish(&self, board: &mut LiveBoard, incidents_changed: bool) {
        if incidents_changed {
            *board = self.board();
            return;
        }
        board.stats = self.engine.stats().clone();
        board.latest = self.engine.latest();
        board.leaves = self.engine.latest_leaves();
        board.services.clone_from(self.engine.services());
        board.node.clone_from(&self.node);
        board.addresses.clone_from(&self.addresses);
        board.addresses_left_out = self.addresses_left_out;
    }

    /// The last step's finite values.
    pub fn latest(&self) -> Vec<(String, String, f64)> {
        self.engine.latest()
    }

    pub fn stats(&self) -> &LiveStats {
        self.engine.stats()
    }
}

#[cfg(test)]
mod tests;
