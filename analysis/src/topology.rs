//! The graph the engine walks: services (with call edges between them) and the machines they
//! run on, each carrying its metrics summarised over the incident as [`MetricWindow`]s.
//!
//! Everything is keyed by name in ordered maps so that a walk, and therefore a report, is
//! deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::{DetectorConfig, Direction, detect_series};
use crate::rules::Change;

/// One metric of an entity summarised over an incident.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricWindow {
    /// The detector's expected value when the incident started.
    pub before: f64,
    /// Mean value over the incident window.
    pub after: f64,
    /// Largest badness score (residual in scales, in the metric's bad direction) in the window.
    pub score: f64,
    /// The detector flagged the metric during the window.
    pub anomalous: bool,
}

impl MetricWindow {
    /// A window from known numbers (tests, live data already scored by the daemon).
    pub fn new(before: f64, after: f64, score: f64, anomalous: bool) -> Self {
        Self {
            before,
            after,
            score,
            anomalous,
        }
    }

    /// Summarise a series: the detector runs over all of it, `start` is the index of the first
    /// point of the incident window and `len` its length.
    pub fn from_series(metric: &str, values: &[f64], start: usize, len: usize) -> Option<Self> {
        Self::from_samples(metric, values, start, len, None)
    }

    /// [`from_series`](Self::from_series) for samples `step_secs` apart: the detector's
    /// setting for coarse or fine samples ([`DetectorConfig::for_samples`]).
    pub fn from_samples(
        metric: &str,
        values: &[f64],
        start: usize,
        len: usize,
        step_secs: Option<i64>,
    ) -> Option<Self> {
        if values.is_empty() || start >= values.len() {
            return None;
        }
        let cfg = DetectorConfig::for_samples(metric, step_secs);
        let dir = Direction::for_metric(metric);
        let verdicts = detect_series(values, dir, &cfg);
        let end = (start + len.max(1)).min(values.len());
        let window = &verdicts[start..end];
        let finite: Vec<f64> = window
            .iter()
            .map(|v| v.value)
            .filter(|v| v.is_finite())
            .collect();
        let after = if finite.is_empty() {
            f64::NAN
        } else {
            finite.iter().sum::<f64>() / finite.len() as f64
        };
        // A series that often scores over the threshold in normal times (a sparse, noisy
        // one) needs a larger score to be evidence now: scores are divided by how far its
        // usual extremes (the 99th percentile of its past badness) exceed the threshold.
        let surprise = usual_extreme(&verdicts[..start], dir) / cfg.threshold;
        let surprise = surprise.max(1.0);
        let score = window
            .iter()
            .map(|v| dir.badness(v.score))
            .fold(0.0, f64::max)
            / surprise;
        // A single anomalous point in a long window is a blip, not a symptom: ask for two, or
        // one when the window is that short.
        let needed = if window.len() >= 3 { 2 } else { 1 };
        let anomalous = window
            .iter()
            .filter(|v| v.anomalous && dir.badness(v.score) / surprise > cfg.threshold)
            .count()
            >= needed;
        Some(Self {
            before: verdicts[start].expected,
            after,
            score,
            anomalous,
        })
    }

    /// Relative change, `after / before - 1`, with a zero baseline giving ±∞ or 0.
    pub fn change(&self) -> f64 {
        if self.before == 0.0 {
            if self.after == 0.0 {
                0.0
            } else {
                f64::INFINITY.copysign(self.after)
            }
        } else {
            self.after / self.before - 1.0
        }
    }
}

/// The 99th percentile of the badness of past verdicts after warm-up (0 with too few).
fn usual_extreme(history: &[crate::detect::Verdict], dir: Direction) -> f64 {
    let warm = DetectorConfig::default().warmup as usize;
    let mut past: Vec<f64> = history
        .iter()
        .skip(warm)
        .filter(|v| v.value.is_finite())
        .map(|v| dir.badness(v.score))
        .collect();
    if past.len() < 20 {
        return 0.0;
    }
    past.sort_by(f64::total_cmp);
    past[((past.len() - 1) as f64 * 0.99).round() as usize]
}

/// A breakdown of one service KPI by dimensions, for attribution: one row per leaf with its
/// value before and during the incident. For ratio KPIs `den_before`/`den_after` hold the
/// denominator (requests for an error rate or a mean latency).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// The KPI, a metric name such as `error_rate` or `request_rate`.
    pub kpi: String,
    pub dimensions: Vec<String>,
    pub rows: Vec<BreakdownRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakdownRow {
    pub values: Vec<String>,
    pub before: f64,
    pub after: f64,
    /// Denominators for a ratio KPI; `None` for an additive one.
    pub den_before: Option<f64>,
    pub den_after: Option<f64>,
}

/// A service, a machine or a call edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub labels: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, MetricWindow>,
    /// Attribution inputs, services only.
    pub breakdowns: Vec<Breakdown>,
}

