//! One connection: a message [`Reader`] per direction and the session on top of them —
//! startup and authentication (read for the database name), then groups of requests, each
//! answered by the server up to a ReadyForQuery: a simple Query (one or more statements, each
//! answered by a CommandComplete, an EmptyQueryResponse or an ErrorResponse that ends the
//! group's execution), or extended messages up to a Sync (each Execute answered in order the
//! same way; after an error the server skips to the Sync). The server answers groups in order,
//! so the oldest group waiting is the one answered; a client may send several before reading
//! (pipelining). Messages that answer nothing (NoticeResponse, ParameterStatus,
//! NotificationResponse) and COPY data in either direction are skipped.
//!
//! After a gap that hides the server's message boundaries, server bytes are passed over to a
//! ReadyForQuery (`scanning`), and nothing is paired until it is certain which group the
//! responses answer (`Doubt`): see [`PostgresState::resyncs`] and the crate's README.

use std::collections::VecDeque;

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role, Segment};
use sonde_sdk::sql::{self, Dialect};

use crate::detect::{self, Verdict};
use crate::record::{Exchange, error};
use crate::wire::{self, Msg, PROTOCOL_3, Reader, be32, cstr};
use crate::{KEEP, MAX_ITEMS, MAX_NAME, MAX_PENDING, MAX_STATEMENTS, MAX_TEXT, RESPONSE_KEEP};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// The client's untyped startup messages.
    #[default]
    Startup,
    /// The client asked for encryption: the server's one-byte answer comes next.
    EncryptionAnswer,
    /// Authentication, until the server's first ReadyForQuery.
    Auth,
    /// Queries.
    Ready,
}

/// A statement as prepared (or bound to a portal).
#[derive(Debug, Clone)]
struct Prepared {
    /// The statement's name, or the portal's.
    name: String,
    /// For a portal, the statement it was bound from.
    statement: String,
    operation: &'static str,
    text: Option<String>,
}

/// A statement to be executed, waiting for its completion.
#[derive(Debug)]
struct Item {
    ex: Exchange,
}

/// Requests answered by one ReadyForQuery.
#[derive(Debug, Default)]
struct Group {
    items: VecDeque<Item>,
    /// A simple Query (statements beyond those split from its text still complete).
    simple: bool,
    request_ts: u64,
    /// Rows (DataRow messages) of the statement being answered.
    rows: u64,
    /// Response bytes since the last completion.
    response_bytes: u64,
    /// The server reported an error: the rest of the group is not executed.
    failed: bool,
    /// A gap inside a response message of the statement being answered: its row count is lost.
    lossy: bool,
    /// Its responses may have been skipped while the response side was out of step (it was
    /// being built when pairing resumed): its statements are reported `truncated`.
    doubtful: bool,
}

/// The response side after a gap that hid message boundaries: which group the responses answer
/// is not certain until the count of ReadyForQuery messages the gap may have hidden is pinned
/// to zero. Meanwhile each ReadyForQuery read gives the oldest group up.
#[derive(Debug, Clone, Copy)]
struct Doubt {
    /// ReadyForQuery messages the gaps may have hidden, at most.
    hidden_max: u64,
    /// ReadyForQuery messages read while in doubt.
    ready_seen: u64,
}

