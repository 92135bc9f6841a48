//! RED metrics (rate, errors, duration) from request records, with OpenTelemetry
//! semantic-convention names, bounded cardinality, and Prometheus exposition.
//!
//! - HTTP server side (the observed process accepted the connection):
//!   `http_server_request_duration_seconds{http_request_method, http_route,
//!   http_response_status_code, error_type, server_address, server_port, service, namespace, pod}`.
//! - HTTP client side: `http_client_request_duration_seconds{http_request_method, url_template,
//!   http_response_status_code, error_type, server_address, server_port, service, namespace, pod}`.
//! - Any other protocol: `sonde_request_duration_seconds{protocol, side, operation, status,
//!   error_type, server_address, server_port, service, namespace, pod}`.
//! - Requests that never got an answer (flushed at close, or lost to a capture gap) have no
//!   duration: `sonde_requests_unanswered_total{protocol, side, operation, error_type, service}`.
//!
//! `error_type` follows the conventions: on the server side a 5xx is an error, on the client
//! side any status ≥ 400; its value is the status code (or the parser's error class when there is
//! no status). `service` is the workload when the correlation layer knows it, else the process
//! name. Every metric holds at most `max_series` series; records beyond land in one overflow
//! series labelled `otel_metric_overflow="true"` (the OpenTelemetry SDK's convention) and are
//! counted in `sonde_red_overflow_records_total`.
//!
//! Each series also keeps a log-scale latency sketch (buckets 2^¼ wide, ±9 % error) so `sonde
//! top` can show p50/p99 without the coarse Prometheus buckets; it is served as JSON at
//! `/api/series`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sonde_sdk::attributes as attr;
use sonde_sdk::protocol_parser::{ConnInfo, Role};

use sonde_parse::{Record, TaggedRecord};

/// Upper bounds (seconds) of the duration buckets: the OpenTelemetry HTTP default.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Sketch buckets: index 0 is < 1 µs, index i ≥ 1 covers [2^((i-1)/4), 2^(i/4)) µs; the last
/// one is open-ended (≥ 2^31.75 µs, about an hour).
pub const SKETCH_BUCKETS: usize = 128;

/// `[metrics]` settings of the RED aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedSettings {
    /// Series per metric; records beyond go to the overflow series.
    pub max_series: usize,
    /// Route templates applied to the raw HTTP path before the parser's own normalisation,
    /// e.g. `"/api/v1/orders/{order}/items/{item}"`: a `{…}` segment matches any one segment,
    /// a trailing `{*}` any rest.
    pub route_templates: Vec<String>,
    /// Database operations at least this slow are kept in the slow-query log.
    pub slow_query_ms: u64,
    /// Entries the slow-query log keeps (the oldest go first).
    pub slow_query_log: usize,
}

impl Default for RedSettings {
    fn default() -> Self {
        Self {
            max_series: 2000,
            route_templates: Vec::new(),
            slow_query_ms: 500,
            slow_query_log: 256,
        }
    }
}

/// A database operation slower than `slow_query_ms`, as `/api/slow-queries` serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlowQuery {
    /// Kernel monotonic time of the request.
    pub request_ts_ns: u64,
    pub duration_seconds: f64,
    /// `db.system.name`: mysql, redis…
    pub system: String,
    pub operation: String,
    /// The normalised statement (`db.query.text`), when the parser gives one.
    pub statement: String,
    pub rows: Option<u64>,
    pub error: Option<String>,
    /// `client` (the application's view) or `server` (the database's).
    pub side: String,
    pub pid: u32,
    pub service: String,
    pub namespace: String,
    pub pod: String,
    /// The database's address.
    pub server: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    HttpServer,
    HttpClient,
    DbClient,
    Dns,
    Other,
}

impl Family {
    const ALL: [Family; 5] = [
        Family::HttpServer,
        Family::HttpClient,
        Family::DbClient,
        Family::Dns,
        Family::Other,
    ];

    fn metric(self) -> &'static str {
        match self {
            Family::HttpServer => "http_server_request_duration_seconds",
            Family::HttpClient => "http_client_request_duration_seconds",
            Family::DbClient => "db_client_operation_duration_seconds",
            Family::Dns => "dns_lookup_duration_seconds",
            Family::Other => "sonde_request_duration_seconds",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::HttpServer => {
                "Duration of HTTP server requests (observed by eBPF, parsed in Wasm)."
            }
            Family::HttpClient => {
                "Duration of HTTP client requests (observed by eBPF, parsed in Wasm)."
            }
            Family::DbClient => {
                "Duration of database operations, client side (any parser that sets db.system.name)."
            }
            Family::Dns => {
                "Duration of DNS lookups, query to response (timeouts are in sonde_requests_unanswered_total)."
            }
            Family::Other => "Duration of requests of other protocols, by parser.",
        }
    }
}

