//! The `protocol-parser` world: a parser turns reassembled connection payloads into request
//! records (protocol, operation, status, timing, sizes, attributes such as `traceparent`).
//!
//! An author implements [`ProtocolParser`]: `detect` on a connection's first bytes, then
//! `parse` per segment with a per-connection state, `close` to flush. [`Driver`] does the rest
//! and is the same code in the component and in the native [`harness`]: it keeps the
//! connection table, decides when detection gives up (after [`DETECT_BUDGET`] bytes per
//! direction), tags records with their connection, and reports claim changes so the daemon can
//! stop the kernel copying payloads nobody wants.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bytes per direction a parser may look at before an undecided connection counts as not its.
pub const DETECT_BUDGET: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    Unknown,
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// Relative to the observed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Bytes it wrote.
    Egress,
    /// Bytes it read.
    Ingress,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

/// A connection as the daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConnInfo {
    pub id: u64,
    pub pid: u32,
    pub comm: String,
    pub local: Option<Endpoint>,
    pub remote: Option<Endpoint>,
    pub role: Role,
    pub transport: Transport,
    /// Container, pod, namespace, workload when known.
    pub labels: Vec<(String, String)>,
}

impl ConnInfo {
    /// Direction of requests: a client writes them, a server reads them. Unknown role: egress.
    pub fn request_direction(&self) -> Direction {
        match self.role {
            Role::Server => Direction::Ingress,
            _ => Direction::Egress,
        }
    }
}

/// One reassembled piece of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub direction: Direction,
    pub ts_ns: u64,
    /// Stream bytes missing just before this segment (not copied, or lost).
    pub gap_before: u64,
    pub data: &'a [u8],
}

/// A parser's stance on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    Undecided,
    Mine,
    NotMine,
    /// Mine, but nothing more to learn (e.g. after an HTTP upgrade): stop sending payload.
    Finished,
}

/// One exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestRecord {
    /// Set by the [`Driver`]; parsers may leave it 0.
    pub conn: u64,
    pub protocol: String,
    pub operation: String,
    pub status: u32,
    pub error: Option<String>,
    pub request_ts_ns: u64,
    pub response_ts_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub attributes: Vec<(String, String)>,
}

impl RequestRecord {
    /// The value of attribute `key`, if the record has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Bytes `start .. start + len` of a [`RecordBatch`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

/// A record of a [`RecordBatch`]: numbers, and spans of the batch's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordHead {
    pub conn: u64,
    pub protocol: Span,
    pub operation: Span,
    pub status: u32,
    pub error: Option<Span>,
    pub request_ts_ns: u64,
    pub response_ts_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub attrs_start: u32,
    pub attrs_len: u32,
}

/// Records in the flat form they cross the sandbox in (the WIT `record-batch`): all text in
/// one string, so a call's result is three lists instead of one allocation per string on each
/// side. Authors never see it: the component glue encodes, the daemon decodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBatch {
    pub text: String,
    pub heads: Vec<RecordHead>,
    pub attrs: Vec<(Span, Span)>,
}

impl RecordBatch {
    /// Flatten records. Within a batch each distinct attribute key and protocol name is
    /// written once (they repeat in every record).
    pub fn encode(records: &[RequestRecord]) -> RecordBatch {
        let mut b = RecordBatch {
            text: String::with_capacity(records.len() * 256),
            heads: Vec::with_capacity(records.len()),
            attrs: Vec::with_capacity(records.len() * 8),
        };
        // A handful of distinct keys: a linear scan beats hashing.
        let mut interned: Vec<(&str, Span)> = Vec::new();
        for r in records {
            let protocol = b.intern(&mut interned, &r.protocol);
            let operation = b.push(&r.operation);
            let error = r.error.as_deref().map(|e| b.intern(&mut interned, e));
            let attrs_start = b.attrs.len() as u32;
            for (k, v) in &r.attributes {
                let k = b.intern(&mut interned, k);
                let v = b.push(v);
                b.attrs.push((k, v));
            }
            b.heads.push(RecordHead {
                conn: r.conn,
                protocol,
                operation,
                status: r.status,
                error,
                request_ts_ns: r.request_ts_ns,
                response_ts_ns: r.response_ts_ns,
                request_bytes: r.request_bytes,
                response_bytes: r.response_bytes,
                attrs_start,
                attrs_len: r.attributes.len() as u32,
            });
        }
        b
    }

    fn push(&mut self, s: &str) -> Span {
        let span = Span {
            start: self.text.len() as u32,
            len: s.len() as u32,
        };
        self.text.push_str(s);
        span
    }