/// The per-connection state of [`crate::Postgres`].
#[derive(Debug)]
pub struct PostgresState {
    request_direction: Option<Direction>,
    request: Reader,
    response: Reader,
    phase: Phase,
    namespace: Option<String>,
    statements: VecDeque<Prepared>,
    portals: VecDeque<Prepared>,
    /// Groups waiting for their ReadyForQuery, oldest first; the oldest is being answered when
    /// `answering`.
    groups: VecDeque<Group>,
    answering: bool,
    /// The newest group is extended messages not yet closed by a Sync.
    building: bool,
    /// Picked up mid-stream: responses answer requests not seen until a ReadyForQuery; the
    /// groups sent before it are given up.
    skip_to_ready: bool,
    /// The response side lost its message boundaries: server bytes are passed over until a
    /// ReadyForQuery followed by clean frames ([`wire::find_ready`]); what is kept is the tail
    /// of the last segment, where such a message may begin.
    scanning: Option<Vec<u8>>,
    /// Pairing is uncertain since a gap on the response side (see [`Doubt`]).
    doubt: Option<Doubt>,
    /// Times pairing became certain again after a gap that hid message boundaries.
    resyncs: u64,
    /// Server bytes passed over while looking for a resynchronisation point.
    skipped_bytes: u64,
    /// Each side has carried data.
    seen: [bool; 2],
    /// The server answered an encryption request not seen yet: `N` (the startup follows in
    /// cleartext) or `S` (it follows inside TLS, as plaintext from the libssl uprobes).
    declined: bool,
    finished: bool,
}

impl Default for PostgresState {
    fn default() -> Self {
        PostgresState {
            request_direction: None,
            request: Reader::new(KEEP, true),
            response: Reader::new(RESPONSE_KEEP, false),
            phase: Phase::Startup,
            namespace: None,
            statements: VecDeque::new(),
            portals: VecDeque::new(),
            groups: VecDeque::new(),
            answering: false,
            building: false,
            skip_to_ready: false,
            scanning: None,
            doubt: None,
            resyncs: 0,
            skipped_bytes: 0,
            seen: [false; 2],
            declined: false,
            finished: false,
        }
    }
}

impl PostgresState {
    /// Bytes of message buffer allocated, both directions (at most `KEEP` + `RESPONSE_KEEP`).
    pub fn buffer_capacity(&self) -> usize {
        self.request.capacity() + self.response.capacity()
    }

    /// Groups waiting for their ReadyForQuery (at most [`MAX_PENDING`]).
    pub fn pending(&self) -> usize {
        self.groups.len()
    }

    /// Prepared statements remembered (at most [`MAX_STATEMENTS`]).
    pub fn statements(&self) -> usize {
        self.statements.len()
    }

    /// Times pairing became certain again after a response-side gap that hid message
    /// boundaries.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Server bytes passed over while looking for a resynchronisation point (the gaps' own
    /// bytes not included).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Pairing is uncertain (responses are not paired) since a response-side gap.
    pub fn in_doubt(&self) -> bool {
        self.scanning.is_some() || self.doubt.is_some()
    }

    pub(crate) fn parse(
        &mut self,
        conn: &ConnInfo,
        seg: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        if self.finished {
            return Claim::Finished;
        }
        let rd = match self.request_direction {
            Some(d) => d,
            None => match request_direction(conn, seg) {
                Some(d) => *self.request_direction.insert(d),
                None => return Claim::Mine,
            },
        };
        let is_request = seg.direction == rd;
        let side = usize::from(!is_request);
        if seg.gap_before > 0 {
            self.gap(is_request, seg.gap_before, seg.ts_ns, out);
            if self.finished {
                return Claim::Finished;
            }
        }
        if !is_request
            && self.phase == Phase::Startup
            && !self.seen[side]
            && seg.data.len() == 1
            && matches!(seg.data[0], b'N' | b'S')
        {
            // The server's answer to an encryption request, given before the request itself
            // (the driver hands over the other direction's undecided bytes first): either way
            // the startup message comes next in this stream.
            self.declined = true;
            return Claim::Mine;
        }
        if !seg.data.is_empty() && !self.seen[side] {
            self.seen[side] = true;
            if is_request && seg.data[0] != 0 && self.phase == Phase::Startup {
                // First seen mid-stream (detection claimed a Query or Parse).
                self.pickup();
            } else if !is_request && self.phase == Phase::Startup {
                // Responses before any request: mid-stream, answering requests not seen.
                self.pickup();
                self.skip_to_ready = true;
            }
        }
        if is_request {
            self.requests(seg.data, seg.ts_ns, out);
        } else {
            self.responses(seg.data, seg.ts_ns, out);
        }
        if self.finished {
            Claim::Finished
        } else {
            Claim::Mine
        }
    }

