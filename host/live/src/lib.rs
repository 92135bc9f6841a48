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

mod edges;
mod history;
mod resources;
mod sample;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sonde_analysis::demarcation::Element;
use sonde_analysis::detect::{DetectorConfig, Direction, ResidualDetector, Verdict};
use sonde_analysis::replay::{
    self, BreakdownSeries, Bundle, BundleSpec, CallSpec, IncidentSpec, NodeSpec, ServiceSpec,
};
use sonde_analysis::report::{AnalysisConfig, Report};
use sonde_analysis::rules::RuleEngine;
use sonde_sdk::attributes as attr;
use sonde_sdk::fault_rule::metric::{self as m, Unit, unit};
use sonde_sdk::protocol_parser::ConnInfo;

use sonde_netmap::export::Topology;
use sonde_parse::{Record, TaggedRecord};

pub use history::History;
pub use sample::service_of;

/// `[live]`: history, detection and incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSettings {
    /// Run the live diagnosis at all.
    pub enabled: bool,
    /// One point per series per step; whole seconds, at least 1000.
    pub step_ms: u64,
    /// Points kept per series (retention = step × this).
    pub retention_steps: usize,
    /// Series kept (services × metrics, edges × metrics, node); more are refused, counted.
    pub max_series: usize,
    /// A service with fewer requests in a step gives no latency or error-rate point for it.
    pub min_requests: u64,
    /// Service KPIs that can open an incident.
    pub kpis: Vec<String>,
    /// Steps a KPI's detector learns before it may open incidents.
    pub warmup_steps: u32,
    /// Anomalous steps in a row before an incident opens.
    pub open_after: u32,
    /// Normal steps in a row of the entry's KPIs before an incident is resolved.
    pub close_after: u32,
    /// Steps from the anomaly's start before the report is written (the analysis window).
    pub window_steps: u32,
    /// A latency rise must be at least this many ms and this share of the expected value to
    /// open an incident; an error-rate rise at least `min_error_rise` (absolute share).
    pub min_latency_rise_ms: f64,
    pub min_relative_rise: f64,
    pub min_error_rise: f64,
    /// Incidents kept (open and resolved); the oldest resolved go first.
    pub max_incidents: usize,
    /// Write each incident's bundle (its series, topology and breakdowns) here, so
    /// `sonde analyze <dir>/<id>` replays it.
    pub incident_dir: Option<PathBuf>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            step_ms: 5000,
            retention_steps: 720,
            max_series: 4000,
            min_requests: 5,
            // The p99 of one step is a handful of requests' maximum: too noisy to open
            // incidents on by default (it is still in the history and in reports).
            kpis: vec![m::ERROR_RATE.into(), m::LATENCY_MEAN_MS.into()],
            warmup_steps: 30,
            open_after: 2,
            close_after: 5,
            window_steps: 4,
            min_latency_rise_ms: 10.0,
            min_relative_rise: 0.5,
            min_error_rise: 0.02,
            max_incidents: 200,
            incident_dir: None,
        }
    }
}

impl LiveSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.step_ms >= 1000 && self.step_ms.is_multiple_of(1000),
            "live.step_ms must be whole seconds, at least 1000 (got {})",
            self.step_ms
        );
        anyhow::ensure!(
            self.retention_steps >= 16,
            "live.retention_steps must be at least 16"
        );
        anyhow::ensure!(
            self.window_steps >= 1,
            "live.window_steps must be at least 1"
        );
        anyhow::ensure!(self.open_after >= 1, "live.open_after must be at least 1");
        for k in &self.kpis {
            anyhow::ensure!(
                [
                    m::ERROR_RATE,
                    m::LATENCY_MEAN_MS,
                    m::LATENCY_P99_MS,
                    m::REQUEST_RATE
                ]
                .contains(&k.as_str()),
                "live.kpis: {k:?} is not error_rate, latency_mean_ms, latency_p99_ms or request_rate"
            );
        }
        Ok(())
    }

    fn step_s(&self) -> i64 {
        (self.step_ms / 1000) as i64
    }
}

/// The first root cause, for lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopCause {
    pub element: Element,
    pub category: String,
    pub confidence: f64,
    pub explanation: String,
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

/// One slow database operation as it was seen.
#[derive(Debug, Clone)]
struct SlowSample {
    unix_ms: u64,
    service: String,
    server: String,
    statement: String,
    ms: f64,
    error: Option<String>,
}

