//! Per-connection state: a scanner per direction, and commands paired with replies in order.
//!
//! Redis answers every command, in order, pipelined or not, so pairing is a FIFO. What can
//! break it: a gap (bytes the daemon did not copy), bytes that are not RESP, commands that
//! never get an answer (`CLIENT REPLY OFF`, not handled), and the modes that end
//! request/response (pub/sub, `MONITOR`, replication), after which we say `Finished`.
//!
//! After a gap the two directions are out of step by an unknown number of exchanges. Lost
//! replies: the commands waiting may or may not have been answered, so they are reported
//! `truncated`. Lost commands: the ones waiting still get their replies in order (that
//! direction is intact), but the replies to the lost ones come next, before those of the
//! commands sent after the gap. Causality tells them apart, as far as it can: a reply that
//! started before a command was sent does not answer it.
//!
//! Transactions: after a successful `MULTI`, Redis answers each command with `+QUEUED` and runs
//! them all at `EXEC`, whose array has one element per queued command. A queued command is
//! reported when it ran, not when it was queued: at `EXEC`, one record each, timed as the
//! `EXEC` (request at the `EXEC` command, response at the end of its reply), with the status of
//! its element (an error element: its code). `MULTI` and `EXEC` have records of their own. A
//! command refused while queueing (an error instead of `QUEUED`) is reported then, with that
//! error. Queued commands that never ran get no record: `DISCARD` or `RESET`, an `EXEC`
//! that fails (`EXECABORT`) or returns null (a `WATCH`ed key changed), the connection closing.
//! A gap while a transaction is open reports its queued commands `truncated`.

use std::collections::VecDeque;
use std::mem;

use sonde_sdk::attributes as attr;
use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role, Segment};

use crate::detect::{self, PUBSUB_KINDS, Verdict};
use crate::names;
use crate::scan::{Cause, Event, Scanner, Side, Value};
use crate::{EARLY_MAX, PENDING_MAX, PROTOCOL};

/// A command waiting for its reply.
#[derive(Debug)]
struct Pending {
    name: names::Name,
    ts: u64,
    bytes: u64,
    /// Sent after a gap, before the directions were back in step.
    after_gap: bool,
}

/// A reply, reduced to what a record needs.
#[derive(Debug)]
struct Reply {
    first_ts: u64,
    last_ts: u64,
    bytes: u64,
    /// The code of an error reply (`ERR`, `WRONGTYPE`…).
    error: Option<String>,
    /// Its type byte.
    kind: u8,
    /// Elements of an aggregate.
    len: u64,
    /// Codes of the error elements of an array, by index.
    element_errors: Vec<(u64, String)>,
}

impl From<&Value> for Reply {
    fn from(v: &Value) -> Self {
        let error = matches!(v.kind, b'-' | b'!')
            .then(|| names::error_code(v.words.first().map_or(&[][..], |w| w)));
        Reply {
            first_ts: v.first_ts,
            last_ts: v.last_ts,
            bytes: v.bytes,
            error,
            kind: v.kind,
            len: v.len,
            element_errors: v
                .element_errors
                .iter()
                .map(|(i, text)| (*i, names::error_code(text)))
                .collect(),
        }
    }
}

/// The parser's state for one connection.
#[derive(Debug)]
pub struct State {
    /// Which way commands flow; from the role, or from the first segment when it is unknown.
    commands_dir: Option<Direction>,
    commands: Scanner,
    replies: Scanner,
    pending: VecDeque<Pending>,
    /// Replies read before their command: within a batch, the daemon may feed one direction's
    /// segments before the other's.
    early: VecDeque<Reply>,
    /// Replies still to come for commands given up on (flushed when `pending` overflowed):
    /// skipping them keeps the later pairs right.
    skip: u64,
    /// From a gap until a command sent after it is answered: a reply that started before the
    /// command it would pair with answers one the gap swallowed. Only then: in steady state
    /// pairing is by order alone (the two directions' timestamps may come from different
    /// threads of a client, and the order of the bytes is the truth).
    resyncing: bool,
    /// Inside `MULTI`: the commands queued, waiting for `EXEC` (at most [`PENDING_MAX`]).
    tx: Option<Vec<Pending>>,
    /// Commands seen; garbage before the first one means detection was wrong.
    seen: u64,
    /// Reused between calls.
    events: Vec<Event>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            commands_dir: None,
            commands: Scanner::new(Side::Commands),
            replies: Scanner::new(Side::Replies),
            pending: VecDeque::new(),
            early: VecDeque::new(),
            skip: 0,
            resyncing: false,
            tx: None,
            seen: 0,
            events: Vec::new(),
        }
    }
}

