//! The detector and incident engine, shared by the daemon's live diagnosis (its values from
//! one node's records, map and cgroups: [`crate::Live`]) and the cluster hub (its values from
//! Prometheus: `sonde-hub`). One step's input is every series' value, the endpoint
//! breakdowns, the calls seen and the services with the nodes they run on; the engine keeps
//! the history, feeds a detector per service KPI, opens incidents at the topmost anomalous
//! caller, and `window_steps` later builds the bundle and runs
//! `sonde_analysis::replay::analyze_bundle` on it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sonde_analysis::demarcation::Element;
use sonde_analysis::detect::{DetectorConfig, Direction, ResidualDetector, Verdict};
use sonde_analysis::replay::{
    self, BreakdownSeries, Bundle, BundleSpec, CallSpec, IncidentSpec, NodeSpec, ServiceSpec,
};
use sonde_analysis::report::{AnalysisConfig, Report};
use sonde_analysis::rules::RuleEngine;
use sonde_sdk::fault_rule::metric::{Unit, unit};

use crate::board::{
    IncidentDetail, IncidentSummary, LeafKey, LiveBoard, LiveStats, ServiceFacts, TopCause,
};
use crate::history::History;
use crate::settings::LiveSettings;

/// One step's values, whoever measured them.
#[derive(Debug, Default, Clone)]
pub struct StepInput {
    /// `(entity, metric) → value`: entities `service:S`, `edge:A->B`, `node:N`.
    pub series: BTreeMap<(String, String), f64>,
    /// Endpoint breakdowns.
    pub leaves: Vec<(LeafKey, f64)>,
    /// Calls (caller, callee) with traffic this step.
    pub calls: Vec<(String, String)>,
    /// Services seen this step; merged into those seen before.
    pub services: BTreeMap<String, ServiceFacts>,
    /// Nodes seen this step.
    pub nodes: BTreeSet<String>,
}

/// What a report gets besides the engine's analysis (slow SQL, error-log templates): the
/// daemon has them, the hub not yet.
pub trait Extras {
    /// Add to `detail` what is known of `involved` services between `from_ms` and `now_ms`.
    fn enrich(
        &self,
        detail: &mut IncidentDetail,
        involved: &BTreeSet<String>,
        from_ms: u64,
        now_ms: u64,
    );
}

/// No extras.
pub struct NoExtras;

