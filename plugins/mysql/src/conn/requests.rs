//! The request side of a session: the handshake response, commands (what each is and what its
//! response will look like), and requests whose boundaries a gap hid.

use sonde_sdk::protocol_parser::RequestRecord;

use super::{Cursor, MIN_COMMAND, Phase, Session};
use crate::command as cmd;
use crate::detect::{self, Verdict};
use crate::record::{Exchange, error};
use crate::response::{self, Command, Expect, Kind, Resp};
use crate::sql;
use crate::wire::{self, Packet};
use crate::{MAX_PENDING, MAX_TEXT};
use sonde_sdk::protocol_parser::pending::Count;

impl Session {
    /// Request bytes of unknown boundaries: the rest of a LOCAL INFILE upload while the server
    /// has not answered it (a client sends no command before), commands otherwise.
    pub(super) fn hide_requests(&mut self, bytes: u64) {
        if self.hidden.is_none() {
            self.queue.open_hidden();
        }
        let hidden = self.hidden.get_or_insert(0);
        match self.current.as_mut() {
            Some(c) if self.cursor == Cursor::Current && self.resp == Resp::Infile => {
                c.ex.request_bytes += bytes;
            }
            _ => *hidden += bytes,
        }
    }

    /// Request bytes seen where no command begins, while boundaries are lost.
    pub(super) fn skipped_request(&mut self, bytes: u64) {
        if self.hidden.is_some() {
            self.hide_requests(bytes);
        }
    }

    /// May a segment starting with `data` begin a command, after the boundaries were lost?
    pub(super) fn request_resync(&mut self, data: &[u8]) -> bool {
        let uploading = self.cursor == Cursor::Current && self.resp == Resp::Infile;
        if uploading && self.hidden.is_some() {
            return false;
        }
        if detect::command(data) == Verdict::No {
            return false;
        }
        if let Some(bytes) = self.hidden.take() {
            // Each command at least a header and a byte; some expect no response.
            self.queue.close_hidden(Count::new(0, bytes / MIN_COMMAND));
        }
        true
    }

    pub(super) fn request(&mut self, p: &Packet<'_>, out: &mut Vec<RequestRecord>) {
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
                        // TLS from here on. The full handshake response follows inside it:
                        // stay in Login for it. The daemon hands over the TLS plaintext (the
                        // libssl uprobes) as the continuation of this stream and never the
                        // records themselves, so without plaintext nothing more comes.
                        self.tls_requested = true;
                        return;
                    }
                    self.tls_requested = false;
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
                } else if let Some(c) = self.current.as_mut().or(self.queue.newest_mut()) {
                    // LOCAL INFILE data belongs to the command it answers.
                    c.ex.request_bytes += p.wire;
                }
            }
        }
    }

    fn command(&mut self, p: &Packet<'_>, out: &mut Vec<RequestRecord>) {
        let Some(c) = p.first() else {
            // Its first byte fell in a gap: a command, perhaps one without a response.
            self.queue.hide(Count::new(0, 1));
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
        let mut multi = false;
        let (mut expects, mut executes) = (None, None);
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
                // Several statements, or a statement not seen whole, may give several results.
                let whole = (p.body.len() as u64) == p.len;
                multi = text.is_none_or(several_statements) || !whole;
                let text = text.map(|t| sql::normalise(t, MAX_TEXT));
                let class = text
                    .as_deref()
                    .and_then(|t| response::expects(t, whole && t.len() < MAX_TEXT));
                ex.operation = match (&text, c) {
                    (_, cmd::STMT_PREPARE) => "PREPARE",
                    (Some(t), _) => sql::kind(t),
                    (None, _) => "OTHER",
                };
                multi |= ex.operation == "CALL";
                ex.text = text;
                if c == cmd::QUERY {
                    expects = class;
                    Kind::Statement
                } else {
                    (expects, executes) = (Some(Expect::Ok), class);
                    Kind::Prepare
                }
            }
            cmd::STMT_EXECUTE => {
                ex.statement_id = id;
                match self.statements.iter().find(|s| Some(s.id) == id) {
                    Some(s) => {
                        ex.operation = s.operation;
                        ex.text.clone_from(&s.text);
                        multi = s.operation == "CALL";
                        expects = s.expects;
                    }
                    None => multi = true,
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
                expects = Some(Expect::Ok);
                Kind::Simple
            }
            cmd::PING | cmd::RESET_CONNECTION => {
                expects = Some(Expect::Ok);
                Kind::Simple
            }
            cmd::FIELD_LIST => Kind::FieldList,
            cmd::CHANGE_USER => Kind::ChangeUser,
            cmd::BINLOG_DUMP | cmd::BINLOG_DUMP_GTID => Kind::BinlogDump,
            _ => Kind::Simple,
        };
        let command = Command {
            kind,
            first_seq: p.last_seq.wrapping_add(1),
            binary: matches!(c, cmd::STMT_EXECUTE | cmd::STMT_FETCH),
            multi,
            columns: None,
            unsure: false,
            open_end: false,
            expects,
            executes,
            ex,
        };
        // The one being answered counts against the bound too.
        let cap = MAX_PENDING.saturating_sub(usize::from(self.current.is_some()));
        if let Some(old) = self.queue.push(command, cap) {
            self.emit(old, Some(error::NO_RESPONSE), out);
        }
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
}

/// Whether statement text holds a `;` followed by more than blanks (several statements, each
/// with a result; a `;` inside a literal only makes this say yes where it need not).
fn several_statements(text: &[u8]) -> bool {
    text.iter()
        .position(|b| *b == b';')
        .is_some_and(|at| text[at + 1..].iter().any(|b| !b.is_ascii_whitespace()))
}

/// The packet's first bytes with a header, as the detection functions take them.
fn header_and(p: &Packet<'_>) -> Vec<u8> {
    let n = p.len.min(wire::MAX_PACKET as u64) as usize;
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, p.seq];
    v.extend_from_slice(&p.body[..p.body.len().min(64)]);
    v
}
