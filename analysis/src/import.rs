//! Import per-service metrics that Sonde did not collect: a long CSV of samples, an optional
//! call-edge list, and an optional list of incidents, into [`Bundle`]s the engine analyses.
//!
//! The layout (bench/rca-public/README.md and docs/analyze.md describe it for users):
//!
//! ```text
//! <dir>/metrics.csv     time,service,metric,value        (one row per sample)
//! <dir>/edges.csv       caller,callee                    (optional: the call graph)
//! <dir>/cases.csv       id,entry,kpi,root_cause,window_start,window_end,injected_at
//!                       (optional: several incidents on one timeline; root_cause and
//!                       injected_at may be empty)
//! ```
//!
//! `time` is unix seconds (integer or decimal). `service` may be `caller->callee` for a metric
//! of a call edge measured at the caller (`caller_latency_ms`, `caller_error_rate`); the edge
//! joins the call graph. `metric` is a name of the fault-rule vocabulary
//! (`latency_p99_ms`, `cpu_usage_cores`, …) or one of the short aliases of [`metric_name`]:
//! `latency_p50` … `latency_p999` (any percentile, milliseconds), `latency_mean`, `cpu`
//! (cores), `cpu_limit` (cores), `mem` (bytes), `mem_limit` (bytes), `req_rate` (per second),
//! `error_rate` (0..1). Memory with a limit becomes `memory_usage_ratio`; without one it stays
//! in bytes (`memory_bytes`). A service that only appears in `edges.csv` is still part of the
//! topology.
//!
//! One timeline carries as many incidents as `cases.csv` lists: each is analysed with
//! everything before its window as history, and in detect mode the incident opens where the
//! entry KPI's detector opens one inside the case's window (see [`Timeline::detect`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::detect::{DetectorConfig, Direction, IncidentPolicy, ResidualDetector};
use crate::replay::{
    Bundle, BundleSpec, CallSpec, IncidentSpec, ReplayError, ServiceSpec, parse_csv,
};

/// An anomaly on the entry KPI that lasts this long opens an incident, even in fewer samples
/// than the debounce's `open_after` when samples are that coarse.
pub const OPEN_AFTER_SECS: i64 = 120;

/// Memory used and its limit at one time, either possibly missing.
type MemSample = (Option<f64>, Option<f64>);

/// One incident on a timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub entry: String,
    pub kpi: String,
    /// The known root-cause service, when the data is labelled.
    pub root_cause: Option<String>,
    /// `[window_start, window_end)`, unix seconds: where to look for the incident.
    pub window_start: i64,
    pub window_end: i64,
    /// When the fault was injected, when known.
    pub injected_at: Option<i64>,
}

/// Per-service samples over time, the call graph, and the incidents on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// (`service:<name>`, metric) → samples sorted by time.
    pub series: BTreeMap<(String, String), Vec<(i64, f64)>>,
    pub edges: Vec<(String, String)>,
    pub cases: Vec<Case>,
}

/// The engine's metric name for a user's metric name (aliases of the import layout).
pub fn metric_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "latency" | "latency_mean" | "latency_avg" => return "latency_mean_ms".into(),
        "cpu" | "cpu_cores" => return "cpu_usage_cores".into(),
        "cpu_limit" => return "cpu_limit_cores".into(),
        "mem" | "memory" | "mem_bytes" => return "memory_bytes".into(),
        "mem_limit" | "memory_limit" => return "memory_limit_bytes".into(),
        "req_rate" | "requests" | "rps" => return "request_rate".into(),
        "errors" | "error_ratio" => return "error_rate".into(),
        _ => {}
    }
    if let Some(p) = n.strip_prefix("latency_p")
        && !p.is_empty()
        && p.chars().all(|c| c.is_ascii_digit())
    {
        return format!("latency_p{p}_ms");
    }
    n
}

fn read(path: &Path) -> Result<String, ReplayError> {
    fs::read_to_string(path).map_err(|source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Rows after the header (checked against `expected`), with 1-based line numbers; fields
/// split as every CSV of `sonde analyze` is ([`crate::replay::parse_csv`]).
fn rows(
    path: &Path,
    text: &str,
    expected: &[&str],
) -> Result<Vec<(usize, Vec<String>)>, ReplayError> {
    Ok(parse_csv(path, text, Some(expected))?.1)
}

fn time(path: &Path, line: usize, s: &str) -> Result<i64, ReplayError> {
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| f.round() as i64))
        .ok_or_else(|| ReplayError::Csv {
            path: path.to_path_buf(),
            line,
            message: format!("time {s:?} is not unix seconds"),
        })
}

