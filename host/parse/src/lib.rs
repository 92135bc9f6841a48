//! The parser contract: the daemon side of the `protocol-parser` world, independent of how a
//! parser runs (a Wasm component in the sandbox, or natively).
//!
//! ```text
//!  StreamEvent ──► Router ──ParseJob (per parser)──► ParserSlot ──► backend (Wasm / native)
//!   (conntrack)     │  one flat batch per parser        │ conn table, poisoning,
//!                   │  per capture batch                │ records tagged with ConnInfo
//!                   ◄───────────── SlotOutput ──────────┘
//!                   │  claims → who owns a connection → kernel verdicts
//!                   └► records (to RED metrics)
//! ```
//!
//! This crate is the contract only: what a job and an output are ([`ParseJob`],
//! [`ParseOutput`], [`Record`]), what a backend implements ([`ParserBackend`]), and how a call
//! can fail ([`outcome`]). `sonde-pipeline` routes jobs; `sonde-sandbox` runs Wasm backends.
#![forbid(unsafe_code)]

pub mod outcome;
mod text;
pub mod trace_context;

pub use outcome::{Failure, FailureKind, Health, Quarantine};
pub use text::same;

use std::sync::Arc;

use serde::Serialize;
use sonde_sdk::attributes as attr;
pub use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RecordBatch, RequestRecord};

/// Segment metadata of a [`ParseJob`] (the WIT `segment-meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegMeta {
    pub conn: u64,
    pub direction: Direction,
    pub ts_ns: u64,
    pub gap_before: u64,
}

/// One call's worth of work for one parser: connections to announce, segments as one flat
/// buffer with end offsets (segment `i` is `data[ends[i-1]..ends[i]]`), connections gone.
/// Applied in that order.
#[derive(Debug, Clone, Default)]
pub struct ParseJob {
    pub opened: Vec<Arc<ConnInfo>>,
    /// Announced connections with new labels (the parser is not told; records are tagged
    /// with the new ones).
    pub relabeled: Vec<Arc<ConnInfo>>,
    pub data: Vec<u8>,
    pub ends: Vec<u32>,
    pub meta: Vec<SegMeta>,
    pub closed: Vec<u64>,
}

impl ParseJob {
    /// Empties the job, keeping its buffers' capacity (a parsed job is reused for the next).
    pub fn clear(&mut self) {
        self.opened.clear();
        self.relabeled.clear();
        self.data.clear();
        self.ends.clear();
        self.meta.clear();
        self.closed.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.opened.is_empty()
            && self.relabeled.is_empty()
            && self.meta.is_empty()
            && self.closed.is_empty()
    }

    pub fn push_segment(&mut self, meta: SegMeta, data: &[u8]) {
        self.data.extend_from_slice(data);
        self.ends.push(self.data.len() as u32);
        self.meta.push(meta);
    }

    /// Segment `i`'s bytes.
    pub fn segment(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// Connections this job carries segments of, each once.
    pub fn conns(&self) -> Vec<u64> {
        let mut c: Vec<u64> = self.meta.iter().map(|m| m.conn).collect();
        c.extend(self.opened.iter().map(|o| o.id));
        c.sort_unstable();
        c.dedup();
        c
    }

    /// The same job without the segments (and announcements) of `drop` connections.
    pub fn without(&self, drop: &impl Fn(u64) -> bool) -> ParseJob {
        let mut out = ParseJob {
            opened: self
                .opened
                .iter()
                .filter(|c| !drop(c.id))
                .cloned()
                .collect(),
            relabeled: self
                .relabeled
                .iter()
                .filter(|c| !drop(c.id))
                .cloned()
                .collect(),
            closed: self.closed.clone(),
            ..Default::default()
        };
        for (i, m) in self.meta.iter().enumerate() {
            if !drop(m.conn) {
                out.push_segment(*m, self.segment(i));
            }
        }
        out
    }
}

/// A parsed record: owned (a native parser) or read in place from the batch a component
/// returned (validated once; no string is copied per field).
#[derive(Debug, Clone)]
pub enum Record {
    Owned(RequestRecord),
    Batched(Arc<RecordBatch>, u32),
}

impl Record {
    fn view(&self) -> Option<sonde_sdk::protocol_parser::RecordRef<'_>> {
        match self {
            Record::Owned(_) => None,
            Record::Batched(b, i) => Some(b.get(*i as usize)),
        }
    }

    pub fn conn(&self) -> u64 {
        match self {
            Record::Owned(r) => r.conn,
            Record::Batched(b, i) => b.heads[*i as usize].conn,
        }
    }

    pub fn protocol(&self) -> &str {
        match self {
            Record::Owned(r) => &r.protocol,
            Record::Batched(..) => self.view().map_or("", |v| v.protocol()),
        }
    }

    pub fn operation(&self) -> &str {
        match self {
            Record::Owned(r) => &r.operation,
            Record::Batched(..) => self.view().map_or("", |v| v.operation()),
        }
    }