/// Label pairs in exposition order. Empty values are left out at rendering.
pub type Labels = Vec<(&'static str, String)>;

/// One series' counters.
#[derive(Debug, Clone)]
pub struct Series {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u128,
    /// Cumulative at rendering only; stored per bucket (+Inf last).
    pub buckets: [u64; BUCKETS.len() + 1],
    pub sketch: Box<[u32; SKETCH_BUCKETS]>,
    /// Per bucket, the latest request that carried a trace context (allocated on the first).
    pub exemplars: Option<Box<[Option<Exemplar>; BUCKETS.len() + 1]>>,
}

/// A traced request in a histogram bucket: an OpenMetrics exemplar, so a latency spike in a
/// dashboard links to a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace_id: String,
    pub span_id: String,
    pub seconds: f64,
    /// Wall-clock time it was recorded (Unix seconds).
    pub unix_s: f64,
}

impl Exemplar {
    pub fn new(t: sonde_parse::trace_context::TraceContext, ns: u64) -> Self {
        Self {
            trace_id: t.trace_id,
            span_id: t.span_id,
            seconds: ns as f64 / 1e9,
            unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

fn bucket_of(secs: f64) -> usize {
    BUCKETS
        .iter()
        .position(|le| secs <= *le)
        .unwrap_or(BUCKETS.len())
}

impl Default for Series {
    fn default() -> Self {
        Self {
            count: 0,
            errors: 0,
            sum_ns: 0,
            buckets: [0; BUCKETS.len() + 1],
            sketch: Box::new([0; SKETCH_BUCKETS]),
            exemplars: None,
        }
    }
}

/// Sketch index of a duration.
pub fn sketch_index(ns: u64) -> usize {
    if ns < 1000 {
        return 0;
    }
    let us = ns as f64 / 1000.0;
    ((us.log2() * 4.0).floor() as usize + 1).min(SKETCH_BUCKETS - 1)
}

/// A representative duration (ns) of a sketch bucket: its geometric middle.
pub fn sketch_value_ns(i: usize) -> f64 {
    if i == 0 {
        return 500.0;
    }
    1000.0 * 2f64.powf((i as f64 - 0.5) / 4.0)
}

/// The `q` quantile (0..=1) of sketch counts, in seconds; `None` when empty.
pub fn sketch_quantile(sketch: &[u32], q: f64) -> Option<f64> {
    let total: u64 = sketch.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, c) in sketch.iter().enumerate() {
        seen += u64::from(*c);
        if seen >= rank {
            return Some(sketch_value_ns(i) / 1e9);
        }
    }
    None
}

impl Series {
    fn observe(&mut self, ns: u64, error: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        self.sum_ns += u128::from(ns);
        self.buckets[bucket_of(ns as f64 / 1e9)] += 1;
        let s = &mut self.sketch[sketch_index(ns)];
        *s = s.saturating_add(1);
    }

    fn set_exemplar(&mut self, e: Exemplar) {
        let b = bucket_of(e.seconds);
        self.exemplars.get_or_insert_with(Default::default)[b] = Some(e);
    }
}

/// One route template, split in segments.
#[derive(Debug, Clone)]
pub struct Template {
    pub text: String,
    segments: Vec<String>,
    rest: bool,
}

impl Template {
    pub fn parse(t: &str) -> Self {
        let mut segments: Vec<String> =
            t.trim_matches('/').split('/').map(str::to_string).collect();
        let rest = segments.last().is_some_and(|s| s == "{*}");
        if rest {
            segments.pop();
        }
        Self {
            text: t.to_string(),
            segments,
            rest,
        }
    }

    /// Does the raw `path` (a query string is ignored) fit the template?
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        let mut parts = path.trim_matches('/').split('/');
        for seg in &self.segments {
            match parts.next() {
                Some(p) if seg.starts_with('{') && seg.ends_with('}') && !p.is_empty() => {}
                Some(p) if p == seg => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

/// Who made or served the request: the correlation layer's labels of the observed process,
/// and the service and namespace of the other end (bounded: no peer pod names).
pub const IDENTITY_KEYS: [&str; ID] = [
    "service_name",
    "k8s_namespace_name",
    "k8s_pod_name",
    "k8s_pod_uid",
    "k8s_node_name",
    "k8s_container_name",
    "container_id",
    "k8s_deployment_name",
    "k8s_statefulset_name",
    "k8s_daemonset_name",
    "k8s_replicaset_name",
    "k8s_job_name",
    "k8s_cronjob_name",
    "peer_service_name",
    "peer_k8s_namespace_name",
];
const ID: usize = 15;

/// A metric's own keys followed by [`IDENTITY_KEYS`].
const fn with_identity<const N: usize, const M: usize>(
    own: [&'static str; N],
) -> [&'static str; M] {
    assert!(M == N + ID);
    let mut out = [""; M];
    let mut i = 0;
    while i < N {
        out[i] = own[i];
        i += 1;
    }
    while i < M {
        out[i] = IDENTITY_KEYS[i - N];
        i += 1;
    }
    out
}

const HTTP_SERVER_KEYS: [&str; 6 + ID] = with_identity([
    "http_request_method",
    "http_route",
    "http_response_status_code",
    "error_type",
    "server_address",
    "server_port",
]);
const HTTP_CLIENT_KEYS: [&str; 6 + ID] = with_identity([
    "http_request_method",
    "url_template",
    "http_response_status_code",
    "error_type",
    "server_address",
    "server_port",
]);
const OTHER_KEYS: [&str; 7 + ID] = with_identity([
    "protocol",
    "side",
    "operation",
    "status",
    "error_type",
    "server_address",
    "server_port",
]);
const DB_CLIENT_KEYS: [&str; 6 + ID] = with_identity([
    "db_system_name",
    "db_operation_name",
    "db_response_status_code",
    "error_type",
    "server_address",
    "server_port",
]);
const DNS_KEYS: [&str; 6 + ID] = with_identity([
    "dns_question_type",
    "dns_response_code",
    "error_type",
    "side",
    "server_address",
    "server_port",
]);
const UNANSWERED_KEYS: [&str; 6] = [
    "protocol",
    "side",
    "operation",
    "error_type",
    "service_name",
    "k8s_namespace_name",
];

/// The identity label values of a connection (one pass over its labels); `service_name`
/// falls back to the process name.
fn identity_values(conn: &ConnInfo) -> [&str; ID] {
    let mut v = [""; ID];
    for (k, val) in &conn.labels {
        if let Some(i) = IDENTITY_KEYS.iter().position(|x| x == k) {
            v[i] = val.as_str();
        }
    }
    if v[0].is_empty() {
        v[0] = &conn.comm;
    }
    v
}

/// Series of one metric, found by their label values without allocating: a hash of the
/// borrowed values picks a short list, compared value by value. Labels are owned only once a
/// series exists.
#[derive(Debug)]
struct SeriesMap<V> {
    len: usize,
    /// Keyed by [`hash_values`], which is a hash already: no second hashing.
    buckets: HashMap<u64, Vec<(Labels, V)>, std::hash::BuildHasherDefault<HashIsKey>>,
}

impl<V> Default for SeriesMap<V> {
    fn default() -> Self {
        Self {
            len: 0,
            buckets: HashMap::default(),
        }
    }
}

/// A `Hasher` for keys that are hashes.
#[derive(Default)]
struct HashIsKey(u64);

impl std::hash::Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// FNV-1a over label values, each followed by a separator. SipHash over twenty-odd short
/// strings (one `write` each) cost 1.5 µs a record, more than everything else RED does
/// (BENCHMARKS.md); this is ~40 ns.
fn hash_values(values: &[&str]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
        }
        h = (h ^ 0xff).wrapping_mul(PRIME);
    }
    h
}

impl<V: Default> SeriesMap<V> {
    /// The series with these label values; created if there is room (`None`: the metric is at
    /// `max` series).
    fn get_or_insert(
        &mut self,
        keys: &[&'static str],
        values: &[&str],
        max: usize,
    ) -> Option<&mut V> {
        let bucket = self.buckets.entry(hash_values(values)).or_default();
        let found = bucket.iter().position(|(labels, _)| {
            labels.len() == values.len()
                && labels
                    .iter()
                    .zip(values)
                    .all(|((_, v), w)| sonde_parse::same(v, w))
        });
        let i = match found {
            Some(i) => i,
            None if self.len < max => {
                self.len += 1;
                bucket.push((
                    keys.iter()
                        .zip(values)
                        .map(|(k, v)| (*k, v.to_string()))
                        .collect(),
                    V::default(),
                ));
                bucket.len() - 1
            }
            None => return None,
        };
        Some(&mut bucket[i].1)
    }
}

impl<V> SeriesMap<V> {
    fn iter(&self) -> impl Iterator<Item = (&Labels, &V)> {
        self.buckets.values().flatten().map(|(l, v)| (l, v))
    }
}

/// Decimal text of a number without allocating.
#[derive(Default)]
struct NumBuf([u8; 20]);

impl NumBuf {
    fn fmt(&mut self, mut v: u64) -> &str {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        std::str::from_utf8(&self.0[i..]).expect("ASCII digits")
    }
}

/// The RED aggregation: feed it tagged records, render it on scrape.
#[derive(Debug)]
pub struct Red {
    max_series: usize,
    templates: Vec<Template>,
    families: HashMap<Family, SeriesMap<Series>>,
    overflow: HashMap<Family, Series>,
    unanswered: SeriesMap<u64>,
    unanswered_overflow: u64,
    /// Records that fell into an overflow series.
    pub overflow_records: u64,
    /// Records whose response came before their request (clock trouble): counted, not observed.
    pub invalid_records: u64,
    slow_threshold_ns: u64,
    slow_cap: usize,
    slow: std::collections::VecDeque<SlowQuery>,
    /// Slow database operations seen (the log keeps the latest `slow_query_log`).
    pub slow_total: u64,
}

impl Default for Red {
    fn default() -> Self {
        Self::new(&RedSettings::default())
    }
}

impl Red {
    pub fn new(cfg: &RedSettings) -> Self {
        Self {
            max_series: cfg.max_series.max(1),
            templates: cfg
                .route_templates
                .iter()
                .map(|t| Template::parse(t))
                .collect(),
            families: HashMap::new(),
            overflow: HashMap::new(),
            unanswered: SeriesMap::default(),
            unanswered_overflow: 0,
            overflow_records: 0,
            invalid_records: 0,
            slow_threshold_ns: cfg.slow_query_ms.saturating_mul(1_000_000),
            slow_cap: cfg.slow_query_log,
            slow: std::collections::VecDeque::new(),
            slow_total: 0,
        }
    }

    pub fn record_all(&mut self, records: &[TaggedRecord]) {
        for r in records {
            self.record(&r.conn, &r.record);
        }
    }

    /// Account one record. Label values are borrowed from the record and its connection; a
    /// series' labels are only allocated when the series is new.
    pub fn record(&mut self, conn: &Arc<ConnInfo>, r: &Record) {
        let server = conn.role == Role::Server;
        let side = if server { "server" } else { "client" };
        let http = r.protocol() == "http";
        let (method, route) = if http {
            let mut op = r.operation().splitn(2, ' ');
            let m = r
                .attr(attr::HTTP_REQUEST_METHOD)
                .or(op.next())
                .unwrap_or("_OTHER");
            let parsed = r.attr(attr::HTTP_ROUTE).or(op.next()).unwrap_or("");
            // The raw path is only an attribute where the parser's normalisation changed it.
            let raw = r.attr(attr::URL_PATH).unwrap_or(parsed);
            let route = Some(raw)
                .filter(|_| !self.templates.is_empty())
                .and_then(|p| self.templates.iter().find(|t| t.matches(p)))
                .map_or(parsed, |t| t.text.as_str());
            (m, route)
        } else {
            ("", "")
        };
        let mut status_buf = NumBuf::default();
        let status = if r.status() > 0 {
            status_buf.fmt(u64::from(r.status()))
        } else {
            // A database whose error codes are not numbers (PostgreSQL's SQLSTATE).
            r.attr(attr::DB_RESPONSE_STATUS_CODE).unwrap_or("")
        };
        let error_type: Option<&str> = if !r.is_error(server) {
            None
        } else if r.status() > 0 && http {
            Some(status)
        } else {
            r.error()
        };
        let end = if server { &conn.local } else { &conn.remote };
        let address = end.as_ref().map_or("", |e| e.ip.as_str());
        let mut port_buf = NumBuf::default();
        let port = end.as_ref().map_or("", |e| port_buf.fmt(u64::from(e.port)));
        let ident = identity_values(conn);
        let (service, namespace, pod) = (ident[0], ident[1], ident[2]);

        let answered = r.response_ts_ns() > 0 && (!status.is_empty() || r.error().is_none());
        if !answered {
            let joined;
            let operation = if http {
                joined = format!("{method} {route}");
                joined.as_str()
            } else {
                r.operation()
            };
            let values = [
                r.protocol(),
                side,
                operation,
                r.error().unwrap_or("no-response"),
                service,
                namespace,
            ];
            match self
                .unanswered
                .get_or_insert(&UNANSWERED_KEYS, &values, self.max_series)
            {
                Some(c) => *c += 1,
                None => {
                    self.unanswered_overflow += 1;
                    self.overflow_records += 1;
                }
            }
            return;
        }
        if r.response_ts_ns() < r.request_ts_ns() {
            self.invalid_records += 1;
            return;
        }
        let ns = r.response_ts_ns() - r.request_ts_ns();
        if ns >= self.slow_threshold_ns
            && let Some(system) = r.attr(attr::DB_SYSTEM_NAME)
        {
            self.slow_total += 1;
            if self.slow_cap > 0 {
                if self.slow.len() >= self.slow_cap {
                    self.slow.pop_front();
                }
                self.slow.push_back(SlowQuery {
                    request_ts_ns: r.request_ts_ns(),
                    duration_seconds: ns as f64 / 1e9,
                    system: system.to_string(),
                    operation: r.operation().to_string(),
                    statement: r.attr(attr::DB_QUERY_TEXT).unwrap_or("").to_string(),
                    rows: r
                        .attr(attr::DB_RESPONSE_RETURNED_ROWS)
                        .and_then(|v| v.parse().ok()),
                    error: r.error().map(str::to_string),
                    side: side.to_string(),
                    pid: conn.pid,
                    service: service.to_string(),
                    namespace: namespace.to_string(),
                    pod: pod.to_string(),
                    server: end
                        .as_ref()
                        .map(|e| format!("{}:{}", e.ip, e.port))
                        .unwrap_or_default(),
                });
            }
        }
        let error = error_type.is_some();
        let error_type = error_type.unwrap_or("");
        let (family, keys, values): (Family, &[&'static str], [&str; 7]) = if http {
            let (family, keys) = if server {
                (Family::HttpServer, &HTTP_SERVER_KEYS)
            } else {
                (Family::HttpClient, &HTTP_CLIENT_KEYS)
            };
            (
                family,
                keys,
                [method, route, status, error_type, address, port, ""],
            )
        } else if r.protocol() == "dns" {
            let code = r.attr(attr::DNS_RESPONSE_CODE).unwrap_or(status);
            (
                Family::Dns,
                &DNS_KEYS,
                [r.operation(), code, error_type, side, address, port, ""],
            )
        } else if let (false, Some(system)) = (server, r.attr(attr::DB_SYSTEM_NAME)) {
            let code = r.attr(attr::DB_RESPONSE_STATUS_CODE).unwrap_or("");
            (
                Family::DbClient,
                &DB_CLIENT_KEYS,
                [system, r.operation(), code, error_type, address, port, ""],
            )
        } else {
            (
                Family::Other,
                &OTHER_KEYS,
                [
                    r.protocol(),
                    side,
                    r.operation(),
                    status,
                    error_type,
                    address,
                    port,
                ],
            )
        };
        let own = keys.len() - ID;
        let mut all = [""; 7 + ID];
        all[..own].copy_from_slice(&values[..own]);
        all[own..own + ID].copy_from_slice(&ident);
        let exemplar = r.trace_context().map(|t| Exemplar::new(t, ns));
        let series = self.families.entry(family).or_default();
        match series.get_or_insert(keys, &all[..keys.len()], self.max_series) {
            Some(s) => {
                s.observe(ns, error);
                if let Some(e) = exemplar {
                    s.set_exemplar(e);
                }
            }
            None => {
                self.overflow_records += 1;
                self.overflow.entry(family).or_default().observe(ns, error);
            }
        }
    }

    /// Series counted so far, over all metrics.
    pub fn series_count(&self) -> usize {
        self.families.values().map(|m| m.len).sum::<usize>() + self.overflow.len()
    }

    /// Prometheus text exposition of every RED metric.
    pub fn render(&self, o: &mut String) {
        self.render_with(o, false)
    }

    /// The exposition; with `exemplars`, bucket lines carry OpenMetrics exemplars (only valid
    /// in the OpenMetrics format).
    pub fn render_with(&self, o: &mut String, exemplars: bool) {
        for family in Family::ALL {
            let series = self.families.get(&family);
            let overflow = self.overflow.get(&family);
            if series.is_none_or(|m| m.len == 0) && overflow.is_none() {
                continue;
            }
            let name = family.metric();
            let _ = writeln!(
                o,
                "# HELP {name} {}\n# TYPE {name} histogram",
                family.help()
            );
            let mut sorted: Vec<(&Labels, &Series)> =
                series.map(|s| s.iter().collect()).unwrap_or_default();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            let overflow_labels: Labels = vec![("otel_metric_overflow", "true".to_string())];
            if let Some(s) = overflow {
                sorted.push((&overflow_labels, s));
            }
            for (labels, s) in sorted {
                let base = label_text(labels);
                let sep = if base.is_empty() { "" } else { "," };
                let mut cumulative = 0u64;
                let ex = |i: usize| match s
                    .exemplars
                    .as_ref()
                    .and_then(|e| e[i].as_ref())
                    .filter(|_| exemplars)
                {
                    Some(e) => format!(
                        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
                        e.trace_id, e.span_id, e.seconds, e.unix_s
                    ),
                    None => String::new(),
                };
                for (i, le) in BUCKETS.iter().enumerate() {
                    cumulative += s.buckets[i];
                    let _ = writeln!(
                        o,
                        "{name}_bucket{{{base}{sep}le=\"{le}\"}} {cumulative}{}",
                        ex(i)
                    );
                }
                let _ = writeln!(
                    o,
                    "{name}_bucket{{{base}{sep}le=\"+Inf\"}} {}{}",
                    s.count,
                    ex(BUCKETS.len())
                );
                let _ = writeln!(o, "{name}_sum{{{base}}} {}", s.sum_ns as f64 / 1e9);
                let _ = writeln!(o, "{name}_count{{{base}}} {}", s.count);
            }
        }
        if self.unanswered.len > 0 || self.unanswered_overflow > 0 {
            let name = "sonde_requests_unanswered_total";
            let _ = writeln!(
                o,
                "# HELP {name} Requests without a response: flushed when the connection closed, or lost to a capture gap.\n# TYPE {name} counter"
            );
            let mut sorted: Vec<_> = self.unanswered.iter().collect();
            sorted.sort();
            for (labels, v) in sorted {
                let _ = writeln!(o, "{name}{{{}}} {v}", label_text(labels));
            }
            if self.unanswered_overflow > 0 {
                let _ = writeln!(
                    o,
                    "{name}{{otel_metric_overflow=\"true\"}} {}",
                    self.unanswered_overflow
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP sonde_db_slow_queries_total Database operations slower than slow_query_ms (the latest are at /api/slow-queries).\n# TYPE sonde_db_slow_queries_total counter\nsonde_db_slow_queries_total {}",
            self.slow_total
        );
        let _ = writeln!(
            o,
            "# HELP sonde_red_overflow_records_total Records counted in an overflow series (a metric reached max_series).\n# TYPE sonde_red_overflow_records_total counter\nsonde_red_overflow_records_total {}",
            self.overflow_records
        );
        let _ = writeln!(
            o,
            "# HELP sonde_red_invalid_records_total Records whose response preceded their request: not observed.\n# TYPE sonde_red_invalid_records_total counter\nsonde_red_invalid_records_total {}",
            self.invalid_records
        );
        let _ = writeln!(
            o,
            "# HELP sonde_red_series Series held by the RED metrics.\n# TYPE sonde_red_series gauge\nsonde_red_series {}",
            self.series_count()
        );
    }

    /// The slow-query log, oldest first (`/api/slow-queries`).
    pub fn slow_queries(&self) -> Vec<SlowQuery> {
        self.slow.iter().cloned().collect()
    }

    /// Every series for `sonde top` (`/api/series`).
    pub fn export(&self) -> Vec<SeriesExport> {
        let mut out = Vec::new();
        for family in Family::ALL {
            for (labels, s) in self
                .families
                .get(&family)
                .into_iter()
                .flat_map(SeriesMap::iter)
            {
                out.push(SeriesExport {
                    metric: family.metric().to_string(),
                    labels: labels
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    count: s.count,
                    errors: s.errors,
                    sum_seconds: s.sum_ns as f64 / 1e9,
                    sketch: s
                        .sketch
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c > 0)
                        .map(|(i, c)| (i as u16, *c))
                        .collect(),
                });
            }
        }
        out
    }
}

/// One series as `/api/series` serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesExport {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub count: u64,
    pub errors: u64,
    pub sum_seconds: f64,
    /// Non-empty sketch buckets: (index, count).
    pub sketch: Vec<(u16, u32)>,
}

/// `k="v",…` with Prometheus escaping; empty values are left out.
fn label_text(labels: &Labels) -> String {
    let mut s = String::new();
    for (k, v) in labels {
        if v.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        sonde_metrics::push_label_value(&mut s, v);
        s.push('"');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_sdk::protocol_parser::{Endpoint, RequestRecord};

    fn conn(role: Role) -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            id: 1,
            comm: "nginx".into(),
            role,
            local: Some(Endpoint {
                ip: "127.0.0.1".into(),
                port: 8080,
            }),
            remote: Some(Endpoint {
                ip: "127.0.0.1".into(),
                port: 40000,
            }),
            ..Default::default()
        })
    }

    fn rec(op: &str, status: u32, ms: u64) -> RequestRecord {
        RequestRecord {
            conn: 1,
            protocol: "http".into(),
            operation: op.into(),
            status,
            error: (status >= 500).then(|| "server-error".into()),
            request_ts_ns: 1_000_000,
            response_ts_ns: 1_000_000 + ms * 1_000_000,
            attributes: vec![(
                "url.path".into(),
                op.split(' ').nth(1).unwrap_or("/").into(),
            )],
            ..Default::default()
        }
    }

    #[test]
    fn server_histogram_with_otel_names_and_errors() {
        let mut red = Red::default();
        let c = conn(Role::Server);
        for _ in 0..3 {
            red.record(&c, &Record::Owned(rec("GET /users/{id}", 200, 20)));
        }
        red.record(&c, &Record::Owned(rec("GET /users/{id}", 500, 300)));
        let mut o = String::new();
        red.render(&mut o);
        let base = "http_request_method=\"GET\",http_route=\"/users/{id}\",http_response_status_code=\"200\",server_address=\"127.0.0.1\",server_port=\"8080\",service_name=\"nginx\"";
        assert!(
            o.contains(&format!(
                "http_server_request_duration_seconds_count{{{base}}} 3"
            )),
            "{o}"
        );
        assert!(
            o.contains(&format!(
                "http_server_request_duration_seconds_bucket{{{base},le=\"0.025\"}} 3"
            )),
            "{o}"
        );
        assert!(
            o.contains(&format!(
                "http_server_request_duration_seconds_bucket{{{base},le=\"0.01\"}} 0"
            )),
            "{o}"
        );
        assert!(
            o.contains("http_response_status_code=\"500\",error_type=\"500\""),
            "{o}"
        );
        // Client side: a 404 is an error; a server's 404 is not.
        red.record(&conn(Role::Client), &Record::Owned(rec("GET /x", 404, 1)));
        red.record(&c, &Record::Owned(rec("GET /x", 404, 1)));
        let mut o = String::new();
        red.render(&mut o);
        assert!(o.contains("http_client_request_duration_seconds_count{http_request_method=\"GET\",url_template=\"/x\",http_response_status_code=\"404\",error_type=\"404\""), "{o}");
        assert!(o.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/x\",http_response_status_code=\"404\",server_address"), "{o}");
    }

    #[test]
    fn identity_labels_and_exemplars_only_in_openmetrics() {
        let mut red = Red::default();
        let mut c = (*conn(Role::Server)).clone();
        c.labels = vec![
            ("service_name".into(), "web".into()),
            ("k8s_namespace_name".into(), "shop".into()),
            ("container_id".into(), "abc".into()),
            ("peer_service_name".into(), "loadgen".into()),
            ("peer_k8s_pod_name".into(), "loadgen-0".into()),
        ];
        let c = Arc::new(c);
        let mut r = rec("GET /a", 200, 30);
        r.attributes.push((
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ));
        red.record(&c, &Record::Owned(r));
        red.record(&c, &Record::Owned(rec("GET /a", 200, 3)));
        let mut plain = String::new();
        red.render(&mut plain);
        assert!(plain.contains("service_name=\"web\",k8s_namespace_name=\"shop\",container_id=\"abc\",peer_service_name=\"loadgen\""), "{plain}");
        // Peer pods are not a RED label (cardinality), and no exemplar in the Prometheus format.
        assert!(!plain.contains("loadgen-0") && !plain.contains("trace_id"));
        let mut om = String::new();
        red.render_with(&mut om, true);
        // The 30 ms request sits in the 0.05 bucket; the untraced 3 ms one has none.
        let line = om.lines().find(|l| l.contains("le=\"0.05\"")).unwrap();
        assert!(line.ends_with(&format!(
            "2 # {{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"}} 0.03 {}",
            line.rsplit(' ').next().unwrap()
        )), "{line}");
        let small = om.lines().find(|l| l.contains("le=\"0.005\"")).unwrap();
        assert!(!small.contains('#'), "{small}");
    }

    #[test]
    fn openmetrics_names_counters_without_total_and_ends_with_eof() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP b B.\n# TYPE b counter\nb 2\n# TYPE g gauge\ng 3\n";
        let om = sonde_metrics::to_openmetrics(text);
        assert_eq!(
            om,
            "# HELP a A.\n# TYPE a counter\na_total 1\n# HELP b B.\n# TYPE b unknown\nb 2\n# TYPE g gauge\ng 3\n# EOF\n"
        );
    }