    pub(crate) fn close(&mut self, out: &mut Vec<RequestRecord>) {
        self.give_up(out);
    }

    /// Queries from here on, with both readers typed.
    fn pickup(&mut self) {
        self.phase = Phase::Ready;
        self.request.untyped = false;
    }

    /// `n` bytes are missing before the next segment of one side.
    fn gap(&mut self, is_request: bool, n: u64, ts: u64, out: &mut Vec<RequestRecord>) {
        let reader = if is_request {
            &mut self.request
        } else {
            &mut self.response
        };
        if reader.skip(n) {
            // Inside one message's body: the framing holds.
            if !is_request && let Some(g) = self.groups.front_mut().filter(|_| self.answering) {
                g.lossy = true;
                g.response_bytes += n;
            }
            if reader.body_done() {
                // The gap ended the message: it is complete now, not when the next bytes of
                // this side come (the other side's next message may depend on it: a query
                // after authentication's ReadyForQuery).
                if is_request {
                    self.requests(&[], ts, out);
                } else {
                    self.responses(&[], ts, out);
                }
            }
            return;
        }
        if !is_request && matches!(self.phase, Phase::Auth | Phase::Ready) {
            self.lose_responses(n);
            return;
        }
        // Hidden requests: how many groups they held, and so which ReadyForQuery answers which
        // group, cannot be known.
        self.stop(out);
    }

    /// The response side's boundaries are lost in a gap of `n` bytes: pass over server bytes
    /// until a ReadyForQuery (`scanning`), and pair nothing until it is certain which group the
    /// responses answer (`doubt`).
    fn lose_responses(&mut self, n: u64) {
        let beyond = self.response.lose(n);
        // A ReadyForQuery is 6 bytes: how many the missing bytes may have held.
        let hidden = beyond.div_ceil(wire::READY_LEN as u64);
        self.answering = false;
        if let Some(mut carried) = self.scanning.take() {
            // What was kept to find a boundary does not go on after this gap.
            self.skipped_bytes += carried.len() as u64;
            carried.clear();
            self.scanning = Some(carried);
        } else {
            self.scanning = Some(Vec::new());
        }
        if !self.groups.is_empty() || self.doubt.is_some() {
            let d = self.doubt.get_or_insert(Doubt {
                hidden_max: 0,
                ready_seen: 0,
            });
            d.hidden_max += hidden;
        }
    }

    /// Server bytes while `scanning`: the bytes from a resynchronisation point on, if `data`
    /// (after what was kept from the last segment) holds one.
    fn scan(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let carried = self.scanning.as_mut()?;
        if data.is_empty() {
            return None;
        }
        let mut joined = std::mem::take(carried);
        joined.extend_from_slice(data);
        match wire::find_ready(&joined) {
            Some(at) => {
                self.skipped_bytes += at as u64;
                self.scanning = None;
                joined.drain(..at);
                Some(joined)
            }
            None => {
                // A ReadyForQuery may begin in the last 5 bytes: keep them for the next segment.
                let keep = joined.len().min(wire::READY_LEN - 1);
                self.skipped_bytes += (joined.len() - keep) as u64;
                joined.drain(..joined.len() - keep);
                *carried = joined;
                None
            }
        }
    }

    /// The connection cannot be followed any further: what waits is reported without a status.
    fn stop(&mut self, out: &mut Vec<RequestRecord>) {
        self.give_up(out);
        self.finished = true;
    }

    /// Every statement waiting is reported `truncated`.
    fn give_up(&mut self, out: &mut Vec<RequestRecord>) {
        for g in self.groups.drain(..) {
            for it in g.items {
                out.push(it.ex.record(Some(error::TRUNCATED)));
            }
        }
        self.answering = false;
        self.building = false;
    }