impl Timeline {
    /// Read `metrics.csv`, and `edges.csv` and `cases.csv` when present.
    pub fn load(dir: &Path) -> Result<Timeline, ReplayError> {
        let path = dir.join("metrics.csv");
        let mut t = Timeline::parse_metrics(&path, &read(&path)?)?;
        let edges = dir.join("edges.csv");
        if edges.is_file() {
            for (_, f) in rows(&edges, &read(&edges)?, &["caller", "callee"])? {
                let f: Vec<&str> = f.iter().map(String::as_str).collect();
                let edge = (f[0].to_string(), f[1].to_string());
                if !t.edges.contains(&edge) {
                    t.edges.push(edge);
                }
            }
        }
        let cases = dir.join("cases.csv");
        if cases.is_file() {
            let header = [
                "id",
                "entry",
                "kpi",
                "root_cause",
                "window_start",
                "window_end",
                "injected_at",
            ];
            for (line, f) in rows(&cases, &read(&cases)?, &header)? {
                let f: Vec<&str> = f.iter().map(String::as_str).collect();
                let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
                t.cases.push(Case {
                    id: f[0].to_string(),
                    entry: f[1].to_string(),
                    kpi: metric_name(f[2]),
                    root_cause: opt(f[3]),
                    window_start: time(&cases, line, f[4])?,
                    window_end: time(&cases, line, f[5])?,
                    injected_at: if f[6].is_empty() {
                        None
                    } else {
                        Some(time(&cases, line, f[6])?)
                    },
                });
            }
        }
        Ok(t)
    }

    /// Parse a `time,service,metric,value` CSV (`path` names it in errors).
    pub fn parse_metrics(path: &Path, text: &str) -> Result<Timeline, ReplayError> {
        let mut t = Timeline::default();
        let mut mem: BTreeMap<String, BTreeMap<i64, MemSample>> = BTreeMap::new();
        for (line, f) in rows(path, text, &["time", "service", "metric", "value"])? {
            let f: Vec<&str> = f.iter().map(String::as_str).collect();
            let ts = time(path, line, f[0])?;
            let Ok(v) = f[3].parse::<f64>() else {
                if f[3].is_empty() || f[3].eq_ignore_ascii_case("nan") {
                    continue;
                }
                return Err(ReplayError::Csv {
                    path: path.to_path_buf(),
                    line,
                    message: format!("value {:?} is not a number", f[3]),
                });
            };
            let metric = metric_name(f[2]);
            let service = f[1].to_string();
            match metric.as_str() {
                "memory_bytes" => {
                    mem.entry(service.clone())
                        .or_default()
                        .entry(ts)
                        .or_default()
                        .0 = Some(v)
                }
                "memory_limit_bytes" => {
                    mem.entry(service.clone())
                        .or_default()
                        .entry(ts)
                        .or_default()
                        .1 = Some(v)
                }
                _ => {}
            }
            // `caller->callee`: a metric of the call edge (caller_latency_ms, …).
            let entity = match service.split_once("->") {
                Some((caller, callee)) => {
                    let edge = (caller.trim().to_string(), callee.trim().to_string());
                    if !t.edges.contains(&edge) {
                        t.edges.push(edge.clone());
                    }
                    format!("edge:{}->{}", edge.0, edge.1)
                }
                None => format!("service:{service}"),
            };
            t.series.entry((entity, metric)).or_default().push((ts, v));
        }
        // Memory against its limit is what saturates; bytes alone stay as they are.
        for (service, points) in mem {
            let ratio: Vec<(i64, f64)> = points
                .into_iter()
                .filter_map(|(ts, (used, limit))| match (used, limit) {
                    (Some(u), Some(l)) if l > 0.0 => Some((ts, u / l)),
                    _ => None,
                })
                .collect();
            if !ratio.is_empty() {
                t.series.insert(
                    (format!("service:{service}"), "memory_usage_ratio".into()),
                    ratio,
                );
            }
        }
        for points in t.series.values_mut() {
            points.sort_by_key(|p| p.0);
        }
        Ok(t)
    }

    /// Every service named by a sample or an edge.
    pub fn services(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .series
            .keys()
            .filter_map(|(e, _)| e.strip_prefix("service:").map(str::to_string))
            .collect();
        for (a, b) in &self.edges {
            out.insert(a.clone());
            out.insert(b.clone());
        }
        out
    }