/// Slow samples since `from` of the `involved` services, one row per (service, server,
/// statement), slowest first.
fn slow_sql_of(
    samples: &VecDeque<SlowSample>,
    from: u64,
    involved: &BTreeSet<String>,
    limit: usize,
) -> Vec<SlowSql> {
    let mut rows: BTreeMap<(&str, &str, &str), SlowSql> = BTreeMap::new();
    for q in samples
        .iter()
        .filter(|q| q.unix_ms >= from && involved.contains(&q.service))
    {
        let row = rows
            .entry((&q.service, &q.server, &q.statement))
            .or_insert_with(|| SlowSql {
                service: q.service.clone(),
                server: q.server.clone(),
                statement: q.statement.clone(),
                count: 0,
                mean_ms: 0.0,
                max_ms: 0.0,
                errors: 0,
                last_error: None,
                last_unix_ms: 0,
            });
        row.count += 1;
        row.mean_ms += (q.ms - row.mean_ms) / row.count as f64;
        row.max_ms = row.max_ms.max(q.ms);
        if q.error.is_some() {
            row.errors += 1;
            row.last_error.clone_from(&q.error);
        }
        row.last_unix_ms = row.last_unix_ms.max(q.unix_ms);
    }
    let mut out: Vec<SlowSql> = rows.into_values().collect();
    out.sort_by(|a, b| {
        b.max_ms
            .total_cmp(&a.max_ms)
            .then_with(|| b.count.cmp(&a.count))
    });
    out.truncate(limit);
    out
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

/// What the daemon publishes for the HTTP endpoint.
#[derive(Debug, Clone, Default)]
pub struct LiveBoard {
    pub incidents: Vec<IncidentDetail>,
    pub stats: LiveStats,
    /// The last step's value of every series (`/api/live`): (entity, metric, value).
    pub latest: Vec<(String, String, f64)>,
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

struct Watch {
    detector: ResidualDetector,
    last: Option<Verdict>,
}

struct Open {
    detail: IncidentDetail,
    start_ts: i64,
    normal_run: u32,
    /// The (service, KPI) anomalies this incident accounts for: the one that opened it and
    /// those that joined before its report. Another anomaly under it opens a new incident.
    known: BTreeSet<(String, String)>,
}

/// The live engine; the daemon loop owns it.
pub struct Live {
    settings: LiveSettings,
    node: String,
    acc: sample::StepAccumulator,
    edges: edges::EdgeRates,
    resources: resources::Resources,
    series: History<(String, String)>,
    leaves: History<sample::LeafKey>,
    /// Calls seen, with the last step they had traffic.
    calls: BTreeMap<(String, String), i64>,
    watches: BTreeMap<(String, String), Watch>,
    rules: Box<dyn RuleEngine + Send>,
    analysis: AnalysisConfig,
    open: Vec<Open>,
    done: VecDeque<IncidentDetail>,
    slow: VecDeque<SlowSample>,
    slow_query_ms: f64,
    logs: Option<Box<dyn LogSource>>,
    stats: LiveStats,
}

/// Slow SQL entries kept for reports.
const SLOW_KEPT: usize = 512;

impl Live {
    pub fn new(
        settings: LiveSettings,
        node: String,
        rules: Box<dyn RuleEngine + Send>,
        slow_query_ms: u64,
    ) -> Self {
        let steps = settings.retention_steps;
        Self {
            acc: sample::StepAccumulator::new(slow_query_ms),
            edges: edges::EdgeRates::default(),
            resources: resources::Resources::new(),
            series: History::new(steps, settings.max_series),
            leaves: History::new(steps, settings.max_series),
            calls: BTreeMap::new(),
            watches: BTreeMap::new(),
            rules,
            analysis: AnalysisConfig::default(),
            open: Vec::new(),
            done: VecDeque::new(),
            slow: VecDeque::new(),
            slow_query_ms: slow_query_ms as f64,
            logs: None,
            stats: LiveStats::default(),
            settings,
            node,
        }
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
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

    /// Close one step at `now_unix_ms`: history, detection, incidents, due reports. Returns
    /// true when the incident list changed.
    pub fn step(&mut self, now_unix_ms: u64, topology: &Topology) -> bool {
        let started = std::time::Instant::now();
        let step_s = self.settings.step_s();
        let ts = (now_unix_ms / 1000) as i64;
        let values = self.acc.finish(step_s as f64, self.settings.min_requests);
        let (edge_values, calls) = self.edges.step(topology, step_s as f64);
        let pids: BTreeMap<String, Vec<u32>> = self
            .acc
            .known
            .iter()
            .map(|(k, v)| (k.clone(), v.pids.clone()))
            .collect();
        let resource_values = self.resources.step(&pids, &self.node, step_s as f64);
        for (caller, callee) in calls {
            self.calls.insert((caller, callee), ts);
        }
        let horizon = ts - step_s * self.settings.retention_steps as i64;
        self.calls.retain(|_, last| *last >= horizon);

        let step_values: BTreeMap<(String, String), f64> = values
            .series
            .into_iter()
            .chain(edge_values)
            .chain(resource_values)
            .collect();
        self.detect(&step_values);
        self.series.push(ts, step_values);
        self.leaves.push(ts, values.leaves);

        let mut changed = self.open_incidents(ts, now_unix_ms);
        changed |= self.advance_incidents(ts, now_unix_ms);
        self.stats.steps += 1;
        self.stats.series = self.series.series_count() + self.leaves.series_count();
        self.stats.points = self.series.points() + self.leaves.points();
        self.stats.series_refused = self.series.refused + self.leaves.refused;
        self.stats.incidents_open = self.open.len();
        self.stats.last_step_ms = started.elapsed().as_secs_f64() * 1e3;
        changed
    }

    /// Feed every service KPI's detector with this step's value.
    fn detect(&mut self, values: &BTreeMap<(String, String), f64>) {
        for (name, info) in &self.acc.known {
            if info.protocol.is_empty() {
                continue;
            }
            for kpi in &self.settings.kpis {
                let key = (name.clone(), kpi.clone());
                let v = values
                    .get(&(format!("service:{name}"), kpi.clone()))
                    .copied()
                    .unwrap_or(f64::NAN);
                let watch = self.watches.entry(key).or_insert_with(|| Watch {
                    detector: ResidualDetector::new(Direction::for_metric(kpi)),
                    last: None,
                });
                let cfg = DetectorConfig {
                    warmup: self.settings.warmup_steps,
                    ..DetectorConfig::for_metric(kpi)
                };
                let verdict = watch.detector.update(v, &cfg);
                // No value this step (too few requests): no verdict either way.
                watch.last = v.is_finite().then_some(verdict);
            }
        }
    }

    /// Whether a verdict's rise is worth an incident (the detector knows "unusual", this
    /// knows "matters").
    fn significant(&self, kpi: &str, v: &Verdict) -> bool {
        let rise = v.value - v.expected;
        match unit(kpi) {
            Unit::Ratio => rise >= self.settings.min_error_rise,
            Unit::Milliseconds => {
                rise >= self.settings.min_latency_rise_ms
                    && rise >= self.settings.min_relative_rise * v.expected.abs()
            }
            _ => (rise.abs()) >= self.settings.min_relative_rise * v.expected.abs(),
        }
    }

    /// The service's anomalous KPIs this step, worst first: (kpi, badness, run).
    fn anomalies(&self, service: &str) -> Vec<(String, f64, u32)> {
        let mut out: Vec<(String, f64, u32)> = self
            .settings
            .kpis
            .iter()
            .filter_map(|kpi| {
                let w = self.watches.get(&(service.to_string(), kpi.clone()))?;
                let v = w.last.filter(|v| v.anomalous)?;
                Some((
                    kpi.clone(),
                    Direction::for_metric(kpi).badness(v.score),
                    v.run,
                ))
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// From an anomalous service, up through anomalous callers to the topmost one.
    fn entry_of(&self, service: &str) -> String {
        let mut at = service.to_string();
        let mut visited = BTreeSet::from([at.clone()]);
        loop {
            let next = self
                .calls
                .keys()
                .filter(|(_, callee)| *callee == at)
                .filter(|(caller, _)| !visited.contains(caller))
                .filter_map(|(caller, _)| {
                    self.anomalies(caller)
                        .first()
                        .map(|a| (caller.clone(), a.1))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
            match next {
                Some((caller, _)) => {
                    visited.insert(caller.clone());
                    at = caller;
                }
                None => return at,
            }
        }
    }

    /// What an incident at `entry` covers: the entry and everything it calls.
    fn reach(&self, entry: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut queue = vec![entry.to_string()];
        while let Some(s) = queue.pop() {
            if out.insert(s.clone()) {
                queue.extend(
                    self.calls
                        .keys()
                        .filter(|(c, _)| *c == s)
                        .map(|(_, callee)| callee.clone()),
                );
            }
        }
        out
    }

    /// Until its report, an open incident takes in every anomaly under it: one fault shows in
    /// several services and KPIs within its first steps.
    /// `reaches[i]` is what `self.open[i]` covers.
    fn gather_onsets(&mut self, reaches: &[BTreeSet<String>]) {
        for (i, reach) in reaches.iter().enumerate() {
            if self.open[i].detail.report.is_some() {
                continue;
            }
            let anomalous: Vec<(String, String)> = reach
                .iter()
                .flat_map(|s| {
                    self.anomalies(s)
                        .into_iter()
                        .map(move |(kpi, _, _)| (s.clone(), kpi))
                })
                .collect();
            self.open[i].known.extend(anomalous);
        }
    }

    /// An anomaly that an open incident under whose reach it falls does not account for is a
    /// new fault (a second one during the first, or the first one changing): it opens an
    /// incident of its own, which names the open one as its parent. If its report finds the
    /// same first root cause, it is merged back ([`Live::merge_repeats`]).
    fn open_incidents(&mut self, ts: i64, now_ms: u64) -> bool {
        let step_s = self.settings.step_s();
        let mut triggers = Vec::new();
        for ((service, kpi), w) in &self.watches {
            let Some(v) = w.last else {
                continue;
            };
            if v.anomalous && v.run >= self.settings.open_after && self.significant(kpi, &v) {
                triggers.push((service.clone(), kpi.clone(), v.run));
            }
        }
        // What each open incident covers, in `self.open`'s order (kept in step as it grows).
        let mut reaches: Vec<BTreeSet<String>> = self
            .open
            .iter()
            .map(|o| self.reach(&o.detail.incident.entry))
            .collect();
        self.gather_onsets(&reaches);
        let mut changed = false;
        for (service, kpi, run) in triggers {
            let entry = self.entry_of(&service);
            let pair = (service.clone(), kpi.clone());
            let covering: Vec<usize> = (0..self.open.len())
                .filter(|i| reaches[*i].contains(&service) || reaches[*i].contains(&entry))
                .collect();
            if covering.iter().any(|i| self.open[*i].known.contains(&pair)) {
                continue;
            }
            if let Some(i) = covering
                .iter()
                .find(|i| self.open[**i].detail.report.is_none())
            {
                self.open[*i].known.insert(pair);
                continue;
            }
            let parent = covering
                .last()
                .map(|i| self.open[*i].detail.incident.id.clone());
            // The entry's worst anomaly that no covering incident accounts for.
            let (entry_kpi, entry_run) = self
                .anomalies(&entry)
                .into_iter()
                .find(|(k, _, _)| {
                    !covering
                        .iter()
                        .any(|i| self.open[*i].known.contains(&(entry.clone(), k.clone())))
                })
                .map(|(k, _, r)| (k, r))
                .filter(|_| entry != service)
                .unwrap_or((kpi.clone(), run));
            let start_ts = ts - step_s * (i64::from(entry_run.max(run)) - 1);
            let mut id = format!("{}-{}", start_ts, entry);
            if self.open.iter().any(|o| o.detail.incident.id == id) {
                id = format!("{id}-{kpi}");
            }
            tracing::info!(incident = %id, entry = %entry, kpi = %entry_kpi, trigger = %service, parent = ?parent, "incident opened");
            let mut known = BTreeSet::from([pair]);
            known.insert((entry.clone(), entry_kpi.clone()));
            self.stats.incidents_opened += 1;
            reaches.push(self.reach(&entry));
            self.open.push(Open {
                detail: IncidentDetail {
                    incident: IncidentSummary {
                        id,
                        entry,
                        kpi: entry_kpi,
                        trigger: service,
                        start_unix_ms: start_ts as u64 * 1000,
                        opened_unix_ms: now_ms,
                        report_unix_ms: None,
                        resolved_unix_ms: None,
                        state: "open".into(),
                        top_cause: None,
                        parent,
                    },
                    report: None,
                    slow_queries: Vec::new(),
                    log_templates: Vec::new(),
                    bundle_dir: None,
                    error: None,
                    merged: Vec::new(),
                },
                start_ts,
                normal_run: 0,
                known,
            });
            changed = true;
        }
        changed
    }

    fn advance_incidents(&mut self, ts: i64, now_ms: u64) -> bool {
        let step_s = self.settings.step_s();
        let window = step_s * i64::from(self.settings.window_steps);
        let mut changed = false;
        let mut reported = Vec::new();
        let mut open = std::mem::take(&mut self.open);
        for o in &mut open {
            let entry = o.detail.incident.entry.clone();
            // Normal again when none of the entry's anomalies it accounts for remains (another
            // anomaly of the entry is another incident's).
            let normal = self
                .anomalies(&entry)
                .into_iter()
                .all(|(kpi, _, _)| !o.known.contains(&(entry.clone(), kpi)));
            o.normal_run = if normal { o.normal_run + 1 } else { 0 };
            let resolving = o.normal_run >= self.settings.close_after;
            if o.detail.report.is_none()
                && o.detail.error.is_none()
                && (ts >= o.start_ts + window || resolving)
            {
                self.analyze(o, ts, now_ms);
                if o.detail.report.is_some() {
                    reported.push(o.detail.incident.id.clone());
                }
                changed = true;
            }
            if resolving {
                o.detail.incident.state = "resolved".into();
                o.detail.incident.resolved_unix_ms = Some(now_ms);
                tracing::info!(incident = %o.detail.incident.id, "incident resolved");
                changed = true;
            }
        }
        changed |= self.merge_repeats(&mut open, &reported);
        for o in open {
            if o.detail.incident.state == "resolved" {
                self.done.push_back(o.detail);
            } else {
                self.open.push(o);
            }
        }
        while self.done.len() + self.open.len() > self.settings.max_incidents
            && !self.done.is_empty()
        {
            self.done.pop_front();
        }
        changed
    }

    /// An incident opened under another one (see [`Live::open_incidents`]) whose first report
    /// names the same first root cause element is the same fault seen again (say a slow
    /// backend whose callers now also time out): it is folded into its parent.
    fn merge_repeats(&mut self, open: &mut Vec<Open>, reported: &[String]) -> bool {
        let mut changed = false;
        let mut i = 0;
        while i < open.len() {
            let child = &open[i].detail.incident;
            let parent_of_same_cause = child
                .parent
                .as_ref()
                .filter(|_| reported.contains(&child.id))
                .zip(child.top_cause.as_ref())
                .and_then(|(parent, cause)| {
                    open.iter().position(|p| {
                        p.detail.incident.id == *parent
                            && p.detail
                                .incident
                                .top_cause
                                .as_ref()
                                .is_some_and(|c| c.element == cause.element)
                    })
                });
            let Some(p) = parent_of_same_cause else {
                i += 1;
                continue;
            };
            let child = open.remove(i);
            let p = if p > i { p - 1 } else { p };
            tracing::info!(
                incident = %child.detail.incident.id,
                into = %open[p].detail.incident.id,
                "incident merged: same first root cause as the incident it arose under"
            );
            open[p].known.extend(child.known);
            open[p].detail.merged.push(child.detail.incident);
            self.stats.incidents_merged += 1;
            changed = true;
        }
        changed
    }

    /// The incident's bundle: every series of the history, the calls and services seen, one
    /// node (this one).
    fn bundle(&self, o: &Open, ts: i64) -> Bundle {
        let step_s = self.settings.step_s();
        let i = &o.detail.incident;
        let mut services: BTreeMap<String, ServiceSpec> = BTreeMap::new();
        for (name, info) in &self.acc.known {
            let mut labels = BTreeMap::new();
            if !info.protocol.is_empty() {
                labels.insert("protocol".to_string(), info.protocol.clone());
            }
            if !info.kind.is_empty() {
                labels.insert("kind".to_string(), info.kind.clone());
            }
            let nodes = if info.pids.is_empty() {
                Vec::new()
            } else {
                vec![self.node.clone()]
            };
            services.insert(
                name.clone(),
                ServiceSpec {
                    name: name.clone(),
                    labels,
                    nodes,
                },
            );
        }
        for (caller, callee) in self.calls.keys() {
            for s in [caller, callee] {
                services.entry(s.clone()).or_insert_with(|| ServiceSpec {
                    name: s.clone(),
                    ..Default::default()
                });
            }
        }
        let spec = BundleSpec {
            incident: IncidentSpec {
                id: Some(i.id.clone()),
                entry: i.entry.clone(),
                kpi: i.kpi.clone(),
                start: Some(o.start_ts),
                window: Some((ts - o.start_ts + step_s).max(step_s)),
                slo: None,
            },
            services: services.into_values().collect(),
            nodes: vec![NodeSpec {
                name: self.node.clone(),
                labels: BTreeMap::new(),
            }],
            calls: self
                .calls
                .keys()
                .map(|(caller, callee)| CallSpec {
                    caller: caller.clone(),
                    callee: callee.clone(),
                    labels: BTreeMap::new(),
                })
                .collect(),
            changes: Vec::new(),
        };
        let series = self
            .series
            .all_finite()
            .filter(|(_, p)| !p.is_empty())
            .map(|(k, p)| (k.clone(), p))
            .collect();
        let breakdowns = self
            .leaves
            .all_finite()
            .filter(|(_, p)| !p.is_empty())
            .map(
                |((service, measure, dimensions, values), points)| BreakdownSeries {
                    service: service.clone(),
                    measure: measure.clone(),
                    dimensions: dimensions.clone(),
                    values: values.clone(),
                    points,
                },
            )
            .collect();
        Bundle {
            spec,
            series,
            breakdowns,
        }
    }

    fn analyze(&mut self, o: &mut Open, ts: i64, now_ms: u64) {
        let started = std::time::Instant::now();
        let bundle = self.bundle(o, ts);
        let id = o.detail.incident.id.clone();
        if let Some(dir) = &self.settings.incident_dir {
            let path = dir.join(&id);
            match bundle.write(&path) {
                Ok(()) => o.detail.bundle_dir = Some(path.display().to_string()),
                Err(e) => tracing::warn!(incident = %id, error = %e, "incident bundle not written"),
            }
        }
        match replay::analyze_bundle(&bundle, self.rules.as_mut(), &self.analysis) {
            Ok(report) => {
                let d = &mut o.detail;
                d.incident.top_cause = report.root_causes.first().map(|rc| TopCause {
                    element: rc.element.clone(),
                    category: rc.category.clone(),
                    confidence: rc.confidence,
                    explanation: rc.explanation.clone(),
                });
                d.incident.report_unix_ms = Some(now_ms);
                let involved = involved_services(&report);
                let from = d
                    .incident
                    .start_unix_ms
                    .saturating_sub(self.settings.step_ms);
                let slow = slow_sql_of(&self.slow, from, &involved, 20);
                d.slow_queries = slow;
                if let Some(logs) = &self.logs {
                    let list: Vec<String> = involved.iter().cloned().collect();
                    d.log_templates = logs.error_templates(&list, from, now_ms, 10);
                }
                tracing::info!(
                    incident = %id,
                    cause = ?d.incident.top_cause.as_ref().map(|c| (c.element.id(), c.category.clone())),
                    "incident report ready"
                );
                d.report = Some(report);
                self.stats.reports += 1;
            }
            Err(e) => {
                tracing::warn!(incident = %id, error = %e, "incident analysis failed");
                o.detail.error = Some(e.to_string());
                self.stats.analysis_errors += 1;
            }
        }
        self.stats.last_analysis_ms = started.elapsed().as_secs_f64() * 1e3;
    }

    /// The incidents, oldest first, and the counters.
    pub fn board(&self) -> LiveBoard {
        let incidents = self
            .done
            .iter()
            .cloned()
            .chain(self.open.iter().map(|o| o.detail.clone()))
            .collect();
        LiveBoard {
            incidents,
            stats: self.stats.clone(),
            latest: self.latest(),
        }
    }

    /// The last step's finite values.
    pub fn latest(&self) -> Vec<(String, String, f64)> {
        self.series
            .keys()
            .map(|k| (k, self.series.last(k)))
            .filter(|(_, v)| v.is_finite())
            .map(|((e, m), v)| (e.clone(), m.clone(), v))
            .collect()
    }

    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }
}

/// Services named by the report's root causes and propagation path (a database a root-cause
/// service calls counts: slow SQL is its evidence).
fn involved_services(report: &Report) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(report.incident.entry.clone());
    for rc in report.root_causes.iter().take(3) {
        for e in std::iter::once(&rc.element).chain(&rc.propagation) {
            match e {
                Element::Service { name } => {
                    out.insert(name.clone());
                }
                Element::Edge { caller, callee } => {
                    out.insert(caller.clone());
                    out.insert(callee.clone());
                }
                Element::Node { .. } => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