    #[test]
    fn cardinality_is_bounded_by_an_overflow_series() {
        let mut red = Red::new(&RedSettings {
            max_series: 5,
            ..Default::default()
        });
        let c = conn(Role::Server);
        for i in 0..20 {
            red.record(&c, &Record::Owned(rec(&format!("GET /r{i}"), 200, 1)));
        }
        assert_eq!(red.series_count(), 6);
        assert_eq!(red.overflow_records, 15);
        let mut o = String::new();
        red.render(&mut o);
        assert!(
            o.contains(
                "http_server_request_duration_seconds_count{otel_metric_overflow=\"true\"} 15"
            ),
            "{o}"
        );
    }

    #[test]
    fn route_templates_and_unanswered() {
        let mut red = Red::new(&RedSettings {
            route_templates: vec!["/shop/{cat}/items/{*}".into()],
            ..Default::default()
        });
        let c = conn(Role::Server);
        let mut r = rec("GET /shop/books/items/{id}", 200, 1);
        r.attributes = vec![("url.path".into(), "/shop/books/items/9/x".into())];
        red.record(&c, &Record::Owned(r));
        let mut lost = rec("POST /a", 0, 0);
        lost.response_ts_ns = 0;
        lost.error = Some("no-response".into());
        red.record(&c, &Record::Owned(lost));
        let mut o = String::new();
        red.render(&mut o);
        assert!(o.contains("http_route=\"/shop/{cat}/items/{*}\""), "{o}");
        assert!(o.contains("sonde_requests_unanswered_total{protocol=\"http\",side=\"server\",operation=\"POST /a\",error_type=\"no-response\",service_name=\"nginx\"} 1"), "{o}");
    }