impl State {
    /// One segment of the connection ([`sonde_sdk::protocol_parser::ProtocolParser::parse`]).
    pub fn parse(
        &mut self,
        conn: &ConnInfo,
        seg: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        let commands_dir = *self
            .commands_dir
            .get_or_insert_with(|| commands_direction(conn, seg));
        let is_command = seg.direction == commands_dir;
        let mut events = mem::take(&mut self.events);
        let scanner = if is_command {
            &mut self.commands
        } else {
            &mut self.replies
        };
        if seg.gap_before > 0 {
            scanner.gap(seg.gap_before, &mut events);
        }
        scanner.feed(seg.ts_ns, seg.data, &mut events);
        let mut claim = Claim::Mine;
        for event in events.drain(..) {
            claim = match event {
                Event::Lost(cause) => self.lost(cause, is_command, out),
                Event::Value(v) if is_command => self.command(&v, out),
                Event::Value(v) => self.reply(&v, out),
            };
            if claim != Claim::Mine {
                break;
            }
        }
        events.clear();
        self.events = events;
        claim
    }

    /// The connection closed: commands still waiting got no reply. Commands queued in a
    /// transaction never ran (Redis discards them): no record.
    pub fn close(&mut self, out: &mut Vec<RequestRecord>) {
        self.tx = None;
        out.extend(self.pending.drain(..).map(|p| unanswered(p, "no-response")));
    }

    /// A direction lost its place (see the module docs).
    fn lost(&mut self, cause: Cause, commands: bool, out: &mut Vec<RequestRecord>) -> Claim {
        if cause == Cause::Garbage && self.seen == 0 {
            return Claim::NotMine;
        }
        // Whether the EXEC (or its reply) went missing cannot be told.
        if let Some(queued) = self.tx.take() {
            out.extend(queued.into_iter().map(|p| unanswered(p, "truncated")));
        }
        if !commands {
            out.extend(self.pending.drain(..).map(|p| unanswered(p, "truncated")));
            self.early.clear();
            self.skip = 0;
        }
        self.resyncing = true;
        Claim::Mine
    }

    fn command(&mut self, v: &Value, out: &mut Vec<RequestRecord>) -> Claim {
        self.seen += 1;
        let cmd = Pending {
            name: names::command(&v.words, v.len),
            ts: v.first_ts,
            bytes: v.bytes,
            after_gap: self.resyncing,
        };
        if cmd.name.operation == names::SYNC {
            return Claim::Finished;
        }
        if self.resyncing {
            while self.early.front().is_some_and(|r| r.first_ts < cmd.ts) {
                self.early.pop_front();
            }
        }
        if let Some(reply) = self.early.pop_front() {
            return self.pair(cmd, &reply, out);
        }
        if self.pending.len() >= PENDING_MAX
            && let Some(oldest) = self.pending.pop_front()
        {
            out.push(unanswered(oldest, "no-response"));
            self.skip += 1;
        }
        self.pending.push_back(cmd);
        Claim::Mine
    }

    fn reply(&mut self, v: &Value, out: &mut Vec<RequestRecord>) -> Claim {
        let pubsub = v
            .words
            .first()
            .is_some_and(|w| PUBSUB_KINDS.contains(&w.as_slice()));
        match v.kind {
            // A RESP3 push is out of band, never the answer to a command, except that it
            // confirms a SUBSCRIBE. Other pushes (client-side caching invalidations) are skipped.
            b'>' if !pubsub => return Claim::Mine,
            b'>' => {
                if self.pending.front().is_some_and(|p| p.name.switches)
                    && let Some(p) = self.pending.pop_front()
                {
                    out.push(answered(p, &Reply::from(v)));
                }
                return Claim::Finished;
            }
            // A RESP2 message (3 or 4 elements) with nothing asked: we joined a subscribed
            // connection.
            b'*' if pubsub
                && (3..=4).contains(&v.len)
                && self.pending.is_empty()
                && self.skip == 0 =>
            {
                return Claim::Finished;
            }
            _ => {}
        }
        let reply = Reply::from(v);
        if self.skip > 0 {
            self.skip -= 1;
            return Claim::Mine;
        }
        match self.pending.front() {
            None => {
                if self.early.len() >= EARLY_MAX {
                    self.early.pop_front();
                }
                self.early.push_back(reply);
                Claim::Mine
            }
            // Stale: it answers a command the gap swallowed.
            Some(p) if p.after_gap && reply.first_ts < p.ts => Claim::Mine,
            Some(_) => match self.pending.pop_front() {
                Some(p) => self.pair(p, &reply, out),
                None => Claim::Mine,
            },
        }
    }

