//! One connection: a packet [`Reader`] per direction and the session on top of them —
//! handshake and authentication (skipped, but read for the capability flags and the database),
//! then commands and the responses they wait for.
//!
//! MySQL is strictly request/response: the response to the oldest waiting command starts with a
//! packet of sequence id 1 and its end is known from its structure (OK, ERR, result set, …).
//! Responses that pair with no command are skipped, still framed.

use std::collections::VecDeque;

use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role, Segment};

use crate::command as cmd;
use crate::detect::{self, Verdict};
use crate::record::{Exchange, error};
use crate::sql;
use crate::wire::{self, Packet, Reader};
use crate::{MAX_PENDING, MAX_STATEMENTS, MAX_TEXT};

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

/// How a command's response is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// OK, ERR, LOCAL INFILE, or a result set (COM_QUERY, COM_STMT_EXECUTE).
    Statement,
    Prepare,
    /// Rows until a terminator (COM_STMT_FETCH).
    Fetch,
    /// Column definitions until EOF (COM_FIELD_LIST).
    FieldList,
    /// Authentication packets until OK or ERR (COM_CHANGE_USER).
    ChangeUser,
    /// A stream of binlog events: the connection is finished once it starts.
    BinlogDump,
    /// One packet.
    Simple,
}

/// Where the response to the oldest command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Resp {
    /// Its first packet (or the next result of a multi-result response).
    #[default]
    Start,
    /// Column definitions left.
    Columns(u64),
    /// The EOF after the column definitions (without `CLIENT_DEPRECATE_EOF`).
    ColumnsEof,
    Rows,
    /// LOCAL INFILE: the client sends the file, the server answers OK or ERR.
    Infile,
    UntilOkErr,
    FieldList,
    /// PREPARE_OK's parameter definitions left, and the column definitions after them.
    Params {
        left: u64,
        columns: u64,
    },
    ParamsEof {
        columns: u64,
    },
    PrepareColumns(u64),
    PrepareColumnsEof,
}

#[derive(Debug)]
struct Command {
    kind: Kind,
    /// Sequence id the response starts with: one more than the command's last packet's.
    first_seq: u8,
    ex: Exchange,
}

/// What a response packet did to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    More,
    Done,
    /// Done, and the connection carries nothing more to parse.
    Finish,
}

/// A prepared statement remembered by id.
#[derive(Debug)]
struct Statement {
    id: u32,
    operation: &'static str,
    text: Option<String>,
}

/// Everything above the framing.
#[derive(Debug, Default)]
struct Session {
    phase: Phase,
    server_caps: Option<u32>,
    client_caps: Option<u32>,
    /// `CLIENT_DEPRECATE_EOF` in effect; learnt from the handshake or from result sets.
    deprecate_eof: Option<bool>,
    query_attributes: Option<bool>,
    namespace: Option<String>,
    pending: VecDeque<Command>,
    resp: Resp,
    statements: VecDeque<Statement>,
    finished: bool,
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
    /// Bytes of packet buffer allocated, both directions (at most `KEEP` + 512).
    pub fn buffer_capacity(&self) -> usize {
        self.request.capacity() + self.response.capacity()
    }