    #[test]
    fn database_and_dns_records_get_their_own_metrics_and_slow_queries_are_logged() {
        let mut red = Red::new(&RedSettings {
            slow_query_ms: 250,
            slow_query_log: 2,
            ..Default::default()
        });
        let client = conn(Role::Client);
        let db = |op: &str, status: u32, ms: u64, text: &str| {
            let mut r = rec(op, status, ms);
            r.protocol = "mysql".into();
            r.error = (status > 0).then(|| status.to_string());
            r.attributes = vec![
                ("db.system.name".into(), "mysql".into()),
                ("db.query.text".into(), text.into()),
                ("db.response.returned_rows".into(), "1".into()),
            ];
            if status > 0 {
                r.attributes
                    .push(("db.response.status_code".into(), status.to_string()));
            }
            Record::Owned(r)
        };
        red.record(&client, &db("SELECT", 0, 5, "SELECT ?"));
        red.record(&client, &db("SELECT", 1146, 2, "SELECT * FROM missing"));
        for ms in [300, 400, 500] {
            red.record(&client, &db("SELECT", 0, ms, "SELECT SLEEP(?)"));
        }
        let mut dns = rec("A", 3, 4);
        dns.protocol = "dns".into();
        dns.error = Some("nxdomain".into());
        dns.attributes = vec![("dns.response.code".into(), "NXDOMAIN".into())];
        red.record(&client, &Record::Owned(dns));
        let mut o = String::new();
        red.render(&mut o);
        assert!(o.contains("db_client_operation_duration_seconds_count{db_system_name=\"mysql\",db_operation_name=\"SELECT\",db_response_status_code=\"1146\",error_type=\"1146\""), "{o}");
        assert!(o.contains("dns_lookup_duration_seconds_count{dns_question_type=\"A\",dns_response_code=\"NXDOMAIN\",error_type=\"nxdomain\",side=\"client\""), "{o}");
        assert!(o.contains("sonde_db_slow_queries_total 3"), "{o}");
        // The log keeps the latest two, with their statement and duration.
        let slow = red.slow_queries();
        assert_eq!(slow.len(), 2);
        assert_eq!(
            (slow[0].statement.as_str(), slow[1].duration_seconds),
            ("SELECT SLEEP(?)", 0.5)
        );
        assert_eq!(
            (slow[1].rows, slow[1].side.as_str(), slow[1].server.as_str()),
            (Some(1), "client", "127.0.0.1:40000")
        );
    }