    fn intern<'a>(&mut self, interned: &mut Vec<(&'a str, Span)>, s: &'a str) -> Span {
        if let Some((_, span)) = interned.iter().find(|(k, _)| *k == s) {
            return *span;
        }
        let span = self.push(s);
        interned.push((s, span));
        span
    }

    /// The text of a span; an error if it is out of bounds or splits a character (a
    /// component's output is not trusted).
    pub fn text_of(&self, span: Span) -> Result<&str, String> {
        let (start, end) = (span.start as usize, span.start as usize + span.len as usize);
        self.text.get(start..end).ok_or_else(|| {
            format!(
                "text span {start}..{end} outside the batch's {} bytes or inside a character",
                self.text.len()
            )
        })
    }

    /// Check every span and attribute range once, so [`RecordRef`] reads need no error path.
    /// Errors name the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for h in &self.heads {
            self.text_of(h.protocol)?;
            self.text_of(h.operation)?;
            if let Some(e) = h.error {
                self.text_of(e)?;
            }
            let attrs = self
                .attrs
                .get(h.attrs_start as usize..h.attrs_start as usize + h.attrs_len as usize)
                .ok_or_else(|| {
                    format!(
                        "attribute range {}+{} outside the batch's {}",
                        h.attrs_start,
                        h.attrs_len,
                        self.attrs.len()
                    )
                })?;
            for (k, v) in attrs {
                self.text_of(*k)?;
                self.text_of(*v)?;
            }
        }
        Ok(())
    }

    /// Record `i`, borrowed. Only for a [`validate`](Self::validate)d batch (a bad span reads
    /// as an empty string rather than panicking).
    pub fn get(&self, i: usize) -> RecordRef<'_> {
        RecordRef {
            batch: self,
            head: &self.heads[i],
        }
    }

    /// The records, owned. Errors name the first bad span or attribute range.
    pub fn decode(&self) -> Result<Vec<RequestRecord>, String> {
        self.validate()?;
        Ok((0..self.heads.len())
            .map(|i| self.get(i).to_owned())
            .collect())
    }
}

/// A record of a [`RecordBatch`], read in place.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    batch: &'a RecordBatch,
    head: &'a RecordHead,
}