    /// Where the entry KPI's detector opens incidents over the whole timeline: the first point
    /// of every anomalous run that lasts the policy's `open_after` points, or
    /// [`OPEN_AFTER_SECS`] when that is fewer points (one 5-minute sample is five minutes of
    /// traffic, more than the daemon's debounce waits). Runs are counted on
    /// their own, not through the open/close state of one incident, so that a fault that
    /// follows the last one before it has quietened down for `close_after` points still opens
    /// an incident of its own (one timeline, several incidents).
    pub fn detect(&self, entry: &str, kpi: &str) -> Vec<i64> {
        let Some(series) = self
            .series
            .get(&(format!("service:{entry}"), kpi.to_string()))
        else {
            return Vec::new();
        };
        let policy = IncidentPolicy::default();
        let step = series
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .filter(|d| *d > 0)
            .min()
            .unwrap_or(60);
        let cfg = DetectorConfig::for_samples(kpi, Some(step));
        let needed = (policy.open_after as i64)
            .min((OPEN_AFTER_SECS + step - 1) / step)
            .max(1) as u32;
        let mut det = ResidualDetector::new(Direction::for_metric(kpi));
        let mut run_start = None;
        let mut out = Vec::new();
        for (ts, v) in series {
            let verdict = det.update(*v, &cfg);
            if verdict.anomalous && verdict.run == 1 {
                run_start = Some(*ts);
            }
            if verdict.anomalous
                && verdict.run == needed
                && let Some(s) = run_start
            {
                out.push(s);
            }
        }
        out
    }

    /// Where the incident of `case` starts: detected inside its window (`None` when the
    /// detector opens nothing there), or its injection time.
    pub fn case_start(&self, case: &Case, detect: bool) -> Option<i64> {
        if detect {
            self.detect(&case.entry, &case.kpi)
                .into_iter()
                .find(|s| (case.window_start..case.window_end).contains(s))
        } else {
            case.injected_at.or(Some(case.window_start))
        }
    }

