//! The cluster hub (`sonde hub`): one per cluster, it reads every node daemon's live series
//! from Prometheus over its HTTP API, builds the cluster model per step and runs the same
//! engine the daemons run ([`sonde_live::Engine`]: history, detectors, incidents, reports
//! through `sonde_analysis::replay::analyze_bundle`) over the whole cluster.
//!
//! ```text
//!  daemons' /metrics ──scrape──► Prometheus (or Thanos, Mimir, VictoriaMetrics)
//!                                     │ every step: one instant query per family
//!                                     │ (6, whatever the number of nodes and services);
//!                                     │ at start: one range query per family (backfill)
//!                                     ▼
//!  promql::Client ─► model::assemble (merge one entity seen on several nodes) ─► StepInput
//!        ─► Engine::step ─► incidents, reports ─► /api/incidents;  model::topology ─► /api/map
//! ```
#![forbid(unsafe_code)]

pub mod model;
pub mod promql;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use sonde_analysis::rules::RuleEngine;
use sonde_live::series;
use sonde_live::{Engine, LiveBoard, LiveSettings, NoExtras, StepInput};
use sonde_metrics::Exposition;
use sonde_netmap::export::Topology;

use model::Families;
use promql::{Client, Series};

/// The families read each step: (name in the hub's counters, metric name). Each is one
/// selector; the hub's query count per step is this list's length.
pub const FAMILIES: [(&str, &str); 6] = [
    ("service_info", series::SERVICE_INFO),
    ("service_value", series::SERVICE_VALUE),
    ("edge_value", series::EDGE_VALUE),
    ("node_value", series::NODE_VALUE),
    ("endpoint_value", series::ENDPOINT_VALUE),
    ("service_address_info", series::SERVICE_ADDRESS_INFO),
];

