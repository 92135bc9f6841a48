//! The recent-records log (`/api/records`): the last requests every parser returned, each
//! with its connection's labels (container, pod, workload, peer) and its trace context, so
//! one request can be looked at whole: what it was, who sent and served it, which trace.
//!
//! Privacy: by default a record shows its route (the configured route template it matches,
//! else the parser's normalised route) and never the raw URL path, its query string or a
//! statement's text (attributes [`RAW_ATTRIBUTES`]): those can carry ids, tokens and
//! passwords. `[privacy] raw_records = true` ([`RecordLog::raw_values`]) shows them.
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sonde_sdk::protocol_parser::Role;

use sonde_parse::TaggedRecord;
use sonde_parse::trace_context::{ATTR_SPAN_ID, ATTR_TRACE_ID, TraceContext};
use sonde_sdk::attributes as attr;

use crate::red::Template;

/// Attributes holding raw request data (full path and query, statement text), left out of
/// records unless raw values are asked for.
pub const RAW_ATTRIBUTES: [&str; 5] = [
    attr::URL_PATH,
    "url.query",
    "url.full",
    "url.original",
    attr::DB_QUERY_TEXT,
];

/// One record as `/api/records` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    pub protocol: String,
    pub operation: String,
    pub status: u32,
    pub error: Option<String>,
    /// `client` or `server`: which end the observed process is.
    pub side: String,
    /// Kernel monotonic time of the request.
    pub request_ts_ns: u64,
    /// None when the request was never answered.
    pub duration_seconds: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub pid: u32,
    pub comm: String,
    pub local: Option<String>,
    pub remote: Option<String>,
    /// The connection's labels (see `correlate`).
    pub labels: BTreeMap<String, String>,
    /// The parser's attributes, then `trace_id` and `span_id` when a trace context came.
    pub attributes: Vec<(String, String)>,
    pub trace: Option<TraceContext>,
}

impl RecordView {
    /// The record without its raw values ([`RAW_ATTRIBUTES`]); an HTTP operation names the
    /// first of `templates` its path matches, else the parser's route, never a query string.
    pub fn redacted(t: &TaggedRecord, templates: &[Template]) -> RecordView {
        let mut v = RecordView::of(t);
        if v.protocol == "http" {
            let raw = t.record.attr(attr::URL_PATH);
            let (method, route) = v.operation.split_once(' ').unwrap_or(("", &v.operation));
            let path = raw.unwrap_or(route);
            let route = match templates.iter().find(|t| t.matches(path)) {
                Some(t) => t.text.as_str(),
                None => route.split(['?', '#']).next().unwrap_or(route),
            };
            v.operation = if method.is_empty() {
                route.to_string()
            } else {
                format!("{method} {route}")
            };
        }
        v.attributes
            .retain(|(k, _)| !RAW_ATTRIBUTES.contains(&k.as_str()));
        v
    }

    /// The record as the parser gave it (raw path, query and statement included).
    pub fn of(t: &TaggedRecord) -> RecordView {
        let r = &t.record;
        let c = &t.conn;
        let trace = r.trace_context();
        let mut attributes: Vec<(String, String)> = r
            .attributes()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(t) = &trace {
            attributes.push((ATTR_TRACE_ID.into(), t.trace_id.clone()));
            attributes.push((ATTR_SPAN_ID.into(), t.span_id.clone()));
        }
        let answered = r.response_ts_ns() >= r.request_ts_ns() && r.response_ts_ns() > 0;
        RecordView {
            protocol: r.protocol().to_string(),
            operation: r.operation().to_string(),
            status: r.status(),
            error: r.error().map(str::to_string),
            side: if c.role == Role::Server {
                "server"
            } else {
                "client"
            }
            .into(),
            request_ts_ns: r.request_ts_ns(),
            duration_seconds: answered
                .then(|| (r.response_ts_ns() - r.request_ts_ns()) as f64 / 1e9),
            request_bytes: r.request_bytes(),
            response_bytes: r.response_bytes(),
            pid: c.pid,
            comm: c.comm.clone(),
            local: c.local.as_ref().map(|e| format!("{}:{}", e.ip, e.port)),
            remote: c.remote.as_ref().map(|e| format!("{}:{}", e.ip, e.port)),
            labels: c.labels.iter().cloned().collect(),
            attributes,
            trace,
        }
    }
}