    pub fn status(&self) -> u32 {
        self.numbers().0
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Record::Owned(r) => r.error.as_deref(),
            Record::Batched(..) => self.view().and_then(|v| v.error()),
        }
    }

    /// Whether the record is a failure as seen from its side (OpenTelemetry's rule for HTTP:
    /// 5xx on the server side, ≥ 400 on the client side; otherwise the parser's error).
    pub fn is_error(&self, server: bool) -> bool {
        if self.status() > 0 && self.protocol() == "http" {
            self.status() >= if server { 500 } else { 400 }
        } else {
            self.error().is_some()
        }
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes()
            .find(|(k, _)| crate::same(k, key))
            .map(|(_, v)| v)
    }

    /// Every attribute, in the parser's order.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let (owned, batched) = match self {
            Record::Owned(r) => (
                Some(r.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                None,
            ),
            Record::Batched(..) => (None, self.view().map(|v| v.attributes())),
        };
        owned
            .into_iter()
            .flatten()
            .chain(batched.into_iter().flatten())
    }

    /// The W3C or B3 trace context the record's headers carried, if any.
    pub fn trace_context(&self) -> Option<crate::trace_context::TraceContext> {
        let is_trace = |k: &str| {
            k == attr::TRACEPARENT || k == attr::TRACESTATE || k == "b3" || k.starts_with("x-b3-")
        };
        if !self.attributes().any(|(k, _)| is_trace(k)) {
            return None;
        }
        crate::trace_context::from_attrs(self.attributes().filter(|(k, _)| is_trace(k)))
    }

    pub fn request_ts_ns(&self) -> u64 {
        self.numbers().1
    }

    pub fn response_ts_ns(&self) -> u64 {
        self.numbers().2
    }

    pub fn request_bytes(&self) -> u64 {
        self.numbers().3
    }

    pub fn response_bytes(&self) -> u64 {
        self.numbers().4
    }

    /// (status, request ts, response ts, request bytes, response bytes).
    fn numbers(&self) -> (u32, u64, u64, u64, u64) {
        match self {
            Record::Owned(r) => (
                r.status,
                r.request_ts_ns,
                r.response_ts_ns,
                r.request_bytes,
                r.response_bytes,
            ),
            Record::Batched(b, i) => {
                let h = &b.heads[*i as usize];
                (
                    h.status,
                    h.request_ts_ns,
                    h.response_ts_ns,
                    h.request_bytes,
                    h.response_bytes,
                )
            }
        }
    }

    pub fn to_owned(&self) -> RequestRecord {
        match self {
            Record::Owned(r) => r.clone(),
            Record::Batched(b, i) => b.get(*i as usize).to_owned(),
        }
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.to_owned() == other.to_owned()
    }
}

/// What a backend returns for one job: records (with their `conn` set) and claim changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParseOutput {
    pub records: Vec<Record>,
    pub claims: Vec<(u64, Claim)>,
}

/// How a parser runs. One call applies a whole [`ParseJob`]; a failure means the backend lost
/// every connection's state (a Wasm instance that trapped is dropped).
pub trait ParserBackend: Send {
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    /// `embedded`, `native` or the file it came from.
    fn source(&self) -> &str;
    /// `job` is lent mutably so a backend can move its buffers into the call instead of
    /// copying them; it must leave the job as it found it.
    fn run(&mut self, job: &mut ParseJob) -> Result<ParseOutput, Failure>;
    fn health(&self) -> Health;
}

/// A record and the connection it belongs to.
#[derive(Debug, Clone)]
pub struct TaggedRecord {
    pub conn: Arc<ConnInfo>,
    pub record: Record,
}

/// Per-parser counters the router and slot keep, on top of the sandbox's [`Health`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ParserCounters {
    pub jobs: u64,
    /// Times a full queue refused the parser's job and it was held to be offered again,
    /// grown by what came next (nothing lost).
    pub jobs_held: u64,
    /// Jobs dropped: the parser's queue stayed full while the held job reached its bound.
    pub jobs_dropped: u64,
    pub segments: u64,
    pub bytes: u64,
    pub records: u64,
    /// Connections the parser claimed.
    pub claimed: u64,
    /// Connections whose parsing state a failure (or a dropped job) destroyed: they are not fed
    /// to this parser again.
    pub abandoned: u64,
}

/// A parser as `/metrics` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ParserStats {
    pub name: String,
    pub version: String,
    pub source: String,
    pub health: Health,
    pub counters: ParserCounters,
}

impl ParserStats {
    /// Add another version's counters (hot swap: one name, several slots). `take_identity`:
    /// the other is the active version, whose version, source and health state are shown.
    pub fn merge(&mut self, o: ParserStats, take_identity: bool) {
        let c = &mut self.counters;
        c.jobs += o.counters.jobs;
        c.jobs_held += o.counters.jobs_held;
        c.jobs_dropped += o.counters.jobs_dropped;
        c.segments += o.counters.segments;
        c.bytes += o.counters.bytes;
        c.records += o.counters.records;
        c.claimed += o.counters.claimed;
        c.abandoned += o.counters.abandoned;
        let (mut h, oh) = (self.health.clone(), o.health);
        h.calls += oh.calls;
        h.failures += oh.failures;
        h.deadline_exceeded += oh.deadline_exceeded;
        h.fuel_exhausted += oh.fuel_exhausted;
        h.memory_cap_hits += oh.memory_cap_hits;
        h.traps += oh.traps;
        h.bad_output += oh.bad_output;
        h.instantiations += oh.instantiations;
        h.total_call_us += oh.total_call_us;
        h.max_call_us = h.max_call_us.max(oh.max_call_us);
        h.skipped += oh.skipped;
        h.quarantines += oh.quarantines;
        if take_identity {
            self.version = o.version;
            self.source = o.source;
            h.last_call_us = oh.last_call_us;
            h.failures_in_a_row = oh.failures_in_a_row;
            h.last_error = oh.last_error;
            h.quarantined_until = oh.quarantined_until;
        }
        self.health = h;
    }
}
