//! `[live]` settings: history, detection and incidents, with their ranges.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sonde_sdk::fault_rule::metric as m;
use sonde_sdk::fault_rule::params::Settings;

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
    /// Anomalous steps in a row before an incident opens; never fewer than cover
    /// [`MIN_OPEN_SECONDS`] (so a 1-second step does not open on a 2-second blip).
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
    /// `[live.rules.<rule>]`: fault-rule parameters (thresholds, confidences) by rule name,
    /// e.g. `[live.rules.cpu-saturation] throttled_min = 0.1`. Checked against what the
    /// loaded rule components declare (`sonde rules`); unset ones keep their defaults.
    pub rules: Settings,
}

/// The shortest anomaly that opens an incident, whatever the step: two 1-second steps are a
/// scheduling blip on a busy node as often as a fault (the fault lab's single-node runs in CI
/// opened incidents on such 2-step blips of the gateway's mean latency: 2 of 3 false alarms
/// that day); at the default 5-second step `open_after` = 2 already covers it.
pub const MIN_OPEN_SECONDS: u64 = 3;

impl LiveSettings {
    /// Anomalous steps in a row before an incident opens: `open_after`, or more when those
    /// steps would last under [`MIN_OPEN_SECONDS`].
    pub fn open_after_steps(&self) -> u32 {
        let step_ms = self.step_ms.max(1);
        let cover = (MIN_OPEN_SECONDS * 1000).div_ceil(step_ms);
        self.open_after.max(cover as u32)
    }
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
            rules: Settings::new(),
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

    pub fn step_s(&self) -> i64 {
        (self.step_ms / 1000) as i64
    }
}
