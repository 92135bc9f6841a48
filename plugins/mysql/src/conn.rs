//! One connection: a packet [`Reader`] per direction and the session on top of them —
//! handshake and authentication (skipped, but read for the capability flags and the database),
//! then commands and the responses they wait for.
//!
//! MySQL is strictly request/response: the response to the oldest waiting command starts with a
//! packet of sequence id one more than the command's last (1), and its end is known from its
//! structure (`response`). A gap is followed by the packet lengths the framing knows (`wire`):
//! inside a packet it is skipped by count, and a packet ending inside it is complete, cut. Where
//! a gap hides packet headers, each side finds boundaries again — the request side at the next
//! command, the response side at a run of headers (`scan`) — and a response is paired only with
//! the command it certainly answers (the SDK's `pending` queue, with the bounds of `stretch`; see `responses`).

mod requests;
mod responses;

use std::collections::VecDeque;

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role, Segment};

use crate::MAX_STATEMENTS;
use crate::detect::{self, Verdict};
use crate::record::error;
use crate::response::{Command, Kind, Resp};
use crate::sql;
use crate::stretch::{Before, Stretch};
use crate::wire::{self, GapEffect, Packet, Reader};
use sonde_sdk::protocol_parser::pending::{Count, Queue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Waiting for the server's initial handshake (or, mid-stream, for a command).
    #[default]
    Greeting,
    /// Waiting for the client's handshake response.
    Login,
    /// Authentication exchanges until the server's OK or ERR.
    Auth,
    /// Commands.
    Ready,
}

/// A prepared statement remembered by id.
#[derive(Debug)]
struct Statement {
    id: u32,
    operation: &'static str,
    text: Option<String>,
    expects: Option<crate::response::Expect>,
}

/// Where the response side is (see `responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Cursor {
    /// Between responses: the next packet with the expected sequence id begins one.
    #[default]
    Boundary,
    /// The next packet begins a response, certainly (so a resynchronisation found).
    Begin,
    /// In the response to `Session::current`.
    Current,
    /// In a response not paired, or packets answering nothing: `prev` is the sequence id of the
    /// last packet, once one was read.
    Unknown { prev: Option<u8> },
    /// The next packet may begin a response or be inside one: it is held until the packet after
    /// it tells (`Session::held`).
    Hold,
    /// Holding that packet.
    Held,
    /// Packet boundaries lost (`Session::stretch`).
    Lost,
}

/// A packet that may begin a response, held until the next one tells (see `responses`).
#[derive(Debug)]
struct Held {
    packet: Option<Kept>,
    shape: crate::stretch::Shape,
    /// Responses begun unseen before it if it begins one, and if it does not.
    if_start: Count,
    if_not: Count,
    /// What the queue could answer when the bytes before it were read, and when it was.
    answerable_before: u64,
    answerable: u64,
    /// The response it would be inside may end with an OK packet.
    may_end: bool,
}

/// A response packet kept past its segment.
#[derive(Debug)]
struct Kept {
    seq: u8,
    last_seq: u8,
    len: u64,
    body: Vec<u8>,
    wire: u64,
    start_ts: u64,
    ts: u64,
}

impl Kept {
    fn new(p: &Packet<'_>, ts: u64) -> Self {
        Kept {
            seq: p.seq,
            last_seq: p.last_seq,
            len: p.len,
            body: p.body.to_vec(),
            wire: p.wire,
            start_ts: p.start_ts,
            ts,
        }
    }

    fn packet(&self) -> Packet<'_> {
        Packet {
            seq: self.seq,
            last_seq: self.last_seq,
            len: self.len,
            body: &self.body,
            wire: self.wire,
            start_ts: self.start_ts,
        }
    }
}

