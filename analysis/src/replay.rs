//! Offline replay: an incident bundle on disk (a topology file and metric CSVs) → [`Report`].
//! This is what `sonde analyze <dir>` runs, and how users and tests replay incidents.
//!
//! The format (docs/analyze.md has the full description):
//!
//! ```text
//! <dir>/topology.toml        [incident], [[service]], [[node]], [[call]], [[change]]
//! <dir>/metrics/*.csv         timestamp,entity,metric,value
//!                             entity = service:<name> | node:<name> | edge:<caller>-><callee>
//! <dir>/breakdowns/*.csv      timestamp,service,measure,<dimension columns…>,value
//!                             measure = requests | errors | latency_sum_ms
//! ```
//!
//! Timestamps are integer seconds, one sample per series per step. The incident window starts
//! at `[incident].start`, or where the entry KPI's detector opens an incident, and lasts
//! `[incident].window` seconds (five steps by default).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::{
    BurnRateGate, BurnStatus, BurnWindow, DetectorConfig, Direction, IncidentPolicy, IncidentState,
    ResidualDetector, SloConfig,
};
use crate::report::{AnalysisConfig, Report, SloVerdict, analyze};
use crate::rules::{Change, Incident, RuleEngine};
use crate::topology::{Breakdown, BreakdownRow, Entity, MetricWindow, Topology};

/// Why a bundle could not be read. Every message names the file and, for CSVs, the line.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}:{line}: {message}")]
    Csv {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// `[incident]` of topology.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentSpec {
    #[serde(default)]
    pub id: Option<String>,
    /// The service whose users see the problem.
    pub entry: String,
    /// The KPI that went wrong, a metric of the entry service (e.g. `error_rate`).
    pub kpi: String,
    /// Unix seconds; detected from the entry KPI when missing.
    #[serde(default)]
    pub start: Option<i64>,
    /// Seconds; five steps of the entry KPI when missing.
    #[serde(default)]
    pub window: Option<i64>,
    /// SLO objective of the entry service (share of good requests, e.g. 0.999). When given,
    /// the entry's `request_rate` and `error_rate` feed the multi-window burn-rate gate: the
    /// incident opens only when the KPI is anomalous *and* the error budget burns fast, and
    /// the report carries the burn rate.
    #[serde(default)]
    pub slo: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Machines the service runs on.
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    pub caller: String,
    pub callee: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSpec {
    /// Unix seconds.
    pub at: i64,
    pub subject: String,
    pub description: String,
}

/// topology.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    pub incident: IncidentSpec,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
    #[serde(default, rename = "call")]
    pub calls: Vec<CallSpec>,
    #[serde(default, rename = "change")]
    pub changes: Vec<ChangeSpec>,
}

/// One leaf's samples of one breakdown measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakdownSeries {
    pub service: String,
    /// `requests`, `errors` or `latency_sum_ms`.
    pub measure: String,
    pub dimensions: Vec<String>,
    pub values: Vec<String>,
    pub points: Vec<(i64, f64)>,
}

/// An incident bundle in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bundle {
    pub spec: BundleSpec,
    /// (entity, metric) → samples sorted by time. Entity: `service:x`, `node:n`, `edge:a->b`.
    pub series: BTreeMap<(String, String), Vec<(i64, f64)>>,
    pub breakdowns: Vec<BreakdownSeries>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Split one CSV line: commas, double-quoted fields with `""` for a quote.
pub(crate) fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_string()).collect())
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn csv_files(dir: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    Ok(files)
}

/// A CSV file: its header, and its rows with their line numbers.
type Csv = (Vec<String>, Vec<(usize, Vec<String>)>);
/// Breakdown leaves: (service, measure, dimension names, values) → points.
type Leaves = BTreeMap<(String, String, Vec<String>, Vec<String>), Vec<(i64, f64)>>;

/// Rows of a CSV file after its header, with line numbers; blank lines and `#` comments skipped.
fn read_csv(path: &Path) -> Result<Csv, ReplayError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    parse_csv(path, &text, None)
}