    fn requests(&mut self, data: &[u8], ts: u64, out: &mut Vec<RequestRecord>) {
        let mut reader = std::mem::replace(&mut self.request, Reader::new(0, false));
        let r = reader.feed(data, wire::frontend, |rd, m| {
            if self.finished {
                return;
            }
            if m.ty == 0 {
                self.startup(rd, &m);
            } else {
                self.request(&m, ts, out);
            }
        });
        self.request = reader;
        if r.is_err() {
            self.stop(out);
        }
    }

    fn responses(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<RequestRecord>) {
        if self.phase == Phase::EncryptionAnswer {
            let Some((&b, rest)) = data.split_first() else {
                return;
            };
            if b != b'N' && b != b'S' {
                // `G` (GSSAPI encryption, no plaintext to be had) or not an answer.
                self.finished = true;
                return;
            }
            // `N`: the startup follows in cleartext. `S`: it follows inside TLS; the daemon
            // hands over the plaintext (the libssl uprobes) as the continuation of this
            // stream and never the records themselves, so without plaintext nothing comes.
            self.phase = Phase::Startup;
            data = rest;
        }
        let resumed;
        let data: &[u8] = if self.scanning.is_some() {
            match self.scan(data) {
                Some(found) => {
                    resumed = found;
                    &resumed
                }
                None => return,
            }
        } else {
            data
        };
        let mut reader = std::mem::replace(&mut self.response, Reader::new(0, false));
        let r = reader.feed(data, wire::backend, |_, m| {
            if !self.finished {
                self.response(&m, ts, out);
            }
        });
        self.response = reader;
        if r.is_err() {
            self.stop(out);
        }
    }

    /// An untyped client message (startup phase).
    fn startup(&mut self, rd: &mut Reader, m: &Msg<'_>) {
        match be32(m.body) {
            Some(PROTOCOL_3) => {
                self.namespace = startup_database(&m.body[4..]);
                self.phase = Phase::Auth;
                rd.untyped = false;
                // Authentication is answered up to its own ReadyForQuery, like a group of
                // requests: counted as one, a ReadyForQuery lost in a gap is told apart.
                self.groups.push_back(Group::default());
            }
            Some(wire::SSL_REQUEST | wire::GSSENC_REQUEST) => {
                if !std::mem::take(&mut self.declined) {
                    self.phase = Phase::EncryptionAnswer;
                }
            }
            // CancelRequest (the connection closes) or another protocol version.
            _ => self.finished = true,
        }
    }