/// Everything above the framing.
#[derive(Debug)]
struct Session {
    phase: Phase,
    server_caps: Option<u32>,
    client_caps: Option<u32>,
    /// `CLIENT_DEPRECATE_EOF` in effect; learnt from the handshake or from result sets.
    deprecate_eof: Option<bool>,
    query_attributes: Option<bool>,
    namespace: Option<String>,
    statements: VecDeque<Statement>,
    finished: bool,
    /// The client asked for TLS (SSLRequest) and its full login has not been read yet: the
    /// plaintext continues the stream, but TLS records here mean there is no plaintext.
    tls_requested: bool,
    /// Commands waiting for their response.
    queue: Queue<Command>,
    /// The command whose response is being read.
    current: Option<Command>,
    resp: Resp,
    cursor: Cursor,
    /// Sequence id of the last response packet read.
    last_seq: u8,
    /// At `Cursor::Boundary`: the last response certainly ended there.
    ended: bool,
    /// While the response side's boundaries are lost.
    stretch: Stretch,
    /// The end of the response bytes seen while boundaries are lost, for a run of headers that
    /// goes on in the next segment.
    carry: Vec<u8>,
    held: Option<Held>,
    /// The request side lost its boundaries: bytes since the last one known that may hold
    /// commands (hidden, or seen and skipped).
    hidden: Option<u64>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            phase: Phase::default(),
            server_caps: None,
            client_caps: None,
            deprecate_eof: None,
            query_attributes: None,
            namespace: None,
            statements: VecDeque::new(),
            finished: false,
            tls_requested: false,
            queue: Queue::default(),
            current: None,
            resp: Resp::Start,
            cursor: Cursor::Boundary,
            last_seq: 0,
            ended: true,
            stretch: Stretch::new(Before::Start, 0, 0),
            carry: Vec::new(),
            held: None,
            hidden: None,
        }
    }
}

/// The per-connection state of [`crate::Mysql`].
#[derive(Debug)]
pub struct MysqlState {
    request_direction: Option<Direction>,
    request: Reader,
    response: Reader,
    /// Whether each side (request, response) has carried data yet.
    seen: [bool; 2],
    /// Whether bytes of each direction (egress, ingress) were dropped before the request
    /// direction was known.
    dropped: [bool; 2],
    s: Session,
}

/// Bytes of a response packet's payload kept: enough for the greeting, OK, ERR, EOF and
/// PREPARE_OK fields (rows and column definitions are only counted).
const RESPONSE_KEEP: usize = 512;

/// The smallest command: a header and the command byte (COM_PING).
const MIN_COMMAND: u64 = 5;

impl Default for MysqlState {
    fn default() -> Self {
        MysqlState {
            request_direction: None,
            request: Reader::default(),
            response: Reader::with_keep(RESPONSE_KEEP),
            seen: [false; 2],
            dropped: [false; 2],
            s: Session::default(),
        }
    }
}

impl MysqlState {
    /// Bytes of packet buffer allocated, both directions (at most `KEEP` + 512), and the bytes
    /// kept while the response side looks for its boundaries (at most [`crate::CARRY`]).
    pub fn buffer_capacity(&self) -> usize {
        self.request.capacity() + self.response.capacity() + self.s.carry.capacity()
    }

    /// Commands waiting for their response, the one being answered included (at most
    /// [`crate::MAX_PENDING`]).
    pub fn pending(&self) -> usize {
        self.s.queue.len() + usize::from(self.s.current.is_some())
    }

    /// Prepared statements remembered (at most [`MAX_STATEMENTS`]).
    pub fn statements(&self) -> usize {
        self.s.statements.len()
    }