    /// Commands waiting for their response (at most [`MAX_PENDING`]).
    pub fn pending(&self) -> usize {
        self.s.pending.len()
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
        let reader = if is_request {
            &mut self.request
        } else {
            &mut self.response
        };
        if seg.gap_before > 0 && !reader.gap(seg.gap_before) {
            self.s.lost(is_request, out);
        }
        let mut data = seg.data;
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
                reader.lose();
            }
        }
        if reader.lost && !data.is_empty() {
            if self.s.resync_point(is_request, data) {
                reader.lost = false;
            } else {
                return Claim::Mine;
            }
        }
        let ts = seg.ts_ns;
        while reader.advance(&mut data, ts) {
            let p = reader.packet();
            if is_request {
                self.s.request(&p, out);
            } else {
                self.s.response(&p, ts, out);
            }
            if self.s.finished {
                return Claim::Finished;
            }
        }
        Claim::Mine
    }

    pub(crate) fn close(&mut self, out: &mut Vec<RequestRecord>) {
        if self.s.finished {
            return;
        }
        while let Some(c) = self.s.pending.pop_front() {
            let e = if c.ex.started {
                error::TRUNCATED
            } else {
                error::NO_RESPONSE
            };
            self.s.emit(c, Some(e), out);
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
    /// Packet boundaries are lost on one side.
    fn lost(&mut self, is_request: bool, out: &mut Vec<RequestRecord>) {
        if self.phase != Phase::Ready {
            // The handshake cannot be followed any more; what comes next is commands.
            self.phase = Phase::Ready;
        }
        if !is_request {
            // Where the responses in flight end is unknown: all of them are truncated.
            while let Some(c) = self.pending.pop_front() {
                self.emit(c, Some(error::TRUNCATED), out);
            }
            self.resp = Resp::Start;
        }
    }

    /// May a segment starting with `data` begin a packet, after the boundaries were lost?
    fn resync_point(&self, is_request: bool, data: &[u8]) -> bool {
        if is_request {
            detect::command(data) != Verdict::No
        } else if self.phase == Phase::Greeting {
            detect::greeting(data) != Verdict::No
        } else {
            // The first packet of the response to a waiting command.
            self.pending.front().is_some_and(|c| {
                !c.ex.started && (data.len() < 4 || (data[3] == c.first_seq && wire::u24(data) > 0))
            })
        }
    }

    fn request(&mut self, p: &Packet<'_>, out: &mut Vec<RequestRecord>) {
        match self.phase {
            Phase::Greeting => {
                if p.seq == 0 && detect::command(&header_and(p)) != Verdict::No {
                    // Mid-stream: the handshake was not seen.
                    self.phase = Phase::Ready;
                    self.command(p, out);
                }
            }
            Phase::Login => {
                if let Some(login) = wire::login(p.body) {
                    self.client_caps = Some(login.caps);
                    if login.caps & wire::CLIENT_SSL != 0 && p.len == wire::SSL_REQUEST_LEN {
                        // TLS from here on: nothing more to read.
                        self.finished = true;
                        return;
                    }
                    if let Some(db) = login.database {
                        self.namespace = Some(db);
                    }
                    if let Some(server) = self.server_caps {
                        let both = server & login.caps;
                        self.deprecate_eof = Some(both & wire::CLIENT_DEPRECATE_EOF != 0);
                        self.query_attributes = Some(both & wire::CLIENT_QUERY_ATTRIBUTES != 0);
                    }
                }
                self.phase = Phase::Auth;
            }
            Phase::Auth => {}
            Phase::Ready => {
                if p.seq == 0 {
                    self.command(p, out);
                } else if let Some(c) = self.pending.back_mut() {
                    // LOCAL INFILE data belongs to the command it answers.
                    c.ex.request_bytes += p.wire;
                }
            }
        }
    }

    fn command(&mut self, p: &Packet<'_>, out: &mut Vec<RequestRecord>) {
        let Some(c) = p.first() else {
            return;
        };
        let mut ex = Exchange {
            operation: cmd::name(c),
            namespace: self.namespace.clone(),
            request_ts: p.start_ts,
            request_bytes: p.wire,
            ..Default::default()
        };
        let id = wire::u32le(p.body, 1);
        let kind = match c {
            cmd::QUIT | cmd::STMT_SEND_LONG_DATA => return,
            cmd::STMT_CLOSE => {
                if let Some(id) = id {
                    self.statements.retain(|s| s.id != id);
                }
                return;
            }
            cmd::QUERY | cmd::STMT_PREPARE => {
                let text = if c == cmd::QUERY {
                    self.query_text(p.body)
                } else {
                    Some(&p.body[1..])
                };
                let text = text.map(|t| sql::normalise(t, MAX_TEXT));
                ex.operation = match (&text, c) {
                    (_, cmd::STMT_PREPARE) => "PREPARE",
                    (Some(t), _) => sql::kind(t),
                    (None, _) => "OTHER",
                };
                ex.text = text;
                if c == cmd::QUERY {
                    Kind::Statement
                } else {
                    Kind::Prepare
                }
            }
            cmd::STMT_EXECUTE => {
                ex.statement_id = id;
                if let Some(s) = self.statements.iter().find(|s| Some(s.id) == id) {
                    ex.operation = s.operation;
                    ex.text.clone_from(&s.text);
                }
                Kind::Statement
            }
            cmd::STMT_FETCH | cmd::STMT_RESET => {
                ex.statement_id = id;
                if c == cmd::STMT_FETCH {
                    Kind::Fetch
                } else {
                    Kind::Simple
                }
            }
            cmd::INIT_DB => {
                ex.namespace = wire::name(&p.body[1..]);
                Kind::Simple
            }
            cmd::FIELD_LIST => Kind::FieldList,
            cmd::CHANGE_USER => Kind::ChangeUser,
            cmd::BINLOG_DUMP | cmd::BINLOG_DUMP_GTID => Kind::BinlogDump,
            _ => Kind::Simple,
        };
        if self.pending.len() >= MAX_PENDING
            && let Some(old) = self.pending.pop_front()
        {
            self.resp = Resp::Start;
            self.emit(old, Some(error::NO_RESPONSE), out);
        }
        self.pending.push_back(Command {
            kind,
            first_seq: p.last_seq.wrapping_add(1),
            ex,
        });
    }

    /// The statement text of a COM_QUERY body, after the query attributes if any.
    fn query_text<'a>(&self, body: &'a [u8]) -> Option<&'a [u8]> {
        let rest = &body[1..];
        let attrs = match self.query_attributes {
            Some(a) => a,
            // Mid-stream: "no parameters, one parameter set" is never the start of SQL.
            None => rest.starts_with(&[0, 1]),
        };
        if !attrs {
            return Some(rest);
        }
        let (params, a) = wire::lenenc(rest)?;
        let (_, b) = wire::lenenc(&rest[a..])?;
        // Statements with attributes bound: their values come first and are not decoded.
        (params == 0).then(|| &rest[a + b..])
    }

    fn response(&mut self, p: &Packet<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        match self.phase {
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
            Phase::Ready => self.command_response(p, ts, out),
        }
    }

    fn command_response(&mut self, p: &Packet<'_>, ts: u64, out: &mut Vec<RequestRecord>) {
        let Some(c) = self.pending.front_mut() else {
            self.orphan(p);
            return;
        };
        if !c.ex.started {
            if p.seq != c.first_seq {
                self.orphan(p);
                return;
            }
            c.ex.started = true;
        }
        c.ex.response_bytes += p.wire;
        c.ex.response_ts = ts;
        let step = step(&mut self.resp, c, &mut self.deprecate_eof, p);
        if step == Step::More {
            return;
        }
        self.resp = Resp::Start;
        let Some(c) = self.pending.pop_front() else {
            return;
        };
        self.emit(c, None, out);
        if step == Step::Finish {
            self.finished = true;
        }
    }

    /// A response packet that answers no waiting command (the tail of a response whose command
    /// was not seen, or the EOF after PREPARE_OK's definitions when it was not known to come).
    fn orphan(&mut self, p: &Packet<'_>) {
        if p.is_eof5() && self.deprecate_eof.is_none() {
            self.deprecate_eof = Some(false);
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

/// The packet's first bytes with a header, as the detection functions take them.
fn header_and(p: &Packet<'_>) -> Vec<u8> {
    let n = p.len.min(wire::MAX_PACKET as u64) as usize;
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, p.seq];
    v.extend_from_slice(&p.body[..p.body.len().min(64)]);
    v
}

/// One response packet of the exchange `c`.
fn step(resp: &mut Resp, c: &mut Command, deprecate: &mut Option<bool>, p: &Packet<'_>) -> Step {
    let first = p.first();
    if first == Some(0xFF) {
        // ERR can end a response anywhere (column definitions and rows never start with 0xFF).
        c.ex.err = Some(wire::err(p.body));
        return Step::Done;
    }
    match *resp {
        Resp::Start => match c.kind {
            Kind::Statement => match first {
                Some(0x00) => ok_packet(resp, c, p),
                Some(0xFB) => {
                    *resp = Resp::Infile;
                    Step::More
                }
                _ => match wire::lenenc(p.body) {
                    Some((n, _)) if n > 0 => {
                        *resp = Resp::Columns(n);
                        c.ex.rows.get_or_insert(0);
                        Step::More
                    }
                    _ => Step::Done,
                },
            },
            Kind::Prepare => {
                if first != Some(0x00) || p.body.len() < 9 {
                    return Step::Done;
                }
                c.ex.statement_id = wire::u32le(p.body, 1);
                let columns = u16::from_le_bytes([p.body[5], p.body[6]]) as u64;
                let params = u16::from_le_bytes([p.body[7], p.body[8]]) as u64;
                if params > 0 {
                    *resp = Resp::Params {
                        left: params,
                        columns,
                    };
                    Step::More
                } else {
                    prepare_columns(resp, columns)
                }
            }
            Kind::Fetch => {
                *resp = Resp::Rows;
                c.ex.rows = Some(0);
                row(resp, c, p)
            }
            Kind::FieldList => {
                *resp = Resp::FieldList;
                if p.is_terminator() {
                    Step::Done
                } else {
                    Step::More
                }
            }
            Kind::ChangeUser => {
                if first == Some(0x00) {
                    Step::Done
                } else {
                    *resp = Resp::UntilOkErr;
                    Step::More
                }
            }
            Kind::BinlogDump => Step::Finish,
            Kind::Simple => Step::Done,
        },
        Resp::Columns(n) => {
            *resp = if n > 1 {
                Resp::Columns(n - 1)
            } else if *deprecate == Some(true) {
                Resp::Rows
            } else {
                Resp::ColumnsEof
            };
            Step::More
        }
        Resp::ColumnsEof => {
            if p.is_terminator() && (*deprecate == Some(false) || p.len == 5) {
                *deprecate = Some(false);
                if wire::eof_status(p.body) & wire::SERVER_STATUS_CURSOR_EXISTS != 0 {
                    // Rows come later, with COM_STMT_FETCH.
                    return Step::Done;
                }
                *resp = Resp::Rows;
                Step::More
            } else {
                // No EOF: rows (or their terminator) follow the definitions directly.
                *deprecate = Some(true);
                *resp = Resp::Rows;
                row(resp, c, p)
            }
        }
        Resp::Rows => row(resp, c, p),
        Resp::Infile => match first {
            Some(0x00) => ok_packet(resp, c, p),
            _ => Step::More,
        },
        Resp::UntilOkErr => {
            if first == Some(0x00) {
                Step::Done
            } else {
                Step::More
            }
        }
        Resp::FieldList => {
            if p.is_terminator() {
                Step::Done
            } else {
                Step::More
            }
        }
        Resp::Params { left, columns } => {
            if left > 1 {
                *resp = Resp::Params {
                    left: left - 1,
                    columns,
                };
                return Step::More;
            }
            match *deprecate {
                Some(true) => prepare_columns(resp, columns),
                // Unknown and nothing after: done now; a trailing EOF is skipped as an orphan.
                None if columns == 0 => Step::Done,
                _ => {
                    *resp = Resp::ParamsEof { columns };
                    Step::More
                }
            }
        }
        Resp::ParamsEof { columns } => {
            if p.is_eof5() {
                *deprecate = Some(false);
                prepare_columns(resp, columns)
            } else {
                // A column definition: there was no EOF.
                *deprecate = Some(true);
                match prepare_columns(resp, columns) {
                    Step::More => step(resp, c, deprecate, p),
                    s => s,
                }
            }
        }
        Resp::PrepareColumns(n) => {
            if n > 1 {
                *resp = Resp::PrepareColumns(n - 1);
                return Step::More;
            }
            match *deprecate {
                Some(false) => {
                    *resp = Resp::PrepareColumnsEof;
                    Step::More
                }
                _ => Step::Done,
            }
        }
        Resp::PrepareColumnsEof => Step::Done,
    }
}

fn prepare_columns(resp: &mut Resp, columns: u64) -> Step {
    if columns > 0 {
        *resp = Resp::PrepareColumns(columns);
        Step::More
    } else {
        Step::Done
    }
}

/// An OK packet ending a result (more may follow).
fn ok_packet(resp: &mut Resp, c: &mut Command, p: &Packet<'_>) -> Step {
    let (affected, status) = wire::ok(p.body);
    if affected.is_some() {
        c.ex.affected = affected;
    }
    more_results(resp, status)
}

fn more_results(resp: &mut Resp, status: u16) -> Step {
    if status & wire::SERVER_MORE_RESULTS_EXISTS != 0 {
        *resp = Resp::Start;
        Step::More
    } else {
        Step::Done
    }
}

/// A packet in the rows of a result set: a row, or the terminator.
fn row(resp: &mut Resp, c: &mut Command, p: &Packet<'_>) -> Step {
    if p.is_terminator() {
        return more_results(resp, wire::terminator_status(p));
    }
    *c.ex.rows.get_or_insert(0) += 1;
    Step::More
}