impl<'a> RecordRef<'a> {
    fn text(&self, s: Span) -> &'a str {
        self.batch.text_of(s).unwrap_or("")
    }

    pub fn head(&self) -> &'a RecordHead {
        self.head
    }

    pub fn protocol(&self) -> &'a str {
        self.text(self.head.protocol)
    }

    pub fn operation(&self) -> &'a str {
        self.text(self.head.operation)
    }

    pub fn error(&self) -> Option<&'a str> {
        self.head.error.map(|e| self.text(e))
    }

    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let (start, len) = (self.head.attrs_start as usize, self.head.attrs_len as usize);
        let batch = self.batch;
        batch
            .attrs
            .get(start..start + len)
            .unwrap_or(&[])
            .iter()
            .map(move |(k, v)| {
                (
                    batch.text_of(*k).unwrap_or(""),
                    batch.text_of(*v).unwrap_or(""),
                )
            })
    }

    pub fn attr(&self, key: &str) -> Option<&'a str> {
        self.attributes().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn to_owned(&self) -> RequestRecord {
        let h = self.head;
        RequestRecord {
            conn: h.conn,
            protocol: self.protocol().to_string(),
            operation: self.operation().to_string(),
            status: h.status,
            error: self.error().map(str::to_string),
            request_ts_ns: h.request_ts_ns,
            response_ts_ns: h.response_ts_ns,
            request_bytes: h.request_bytes,
            response_bytes: h.response_bytes,
            attributes: self
                .attributes()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParserInfo {
    pub name: String,
    pub version: String,
    pub protocols: Vec<String>,
}

/// A protocol parser. Implement it on a unit struct; the state lives per connection.
pub trait ProtocolParser {
    type State: Default;

    fn info() -> ParserInfo;

    /// Look at the first bytes of a connection (either direction, as they come). Return
    /// `Undecided` to see more; after [`DETECT_BUDGET`] bytes in both directions the driver
    /// gives up for you.
    fn detect(conn: &ConnInfo, segment: &Segment<'_>) -> Claim;

    /// A segment of a claimed connection, the detecting one included. Segments of one
    /// direction come in stream order; `gap_before` says bytes are missing.
    fn parse(
        state: &mut Self::State,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim;

    /// The connection closed: flush what is pending.
    fn close(_state: &mut Self::State, _conn: &ConnInfo, _out: &mut Vec<RequestRecord>) {}
}

enum Phase<S> {
    /// Not decided yet. Each direction's bytes so far are kept (up to [`DETECT_BUDGET`]) so
    /// `detect` sees the whole prefix however it was split, and `parse` gets every byte once
    /// the parser claims the connection.
    Detecting {
        seen: [u64; 2],
        pending: [Vec<u8>; 2],
        /// Timestamp and gap of each direction's first pending segment.
        first: [(u64, u64); 2],
    },
    Parsing(S),
    Done,
}

impl<S> Phase<S> {
    fn detecting() -> Self {
        Phase::Detecting {
            seen: [0, 0],
            pending: [Vec::new(), Vec::new()],
            first: [(0, 0); 2],
        }
    }
}

/// The per-connection bookkeeping around a [`ProtocolParser`].
pub struct Driver<P: ProtocolParser> {
    conns: BTreeMap<u64, (ConnInfo, Phase<P::State>)>,
}

impl<P: ProtocolParser> Default for Driver<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedResult {
    pub records: Vec<RequestRecord>,
    pub claims: Vec<(u64, Claim)>,
}

impl<P: ProtocolParser> Driver<P> {
    /// `const`, so a component can keep its driver in a `static`.
    pub const fn new() -> Self {
        Self {
            conns: BTreeMap::new(),
        }
    }

    pub fn open(&mut self, conn: ConnInfo) {
        self.conns.insert(conn.id, (conn, Phase::detecting()));
    }

    /// Connections being tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// One segment of connection `conn` (unknown connections are opened with what is known:
    /// only the id).
    pub fn feed(&mut self, conn: u64, segment: &Segment<'_>, out: &mut FeedResult) {
        let (info, phase) = self.conns.entry(conn).or_insert_with(|| {
            (
                ConnInfo {
                    id: conn,
                    ..Default::default()
                },
                Phase::detecting(),
            )
        });
        let first = out.records.len();
        let claim = match phase {
            Phase::Done => return,
            Phase::Detecting {
                seen,
                pending,
                first: starts,
            } => {
                let d = segment.direction.index();
                seen[d] += segment.data.len() as u64 + segment.gap_before;
                // Bytes before a gap do not continue into the segment after it; and a datagram
                // never continues another one (UDP: each segment is one message).
                if segment.gap_before > 0 || info.transport == Transport::Udp {
                    pending[d].clear();
                    pending[1 - d].clear();
                }
                let joined;
                let whole = if pending[d].is_empty() {
                    *segment
                } else {
                    pending[d].extend_from_slice(segment.data);
                    joined = std::mem::take(&mut pending[d]);
                    let (ts_ns, gap_before) = starts[d];
                    Segment {
                        direction: segment.direction,
                        ts_ns,
                        gap_before,
                        data: &joined,
                    }
                };
                match P::detect(info, &whole) {
                    Claim::Mine => {
                        let mut state = P::State::default();
                        // The other direction's undecided bytes came first.
                        let o = 1 - d;
                        let mut claim = Claim::Mine;
                        if !pending[o].is_empty() {
                            let other = Segment {
                                direction: if o == 0 {
                                    Direction::Egress
                                } else {
                                    Direction::Ingress
                                },
                                ts_ns: starts[o].0,
                                gap_before: starts[o].1,
                                data: &pending[o],
                            };
                            claim = P::parse(&mut state, info, &other, &mut out.records);
                        }
                        if matches!(claim, Claim::Mine | Claim::Undecided) {
                            claim = P::parse(&mut state, info, &whole, &mut out.records);
                        }
                        *phase = Phase::Parsing(state);
                        // Mine, even if parsing the first segment already finished it.
                        out.claims.push((conn, Claim::Mine));
                        claim
                    }
                    Claim::Undecided if seen.iter().all(|s| *s >= DETECT_BUDGET) => Claim::NotMine,
                    Claim::Undecided => {
                        if info.transport != Transport::Udp
                            && whole.data.len() as u64 <= DETECT_BUDGET
                        {
                            if pending[d].is_empty() && std::ptr::eq(whole.data, segment.data) {
                                starts[d] = (segment.ts_ns, segment.gap_before);
                                pending[d].extend_from_slice(segment.data);
                            } else {
                                pending[d] = whole.data.to_vec();
                            }
                        }
                        Claim::Undecided
                    }
                    other => other,
                }
            }
            Phase::Parsing(state) => P::parse(state, info, segment, &mut out.records),
        };
        match claim {
            Claim::NotMine | Claim::Finished => {
                *phase = Phase::Done;
                out.claims.push((conn, claim));
            }
            Claim::Mine | Claim::Undecided => {}
        }
        for r in &mut out.records[first..] {
            r.conn = conn;
        }
    }

    /// The connection is gone: flush and forget it.
    pub fn close(&mut self, conn: u64, out: &mut FeedResult) {
        if let Some((info, Phase::Parsing(mut state))) = self.conns.remove(&conn) {
            let first = out.records.len();
            P::close(&mut state, &info, &mut out.records);
            for r in &mut out.records[first..] {
                r.conn = conn;
            }
        }
    }
}

/// Conversions and the batch loop of the component glue (wasm32 only).
#[cfg(all(target_arch = "wasm32", feature = "protocol-parser"))]
#[doc(hidden)]
pub mod wit {
    use super::*;
    use crate::__protocol_parser_bindings::sonde::plugin::parser_types as w;

    fn endpoint(e: Option<w::Endpoint>) -> Option<Endpoint> {
        e.map(|e| Endpoint {
            ip: e.ip,
            port: e.port,
        })
    }

    pub fn conn_from_wit(c: w::ConnInfo) -> ConnInfo {
        ConnInfo {
            id: c.id,
            pid: c.pid,
            comm: c.comm,
            local: endpoint(c.local),
            remote: endpoint(c.remote),
            role: match c.role {
                w::Role::Unknown => Role::Unknown,
                w::Role::Client => Role::Client,
                w::Role::Server => Role::Server,
            },
            transport: match c.transport {
                w::Transport::Tcp => Transport::Tcp,
                w::Transport::Udp => Transport::Udp,
            },
            labels: c.labels,
        }
    }

    fn claim_to_wit(c: Claim) -> w::Claim {
        match c {
            Claim::Undecided => w::Claim::Undecided,
            Claim::Mine => w::Claim::Mine,
            Claim::NotMine => w::Claim::NotMine,
            Claim::Finished => w::Claim::Finished,
        }
    }

    fn span(s: Span) -> w::Span {
        w::Span {
            start: s.start,
            len: s.len,
        }
    }

    pub fn result_to_wit(r: FeedResult) -> w::FeedResult {
        let b = RecordBatch::encode(&r.records);
        w::FeedResult {
            records: w::RecordBatch {
                heads: b
                    .heads
                    .iter()
                    .map(|h| w::RecordHead {
                        conn: h.conn,
                        protocol: span(h.protocol),
                        operation: span(h.operation),
                        status: h.status,
                        error: h.error.map(span),
                        request_ts_ns: h.request_ts_ns,
                        response_ts_ns: h.response_ts_ns,
                        request_bytes: h.request_bytes,
                        response_bytes: h.response_bytes,
                        attrs_start: h.attrs_start,
                        attrs_len: h.attrs_len,
                    })
                    .collect(),
                attrs: b.attrs.iter().map(|(k, v)| (span(*k), span(*v))).collect(),
                text: b.text,
            },
            claims: r
                .claims
                .into_iter()
                .map(|(c, claim)| (c, claim_to_wit(claim)))
                .collect(),
        }
    }

    pub fn info_to_wit(i: ParserInfo) -> w::ParserInfo {
        w::ParserInfo {
            name: i.name,
            version: i.version,
            protocols: i.protocols,
        }
    }

    /// Split the flat batch into segments and feed them in order. A batch whose offsets do not
    /// fit its buffer is the daemon's bug: the bad tail is ignored rather than trusted.
    pub fn feed<P: ProtocolParser>(
        driver: &mut Driver<P>,
        batch: w::SegmentBatch,
    ) -> w::FeedResult {
        let mut out = FeedResult::default();
        let mut start = 0usize;
        for (end, meta) in batch.ends.iter().zip(&batch.meta) {
            let end = *end as usize;
            let Some(data) = batch.data.get(start..end) else {
                break;
            };
            let direction = match meta.direction {
                w::Direction::Egress => Direction::Egress,
                w::Direction::Ingress => Direction::Ingress,
            };
            driver.feed(
                meta.conn,
                &Segment {
                    direction,
                    ts_ns: meta.ts_ns,
                    gap_before: meta.gap_before,
                    data,
                },
                &mut out,
            );
            start = end;
        }
        result_to_wit(out)
    }

    pub fn close<P: ProtocolParser>(driver: &mut Driver<P>, conns: Vec<u64>) -> w::FeedResult {
        let mut out = FeedResult::default();
        for c in conns {
            driver.close(c, &mut out);
        }
        result_to_wit(out)
    }
}

/// Feed a parser natively, without a Wasm runtime: inline bytes or recorded payload files.
///
/// Recording format (binary safe, readable when the payload is text): a sequence of
///
/// ```text
/// > <ts_ns> <len>\n<len bytes>\n     egress segment (the process wrote it)
/// < <ts_ns> <len>\n<len bytes>\n     ingress segment (the process read it)
/// ! <egress|ingress> <len>\n         gap: len bytes missing before the next segment that way
/// # anything\n                       comment
/// ```
pub mod harness {
    use super::*;

    /// One connection under test.
    pub struct Harness<P: ProtocolParser> {
        driver: Driver<P>,
        conn: ConnInfo,
        pending_gap: [u64; 2],
        pub result: FeedResult,
    }

    impl<P: ProtocolParser> Harness<P> {
        pub fn new(conn: ConnInfo) -> Self {
            let mut driver = Driver::default();
            driver.open(conn.clone());
            Self {
                driver,
                conn,
                pending_gap: [0, 0],
                result: FeedResult::default(),
            }
        }

        /// A client connection (it writes requests).
        pub fn client() -> Self {
            Self::new(ConnInfo {
                id: 1,
                role: Role::Client,
                ..Default::default()
            })
        }

        /// A server connection (it reads requests).
        pub fn server() -> Self {
            Self::new(ConnInfo {
                id: 1,
                role: Role::Server,
                ..Default::default()
            })
        }

        pub fn gap(&mut self, direction: Direction, len: u64) -> &mut Self {
            self.pending_gap[direction.index()] += len;
            self
        }

        pub fn segment(&mut self, direction: Direction, ts_ns: u64, data: &[u8]) -> &mut Self {
            let gap_before = std::mem::take(&mut self.pending_gap[direction.index()]);
            let seg = Segment {
                direction,
                ts_ns,
                gap_before,
                data,
            };
            self.driver.feed(self.conn.id, &seg, &mut self.result);
            self
        }

        /// Requests the process sent (client) or received (server).
        pub fn request(&mut self, ts_ns: u64, data: &[u8]) -> &mut Self {
            self.segment(self.conn.request_direction(), ts_ns, data)
        }

        pub fn response(&mut self, ts_ns: u64, data: &[u8]) -> &mut Self {
            let d = match self.conn.request_direction() {
                Direction::Egress => Direction::Ingress,
                Direction::Ingress => Direction::Egress,
            };
            self.segment(d, ts_ns, data)
        }

        pub fn close(&mut self) -> &mut Self {
            self.driver.close(self.conn.id, &mut self.result);
            self
        }

        /// Replay a recording (see the module docs). Errors name the byte offset.
        pub fn replay(&mut self, recording: &[u8]) -> Result<&mut Self, String> {
            let mut at = 0;
            while at < recording.len() {
                let nl = recording[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|p| at + p)
                    .ok_or_else(|| format!("offset {at}: header without newline"))?;
                let header = std::str::from_utf8(&recording[at..nl])
                    .map_err(|_| format!("offset {at}: header is not UTF-8"))?;
                let fields: Vec<&str> = header.split_whitespace().collect();
                let num = |i: usize| -> Result<u64, String> {
                    fields
                        .get(i)
                        .and_then(|f| f.parse().ok())
                        .ok_or_else(|| format!("offset {at}: bad header {header:?}"))
                };
                match fields.first().copied() {
                    None | Some("#") => at = nl + 1,
                    Some(">") | Some("<") => {
                        let direction = if fields[0] == ">" {
                            Direction::Egress
                        } else {
                            Direction::Ingress
                        };
                        let (ts, len) = (num(1)?, num(2)? as usize);
                        let body = recording
                            .get(nl + 1..nl + 1 + len)
                            .ok_or_else(|| format!("offset {at}: payload shorter than {len}"))?;
                        self.segment(direction, ts, body);
                        at = nl + 1 + len;
                        if recording.get(at) == Some(&b'\n') {
                            at += 1;
                        }
                    }
                    Some("!") => {
                        let direction = match fields.get(1).copied() {
                            Some("egress") => Direction::Egress,
                            Some("ingress") => Direction::Ingress,
                            _ => return Err(format!("offset {at}: gap needs egress or ingress")),
                        };
                        self.gap(direction, num(2)?);
                        at = nl + 1;
                    }
                    Some(other) => return Err(format!("offset {at}: unknown line kind {other:?}")),
                }
            }
            Ok(self)
        }

        pub fn replay_file(&mut self, path: &std::path::Path) -> Result<&mut Self, String> {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.replay(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))
        }

        /// Feed arbitrary bytes as a conversation, for fuzzing: a sequence of
        /// `[control][len][len bytes…]` chunks; bit 0 of `control` picks the direction
        /// (0 egress), bit 4 puts a gap of `(control >> 5) * 1000` bytes before the chunk.
        /// Timestamps increase by one per chunk. A trailing partial chunk is fed as is.
        pub fn feed_arbitrary(&mut self, mut bytes: &[u8]) -> &mut Self {
            let mut ts = 1u64;
            while bytes.len() >= 2 {
                let (control, len) = (bytes[0], bytes[1] as usize);
                bytes = &bytes[2..];
                let take = len.min(bytes.len());
                let direction = if control & 1 == 0 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                if control & 0x10 != 0 {
                    self.gap(direction, u64::from(control >> 5) * 1000);
                }
                ts += 1;
                self.segment(direction, ts, &bytes[..take]);
                bytes = &bytes[take..];
            }
            self
        }

        /// `(operation, status, error)` of each record so far.
        pub fn ops(&self) -> Vec<(String, u32, Option<String>)> {
            self.result
                .records
                .iter()
                .map(|r| (r.operation.clone(), r.status, r.error.clone()))
                .collect()
        }

        /// The fields most tests compare, of each record so far.
        pub fn briefs(&self) -> Vec<Brief> {
            self.result.records.iter().map(Brief::from).collect()
        }

        /// The claims reported so far, in order.
        pub fn claims(&self) -> Vec<Claim> {
            self.result.claims.iter().map(|(_, c)| *c).collect()
        }
    }

    /// An expected entry of [`Harness::ops`].
    pub fn op(operation: &str, status: u32, error: Option<&str>) -> (String, u32, Option<String>) {
        (operation.to_string(), status, error.map(str::to_string))
    }

    /// The fields of a record most tests compare, in one value.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Brief {
        pub operation: String,
        pub status: u32,
        pub error: Option<String>,
        pub request_ts: u64,
        pub response_ts: u64,
        pub request_bytes: u64,
        pub response_bytes: u64,
    }

    impl From<&RequestRecord> for Brief {
        fn from(r: &RequestRecord) -> Self {
            Brief {
                operation: r.operation.clone(),
                status: r.status,
                error: r.error.clone(),
                request_ts: r.request_ts_ns,
                response_ts: r.response_ts_ns,
                request_bytes: r.request_bytes,
                response_bytes: r.response_bytes,
            }
        }
    }

    /// Writes the recording format [`Harness::replay`] reads (see the module docs), to build
    /// fixtures from code.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Recording(pub Vec<u8>);

    impl Recording {
        pub fn comment(&mut self, text: &str) -> &mut Self {
            self.0.extend_from_slice(format!("# {text}\n").as_bytes());
            self
        }

        pub fn segment(&mut self, direction: Direction, ts_ns: u64, data: &[u8]) -> &mut Self {
            let kind = match direction {
                Direction::Egress => '>',
                Direction::Ingress => '<',
            };
            self.0
                .extend_from_slice(format!("{kind} {ts_ns} {}\n", data.len()).as_bytes());
            self.0.extend_from_slice(data);
            self.0.push(b'\n');
            self
        }

        /// Bytes the process wrote.
        pub fn egress(&mut self, ts_ns: u64, data: &[u8]) -> &mut Self {
            self.segment(Direction::Egress, ts_ns, data)
        }

        /// Bytes the process read.
        pub fn ingress(&mut self, ts_ns: u64, data: &[u8]) -> &mut Self {
            self.segment(Direction::Ingress, ts_ns, data)
        }

        pub fn gap(&mut self, direction: Direction, len: u64) -> &mut Self {
            let d = match direction {
                Direction::Egress => "egress",
                Direction::Ingress => "ingress",
            };
            self.0
                .extend_from_slice(format!("! {d} {len}\n").as_bytes());
            self
        }
    }

    /// A fixture generated by code must match its file. With `SONDE_WRITE_FIXTURES` set, the
    /// file is (re)written first, atomically (tests replaying it may be reading it meanwhile).
    pub fn check_fixture(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
        if std::env::var_os("SONDE_WRITE_FIXTURES").is_some() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let on_disk = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if on_disk != bytes {
            return Err(format!(
                "{} differs from its generator (SONDE_WRITE_FIXTURES=1 rewrites it)",
                path.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::harness::Harness;
    use super::*;

    /// A line protocol: `GET key\n` → `VALUE v\n` or `ERR msg\n`.
    struct Lines;

    #[derive(Default)]
    struct LinesState {
        pending: Vec<(String, u64, u64)>,
        buf: [Vec<u8>; 2],
    }

    impl ProtocolParser for Lines {
        type State = LinesState;
        fn info() -> ParserInfo {
            ParserInfo {
                name: "lines".into(),
                version: "0".into(),
                protocols: vec!["lines".into()],
            }
        }
        fn detect(_conn: &ConnInfo, s: &Segment<'_>) -> Claim {
            if s.data.starts_with(b"GET ") {
                Claim::Mine
            } else if s.data.len() >= 4 {
                Claim::NotMine
            } else {
                Claim::Undecided
            }
        }
        fn parse(
            st: &mut LinesState,
            conn: &ConnInfo,
            s: &Segment<'_>,
            out: &mut Vec<RequestRecord>,
        ) -> Claim {
            let d = s.direction.index();
            st.buf[d].extend_from_slice(s.data);
            while let Some(nl) = st.buf[d].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = st.buf[d].drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if s.direction == conn.request_direction() {
                    st.pending.push((
                        text.trim_start_matches("GET ").to_string(),
                        s.ts_ns,
                        line.len() as u64,
                    ));
                } else if !st.pending.is_empty() {
                    let (key, ts, len) = st.pending.remove(0);
                    let err = text.starts_with("ERR");
                    out.push(RequestRecord {
                        protocol: "lines".into(),
                        operation: "GET".into(),
                        status: u32::from(err),
                        error: err.then(|| "error".into()),
                        request_ts_ns: ts,
                        response_ts_ns: s.ts_ns,
                        request_bytes: len,
                        response_bytes: line.len() as u64,
                        attributes: vec![("key".into(), key)],
                        ..Default::default()
                    });
                }
            }
            Claim::Mine
        }
        fn close(st: &mut LinesState, _c: &ConnInfo, out: &mut Vec<RequestRecord>) {
            for (key, ts, len) in st.pending.drain(..) {
                out.push(RequestRecord {
                    protocol: "lines".into(),
                    operation: "GET".into(),
                    error: Some("no-response".into()),
                    request_ts_ns: ts,
                    request_bytes: len,
                    attributes: vec![("key".into(), key)],
                    ..Default::default()
                });
            }
        }
    }

    #[test]
    fn pipelined_requests_split_across_segments() {
        let mut h = Harness::<Lines>::client();
        h.request(10, b"GET a\nGE")
            .request(11, b"T b\n")
            .response(20, b"VALUE 1\nERR no")
            .response(21, b"pe\n");
        let r = &h.result.records;
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].attributes[0].1.as_str(),
                r[0].status,
                r[0].request_ts_ns,
                r[0].response_ts_ns
            ),
            ("a", 0, 10, 20)
        );
        assert_eq!(
            (
                r[1].attributes[0].1.as_str(),
                r[1].status,
                r[1].error.as_deref()
            ),
            ("b", 1, Some("error"))
        );
        assert!(r.iter().all(|x| x.conn == 1));
        assert_eq!(h.result.claims, [(1, Claim::Mine)]);
    }

    #[test]
    fn detection_sees_the_whole_prefix_and_parse_gets_every_byte() {
        // "G", "E" alone are undecided; the parser must still see the request from its first
        // byte, with the first piece's timestamp.
        let mut h = Harness::<Lines>::client();
        h.request(10, b"G")
            .request(11, b"E")
            .request(12, b"T a\n")
            .response(20, b"VALUE 1\n");
        let r = &h.result.records;
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (
                r[0].attributes[0].1.as_str(),
                r[0].request_ts_ns,
                r[0].response_ts_ns
            ),
            ("a", 10, 20)
        );
        assert_eq!(h.result.claims, [(1, Claim::Mine)]);
        // A gap while undecided drops the bytes before it.
        let mut h = Harness::<Lines>::client();
        h.request(1, b"GE")
            .gap(Direction::Egress, 5)
            .request(2, b"GET b\n")
            .response(3, b"VALUE 2\n");
        assert_eq!(h.result.records.len(), 1);
        assert_eq!(h.result.records[0].request_ts_ns, 2);
    }

    #[test]
    fn record_batches_round_trip_and_reject_bad_spans() {
        let r = |conn: u64, op: &str, err: Option<&str>, attrs: &[(&str, &str)]| RequestRecord {
            conn,
            protocol: "http".into(),
            operation: op.into(),
            status: 200,
            error: err.map(str::to_string),
            request_ts_ns: 1,
            response_ts_ns: 2,
            request_bytes: 3,
            response_bytes: 4,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let records = vec![
            r(
                1,
                "GET /a",
                None,
                &[("traceparent", "00-ab"), ("url.path", "/a")],
            ),
            r(
                2,
                "GET /é",
                Some("server-error"),
                &[("traceparent", "00-cd")],
            ),
            r(3, "", None, &[]),
        ];
        let b = RecordBatch::encode(&records);
        assert_eq!(b.decode().unwrap(), records);
        b.validate().unwrap();
        let views: Vec<RequestRecord> = (0..b.heads.len()).map(|i| b.get(i).to_owned()).collect();
        assert_eq!(views, records);
        assert_eq!(b.get(0).attr("url.path"), Some("/a"));
        assert_eq!(b.get(1).error(), Some("server-error"));
        // Keys and the protocol name are written once per batch.
        assert_eq!(b.text.matches("traceparent").count(), 1);
        assert_eq!(b.text.matches("http").count(), 1);
        let mut bad = b.clone();
        bad.heads[0].operation = Span {
            start: 0,
            len: 10_000,
        };
        assert!(bad.decode().unwrap_err().contains("outside"));
        let mut bad = b.clone();
        let e = b.text.find('é').unwrap() as u32;
        bad.heads[1].operation = Span {
            start: e + 1,
            len: 1,
        };
        assert!(bad.decode().is_err(), "a span inside a character");
        let mut bad = b;
        bad.heads[2].attrs_start = 99;
        bad.heads[2].attrs_len = 1;
        assert!(bad.decode().unwrap_err().contains("attribute range"));
        assert!(bad.validate().unwrap_err().contains("attribute range"));
    }

    #[test]
    fn datagrams_are_never_joined_while_detecting() {
        // Over UDP "GE" and "GET b\n" are two messages: joined they would read "GEGET b" and
        // fail detection; apart, the second one is a request.
        let conn = ConnInfo {
            id: 1,
            role: Role::Client,
            transport: Transport::Udp,
            ..Default::default()
        };
        let mut h = Harness::<Lines>::new(conn);
        h.request(1, b"GE")
            .request(3, b"GET b\n")
            .response(4, b"VALUE 1\n");
        assert_eq!(h.result.records.len(), 1);
        assert_eq!(h.result.records[0].attributes[0].1, "b");
    }

    #[test]
    fn server_side_and_close_flushes() {
        let mut h = Harness::<Lines>::server();
        h.request(5, b"GET k\n").close();
        assert_eq!(h.result.records.len(), 1);
        assert_eq!(h.result.records[0].error.as_deref(), Some("no-response"));
    }

    #[test]
    fn not_mine_and_detect_budget() {
        let mut h = Harness::<Lines>::client();
        h.request(1, b"HELO there\n");
        assert_eq!(h.result.claims, [(1, Claim::NotMine)]);
        // A parser that never decides is cut off after the budget in both directions.
        struct Never;
        impl ProtocolParser for Never {
            type State = ();
            fn info() -> ParserInfo {
                ParserInfo {
                    name: "never".into(),
                    version: "0".into(),
                    protocols: vec![],
                }
            }
            fn detect(_: &ConnInfo, _: &Segment<'_>) -> Claim {
                Claim::Undecided
            }
            fn parse(
                _: &mut (),
                _: &ConnInfo,
                _: &Segment<'_>,
                _: &mut Vec<RequestRecord>,
            ) -> Claim {
                Claim::Mine
            }
        }
        let mut h = Harness::<Never>::client();
        let big = vec![b'x'; DETECT_BUDGET as usize];
        h.request(1, &big);
        assert!(h.result.claims.is_empty(), "one direction is not enough");
        h.response(2, &big);
        assert_eq!(h.result.claims, [(1, Claim::NotMine)]);
    }

    #[test]
    fn recordings_written_by_code_replay_the_same() {
        use super::harness::Recording;
        let mut rec = Recording::default();
        rec.comment("a recorded exchange")
            .egress(100, b"GET a\n")
            .ingress(200, b"VALUE 1\n")
            .gap(Direction::Egress, 3)
            .egress(300, b"GET b\n");
        assert_eq!(rec.0, b"# a recorded exchange\n> 100 6\nGET a\n\n< 200 8\nVALUE 1\n\n! egress 3\n> 300 6\nGET b\n\n");
        let mut h = Harness::<Lines>::client();
        h.replay(&rec.0).unwrap();
        assert_eq!(h.ops(), [super::harness::op("GET", 0, None)]);
        assert_eq!(h.briefs()[0].response_ts, 200);
        assert_eq!(h.claims(), [Claim::Mine]);
        assert_eq!(h.result.records[0].attr("key"), Some("a"));
        // Arbitrary bytes: direction from bit 0, a gap from bit 4, partial last chunk.
        let mut f = Harness::<Lines>::client();
        f.feed_arbitrary(&[
            0, 6, b'G', b'E', b'T', b' ', b'x', b'\n', 1, 8, b'V', b'A', b'L', b'U', b'E', b' ',
            b'1', b'\n', 0x30, 200, b'G',
        ]);
        assert_eq!(f.ops(), [super::harness::op("GET", 0, None)]);
    }

    #[test]
    fn recordings_replay_with_gaps() {
        let rec = b"# a recorded exchange\n> 100 6\nGET a\n\n< 200 8\nVALUE 1\n\n! egress 3\n> 300 6\nGET b\n\n";
        let mut h = Harness::<Lines>::client();
        h.replay(rec).unwrap();
        assert_eq!(h.result.records.len(), 1);
        assert_eq!(h.result.records[0].response_ts_ns, 200);
        assert!(h.replay(b"> 1 99\nshort").is_err());
        let err = h
            .replay(b"? what\n")
            .err()
            .expect("an unknown line kind is an error");
        assert!(err.contains("unknown line kind"), "{err}");
    }
}