    /// A typed client message.
    fn request(&mut self, m: &Msg<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        if !matches!(self.phase, Phase::Auth | Phase::Ready) {
            return;
        }
        // In authentication, password and SASL messages (`p`) answer nothing; a query sent
        // then (after a ReadyForQuery this side has not read yet) is queued behind it.
        match m.ty {
            b'Q' => {
                let (text, _) = cstr(m.body);
                let mut g = Group {
                    simple: true,
                    request_ts: ts,
                    ..Group::default()
                };
                let statements = split(text);
                let n = statements.len().max(1) as u64;
                for (i, (operation, text)) in statements.into_iter().enumerate() {
                    let mut ex = self.exchange(operation, Some(text), ts);
                    // The message's bytes, shared out.
                    ex.request_bytes = m.wire / n + u64::from(i == 0) * (m.wire % n);
                    g.items.push_back(Item { ex });
                }
                self.building = false;
                self.push(g, out);
            }
            b'P' => {
                let (name, rest) = cstr(m.body);
                let text = rest.map(|r| cstr(r).0).unwrap_or(&[]);
                let text = sql::normalise_dialect(text, MAX_TEXT, Dialect::Postgres);
                let p = Prepared {
                    name: lossy(name),
                    statement: String::new(),
                    operation: sql::kind(&text),
                    text: Some(text),
                };
                remember(&mut self.statements, p);
                self.extended(m, ts, out);
            }
            b'B' => {
                let (portal, rest) = cstr(m.body);
                let stmt = rest.map(|r| cstr(r).0).unwrap_or(&[]);
                let stmt = lossy(stmt);
                let p = self.statements.iter().rev().find(|s| s.name == stmt);
                let portal = Prepared {
                    name: lossy(portal),
                    operation: p.map_or("OTHER", |p| p.operation),
                    text: p.and_then(|p| p.text.clone()),
                    statement: stmt,
                };
                remember(&mut self.portals, portal);
                self.extended(m, ts, out);
            }
            b'E' => {
                let (portal, _) = cstr(m.body);
                let portal = lossy(portal);
                let (operation, statement, text) =
                    match self.portals.iter().rev().find(|p| p.name == portal) {
                        Some(p) => (p.operation, Some(p.statement.clone()), p.text.clone()),
                        None => ("OTHER", None, None),
                    };
                self.extended(m, ts, out);
                let mut ex = self.exchange(operation, text, ts);
                ex.statement = statement;
                ex.request_bytes = m.wire;
                if let Some(g) = self.groups.back_mut().filter(|_| self.building)
                    && g.items.len() < MAX_ITEMS
                {
                    g.items.push_back(Item { ex });
                }
            }
            b'C' => {
                // Close: a statement (`S`) or a portal (`P`) is forgotten.
                if let Some((&kind, rest)) = m.body.split_first() {
                    let name = lossy(cstr(rest).0);
                    let list = if kind == b'S' {
                        &mut self.statements
                    } else {
                        &mut self.portals
                    };
                    list.retain(|p| p.name != name);
                }
                self.extended(m, ts, out);
            }
            b'D' | b'H' => self.extended(m, ts, out),
            b'S' => {
                self.extended(m, ts, out);
                self.building = false;
            }
            b'F' => {
                // A function call, answered up to its own ReadyForQuery.
                self.building = false;
                self.push(
                    Group {
                        request_ts: ts,
                        ..Group::default()
                    },
                    out,
                );
            }
            // Terminate, COPY data / done / fail, password messages: nothing answers them.
            _ => {}
        }
    }

    fn exchange(&self, operation: &'static str, text: Option<String>, ts: u64) -> Exchange {
        Exchange {
            operation,
            text,
            namespace: self.namespace.clone(),
            request_ts: ts,
            ..Exchange::default()
        }
    }

    /// An extended-protocol message: part of the group its Sync will close.
    fn extended(&mut self, _m: &Msg<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        if !self.building {
            self.push(
                Group {
                    request_ts: ts,
                    ..Group::default()
                },
                out,
            );
            self.building = !self.finished;
        }
    }

    fn push(&mut self, g: Group, out: &mut Vec<RequestRecord>) {
        if self.groups.len() >= MAX_PENDING {
            // More waiting than any client pipelines: not followed any further.
            self.stop(out);
            return;
        }
        self.groups.push_back(g);
    }

