//! RED metrics (rate, errors, duration) from request records, with OpenTelemetry
//! semantic-convention names, bounded cardinality, and Prometheus exposition.
//!
//! - HTTP server side (the observed process accepted the connection):
//!   `http_server_request_duration_seconds{http_request_method, http_route,
//!   http_response_status_code, error_type, server_address, server_port, service, namespace, pod}`.
//! - HTTP client side: `http_client_request_duration_seconds{http_request_method, url_template,
//!   http_response_status_code, error_type, server_address, server_port, service, namespace, pod}`.
//! - RPCs (records with `rpc.system`, e.g. gRPC from the HTTP/2 parser), server and client side:
//!   `rpc_server_duration_seconds` / `rpc_client_duration_seconds{rpc_system, rpc_service,
//!   rpc_method, rpc_grpc_status_code, error_type, server_address, server_port, service, …}`;
//!   any non-OK status is an error, its `error_type` the status name (`NOT_FOUND`).
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
//!
//! Here the aggregation ([`Red::record`]); beside it, one job each: `schema` which family
//! and label keys a record gets, `series` a series' counters and the allocation-free series
//! map, `sketch` the buckets and the quantile sketch, `route` route templates, `slow` the
//! slow-query log's entries, `render` the exposition and `/api/series`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sonde_sdk::attributes as attr;
use sonde_sdk::protocol_parser::{ConnInfo, Role};

use sonde_parse::{Record, TaggedRecord};

mod render;
mod route;
mod schema;
mod series;
mod sketch;
mod slow;

pub use render::SeriesExport;
pub use route::Template;
pub use schema::IDENTITY_KEYS;
use schema::{
    DB_CLIENT_KEYS, DNS_KEYS, Family, HTTP_CLIENT_KEYS, HTTP_SERVER_KEYS, ID, OTHER_KEYS,
    PerFamily, RPC_KEYS, TLS_KEY, UNANSWERED_KEYS, identity_values,
};
pub use series::{Exemplar, Labels, Series};
use series::{NumBuf, SeriesMap};
pub use sketch::{BUCKETS, SKETCH_BUCKETS, sketch_index, sketch_quantile, sketch_value_ns};
pub use slow::SlowQuery;

/// `[metrics]` settings of the RED aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedSettings {
    /// Series per metric; records beyond go to the overflow series.
    pub max_series: usize,
    /// Series of all the latency metrics together (HTTP server and client, DNS, database,
    /// other protocols), so the node's page stays bounded when every metric is busy: each
    /// series is ~17 exposed samples (buckets, sum, count). Records beyond go to their
    /// metric's overflow series.
    pub max_series_total: usize,
    /// Series per metric one service (`service_name`) may hold, so one service's routes,
    /// statements or peers cannot take a metric's whole `max_series`; records beyond go to
    /// the overflow series too (counted in `sonde_red_service_overflow_records_total`).
    /// Above `max_series` it is `max_series`.
    pub max_series_per_service: usize,
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
            max_series_total: 3000,
            max_series_per_service: 500,
            route_templates: Vec::new(),
            slow_query_ms: 500,
            slow_query_log: 256,
        }
    }
}

impl RedSettings {
    /// Every RED value of `[metrics]` within its range (see docs/sonde.example.toml).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_series >= 1,
            "metrics.max_series must be at least 1 (got 0)"
        );
        anyhow::ensure!(
            self.max_series_total >= 1,
            "metrics.max_series_total must be at least 1 (got 0)"
        );
        Ok(())
    }
}

/// The RED aggregation: feed it tagged records, render it on scrape.
#[derive(Debug)]
pub struct Red {
    max_series: usize,
    templates: Vec<Template>,
    families: PerFamily<SeriesMap<Series>>,
    overflow: PerFamily<Series>,
    unanswered: SeriesMap<u64>,
    unanswered_overflow: u64,
    /// Records that fell into an overflow series.
    pub overflow_records: u64,
    /// Of those, records whose service held `max_series_per_service` series of the metric.
    pub service_overflow_records: u64,
    max_series_per_service: usize,
    max_series_total: usize,
    /// Series of the latency metrics, all together (at most `max_series_total`).
    series_total: usize,
    /// Series per (metric, service): bounded by the series themselves.
    per_service: PerFamily<HashMap<String, usize>>,
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
            families: PerFamily::default(),
            overflow: PerFamily::default(),
            unanswered: SeriesMap::default(),
            unanswered_overflow: 0,
            overflow_records: 0,
            service_overflow_records: 0,
            max_series_per_service: cfg.max_series_per_service.max(1),
            max_series_total: cfg.max_series_total.max(1),
            series_total: 0,
            per_service: PerFamily::default(),
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
            let route = if self.templates.is_empty() {
                parsed
            } else {
                // The raw path is only an attribute where the parser's normalisation changed it.
                let raw = r.attr(attr::URL_PATH).unwrap_or(parsed);
                self.templates
                    .iter()
                    .find(|t| t.matches(raw))
                    .map_or(parsed, |t| t.text.as_str())
            };
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
            let tls = conn.labels.iter().any(|(k, v)| k == TLS_KEY && v == "true");
            (
                family,
                keys,
                [
                    method,
                    route,
                    status,
                    error_type,
                    address,
                    port,
                    if tls { "true" } else { "false" },
                ],
            )
        } else if r.protocol() == "dns" {
            let code = r.attr(attr::DNS_RESPONSE_CODE).unwrap_or(status);
            (
                Family::Dns,
                &DNS_KEYS,
                [r.operation(), code, error_type, side, address, port, ""],
            )
        } else if let Some(system) = r.attr(attr::RPC_SYSTEM) {
            let family = if server {
                Family::RpcServer
            } else {
                Family::RpcClient
            };
            (
                family,
                &RPC_KEYS,
                [
                    system,
                    r.attr(attr::RPC_SERVICE).unwrap_or(""),
                    r.attr(attr::RPC_METHOD).unwrap_or(""),
                    r.attr(attr::RPC_GRPC_STATUS_CODE).unwrap_or(""),
                    error_type,
                    address,
                    port,
                ],
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
        let series = self.families.get_or_default(family);
        // The caps only matter for a new series: looked up only then.
        let per_service = &self.per_service;
        let max_per_service = self.max_series_per_service;
        let room = || {
            per_service
                .get(&family)
                .and_then(|m| m.get(service))
                .is_none_or(|&n| n < max_per_service)
        };
        let total_room = self.series_total < self.max_series_total;
        let mut service_room = None;
        match series.get_or_insert_if(keys, &all[..keys.len()], self.max_series, || {
            *service_room.insert(room()) && total_room
        }) {
            Some((s, new)) => {
                self.series_total += usize::from(new);
                s.observe(ns, error);
                if let Some(e) = exemplar {
                    s.set_exemplar(e);
                }
                if new {
                    *self
                        .per_service
                        .get_or_default(family)
                        .entry(service.to_string())
                        .or_default() += 1;
                }
            }
            None => {
                self.overflow_records += 1;
                self.service_overflow_records += u64::from(!service_room.unwrap_or_else(room));
                self.overflow.get_or_default(family).observe(ns, error);
            }
        }
    }

    /// Series counted so far, over all metrics.
    pub fn series_count(&self) -> usize {
        self.families.values().map(|m| m.len).sum::<usize>() + self.overflow.len()
    }

    /// The slow-query log, oldest first (`/api/slow-queries`).
    pub fn slow_queries(&self) -> Vec<SlowQuery> {
        self.slow.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
