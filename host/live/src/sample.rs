//! One step's aggregation of request records: per service the server-side RED numbers and
//! their breakdown by endpoint, and what the service saw of its databases and of DNS as a
//! client. Call edges come from the network map (`edges.rs`), which already pairs both ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sonde_sdk::attributes as attr;
use sonde_sdk::fault_rule::metric as m;
use sonde_sdk::protocol_parser::{ConnInfo, Role};

use sonde_correlate::{NAMESPACE, POD};
use sonde_parse::Record;

/// Latencies kept per service per step for the p99 (the first ones; a step rarely has more).
const P99_SAMPLES: usize = 4096;
/// Endpoints per service in a step; the rest are counted as `(other)`.
const MAX_ENDPOINTS: usize = 64;

#[derive(Debug, Default, Clone)]
struct Red {
    requests: u64,
    errors: u64,
    latency_ms_sum: f64,
    answered: u64,
    latencies: Vec<f32>,
}

impl Red {
    fn add(&mut self, error: bool, latency_ms: Option<f64>, keep: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        if let Some(ms) = latency_ms {
            self.answered += 1;
            self.latency_ms_sum += ms;
            if keep && self.latencies.len() < P99_SAMPLES {
                self.latencies.push(ms as f32);
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Dependency {
    calls: u64,
    errors: u64,
    latency_ms_sum: f64,
    answered: u64,
    slow: u64,
}

#[derive(Debug, Default)]
struct ServiceStep {
    red: Red,
    endpoints: HashMap<String, Red>,
    db: Dependency,
    dns: Dependency,
}

/// A service as the records show it: its protocol as a server and the processes behind it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ServiceInfo {
    /// Protocol of its server-side records (`http`, `mysql`…).
    pub protocol: String,
    /// `database` when it answers a database protocol.
    pub kind: String,
    /// Processes seen serving or calling as this service, most recent last (bounded).
    pub pids: Vec<u32>,
    /// The Kubernetes namespace and pods of those processes (bounded like them), if known.
    pub namespace: String,
    pub pods: Vec<String>,
}

pub(crate) use crate::board::LeafKey;

/// What one step produced.
#[derive(Debug, Default)]
pub(crate) struct StepValues {
    /// ((entity, metric), value).
    pub series: Vec<((String, String), f64)>,
    pub leaves: Vec<(LeafKey, f64)>,
}

/// Records of the current step, by service.
#[derive(Debug, Default)]
pub(crate) struct StepAccumulator {
    services: BTreeMap<String, ServiceStep>,
    /// Every service seen since start (bounded by the caller's series cap).
    pub known: BTreeMap<String, ServiceInfo>,
    /// A database call at least this slow counts in `db_slow_query_rate`.
    slow_query_ms: f64,
}

/// The database protocols whose servers are databases.
const DB_PROTOCOLS: &[&str] = &["mysql", "postgresql", "redis", "mongodb", "memcached"];

/// The service a connection belongs to: the correlation layer's name, else the process name.
pub fn service_of(conn: &ConnInfo) -> &str {
    conn.labels
        .iter()
        .find(|(k, _)| k == "service_name")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .unwrap_or(&conn.comm)
}

/// The request's latency, if it was answered.
pub(super) fn latency_ms(r: &Record) -> Option<f64> {
    let (req, resp) = (r.request_ts_ns(), r.response_ts_ns());
    (resp > 0 && resp >= req).then(|| (resp - req) as f64 / 1e6)
}

/// A record of a database protocol (by its parser's `db.system.name`, or the protocol).
fn is_database(r: &Record) -> bool {
    r.attr(attr::DB_SYSTEM_NAME).is_some() || DB_PROTOCOLS.contains(&r.protocol())
}

/// A call the connection's service made to a database (the client side of a database
/// protocol): what counts in its `db_*` series and in the slow SQL of reports.
pub(super) fn is_db_call(conn: &ConnInfo, r: &Record) -> bool {
    conn.role != Role::Server && is_database(r)
}

/// `num / den`, NaN (no value this step) when nothing was counted.
pub(super) fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

impl StepAccumulator {
    pub(crate) fn new(slow_query_ms: u64) -> Self {
        Self {
            slow_query_ms: slow_query_ms as f64,
            ..Default::default()
        }
    }

    pub(crate) fn record(&mut self, conn: &Arc<ConnInfo>, r: &Record) {
        let service = service_of(conn);
        if service.is_empty() {
            return;
        }
        let server = conn.role == Role::Server;
        let protocol = r.protocol();
        let latency = latency_ms(r);
        // An unanswered request is a failed one.
        let error = r.is_error(server) || latency.is_none();
        if protocol == "dns" {
            // Name resolution is a dependency of the asking service; DNS servers are not
            // services of the map.
            if !server {
                let step = self.step_of(service, conn);
                add_dep(
                    &mut step.dns,
                    r.error().is_some() || latency.is_none(),
                    latency,
                    f64::INFINITY,
                );
            }
            return;
        }
        let slow_ms = self.slow_query_ms;
        if server {
            let step = self.step_of(service, conn);
            step.red.add(error, latency, true);
            let n = step.endpoints.len();
            let op = r.operation();
            let key = if step.endpoints.contains_key(op) || n < MAX_ENDPOINTS {
                op
            } else {
                "(other)"
            };
            match step.endpoints.get_mut(key) {
                Some(e) => e.add(error, latency, false),
                None => {
                    let mut e = Red::default();
                    e.add(error, latency, false);
                    step.endpoints.insert(key.to_string(), e);
                }
            }
            let info = self.known.get_mut(service).expect("step_of registers");
            if info.protocol.is_empty() {
                info.protocol = protocol.to_string();
                if is_database(r) {
                    info.kind = "database".into();
                }
            }
        } else if is_db_call(conn, r) {
            let step = self.step_of(service, conn);
            add_dep(&mut step.db, error, latency, slow_ms);
        } else {
            // A client of other protocols: no series of its own here, but it is a service
            // with processes on this node (where its calls' machine causes are).
            self.step_of(service, conn);
        }
    }

    fn step_of(&mut self, service: &str, conn: &ConnInfo) -> &mut ServiceStep {
        let info = match self.known.get_mut(service) {
            Some(i) => i,
            None => self.known.entry(service.to_string()).or_default(),
        };
        if info.pids.last() != Some(&conn.pid) && conn.pid != 0 {
            info.pids.retain(|p| *p != conn.pid);
            info.pids.push(conn.pid);
            if info.pids.len() > 8 {
                info.pids.remove(0);
            }
            // A new process: its pod and namespace (the local ones: peers' are `peer_*`).
            let label = |k: &str| {
                conn.labels
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
                    .filter(|v| !v.is_empty())
            };
            if let Some(ns) = label(NAMESPACE) {
                info.namespace = ns.to_string();
            }
            if let Some(pod) = label(POD) {
                info.pods.retain(|p| p != pod);
                info.pods.push(pod.to_string());
                if info.pods.len() > 8 {
                    info.pods.remove(0);
                }
            }
        }
        if !self.services.contains_key(service) {
            self.services
                .insert(service.to_string(), ServiceStep::default());
        }
        self.services.get_mut(service).expect("inserted")
    }

    /// The step's values, and a fresh accumulator for the next one. `min_requests`: fewer
    /// requests than this in a step give no latency or error value (too noisy to judge).
    pub(crate) fn finish(&mut self, step_s: f64, min_requests: u64) -> StepValues {
        let mut out = StepValues::default();
        let services = std::mem::take(&mut self.services);
        for name in self.known.keys() {
            let entity = format!("service:{name}");
            let mut put =
                |metric: &str, v: f64| out.series.push(((entity.clone(), metric.to_string()), v));
            let Some(s) = services.get(name) else {
                if !self.known[name].protocol.is_empty() {
                    put(m::REQUEST_RATE, 0.0);
                }
                continue;
            };
            let red = &s.red;
            if red.requests > 0 || !self.known[name].protocol.is_empty() {
                put(m::REQUEST_RATE, red.requests as f64 / step_s);
            }
            if red.requests >= min_requests.max(1) {
                put(m::ERROR_RATE, ratio(red.errors, red.requests));
                if red.answered > 0 {
                    put(m::LATENCY_MEAN_MS, red.latency_ms_sum / red.answered as f64);
                    let mut l = red.latencies.clone();
                    if !l.is_empty() {
                        let i = ((l.len() as f64 * 0.99).ceil() as usize).clamp(1, l.len()) - 1;
                        let (_, p99, _) = l.select_nth_unstable_by(i, f32::total_cmp);
                        put(m::LATENCY_P99_MS, f64::from(*p99));
                    }
                }
            }
            if s.db.calls > 0 {
                put(m::DB_ERROR_RATE, ratio(s.db.errors, s.db.calls));
                put(m::DB_SLOW_QUERY_RATE, s.db.slow as f64 / step_s);
                if s.db.answered > 0 {
                    put(
                        m::DB_QUERY_LATENCY_MS,
                        s.db.latency_ms_sum / s.db.answered as f64,
                    );
                }
            }
            if s.dns.calls > 0 {
                put(m::DNS_ERROR_RATE, ratio(s.dns.errors, s.dns.calls));
                if s.dns.answered > 0 {
                    put(
                        m::DNS_LATENCY_MS,
                        s.dns.latency_ms_sum / s.dns.answered as f64,
                    );
                }
            }
            let dims = vec!["endpoint".to_string()];
            for (op, e) in &s.endpoints {
                let key = |measure: &str| {
                    (
                        name.clone(),
                        measure.to_string(),
                        dims.clone(),
                        vec![op.clone()],
                    )
                };
                out.leaves
                    .push((key("requests"), e.requests as f64 / step_s));
                out.leaves.push((key("errors"), e.errors as f64 / step_s));
                if e.answered > 0 {
                    // The replay format's latency measure is a sum over requests.
                    let mean = e.latency_ms_sum / e.answered as f64;
                    out.leaves
                        .push((key("latency_sum_ms"), mean * e.requests as f64 / step_s));
                }
            }
        }
        out
    }
}

fn add_dep(d: &mut Dependency, error: bool, latency: Option<f64>, slow_ms: f64) {
    d.calls += 1;
    d.errors += u64::from(error);
    if let Some(ms) = latency {
        d.answered += 1;
        d.latency_ms_sum += ms;
        d.slow += u64::from(ms >= slow_ms);
    }
}