impl Extras for NoExtras {
    fn enrich(&self, _: &mut IncidentDetail, _: &BTreeSet<String>, _: u64, _: u64) {}
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

/// History, detectors and incidents.
pub struct Engine {
    settings: LiveSettings,
    series: History<(String, String)>,
    leaves: History<LeafKey>,
    /// Calls seen, with the last step they had traffic.
    calls: BTreeMap<(String, String), i64>,
    /// Services seen since start (bounded by what feeds them: the series caps).
    services: BTreeMap<String, ServiceFacts>,
    /// Nodes seen, with the last step they were.
    nodes: BTreeMap<String, i64>,
    watches: BTreeMap<(String, String), Watch>,
    rules: Box<dyn RuleEngine + Send>,
    analysis: AnalysisConfig,
    open: Vec<Open>,
    done: VecDeque<IncidentDetail>,
    stats: LiveStats,
}

impl Engine {
    pub fn new(settings: LiveSettings, rules: Box<dyn RuleEngine + Send>) -> Self {
        let steps = settings.retention_steps;
        Self {
            series: History::new(steps, settings.max_series),
            leaves: History::new(steps, settings.max_series),
            calls: BTreeMap::new(),
            services: BTreeMap::new(),
            nodes: BTreeMap::new(),
            watches: BTreeMap::new(),
            rules,
            analysis: AnalysisConfig::default(),
            open: Vec::new(),
            done: VecDeque::new(),
            stats: LiveStats::default(),
            settings,
        }
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    /// Close one step at `now_unix_ms` with its values: history, detection, incidents, due
    /// reports. Returns true when the incident list changed.
    pub fn step(&mut self, now_unix_ms: u64, input: StepInput, extras: &dyn Extras) -> bool {
        let started = std::time::Instant::now();
        let step_s = self.settings.step_s();
        let ts = (now_unix_ms / 1000) as i64;
        for (caller, callee) in input.calls {
            self.calls.insert((caller, callee), ts);
        }
        let horizon = ts - step_s * self.settings.retention_steps as i64;
        self.calls.retain(|_, last| *last >= horizon);
        for (name, facts) in input.services {
            let known = self.services.entry(name).or_default();
            if !facts.protocol.is_empty() {
                known.protocol = facts.protocol;
                known.kind = facts.kind;
            }
            if !facts.namespace.is_empty() {
                known.namespace = facts.namespace;
            }
            // The latest pods only: pods come and go.
            if !facts.pods.is_empty() {
                known.pods = facts.pods;
            }
            known.nodes.extend(facts.nodes);
        }
        for node in input.nodes {
            self.nodes.insert(node, ts);
        }
        self.nodes.retain(|_, last| *last >= horizon);

        self.detect(&input.series);
        self.series.push(ts, by_need(input.series));
        self.leaves.push(ts, input.leaves);

        let mut changed = self.open_incidents(ts, now_unix_ms);
        changed |= self.advance_incidents(ts, now_unix_ms, extras);
        self.stats.steps += 1;
        self.stats.series = self.series.series_count() + self.leaves.series_count();
        self.stats.points = self.series.points() + self.leaves.points();
        self.stats.series_refused = self.series.refused + self.leaves.refused;
        self.stats.incidents_open = self.open.len();
        self.stats.last_step_ms = started.elapsed().as_secs_f64() * 1e3;
        changed
    }

    /// The services seen, with what is known of them.
    pub fn services(&self) -> &BTreeMap<String, ServiceFacts> {
        &self.services
    }

    /// Feed every service KPI's detector with this step's value.
    fn detect(&mut self, values: &BTreeMap<(String, String), f64>) {
        for (name, info) in &self.services {
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
    /// same first root cause, it is merged back ([`Engine::merge_repeats`]).
    fn open_incidents(&mut self, ts: i64, now_ms: u64) -> bool {
        let step_s = self.settings.step_s();
        let mut triggers = Vec::new();
        for ((service, kpi), w) in &self.watches {
            let Some(v) = w.last else {
                continue;
            };
            if v.anomalous && v.run >= self.settings.open_after_steps() && self.significant(kpi, &v)
            {
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

    fn advance_incidents(&mut self, ts: i64, now_ms: u64, extras: &dyn Extras) -> bool {
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
                self.analyze(o, ts, now_ms, extras);
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

    /// An incident opened under another one (see [`Engine::open_incidents`]) whose first report
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
    /// nodes the services run on.
    fn bundle(&self, o: &Open, ts: i64) -> Bundle {
        let step_s = self.settings.step_s();
        let i = &o.detail.incident;
        let mut services: BTreeMap<String, ServiceSpec> = BTreeMap::new();
        for (name, info) in &self.services {
            let mut labels = BTreeMap::new();
            if !info.protocol.is_empty() {
                labels.insert("protocol".to_string(), info.protocol.clone());
            }
            if !info.kind.is_empty() {
                labels.insert("kind".to_string(), info.kind.clone());
            }
            if !info.namespace.is_empty() {
                labels.insert("namespace".to_string(), info.namespace.clone());
            }
            let nodes = info.nodes.iter().cloned().collect();
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
            nodes: self
                .nodes
                .keys()
                .map(|name| NodeSpec {
                    name: name.clone(),
                    labels: BTreeMap::new(),
                })
                .collect(),
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

    fn analyze(&mut self, o: &mut Open, ts: i64, now_ms: u64, extras: &dyn Extras) {
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
                    node: rc.placed.describe(),
                });
                d.incident.report_unix_ms = Some(now_ms);
                let involved = involved_services(&report);
                let from = d
                    .incident
                    .start_unix_ms
                    .saturating_sub(self.settings.step_ms);
                extras.enrich(d, &involved, from, now_ms);
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
            leaves: self.latest_leaves(),
            services: self.services.clone(),
            ..LiveBoard::default()
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

    /// The last step's finite breakdown values.
    pub fn latest_leaves(&self) -> Vec<(LeafKey, f64)> {
        self.leaves
            .keys()
            .map(|k| (k, self.leaves.last(k)))
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), v))
            .collect()
    }

    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }
}

/// A step's values in the order the history admits new series at its cap: services (an
/// incident's entry KPI is one), then nodes, then edges, whose count grows with the peers
/// seen and must never crowd a service out.
fn by_need(
    values: BTreeMap<(String, String), f64>,
) -> impl Iterator<Item = ((String, String), f64)> {
    let mut all: Vec<_> = values.into_iter().collect();
    all.sort_by_key(|((entity, _), _)| match entity.split_once(':') {
        Some(("service", _)) => 0,
        Some(("node", _)) => 1,
        _ => 2,
    });
    all.into_iter()
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