    /// The bundle of one incident starting at `start` and lasting until `end`: every sample
    /// before `end` (the history is the baseline), the services and the call edges.
    pub fn bundle(&self, entry: &str, kpi: &str, start: i64, end: i64) -> Bundle {
        let kpi_series = self
            .series
            .get(&(format!("service:{entry}"), kpi.to_string()));
        let step = kpi_series
            .and_then(|s| {
                s.windows(2)
                    .map(|w| w[1].0 - w[0].0)
                    .filter(|d| *d > 0)
                    .min()
            })
            .unwrap_or(60);
        // The incident window starts at the KPI's first sample at or after `start`: the
        // samples' own times, since they need not be multiples of the step (a scrape at :20
        // every minute; rounding up to a multiple skipped the fault's first sample there).
        let start = kpi_series
            .and_then(|s| s.iter().map(|p| p.0).find(|t| *t >= start))
            .unwrap_or_else(|| {
                start.div_euclid(step) * step + if start.rem_euclid(step) == 0 { 0 } else { step }
            });
        let series = self
            .series
            .iter()
            .map(|(k, pts)| {
                let kept: Vec<(i64, f64)> = pts.iter().copied().filter(|p| p.0 < end).collect();
                (k.clone(), kept)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect();
        Bundle {
            spec: BundleSpec {
                incident: IncidentSpec {
                    id: None,
                    entry: entry.to_string(),
                    kpi: kpi.to_string(),
                    start: Some(start),
                    window: Some((end - start).max(step)),
                    slo: None,
                },
                services: self
                    .services()
                    .into_iter()
                    .map(|name| ServiceSpec {
                        name,
                        ..Default::default()
                    })
                    .collect(),
                nodes: Vec::new(),
                calls: self
                    .edges
                    .iter()
                    .map(|(caller, callee)| CallSpec {
                        caller: caller.clone(),
                        callee: callee.clone(),
                        ..Default::default()
                    })
                    .collect(),
                changes: Vec::new(),
            },
            series,
            breakdowns: Vec::new(),
        }
    }
}

/// The directories under `root` that hold a timeline (a `metrics.csv`), in name order.
pub fn timelines(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("metrics.csv").is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_percentiles() {
        assert_eq!(metric_name("latency_p50"), "latency_p50_ms");
        assert_eq!(metric_name("latency_p999"), "latency_p999_ms");
        assert_eq!(metric_name("latency_p99_ms"), "latency_p99_ms");
        assert_eq!(metric_name("cpu"), "cpu_usage_cores");
        assert_eq!(metric_name("req_rate"), "request_rate");
    }

    #[test]
    fn memory_with_a_limit_becomes_a_ratio() {
        let csv = "time,service,metric,value\n\
                   0,a,mem,50\n0,a,mem_limit,200\n60,a,mem,100\n60,a,mem_limit,200\n\
                   0,\"b,c\",latency_p90,3\n";
        let t = Timeline::parse_metrics(Path::new("m.csv"), csv).unwrap();
        assert_eq!(
            t.series[&("service:a".to_string(), "memory_usage_ratio".to_string())],
            [(0, 0.25), (60, 0.5)]
        );
        assert!(
            t.series
                .contains_key(&("service:b,c".to_string(), "latency_p90_ms".to_string()))
        );
        let t = Timeline::parse_metrics(
            Path::new("m.csv"),
            "time,service,metric,value\n0,gw->cart,caller_latency_ms,3\n",
        )
        .unwrap();
        assert_eq!(t.edges, [("gw".to_string(), "cart".to_string())]);
        assert!(
            t.series
                .contains_key(&("edge:gw->cart".to_string(), "caller_latency_ms".to_string()))
        );
    }

    #[test]
    fn every_fault_on_a_timeline_opens_its_own_incident() {
        // Two faults three quiet steps apart: one incident's open/close state (closing after
        // five quiet points) would swallow the second.
        let mut csv = String::from("time,service,metric,value\n");
        let mut v: Vec<f64> = (0..40).map(|i| 100.0 + (i % 3) as f64).collect();
        v.extend([
            160.0, 170.0, 165.0, 100.0, 101.0, 100.0, 180.0, 175.0, 170.0, 100.0,
        ]);
        for (i, x) in v.iter().enumerate() {
            csv.push_str(&format!("{},fe,latency_mean,{x}\n", i * 60));
        }
        let t = Timeline::parse_metrics(Path::new("m.csv"), &csv).unwrap();
        assert_eq!(t.detect("fe", "latency_mean_ms"), [40 * 60, 46 * 60]);
        let case = Case {
            id: "2".into(),
            entry: "fe".into(),
            kpi: "latency_mean_ms".into(),
            root_cause: None,
            window_start: 45 * 60,
            window_end: 50 * 60,
            injected_at: Some(45 * 60 + 30),
        };
        assert_eq!(t.case_start(&case, true), Some(46 * 60));
        let b = t.bundle("fe", "latency_mean_ms", 45 * 60 + 30, 50 * 60);
        assert_eq!(b.spec.incident.start, Some(46 * 60), "the next sample");
        assert_eq!(b.series.values().next().unwrap().len(), 50);
    }

    #[test]
    fn incident_starts_at_the_samples_own_time_off_the_minute() {
        // Samples at :20 of every minute: the incident starts at the first of them at or
        // after the injection, not at the next whole minute (one sample later).
        let mut csv = String::from("time,service,metric,value\n");
        for i in 0..50 {
            csv.push_str(&format!("{},fe,latency_mean,100\n", 20 + i * 60));
        }
        let t = Timeline::parse_metrics(Path::new("m.csv"), &csv).unwrap();
        let b = t.bundle("fe", "latency_mean_ms", 45 * 60 + 20, 50 * 60);
        assert_eq!(b.spec.incident.start, Some(45 * 60 + 20));
        let b = t.bundle("fe", "latency_mean_ms", 45 * 60, 50 * 60);
        assert_eq!(b.spec.incident.start, Some(45 * 60 + 20), "the next sample");
    }

    #[test]
    fn one_coarse_sample_is_enough_to_open() {
        // 5-minute samples: one anomalous sample is five minutes of a fault.
        let mut csv = String::from("time,service,metric,value\n");
        let mut v: Vec<f64> = (0..40).map(|i| 100.0 + (i % 3) as f64).collect();
        v.extend([160.0, 101.0, 100.0]);
        for (i, x) in v.iter().enumerate() {
            csv.push_str(&format!("{},fe,latency_mean,{x}\n", i * 300));
        }
        let t = Timeline::parse_metrics(Path::new("m.csv"), &csv).unwrap();
        assert_eq!(t.detect("fe", "latency_mean_ms"), [40 * 300]);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let err = Timeline::parse_metrics(Path::new("m.csv"), "time,service,metric,value\n1,a,b\n")
            .unwrap_err();
        assert!(err.to_string().starts_with("m.csv:2:"), "{err}");
    }
}