    /// A server message.
    fn response(&mut self, m: &Msg<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        match self.phase {
            Phase::Ready => {}
            Phase::Auth if m.ty == b'Z' => {
                // The end of authentication: its group is closed below.
                self.phase = Phase::Ready;
            }
            _ => return,
        }
        if self.skip_to_ready {
            if m.ty == b'Z' {
                // Every group seen so far may have been answered by what was skipped.
                self.skip_to_ready = false;
                let mut dropped = std::mem::take(&mut self.groups);
                let building = self.building;
                // A group still being built goes on after this point: keep it, without the
                // statements sent before (their answers may be the ones skipped).
                if building && let Some(mut g) = dropped.pop_back() {
                    for it in g.items.drain(..) {
                        out.push(it.ex.record(Some(error::TRUNCATED)));
                    }
                    self.groups.push_back(g);
                }
                for g in dropped {
                    for it in g.items {
                        out.push(it.ex.record(Some(error::TRUNCATED)));
                    }
                }
            }
            return;
        }
        // Not answers: asynchronous messages.
        if matches!(m.ty, b'N' | b'S' | b'A') {
            return;
        }
        if self.doubt.is_some() {
            if m.ty == b'Z' {
                self.ready_in_doubt(out);
            }
            return;
        }
        let Some(g) = self.groups.front_mut() else {
            // Nothing waits: answers nothing seen.
            return;
        };
        self.answering = true;
        g.response_bytes += m.wire;
        match m.ty {
            b'D' => g.rows += 1,
            b'C' | b's' | b'I' | b'E' => {
                let item = g.items.pop_front().map(|i| i.ex).or_else(|| {
                    // A statement beyond those the Query's text was split into.
                    (g.simple && m.ty != b'I').then(|| Exchange {
                        operation: "OTHER",
                        namespace: self.namespace.clone(),
                        request_ts: g.request_ts,
                        ..Exchange::default()
                    })
                });
                let rows = std::mem::take(&mut g.rows);
                let lossy = std::mem::take(&mut g.lossy);
                let bytes = std::mem::take(&mut g.response_bytes);
                if g.failed {
                    return;
                }
                if g.doubtful {
                    // Its earlier statements' responses may have been the ones passed over.
                    if let Some(ex) = item.filter(|_| m.ty != b'I') {
                        out.push(ex.record(Some(error::TRUNCATED)));
                    }
                    if m.ty == b'E' {
                        g.failed = true;
                    }
                    return;
                }
                if let Some(mut ex) = item {
                    ex.response_ts = ts;
                    ex.response_bytes = bytes;
                    let mut lost = None;
                    match m.ty {
                        // A tag cut by a gap says nothing sure (`INSERT 0 1` cut to `INSERT 0`).
                        b'C' if m.cut => {}
                        b'C' => complete(&mut ex, m.body, rows, lossy),
                        b's' => ex.returned = (!lossy).then_some(rows),
                        b'E' => match sqlstate(m.body) {
                            Some(code) => ex.sqlstate = Some(code),
                            // Its code was in the gap: an error, which one is lost.
                            None => lost = Some(error::TRUNCATED),
                        },
                        _ => {}
                    }
                    // An empty query is not a statement.
                    if m.ty != b'I' {
                        out.push(ex.record(lost));
                    }
                }
                if m.ty == b'E' {
                    g.failed = true;
                }
            }
            b'Z' => {
                self.answering = false;
                if self.building && self.groups.len() == 1 {
                    // Only a Sync makes a ReadyForQuery: the group being built is done.
                    self.building = false;
                }
                // Statements the server did not execute (after an error) are not reported;
                // a doubtful group's are, without a status.
                if let Some(g) = self.groups.pop_front()
                    && g.doubtful
                    && !g.failed
                {
                    for it in g.items {
                        out.push(it.ex.record(Some(error::TRUNCATED)));
                    }
                }
            }
            // Parse/Bind/Close complete, NoData, descriptions, COPY in/out/both responses and
            // data, a function's result, keys.
            _ => {}
        }
    }
}

impl PostgresState {
    /// A ReadyForQuery while pairing is uncertain. It closes a group already sent, so at most
    /// (groups waiting − 1) were closed by hidden ones; the oldest group is given up (whichever
    /// group it closed, every older one is done too). When no hidden ReadyForQuery can remain,
    /// the queue is exact again and pairing resumes with the next group.
    fn ready_in_doubt(&mut self, out: &mut Vec<RequestRecord>) {
        let Some(mut d) = self.doubt else { return };
        let closed = self.groups.len() - usize::from(self.building && !self.groups.is_empty());
        d.hidden_max = d.hidden_max.min(closed.saturating_sub(1) as u64);
        d.ready_seen += 1;
        if closed > 0
            && let Some(g) = self.groups.pop_front()
        {
            for it in g.items {
                out.push(it.ex.record(Some(error::TRUNCATED)));
            }
        }
        if d.hidden_max > 0 {
            if d.ready_seen > MAX_PENDING as u64 {
                // Never pinned: a client that keeps several groups in flight. Given up.
                self.stop(out);
                return;
            }
            self.doubt = Some(d);
            return;
        }
        self.doubt = None;
        self.resyncs += 1;
        if self.building
            && let Some(g) = self.groups.back_mut()
        {
            // Extended messages sent before this point, not yet closed by a Sync: the server
            // may have answered them in what was passed over.
            g.doubtful = true;
            for it in g.items.drain(..) {
                out.push(it.ex.record(Some(error::TRUNCATED)));
            }
        }
    }
}