    pub(crate) fn parse(
        &mut self,
        conn: &ConnInfo,
        seg: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        if self.s.finished {
            return Claim::Finished;
        }
        let rd = match self.request_direction {
            Some(d) => d,
            None => match request_direction(conn, seg) {
                Some(d) => *self.request_direction.insert(d),
                // Mid-stream bytes that say nothing: dropped, that side resynchronises.
                None => {
                    self.dropped[usize::from(seg.direction == Direction::Ingress)] = true;
                    return Claim::Mine;
                }
            },
        };
        let is_request = seg.direction == rd;
        let side = usize::from(!is_request);
        if seg.gap_before > 0 {
            self.gap(is_request, seg.gap_before, seg.ts_ns, out);
        }
        let data = seg.data;
        if !data.is_empty() && !self.seen[side] {
            self.seen[side] = true;
            // The first bytes of a side are in sync only at the connection's start.
            let dropped = self.dropped[usize::from(seg.direction == Direction::Ingress)];
            let in_sync = !dropped
                && if is_request {
                    self.s.phase != Phase::Greeting
                } else {
                    self.s.phase == Phase::Greeting && detect::greeting(data) != Verdict::No
                };
            if !in_sync {
                self.pickup(is_request);
            }
        }
        if !self.s.finished {
            if is_request {
                self.requests(data, seg.ts_ns, out);
            } else {
                self.responses(data, seg.ts_ns, out);
            }
        }
        if self.s.finished {
            Claim::Finished
        } else {
            Claim::Mine
        }
    }

    pub(crate) fn close(&mut self, out: &mut Vec<RequestRecord>) {
        if !self.s.finished {
            self.s.close(out);
        }
    }

    /// `n` bytes are missing before the next segment of one side.
    fn gap(&mut self, is_request: bool, n: u64, ts: u64, out: &mut Vec<RequestRecord>) {
        let reader = if is_request {
            &mut self.request
        } else {
            &mut self.response
        };
        match reader.gap(n) {
            GapEffect::Inside => {}
            GapEffect::Cut { rest } => {
                // The packet ended in the gap: complete, its kept bytes a true prefix.
                let p = reader.packet();
                if is_request {
                    self.s.request(&p, out);
                } else {
                    self.s.response(&p, ts, out);
                }
                reader.lose();
                if !self.s.finished {
                    self.s.lost(is_request, rest, out);
                }
            }
            GapEffect::Lost { bytes } => self.s.lost(is_request, bytes, out),
        }
    }

    /// A side whose start was not seen: it waits for a place to begin.
    fn pickup(&mut self, is_request: bool) {
        if is_request {
            self.request.lose();
        } else {
            self.response.lose();
            self.s.pickup_responses();
        }
    }

    fn requests(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<RequestRecord>) {
        if self.s.records_after_ssl_request(data) {
            return;
        }
        if self.request.lost {
            if data.is_empty() {
                return;
            }
            if !self.s.request_resync(data) {
                self.s.skipped_request(data.len() as u64);
                return;
            }
            self.request.resume();
        }
        while self.request.advance(&mut data, ts) {
            let p = self.request.packet();
            self.s.request(&p, out);
            if self.s.finished {
                return;
            }
        }
    }

    fn responses(&mut self, data: &[u8], ts: u64, out: &mut Vec<RequestRecord>) {
        if self.s.records_after_ssl_request(data) {
            return;
        }
        let joined;
        let mut data = data;
        if self.response.lost {
            if data.is_empty() {
                return;
            }
            let segment = self.s.carry.len();
            if segment > 0 {
                joined = [self.s.carry.as_slice(), data].concat();
                data = &joined;
            }
            let Some(at) = crate::scan::find(data, segment) else {
                self.s.unplaced(data);
                return;
            };
            self.response.resume();
            data = &data[at..];
            self.s.resync(data, at as u64, segment as u64, out);
        }
        while self.response.advance(&mut data, ts) {
            let p = self.response.packet();
            self.s.response(&p, ts, out);
            if self.s.finished {
                return;
            }
        }
    }
}

/// Requests go client → server. With the role unknown: away from the side that sent the
/// initial handshake, or the way a command went; `None` while the bytes say neither.
fn request_direction(conn: &ConnInfo, seg: &Segment<'_>) -> Option<Direction> {
    match conn.role {
        Role::Client => Some(Direction::Egress),
        Role::Server => Some(Direction::Ingress),
        Role::Unknown => {
            if detect::greeting(seg.data) == Verdict::Yes {
                Some(match seg.direction {
                    Direction::Egress => Direction::Ingress,
                    Direction::Ingress => Direction::Egress,
                })
            } else if detect::command(seg.data) == Verdict::Yes {
                Some(seg.direction)
            } else {
                None
            }
        }
    }
}