    /// PostgreSQL's error codes are SQLSTATEs, not numbers: a record with status 0, the
    /// SQLSTATE as its error and `db.response.status_code` is answered, not lost.
    #[test]
    fn sqlstate_errors_are_answered_with_their_code() {
        let mut red = Red::new(&RedSettings::default());
        for role in [Role::Client, Role::Server] {
            let mut r = rec("SELECT", 0, 3);
            r.protocol = "postgresql".into();
            r.error = Some("42P01".into());
            r.attributes = vec![
                ("db.system.name".into(), "postgresql".into()),
                ("db.response.status_code".into(), "42P01".into()),
            ];
            red.record(&conn(role), &Record::Owned(r));
        }
        let mut o = String::new();
        red.render(&mut o);
        assert!(o.contains("db_client_operation_duration_seconds_count{db_system_name=\"postgresql\",db_operation_name=\"SELECT\",db_response_status_code=\"42P01\",error_type=\"42P01\""), "{o}");
        assert!(o.contains("sonde_request_duration_seconds_count{protocol=\"postgresql\",side=\"server\",operation=\"SELECT\",status=\"42P01\",error_type=\"42P01\""), "{o}");
        assert!(
            !o.contains("sonde_requests_unanswered_total{protocol=\"postgresql\""),
            "{o}"
        );
    }

    #[test]
    fn sketch_quantiles_are_within_ten_percent() {
        let mut s = vec![0u32; SKETCH_BUCKETS];
        for ms in 1..=100u64 {
            s[sketch_index(ms * 1_000_000)] += 1;
        }
        let p50 = sketch_quantile(&s, 0.5).unwrap();
        let p99 = sketch_quantile(&s, 0.99).unwrap();
        assert!((p50 - 0.050).abs() / 0.050 < 0.1, "{p50}");
        assert!((p99 - 0.099).abs() / 0.099 < 0.1, "{p99}");
        assert_eq!(sketch_quantile(&[0; 4], 0.5), None);
    }
}