/// Requests go client → server. With the role unknown: the way a startup message or a plausible
/// Query or Parse went; `None` while the bytes say neither.
fn request_direction(conn: &ConnInfo, seg: &Segment<'_>) -> Option<Direction> {
    match conn.role {
        Role::Client => Some(Direction::Egress),
        Role::Server => Some(Direction::Ingress),
        Role::Unknown => {
            let d = seg.data;
            (detect::startup(d) == Verdict::Yes
                || detect::encryption_request(d) == Verdict::Yes
                || detect::command(d) == Verdict::Yes)
                .then_some(seg.direction)
        }
    }
}

/// The `database` parameter of a StartupMessage (else `user`: PostgreSQL's default).
fn startup_database(mut params: &[u8]) -> Option<String> {
    let (mut user, mut database) = (None, None);
    while let (name, Some(rest)) = cstr(params) {
        if name.is_empty() {
            break;
        }
        let (value, rest) = cstr(rest);
        match name {
            b"database" => database = Some(value),
            b"user" => user = Some(value),
            _ => {}
        }
        let Some(rest) = rest else { break };
        params = rest;
    }
    let name = database.filter(|d| !d.is_empty()).or(user)?;
    let mut s = lossy(name);
    if s.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    Some(s)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_NAME * 4)]).into_owned()
}

/// Remember `p` under its name, replacing an older one, forgetting the oldest beyond the bound.
fn remember(list: &mut VecDeque<Prepared>, p: Prepared) {
    list.retain(|o| o.name != p.name);
    if list.len() >= MAX_STATEMENTS {
        list.pop_front();
    }
    list.push_back(p);
}

/// The statements of a simple Query's text (a cut text's last statement is cut, and those
/// after it unknown): kind and normalised text each. The text is normalised first (literals
/// and comments gone), then split at `;`.
fn split(text: &[u8]) -> Vec<(&'static str, String)> {
    let all = sql::normalise_dialect(text, MAX_TEXT * 4, Dialect::Postgres);
    all.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .take(MAX_ITEMS)
        .map(|p| {
            let mut t = p.to_string();
            if t.len() > MAX_TEXT {
                let mut end = MAX_TEXT;
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                t.truncate(end);
            }
            (sql::kind(&t), t)
        })
        .collect()
}

/// What a CommandComplete tag says: the kind and the row count (`SELECT 3`, `INSERT 0 1`,
/// `UPDATE 2`, `CREATE TABLE`).
fn complete(ex: &mut Exchange, body: &[u8], rows: u64, lossy: bool) {
    let (tag, _) = cstr(body);
    let tag = String::from_utf8_lossy(tag);
    let mut words = tag.split(' ');
    let first = words.next().unwrap_or("");
    let kind = sql::kind(first);
    if kind != "OTHER" {
        ex.operation = kind;
    }
    let count = tag.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
    match first {
        "SELECT" | "FETCH" | "MOVE" => ex.returned = count,
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" => {
            ex.affected = count;
            // RETURNING rows.
            if rows > 0 && !lossy {
                ex.returned = Some(rows);
            }
        }
        _ => {
            if rows > 0 && !lossy {
                ex.returned = Some(rows);
            }
        }
    }
}

/// The SQLSTATE (field `C`) of an ErrorResponse; `XX000` (internal error) when it has none;
/// `None` when the body kept ends before the field does (cut by a gap, or by the bound on
/// what is kept).
fn sqlstate(mut body: &[u8]) -> Option<String> {
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        let (value, rest) = cstr(rest);
        if field == b'C' {
            rest?;
            return Some(String::from_utf8_lossy(&value[..value.len().min(5)]).into_owned());
        }
        body = rest?;
    }
    if body.is_empty() {
        // The fields ended without their terminator: the rest may hold the code.
        return None;
    }
    Some("XX000".into())
}