    fn pair(&mut self, cmd: Pending, reply: &Reply, out: &mut Vec<RequestRecord>) -> Claim {
        if cmd.after_gap {
            // Back in step.
            self.resyncing = false;
            self.pending.iter_mut().for_each(|p| p.after_gap = false);
        }
        let switched = cmd.name.switches && reply.error.is_none();
        if self.transaction(cmd.name.operation.as_str(), reply) {
            if let Some(queued) = self.tx.as_mut()
                && reply.error.is_none()
                && queued.len() < PENDING_MAX
                && !TX_CONTROL.contains(&cmd.name.operation.as_str())
            {
                queued.push(cmd);
                return Claim::Mine;
            }
            if cmd.name.operation == "EXEC" {
                let queued = self.tx.take().unwrap_or_default();
                let exec_ts = cmd.ts;
                out.push(answered(cmd, reply));
                out.extend(executed(queued, exec_ts, reply));
                return Claim::Mine;
            }
        }
        out.push(answered(cmd, reply));
        if switched {
            Claim::Finished
        } else {
            Claim::Mine
        }
    }
}

/// Commands that are not queued inside a transaction.
const TX_CONTROL: &[&str] = &["MULTI", "EXEC", "DISCARD", "RESET", "WATCH", "QUIT"];

impl State {
    /// Follows `MULTI`…`EXEC` as `operation` gets `reply`; whether a transaction is open
    /// (before this command's effect on it, so that its `EXEC` can be told).
    fn transaction(&mut self, operation: &str, reply: &Reply) -> bool {
        if self.tx.is_none() {
            if operation == "MULTI" && reply.error.is_none() {
                self.tx = Some(Vec::new());
            }
            return false;
        }
        if matches!(operation, "DISCARD" | "RESET") {
            self.tx = None;
            return false;
        }
        true
    }
}

/// The records of the commands an `EXEC` ran: `reply`'s elements in order. None if it failed
/// or returned null (the transaction was aborted).
fn executed(queued: Vec<Pending>, exec_ts: u64, reply: &Reply) -> Vec<RequestRecord> {
    if reply.error.is_some() || reply.kind != b'*' {
        return Vec::new();
    }
    queued
        .into_iter()
        .zip(0..reply.len)
        .map(|(p, i)| {
            let mut r = record(p);
            r.request_ts_ns = exec_ts;
            r.response_ts_ns = reply.last_ts;
            if let Some((_, code)) = reply.element_errors.iter().find(|(j, _)| *j == i) {
                failed(&mut r, code);
            }
            r
        })
        .collect()
}

/// Commands go the role's way; with an unknown role, the way of the first segment if it is a
/// command (detection claimed on it), else the other way.
fn commands_direction(conn: &ConnInfo, first: &Segment<'_>) -> Direction {
    match conn.role {
        Role::Unknown if detect::command(first.data) == Verdict::No => match first.direction {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        },
        Role::Unknown => first.direction,
        _ => conn.request_direction(),
    }
}

fn record(cmd: Pending) -> RequestRecord {
    RequestRecord {
        protocol: PROTOCOL.into(),
        request_ts_ns: cmd.ts,
        request_bytes: cmd.bytes,
        attributes: vec![
            (attr::DB_SYSTEM_NAME.into(), PROTOCOL.into()),
            (attr::DB_OPERATION_NAME.into(), cmd.name.operation.clone()),
            (attr::DB_QUERY_TEXT.into(), cmd.name.query),
        ],
        operation: cmd.name.operation,
        ..RequestRecord::default()
    }
}

fn answered(cmd: Pending, reply: &Reply) -> RequestRecord {
    let mut r = record(cmd);
    r.response_ts_ns = reply.last_ts;
    r.response_bytes = reply.bytes;
    if let Some(code) = &reply.error {
        failed(&mut r, code);
    }
    r
}

/// An error reply: status 1, the error and `db.response.status_code` its code.
fn failed(r: &mut RequestRecord, code: &str) {
    r.status = 1;
    r.error = Some(code.into());
    r.attributes
        .push((attr::DB_RESPONSE_STATUS_CODE.into(), code.into()));
}

fn unanswered(cmd: Pending, why: &str) -> RequestRecord {
    RequestRecord {
        error: Some(why.into()),
        ..record(cmd)
    }
}