/// `text` (from `path`, named in errors) as a header and rows with their 1-based line
/// numbers; blank lines and `#` comments skipped, every row as wide as the header. With
/// `expected`, the header must be exactly that (checked before any row).
pub(crate) fn parse_csv(
    path: &Path,
    text: &str,
    expected: Option<&[&str]>,
) -> Result<Csv, ReplayError> {
    let err = |line, message: String| ReplayError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (hline, header) = lines
        .next()
        .ok_or_else(|| err(1, "empty file, expected a header".into()))?;
    let header = split_csv(header).map_err(|m| err(hline + 1, m))?;
    if let Some(expected) = expected
        && header != expected
    {
        return Err(err(
            hline + 1,
            format!("expected header {}", expected.join(",")),
        ));
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let fields = split_csv(line).map_err(|m| err(i + 1, m))?;
        if fields.len() != header.len() {
            return Err(err(
                i + 1,
                format!("{} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        rows.push((i + 1, fields));
    }
    Ok((header, rows))
}

fn parse_num<T: std::str::FromStr>(
    path: &Path,
    line: usize,
    what: &str,
    s: &str,
) -> Result<T, ReplayError> {
    s.parse().map_err(|_| ReplayError::Csv {
        path: path.to_path_buf(),
        line,
        message: format!("{what} {s:?} is not a number"),
    })
}

impl Bundle {
    /// Read a bundle directory.
    pub fn load(dir: &Path) -> Result<Bundle, ReplayError> {
        let spec_path = dir.join("topology.toml");
        let text = fs::read_to_string(&spec_path).map_err(io(&spec_path))?;
        let spec: BundleSpec = toml::from_str(&text).map_err(|source| ReplayError::Toml {
            path: spec_path.clone(),
            source,
        })?;
        let mut bundle = Bundle {
            spec,
            ..Default::default()
        };

        for path in csv_files(&dir.join("metrics"))? {
            let (header, rows) = read_csv(&path)?;
            if header != ["timestamp", "entity", "metric", "value"] {
                return Err(ReplayError::Csv {
                    path,
                    line: 1,
                    message: "expected header timestamp,entity,metric,value".into(),
                });
            }
            for (line, f) in rows {
                if !(f[1].starts_with("service:")
                    || f[1].starts_with("node:")
                    || f[1].starts_with("edge:"))
                {
                    return Err(ReplayError::Csv {
                        path,
                        line,
                        message: format!("entity {:?} is not service:, node: or edge:", f[1]),
                    });
                }
                let ts = parse_num(&path, line, "timestamp", &f[0])?;
                let v = parse_num(&path, line, "value", &f[3])?;
                bundle
                    .series
                    .entry((f[1].clone(), f[2].clone()))
                    .or_default()
                    .push((ts, v));
            }
        }
        let mut leaves: Leaves = BTreeMap::new();
        for path in csv_files(&dir.join("breakdowns"))? {
            let (header, rows) = read_csv(&path)?;
            if header.len() < 5
                || header[..3] != ["timestamp", "service", "measure"]
                || header.last().map(String::as_str) != Some("value")
            {
                return Err(ReplayError::Csv {
                    path,
                    line: 1,
                    message: "expected header timestamp,service,measure,<dimensions…>,value".into(),
                });
            }
            let dims = header[3..header.len() - 1].to_vec();
            for (line, f) in rows {
                if !["requests", "errors", "latency_sum_ms"].contains(&f[2].as_str()) {
                    return Err(ReplayError::Csv {
                        path,
                        line,
                        message: format!(
                            "measure {:?} is not requests, errors or latency_sum_ms",
                            f[2]
                        ),
                    });
                }
                let ts = parse_num(&path, line, "timestamp", &f[0])?;
                let v = parse_num(&path, line, "value", &f[f.len() - 1])?;
                let values = f[3..f.len() - 1].to_vec();
                leaves
                    .entry((f[1].clone(), f[2].clone(), dims.clone(), values))
                    .or_default()
                    .push((ts, v));
            }
        }
        bundle.breakdowns = leaves
            .into_iter()
            .map(
                |((service, measure, dimensions, values), points)| BreakdownSeries {
                    service,
                    measure,
                    dimensions,
                    values,
                    points,
                },
            )
            .collect();
        for points in bundle.series.values_mut() {
            points.sort_by_key(|p| p.0);
        }
        for b in &mut bundle.breakdowns {
            b.points.sort_by_key(|p| p.0);
        }
        Ok(bundle)
    }

    /// Write the bundle in the on-disk format (examples, tests).
    pub fn write(&self, dir: &Path) -> Result<(), ReplayError> {
        for sub in ["metrics", "breakdowns"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let spec =
            toml::to_string_pretty(&self.spec).map_err(|e| ReplayError::Invalid(e.to_string()))?;
        let p = dir.join("topology.toml");
        fs::write(&p, spec).map_err(io(&p))?;
        let mut csv = String::from("timestamp,entity,metric,value\n");
        for ((entity, metric), points) in &self.series {
            for (ts, v) in points {
                let _ = writeln!(csv, "{ts},{},{},{v}", quote(entity), quote(metric));
            }
        }
        let p = dir.join("metrics/metrics.csv");
        fs::write(&p, csv).map_err(io(&p))?;
        // One file per dimension set (a CSV has one header).
        let mut files: BTreeMap<&[String], String> = BTreeMap::new();
        for b in &self.breakdowns {
            let out = files.entry(&b.dimensions).or_insert_with(|| {
                let dims: Vec<String> = b.dimensions.iter().map(|d| quote(d)).collect();
                format!("timestamp,service,measure,{},value\n", dims.join(","))
            });
            let values: Vec<String> = b.values.iter().map(|v| quote(v)).collect();
            for (ts, v) in &b.points {
                let _ = writeln!(
                    out,
                    "{ts},{},{},{},{v}",
                    quote(&b.service),
                    b.measure,
                    values.join(",")
                );
            }
        }
        for (i, (_, text)) in files.into_iter().enumerate() {
            let p = dir.join(format!("breakdowns/breakdown-{i}.csv"));
            fs::write(&p, text).map_err(io(&p))?;
        }
        Ok(())
    }

    fn entry_series(&self) -> Result<&[(i64, f64)], ReplayError> {
        let key = (
            format!("service:{}", self.spec.incident.entry),
            self.spec.incident.kpi.clone(),
        );
        self.series.get(&key).map(Vec::as_slice).ok_or_else(|| {
            ReplayError::Invalid(format!(
                "no samples of the entry KPI: expected rows with entity {} and metric {}",
                key.0, key.1
            ))
        })
    }

    /// The incident window `[start, end)` in seconds: given, or where the entry KPI's detector
    /// opens an incident (no SLO in a replay, so the burn-rate gate does not apply).
    fn step(&self) -> Result<i64, ReplayError> {
        let series = self.entry_series()?;
        Ok(series
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .filter(|d| *d > 0)
            .min()
            .unwrap_or(60))
    }

    /// The burn-rate gate over the entry service's samples, when `[incident].slo` is set: the
    /// SRE-workbook windows (1 h / 5 min at 14.4×, 6 h / 30 min at 6×) in samples of this
    /// bundle's step. Samples missing either series count as no traffic.
    pub fn burn(&self) -> Result<Option<BTreeMap<i64, BurnStatus>>, ReplayError> {
        let Some(objective) = self.spec.incident.slo else {
            return Ok(None);
        };
        if !(0.0..1.0).contains(&objective) {
            return Err(ReplayError::Invalid(format!(
                "[incident].slo {objective} must be in [0, 1)"
            )));
        }
        let step = self.step()?;
        let entry = format!("service:{}", self.spec.incident.entry);
        let get = |metric: &str| -> Result<BTreeMap<i64, f64>, ReplayError> {
            self.series
                .get(&(entry.clone(), metric.to_string()))
                .map(|p| p.iter().copied().collect())
                .ok_or_else(|| {
                    ReplayError::Invalid(format!(
                        "[incident].slo needs {metric} samples of {entry}"
                    ))
                })
        };
        let (requests, errors) = (get("request_rate")?, get("error_rate")?);
        let buckets = |seconds: i64| ((seconds / step.max(1)) as usize).max(1);
        let mut gate = BurnRateGate::new(SloConfig {
            objective,
            windows: vec![
                BurnWindow {
                    long: buckets(3600),
                    short: buckets(300),
                    factor: 14.4,
                },
                BurnWindow {
                    long: buckets(6 * 3600),
                    short: buckets(1800),
                    factor: 6.0,
                },
            ],
        });
        Ok(Some(
            requests
                .iter()
                .map(|(ts, rate)| {
                    let total = rate * step as f64;
                    let bad = errors.get(ts).copied().unwrap_or(0.0).clamp(0.0, 1.0) * total;
                    (*ts, gate.push(bad, total))
                })
                .collect(),
        ))
    }

    /// The incident window `[start, end)` in seconds: given, or where the entry KPI's detector
    /// opens an incident (through the burn-rate gate when `[incident].slo` is set).
    pub fn window(&self) -> Result<(i64, i64), ReplayError> {
        self.window_with(self.burn()?.as_ref())
    }

    /// [`window`](Self::window) with the gate's series already computed.
    fn window_with(
        &self,
        burn: Option<&BTreeMap<i64, BurnStatus>>,
    ) -> Result<(i64, i64), ReplayError> {
        let series = self.entry_series()?;
        let step = self.step()?;
        let start = match self.spec.incident.start {
            Some(s) => s,
            None => {
                let kpi = &self.spec.incident.kpi;
                let cfg = DetectorConfig::for_samples(kpi, Some(step));
                let policy = IncidentPolicy {
                    require_burn: burn.is_some(),
                    ..Default::default()
                };
                let mut det = ResidualDetector::new(Direction::for_metric(kpi));
                let mut state = IncidentState::default();
                let mut run_start = None;
                let mut found = None;
                for (ts, v) in series {
                    let verdict = det.update(*v, &cfg);
                    if verdict.anomalous && verdict.run == 1 {
                        run_start = Some(*ts);
                    }
                    let firing = burn.map(|b| b.get(ts).is_some_and(|s| s.firing));
                    if state.step(&verdict, firing, &policy).is_some() && state.is_open() {
                        found = run_start;
                        break;
                    }
                }
                found.ok_or_else(|| {
                    let worst = burn.map(|b| b.values().map(|s| s.burn_rate).fold(0.0, f64::max));
                    ReplayError::Invalid(match worst {
                        Some(w) => format!(
                            "no incident worth a report on {} of {}: the error budget burns at most {w:.1}× (the gate needs 14.4× over 1 h and 5 min, or 6× over 6 h and 30 min); give [incident].start to analyse a window anyway",
                            kpi, self.spec.incident.entry
                        ),
                        None => format!(
                            "no anomaly on {} of {}: give [incident].start to analyse a window anyway",
                            kpi, self.spec.incident.entry
                        ),
                    })
                })?
            }
        };
        let window = self.spec.incident.window.unwrap_or(5 * step).max(1);
        Ok((start, start + window))
    }

    /// The gate's verdict over the incident window: the highest burn rate, and whether the gate
    /// fired.
    fn slo_verdict(
        &self,
        burn: &BTreeMap<i64, BurnStatus>,
        (start, end): (i64, i64),
    ) -> SloVerdict {
        let in_window: Vec<&BurnStatus> = burn.range(start..end).map(|(_, s)| s).collect();
        SloVerdict {
            objective: self.spec.incident.slo.unwrap_or_default(),
            burn_rate: in_window.iter().map(|s| s.burn_rate).fold(0.0, f64::max),
            firing: in_window.iter().any(|s| s.firing),
        }
    }

    /// The topology with every series summarised over the incident window.
    pub fn topology(&self, (start, end): (i64, i64)) -> Topology {
        let mut t = Topology::default();
        for s in &self.spec.services {
            t.add_service(
                &s.name,
                Entity {
                    labels: s.labels.clone(),
                    ..Default::default()
                },
            );
            for n in &s.nodes {
                t.place(&s.name, n);
            }
        }
        for n in &self.spec.nodes {
            t.add_node(
                &n.name,
                Entity {
                    labels: n.labels.clone(),
                    ..Default::default()
                },
            );
        }
        for c in &self.spec.calls {
            t.add_call(
                &c.caller,
                &c.callee,
                Entity {
                    labels: c.labels.clone(),
                    ..Default::default()
                },
            );
        }
        for ((entity, metric), points) in &self.series {
            let values: Vec<f64> = points.iter().map(|p| p.1).collect();
            let first = points
                .iter()
                .position(|p| p.0 >= start)
                .unwrap_or(points.len());
            let len = points[first..].iter().take_while(|p| p.0 < end).count();
            let step = points
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .filter(|d| *d > 0)
                .min();
            let Some(w) = MetricWindow::from_samples(metric, &values, first, len, step) else {
                continue;
            };
            let target = if let Some(name) = entity.strip_prefix("service:") {
                t.services.entry(name.to_string()).or_default()
            } else if let Some(name) = entity.strip_prefix("node:") {
                t.nodes.entry(name.to_string()).or_default()
            } else if let Some((caller, callee)) = entity
                .strip_prefix("edge:")
                .and_then(|e| e.split_once("->"))
            {
                t.edges
                    .entry((caller.to_string(), callee.to_string()))
                    .or_default()
            } else {
                continue;
            };
            target.metrics.insert(metric.clone(), w);
        }
        for (service, breakdowns) in self.breakdowns_at(start, end) {
            t.services.entry(service).or_default().breakdowns = breakdowns;
        }
        t.changes = self
            .spec
            .changes
            .iter()
            .map(|c| Change {
                at_ms: (c.at.max(0) as u64) * 1000,
                subject: c.subject.clone(),
                description: c.description.clone(),
            })
            .collect();
        t
    }

    /// Per service: request_rate (additive), error_rate and latency_mean_ms (ratios over
    /// requests) breakdowns, each leaf's mean before `start` and over `[start, end)`.
    fn breakdowns_at(&self, start: i64, end: i64) -> BTreeMap<String, Vec<Breakdown>> {
        let mean = |points: &[(i64, f64)], lo: i64, hi: i64| {
            let xs: Vec<f64> = points
                .iter()
                .filter(|p| p.0 >= lo && p.0 < hi)
                .map(|p| p.1)
                .collect();
            if xs.is_empty() {
                0.0
            } else {
                xs.iter().sum::<f64>() / xs.len() as f64
            }
        };
        // (service, dimensions) → leaf values → measure → (before, after)
        type Leaves = BTreeMap<Vec<String>, BTreeMap<String, (f64, f64)>>;
        let mut grouped: BTreeMap<(String, Vec<String>), Leaves> = BTreeMap::new();
        for b in &self.breakdowns {
            let before = mean(&b.points, i64::MIN, start);
            let after = mean(&b.points, start, end);
            grouped
                .entry((b.service.clone(), b.dimensions.clone()))
                .or_default()
                .entry(b.values.clone())
                .or_default()
                .insert(b.measure.clone(), (before, after));
        }
        let mut out: BTreeMap<String, Vec<Breakdown>> = BTreeMap::new();
        for ((service, dimensions), leaves) in grouped {
            let get = |m: &BTreeMap<String, (f64, f64)>, k: &str| m.get(k).copied();
            let mut requests = Breakdown {
                kpi: "request_rate".into(),
                dimensions: dimensions.clone(),
                rows: Vec::new(),
            };
            let mut errors = Breakdown {
                kpi: "error_rate".into(),
                dimensions: dimensions.clone(),
                rows: Vec::new(),
            };
            let mut latency = Breakdown {
                kpi: "latency_mean_ms".into(),
                dimensions: dimensions.clone(),
                rows: Vec::new(),
            };
            for (values, m) in &leaves {
                let Some((rb, ra)) = get(m, "requests") else {
                    continue;
                };
                requests.rows.push(BreakdownRow {
                    values: values.clone(),
                    before: rb,
                    after: ra,
                    den_before: None,
                    den_after: None,
                });
                if let Some((eb, ea)) = get(m, "errors") {
                    errors.rows.push(BreakdownRow {
                        values: values.clone(),
                        before: eb,
                        after: ea,
                        den_before: Some(rb),
                        den_after: Some(ra),
                    });
                }
                if let Some((lb, la)) = get(m, "latency_sum_ms") {
                    latency.rows.push(BreakdownRow {
                        values: values.clone(),
                        before: lb,
                        after: la,
                        den_before: Some(rb),
                        den_after: Some(ra),
                    });
                }
            }
            let list = out.entry(service).or_default();
            for b in [requests, errors, latency] {
                if !b.rows.is_empty() {
                    list.push(b);
                }
            }
        }
        out
    }

    /// The incident as the engine sees it.
    pub fn incident(&self, (start, _): (i64, i64)) -> Incident {
        let spec = &self.spec.incident;
        Incident {
            id: spec
                .id
                .clone()
                .unwrap_or_else(|| format!("{}-{}-{}", spec.entry, spec.kpi, start)),
            entry: spec.entry.clone(),
            kpi: spec.kpi.clone(),
            started_at_ms: (start.max(0) as u64) * 1000,
        }
    }

    /// Validate references: calls, placements and changes name known services and nodes.
    pub fn validate(&self) -> Result<(), ReplayError> {
        let services: Vec<&str> = self.spec.services.iter().map(|s| s.name.as_str()).collect();
        let known = |name: &str| services.is_empty() || services.contains(&name);
        if !known(&self.spec.incident.entry) {
            return Err(ReplayError::Invalid(format!(
                "[incident].entry {:?} is not a [[service]]",
                self.spec.incident.entry
            )));
        }
        for c in &self.spec.calls {
            for s in [&c.caller, &c.callee] {
                if !known(s) {
                    return Err(ReplayError::Invalid(format!(
                        "[[call]] {}->{}: {s:?} is not a [[service]]",
                        c.caller, c.callee
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Load a bundle and analyse it.
pub fn analyze_dir(
    dir: &Path,
    rules: &mut dyn RuleEngine,
    cfg: &AnalysisConfig,
) -> Result<Report, ReplayError> {
    let bundle = Bundle::load(dir)?;
    analyze_bundle(&bundle, rules, cfg)
}

/// Analyse a bundle in memory.
pub fn analyze_bundle(
    bundle: &Bundle,
    rules: &mut dyn RuleEngine,
    cfg: &AnalysisConfig,
) -> Result<Report, ReplayError> {
    bundle.validate()?;
    // The gate's series serve both the window and the report's verdict.
    let burn = bundle.burn()?;
    let window = bundle.window_with(burn.as_ref())?;
    let topology = bundle.topology(window);
    let mut report = analyze(&topology, &bundle.incident(window), rules, cfg);
    report.slo = burn.as_ref().map(|b| bundle.slo_verdict(b, window));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_quotes_and_commas() {
        assert_eq!(
            split_csv(r#"1,"a,b","say ""hi""",x"#).unwrap(),
            ["1", "a,b", "say \"hi\"", "x"]
        );
        assert!(split_csv(r#"1,"open"#).is_err());
        assert_eq!(split_csv(&quote("a,\"b")).unwrap(), ["a,\"b"]);
    }
}