impl Session {
    /// After an SSLRequest, TLS records (a handshake record, `16 03`) instead of the
    /// plaintext: nothing more can be read. Finishes the connection and says so.
    fn records_after_ssl_request(&mut self, data: &[u8]) -> bool {
        if self.tls_requested && data.starts_with(&[0x16, 0x03]) {
            self.finished = true;
        }
        self.finished
    }

    /// Packet boundaries are lost on one side; `bytes` since the last one known are missing.
    fn lost(&mut self, is_request: bool, bytes: u64, out: &mut Vec<RequestRecord>) {
        if self.phase != Phase::Ready {
            // The handshake cannot be followed any more; what comes next is commands, and what
            // the stretch held answers nothing seen.
            self.phase = Phase::Ready;
            if !is_request {
                self.pickup_responses();
            }
            return;
        }
        if is_request {
            self.hide_requests(bytes);
        } else {
            self.lose_responses(bytes, out);
        }
    }

    fn response(&mut self, p: &Packet<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        match self.phase {
            // Picked up mid-stream: responses are followed before the first command is seen.
            _ if self.phase != Phase::Ready && self.cursor != Cursor::Boundary => {
                self.ready_response(p, ts, out)
            }
            Phase::Greeting => {
                if p.seq == 0
                    && let Some(caps) = wire::greeting_caps(p.body)
                {
                    self.server_caps = Some(caps);
                    self.phase = Phase::Login;
                }
            }
            Phase::Login => {}
            Phase::Auth => {
                if matches!(p.first(), Some(0x00 | 0xFF)) {
                    self.phase = Phase::Ready;
                }
            }
            Phase::Ready => self.ready_response(p, ts, out),
        }
    }

    /// Commands given up: their responses were lost, or cannot be told from another's.
    fn give_up(&mut self, given: Vec<Command>, out: &mut Vec<RequestRecord>) {
        for c in given {
            self.emit(c, Some(error::TRUNCATED), out);
        }
    }

    fn close(&mut self, out: &mut Vec<RequestRecord>) {
        self.settle_held(None, out);
        if let Some(c) = self.current.take() {
            self.emit(c, Some(error::TRUNCATED), out);
        }
        let mut left = Vec::new();
        self.queue.drain(|c, maybe_lost| left.push((c, maybe_lost)));
        for (c, maybe_lost) in left {
            let e = if maybe_lost {
                error::TRUNCATED
            } else {
                error::NO_RESPONSE
            };
            self.emit(c, Some(e), out);
        }
    }

    fn emit(&mut self, c: Command, lost: Option<&'static str>, out: &mut Vec<RequestRecord>) {
        let ok = c.ex.err.is_none() && lost.is_none();
        if c.kind == Kind::Prepare
            && let Some(id) = c.ex.statement_id
        {
            self.statements.retain(|s| s.id != id);
            if self.statements.len() >= MAX_STATEMENTS {
                self.statements.pop_front();
            }
            let operation = c.ex.text.as_deref().map_or("OTHER", sql::kind);
            self.statements.push_back(Statement {
                id,
                operation,
                text: c.ex.text.clone(),
                expects: c.executes,
            });
        }
        if ok && c.ex.operation == "INIT_DB" && c.ex.namespace.is_some() {
            self.namespace.clone_from(&c.ex.namespace);
        }
        if ok
            && c.ex.operation == "USE"
            && let Some(db) =
                c.ex.text
                    .as_deref()
                    .and_then(|t| t.split_whitespace().nth(1))
        {
            self.namespace = wire::name(db.as_bytes());
        }
        out.push(c.ex.record(lost));
    }
}