/// The hub's own counters (its `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct HubStats {
    pub steps: u64,
    /// Steps skipped because a query failed (no partial cluster is fed to the detectors).
    pub steps_failed: u64,
    /// Queries made and failed, per family and kind (`instant`, `range`).
    pub queries: BTreeMap<(String, &'static str), u64>,
    pub query_errors: BTreeMap<(String, &'static str), u64>,
    /// Queries of the last step (independent of the cluster's size).
    pub last_step_queries: u64,
    /// Series the last step read, and how long it took (queries and engine).
    pub last_step_series: u64,
    pub last_step_seconds: f64,
    /// Steps fed from the range queries at start.
    pub backfilled_steps: u64,
    pub last_error: Option<String>,
}

/// The hub: a PromQL client and the shared engine.
pub struct Hub {
    client: Client,
    engine: Engine,
    stats: HubStats,
    topology: Topology,
}

impl Hub {
    pub fn new(client: Client, settings: LiveSettings, rules: Box<dyn RuleEngine + Send>) -> Self {
        Self {
            client,
            engine: Engine::new(settings, rules),
            stats: HubStats::default(),
            topology: Topology::default(),
        }
    }

    fn step_s(&self) -> u64 {
        self.engine.settings().step_s().max(1) as u64
    }

    /// One query per family, all of the same kind; the first error fails the lot (counted
    /// per family, said in one line).
    async fn read(
        &mut self,
        kind: &'static str,
        range: Option<(f64, f64)>,
        at: f64,
    ) -> Result<Families> {
        let step_s = self.step_s();
        let mut answers: Vec<Vec<Series>> = Vec::with_capacity(FAMILIES.len());
        for (name, metric) in FAMILIES {
            *self
                .stats
                .queries
                .entry((name.to_string(), kind))
                .or_default() += 1;
            let answer = match range {
                Some((start, end)) => self.client.range(metric, start, end, step_s).await,
                None => self.client.instant(metric, at).await,
            };
            match answer {
                Ok(a) => answers.push(a),
                Err(e) => {
                    *self
                        .stats
                        .query_errors
                        .entry((name.to_string(), kind))
                        .or_default() += 1;
                    let line = format!("{kind} query {metric}: {e:#}");
                    self.stats.last_error = Some(line.clone());
                    anyhow::bail!(line);
                }
            }
        }
        let mut it = answers.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(Families {
            service_info: next(),
            service_values: next(),
            edge_values: next(),
            node_values: next(),
            endpoint_values: next(),
            service_addresses: next(),
        })
    }

    /// Fill the history from Prometheus' past `steps` steps (one range query per family), so
    /// the detectors are warm when the hub starts rather than `warmup_steps` later.
    pub async fn backfill(&mut self, now_ms: u64, steps: u64) -> Result<()> {
        let step_s = self.step_s();
        let end = (now_ms / 1000 / step_s * step_s) as f64 - step_s as f64;
        let start = end - (steps.saturating_sub(1) * step_s) as f64;
        let families = self.read("range", Some((start, end)), 0.0).await?;
        for (t, input) in model::assemble(&families) {
            self.engine.step(t as u64, input, &NoExtras);
            self.stats.backfilled_steps += 1;
        }
        Ok(())
    }

    /// One step at `now_ms`: read every family at that instant, build the cluster's step and
    /// run the engine. Returns whether the incident list changed; a failed query skips the
    /// step (counted, logged once per step in one line).
    pub async fn step(&mut self, now_ms: u64) -> bool {
        let started = Instant::now();
        let before: u64 = self.stats.queries.values().sum();
        let families = self.read("instant", None, now_ms as f64 / 1e3).await;
        self.stats.last_step_queries = self.stats.queries.values().sum::<u64>() - before;
        let families = match families {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("hub step skipped: {e:#}");
                self.stats.steps_failed += 1;
                self.stats.last_step_seconds = started.elapsed().as_secs_f64();
                return false;
            }
        };
        self.stats.last_step_series = [
            &families.service_info,
            &families.service_values,
            &families.edge_values,
            &families.node_values,
            &families.endpoint_values,
            &families.service_addresses,
        ]
        .iter()
        .map(|f| f.len() as u64)
        .sum();
        // An instant query's points all carry its time: one step (or none, when nothing is
        // scraped yet: the history still advances).
        let input: StepInput = model::assemble(&families)
            .into_values()
            .next_back()
            .unwrap_or_default();
        let changed = self.engine.step(now_ms, input.clone(), &NoExtras);
        self.topology = model::topology(&input, self.engine.services(), self.step_s());
        self.stats.steps += 1;
        self.stats.last_step_seconds = started.elapsed().as_secs_f64();
        changed
    }

    pub fn board(&self) -> LiveBoard {
        self.engine.board()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The hub's own series.
pub fn render_stats(s: &HubStats, ex: &mut Exposition) {
    {
        let mut c = ex.counter(
            "sonde_hub_queries_total",
            "PromQL queries the hub made, per family and kind (instant each step, range at start).",
        );
        for ((family, kind), n) in &s.queries {
            c.sample([("family", family.as_str()), ("kind", *kind)], *n);
        }
    }
    {
        let mut c = ex.counter(
            "sonde_hub_query_errors_total",
            "PromQL queries that failed (HTTP, PromQL, timeout), per family and kind.",
        );
        for ((family, kind), n) in &s.query_errors {
            c.sample([("family", family.as_str()), ("kind", *kind)], *n);
        }
    }
    ex.counter("sonde_hub_steps_total", "Hub steps run.")
        .sample((), s.steps);
    ex.counter(
        "sonde_hub_steps_failed_total",
        "Hub steps skipped because a query failed.",
    )
    .sample((), s.steps_failed);
    ex.counter(
        "sonde_hub_backfilled_steps_total",
        "Steps fed from range queries at start.",
    )
    .sample((), s.backfilled_steps);
    ex.gauge(
        "sonde_hub_step_queries",
        "Queries of the last step (one per family, whatever the cluster's size).",
    )
    .sample((), s.last_step_queries);
    ex.gauge("sonde_hub_step_series", "Series the last step read.")
        .sample((), s.last_step_series);
    ex.gauge(
        "sonde_hub_step_duration_seconds",
        "How long the last step took (queries and engine).",
    )
    .sample((), s.last_step_seconds);
}

/// How long one query may take by default.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