impl Entity {
    pub fn metric(&self, name: &str) -> Option<&MetricWindow> {
        self.metrics.get(name)
    }

    pub fn with_metric(mut self, name: &str, window: MetricWindow) -> Self {
        self.metrics.insert(name.to_string(), window);
        self
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
}

/// Services, machines, call edges (`caller -> callee`) and placements (service → machines).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub services: BTreeMap<String, Entity>,
    pub nodes: BTreeMap<String, Entity>,
    pub edges: BTreeMap<(String, String), Entity>,
    pub placement: BTreeMap<String, Vec<String>>,
    pub changes: Vec<Change>,
}

impl Topology {
    pub fn add_service(&mut self, name: &str, entity: Entity) -> &mut Self {
        self.services.insert(name.to_string(), entity);
        self
    }

    pub fn add_node(&mut self, name: &str, entity: Entity) -> &mut Self {
        self.nodes.insert(name.to_string(), entity);
        self
    }

    /// Adds a call edge; the caller and callee services are created empty if missing.
    pub fn add_call(&mut self, caller: &str, callee: &str, entity: Entity) -> &mut Self {
        for s in [caller, callee] {
            self.services.entry(s.to_string()).or_default();
        }
        self.edges
            .insert((caller.to_string(), callee.to_string()), entity);
        self
    }

    pub fn place(&mut self, service: &str, node: &str) -> &mut Self {
        self.nodes.entry(node.to_string()).or_default();
        let nodes = self.placement.entry(service.to_string()).or_default();
        if !nodes.iter().any(|n| n == node) {
            nodes.push(node.to_string());
            nodes.sort();
        }
        self
    }

    /// Services `service` calls, in name order.
    pub fn callees<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.edges
            .keys()
            .filter(move |(caller, _)| caller == service)
            .map(|(_, callee)| callee.as_str())
    }

    /// Services that call `service`, in name order.
    pub fn callers<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.edges
            .keys()
            .filter(move |(_, callee)| callee == service)
            .map(|(caller, _)| caller.as_str())
    }

    pub fn hosts(&self, service: &str) -> &[String] {
        self.placement
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Services placed on `node`, in name order.
    pub fn hosted<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.placement
            .iter()
            .filter(move |(_, nodes)| nodes.iter().any(|n| n == node))
            .map(|(service, _)| service.as_str())
    }

    pub fn edge(&self, caller: &str, callee: &str) -> Option<&Entity> {
        self.edges.get(&(caller.to_string(), callee.to_string()))
    }
}

/// The id of an edge in reports and rule inputs.
pub fn edge_id(caller: &str, callee: &str) -> String {
    format!("{caller}->{callee}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_from_series_scores_the_incident() {
        let mut v = vec![20.0; 40];
        v.extend([20.0, 80.0, 85.0, 90.0, 82.0]);
        let w = MetricWindow::from_series("latency_p99_ms", &v, 41, 4).unwrap();
        assert!(w.anomalous);
        assert!((w.before - 20.0).abs() < 1e-9);
        assert!((w.after - 84.25).abs() < 1e-9);
        assert!(w.score > 10.0);
        let calm = MetricWindow::from_series("latency_p99_ms", &vec![20.0; 45], 41, 4).unwrap();
        assert!(!calm.anomalous);
        assert_eq!(calm.score, 0.0);
    }

    #[test]
    fn a_noisy_series_needs_a_larger_score() {
        // A sparse series that crosses the threshold every few points in normal times: the
        // same jump is much weaker evidence there than on a quiet series.
        let quiet: Vec<f64> = (0..200).map(|i| 20.0 + (i % 3) as f64).collect();
        let noisy: Vec<f64> = (0..200)
            .map(|i| {
                if i % 7 == 0 {
                    90.0
                } else {
                    20.0 + (i % 3) as f64
                }
            })
            .collect();
        let mut q = quiet.clone();
        let mut n = noisy.clone();
        q.extend([60.0, 62.0, 61.0]);
        n.extend([60.0, 62.0, 61.0]);
        let wq = MetricWindow::from_series("latency_mean_ms", &q, 200, 3).unwrap();
        let wn = MetricWindow::from_series("latency_mean_ms", &n, 200, 3).unwrap();
        assert!(wq.anomalous);
        assert!(wn.score < wq.score / 2.0, "{wn:?} vs {wq:?}");
    }

    #[test]
    fn neighbours_are_in_name_order() {
        let mut t = Topology::default();
        t.add_call("gw", "b", Entity::default())
            .add_call("gw", "a", Entity::default());
        t.add_call("x", "a", Entity::default());
        t.place("a", "n1").place("b", "n1");
        assert_eq!(t.callees("gw").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t.callers("a").collect::<Vec<_>>(), ["gw", "x"]);
        assert_eq!(t.hosted("n1").collect::<Vec<_>>(), ["a", "b"]);
    }
}