/// The last `cap` records (the oldest go first). Records are only turned into views when
/// asked for, so the daemon loop pays a clone of an `Arc` per record, not a copy.
#[derive(Debug)]
pub struct RecordLog {
    cap: usize,
    records: VecDeque<TaggedRecord>,
    /// Show raw paths, query strings and statements (`[privacy] raw_records`).
    raw: bool,
    templates: Vec<Template>,
    /// Records seen, over the daemon's life.
    pub total: u64,
}

impl RecordLog {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            records: VecDeque::with_capacity(cap.min(4096)),
            raw: false,
            templates: Vec::new(),
            total: 0,
        }
    }

    /// Serve raw paths, query strings and statement text (off by default).
    pub fn raw_values(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// The route templates of `[metrics]`: a redacted HTTP record names the one it matches,
    /// as its RED series does.
    pub fn route_templates(mut self, templates: &[String]) -> Self {
        self.templates = templates.iter().map(|t| Template::parse(t)).collect();
        self
    }

    pub fn push_all(&mut self, records: &[TaggedRecord]) {
        self.total += records.len() as u64;
        if self.cap == 0 {
            return;
        }
        let skip = records.len().saturating_sub(self.cap);
        for r in &records[skip..] {
            if self.records.len() == self.cap {
                self.records.pop_front();
            }
            self.records.push_back(r.clone());
        }
    }

    /// The latest `limit` records, oldest first.
    pub fn latest(&self, limit: usize) -> Vec<RecordView> {
        let skip = self.records.len().saturating_sub(limit);
        let records = self.records.iter().skip(skip);
        if self.raw {
            records.map(RecordView::of).collect()
        } else {
            records
                .map(|r| RecordView::redacted(r, &self.templates))
                .collect()
        }
    }
}

impl Default for RecordLog {
    fn default() -> Self {
        Self::new(1024)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sonde_parse::Record;
    use sonde_sdk::protocol_parser::{ConnInfo, RequestRecord};

    use super::*;

    fn tagged(protocol: &str, operation: &str, attributes: &[(&str, &str)]) -> TaggedRecord {
        TaggedRecord {
            conn: Arc::new(ConnInfo {
                comm: "srv".into(),
                role: Role::Server,
                ..Default::default()
            }),
            record: Record::Owned(RequestRecord {
                protocol: protocol.into(),
                operation: operation.into(),
                status: 200,
                request_ts_ns: 1,
                response_ts_ns: 2,
                attributes: attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn log(raw: bool) -> RecordLog {
        let mut log = RecordLog::new(8)
            .raw_values(raw)
            .route_templates(&["/shop/{cat}/items/{*}".into()]);
        log.push_all(&[
            tagged(
                "http",
                "GET /reset/{id}/{id}",
                &[
                    ("url.path", "/reset/7/PATHSECRET42?token=QUERYSECRET"),
                    ("user_agent.original", "curl/8"),
                ],
            ),
            tagged(
                "http",
                "GET /shop/books/items/{id}",
                &[("url.path", "/shop/books/items/42")],
            ),
            tagged(
                "mysql",
                "SELECT",
                &[
                    ("db.system.name", "mysql"),
                    ("db.query.text", "SELECT * FROM t WHERE a = ?"),
                ],
            ),
        ]);
        log
    }

    #[test]
    fn raw_paths_queries_and_statements_are_opt_in() {
        let views = log(false).latest(10);
        let text = serde_json::to_string(&views).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains("url.path") && !text.contains("db.query.text"));
        assert_eq!(views[0].operation, "GET /reset/{id}/{id}");
        assert_eq!(
            views[0].attributes,
            vec![("user_agent.original".into(), "curl/8".into())]
        );
        // A configured template wins, as in the RED series.
        assert_eq!(views[1].operation, "GET /shop/{cat}/items/{*}");
        assert_eq!(views[2].operation, "SELECT");

        let raw = log(true).latest(10);
        let text = serde_json::to_string(&raw).unwrap();
        assert!(text.contains("PATHSECRET42?token=QUERYSECRET"), "{text}");
        assert!(text.contains("SELECT * FROM t WHERE a = ?"), "{text}");
        assert_eq!(raw[1].operation, "GET /shop/books/items/{id}");
    }
}
