//! The recent-records log (`/api/records`): the last requests every parser returned, each
//! with its connection's labels (container, pod, workload, peer) and its trace context, so
//! one request can be looked at whole: what it was, who sent and served it, which trace.
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sonde_sdk::protocol_parser::Role;

use sonde_parse::TaggedRecord;
use sonde_parse::trace_context::{ATTR_SPAN_ID, ATTR_TRACE_ID, TraceContext};

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
    /// Records seen, over the daemon's life.
    pub total: u64,
}

impl RecordLog {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            records: VecDeque::with_capacity(cap.min(4096)),
            total: 0,
        }
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
        self.records.iter().skip(skip).map(RecordView::of).collect()
    }
}

impl Default for RecordLog {
    fn default() -> Self {
        Self::new(1024)
    }
}
