//! The shape of a command's response, packet by packet: OK, ERR, result sets (column count,
//! definitions, EOF, rows, terminator), PREPARE_OK, LOCAL INFILE, multi-results. [`step`] says
//! when the response ends; the row helpers say what a row of the result set being read can look
//! like, for the resynchronisation after a gap.

use crate::record::Exchange;
use crate::sql;
use crate::wire::{self, Packet};

/// How a command's response is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
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

/// Where the response being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Resp {
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
    /// A packet whose kind was lost in a gap: where the response ends is told only by the
    /// next response's sequence id.
    Unknown,
}

/// What a command's response begins with, when its statement says (an ERR can answer any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A result set.
    Rows,
    /// An OK packet (or LOCAL INFILE's request).
    Ok,
}

/// What the response to statement `text` (normalised; `whole`: not cut) begins with, when that
/// is certain: a query returns rows unless it stores them (`INTO`); a change or a transaction
/// or schema statement returns OK unless it returns rows (MariaDB's `RETURNING`, `SET STATEMENT
/// … FOR`). Anything else may return either.
pub(crate) fn expects(text: &str, whole: bool) -> Option<Expect> {
    if !whole {
        return None;
    }
    let has = |word: &str| {
        text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    match sql::kind(text) {
        "SELECT" | "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "VALUES" | "TABLE" | "CHECK"
        | "ANALYZE" | "OPTIMIZE" | "REPAIR"
            if !has("INTO") =>
        {
            Some(Expect::Rows)
        }
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" if !has("RETURNING") => Some(Expect::Ok),
        "SET" if !has("STATEMENT") => Some(Expect::Ok),
        "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "CREATE" | "DROP"
        | "ALTER" | "TRUNCATE" | "RENAME" | "USE" | "LOCK" | "UNLOCK" | "GRANT" | "REVOKE"
        | "DO" | "DEALLOCATE" => Some(Expect::Ok),
        _ => None,
    }
}

/// Whether a response beginning with a packet of payload `len` and first bytes `body` can
/// answer a command expecting `e`.
pub(crate) fn fits(e: Option<Expect>, body: &[u8], len: u64) -> bool {
    let Some(e) = e else {
        return true;
    };
    match body.first() {
        None | Some(0xFF) => true,
        Some(0x00 | 0xFB) => e == Expect::Ok,
        // EOF, authentication: never a statement's first packet.
        Some(0xFE) if len < wire::MAX_PACKET as u64 => false,
        Some(_) => e == Expect::Rows,
    }
}

/// A command waiting for (or reading) its response.
#[derive(Debug)]
pub(crate) struct Command {
    pub kind: Kind,
    /// Sequence id the response starts with: one more than the command's last packet's.
    pub first_seq: u8,
    /// Rows come in the binary protocol (COM_STMT_EXECUTE, COM_STMT_FETCH).
    pub binary: bool,
    /// The response may hold several results (CALL, several statements, or text unknown): rows
    /// hidden by a gap cannot be counted from packet counts.
    pub multi: bool,
    /// Columns of the result set being read.
    pub columns: Option<u64>,
    /// The last packet's first byte was lost: a row or the result's end, not known yet.
    pub unsure: bool,
    /// It ended at a packet whose flags were lost: more results may have followed, unseen.
    pub open_end: bool,
    /// What its response begins with, when certain.
    pub expects: Option<Expect>,
    /// A PREPARE: what the responses to its executions begin with, when certain.
    pub executes: Option<Expect>,
    pub ex: Exchange,
}

/// What a response packet did to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    More,
    Done,
    /// Done, and the connection carries nothing more to parse.
    Finish,
}

/// One response packet of the exchange `c`.
pub(crate) fn step(
    resp: &mut Resp,
    c: &mut Command,
    deprecate: &mut Option<bool>,
    p: &Packet<'_>,
) -> Step {
    c.unsure = false;
    if p.body.is_empty() && p.len > 0 {
        return unknown_packet(resp, c, deprecate, p);
    }
    known(resp, c, deprecate, p)
}

/// A packet whose first byte is known (or that has none).
fn known(resp: &mut Resp, c: &mut Command, deprecate: &mut Option<bool>, p: &Packet<'_>) -> Step {
    let first = p.first();
    if first == Some(0xFF) {
        // ERR can end a response anywhere (column definitions and rows never start with 0xFF).
        c.ex.err = Some(wire::err(p.body));
        return Step::Done;
    }
    match *resp {
        Resp::Start => start(resp, c, p),
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
                    Step::More => known(resp, c, deprecate, p),
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
        Resp::Unknown => Step::More,
    }
}

/// A packet whose first byte fell in a gap: OK, ERR, EOF, a row or a definition, not known.
/// Where only definitions can come it is one; in the rows of a single result it is counted as
/// a row (were it the end, the next packet would begin another response: `conn` sees that by
/// its sequence id). Elsewhere the response loses its status and is followed to the next one.
fn unknown_packet(
    resp: &mut Resp,
    c: &mut Command,
    deprecate: &mut Option<bool>,
    p: &Packet<'_>,
) -> Step {
    let eof_known = *deprecate == Some(false);
    match *resp {
        // Definitions are only counted.
        Resp::Columns(_) | Resp::PrepareColumns(_) | Resp::PrepareColumnsEof => {
            known(resp, c, deprecate, p)
        }
        Resp::Params { left, .. } if left > 1 || deprecate.is_some() => {
            known(resp, c, deprecate, p)
        }
        Resp::ColumnsEof if eof_known => {
            *resp = Resp::Rows;
            Step::More
        }
        Resp::ParamsEof { columns } if eof_known => prepare_columns(resp, columns),
        // A row, or the end: the end only if the next packet begins another response, as
        // one result's end followed by another result (seq going on) is not possible here.
        Resp::Rows if !c.multi => {
            *c.ex.rows.get_or_insert(0) += 1;
            c.unsure = true;
            Step::More
        }
        Resp::Infile => {
            // The server's answer to the upload: OK or ERR.
            c.ex.lossy = true;
            Step::Done
        }
        _ => lost_shape(resp, c),
    }
}

/// The first packet of a response (or of the next result).
fn start(resp: &mut Resp, c: &mut Command, p: &Packet<'_>) -> Step {
    let first = p.first();
    match c.kind {
        Kind::Statement => match first {
            Some(0x00) => ok_packet(resp, c, p),
            Some(0xFB) => {
                *resp = Resp::Infile;
                Step::More
            }
            _ => match wire::lenenc(p.body) {
                Some((n, _)) if n > 0 => {
                    *resp = Resp::Columns(n);
                    c.columns = Some(n);
                    c.ex.rows.get_or_insert(0);
                    Step::More
                }
                // The column count cut by a gap: a result set of unknown shape.
                None if cut(p) => lost_shape(resp, c),
                _ => Step::Done,
            },
        },
        Kind::Prepare => {
            if first == Some(0x00) && p.body.len() < 9 && cut(p) {
                // The definitions' counts fell in a gap.
                return lost_shape(resp, c);
            }
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
    }
}

/// Whether a gap cut the packet short of the fields read here (they lie in its first bytes;
/// a packet kept past them, or whole, is not short of them).
fn cut(p: &Packet<'_>) -> bool {
    (p.body.len() as u64) < p.len && p.body.len() < 64
}

/// What comes next in the response is not known: it is followed to the next response, and
/// loses its status.
fn lost_shape(resp: &mut Resp, c: &mut Command) -> Step {
    c.ex.lossy = true;
    *resp = Resp::Unknown;
    Step::More
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
    more_results(resp, c, status)
}

fn more_results(resp: &mut Resp, c: &mut Command, status: Option<u16>) -> Step {
    match status {
        Some(s) if s & wire::SERVER_MORE_RESULTS_EXISTS != 0 => {
            *resp = Resp::Start;
            Step::More
        }
        Some(_) => Step::Done,
        None => {
            // Its flags fell in a gap: only a command with several results may go on.
            c.open_end = c.multi;
            c.ex.lossy |= c.multi;
            Step::Done
        }
    }
}

/// A packet in the rows of a result set: a row, or the terminator.
fn row(resp: &mut Resp, c: &mut Command, p: &Packet<'_>) -> Step {
    if p.is_terminator() {
        return more_results(resp, c, wire::terminator_status(p));
    }
    *c.ex.rows.get_or_insert(0) += 1;
    Step::More
}

/// The smallest packet a row of `c`'s result set can be: a header and, per column, one byte
/// (text: an empty string or NULL) or, in binary, the row header and the NULL bitmap.
pub(crate) fn min_row_packet(c: &Command) -> u64 {
    let n = c.columns.unwrap_or(1).max(1);
    4 + if c.binary { 1 + (n + 9) / 8 } else { n }
}

/// Whether a packet of payload length `len` starting with `body` can come in the rows of `c`'s
/// result set: a row, the terminator, or an ERR. Only what is certain rules one out.
pub(crate) fn may_be_in_rows(c: &Command, body: &[u8], len: u64) -> bool {
    match body.first() {
        None => len == 0,
        Some(0xFF) => true,
        Some(0xFE) if len < wire::MAX_PACKET as u64 => true,
        Some(b) if c.binary => *b == 0x00,
        Some(_) => match c.columns {
            Some(n) => text_row_fits(body, len, n),
            None => true,
        },
    }
}

/// Whether `body` (the first bytes of a payload `len` long) can be a text row of `columns`
/// length-encoded values.
fn text_row_fits(body: &[u8], len: u64, columns: u64) -> bool {
    let mut at: u64 = 0;
    for _ in 0..columns {
        if at >= len {
            return false;
        }
        let Some(rest) = usize::try_from(at).ok().and_then(|a| body.get(a..)) else {
            // The rest of the packet is not in view: nothing more to check.
            return true;
        };
        let used = match rest.first() {
            None => return true,
            Some(0xFB) => 1,
            Some(_) => match wire::lenenc(rest) {
                Some((n, used)) => (used as u64).saturating_add(n),
                None if rest.len() < 9 && rest[0] != 0xFF => return true,
                None => return false,
            },
        };
        at = at.saturating_add(used);
    }
    at == len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(columns: Option<u64>, binary: bool) -> Command {
        Command {
            kind: Kind::Statement,
            first_seq: 1,
            binary,
            multi: false,
            columns,
            unsure: false,
            open_end: false,
            expects: None,
            executes: None,
            ex: Exchange::default(),
        }
    }

    #[test]
    fn rows_of_a_result_set() {
        let text = cmd(Some(2), false);
        // "ab", NULL
        assert!(may_be_in_rows(&text, b"\x02ab\xfb", 4));
        assert!(!may_be_in_rows(&text, b"\x02ab", 3), "one value short");
        assert!(!may_be_in_rows(&text, b"\x02ab\x00\x00", 5), "one too many");
        // A column count (one byte) or an OK packet is not a row of two columns.
        assert!(!may_be_in_rows(&text, b"\x05", 1));
        assert!(!may_be_in_rows(&text, b"\x00\x01\x00\x02\x00\x00\x00", 7));
        // Cut: what is in view fits.
        assert!(may_be_in_rows(&text, b"\x0aabc", 13));
        assert!(may_be_in_rows(&text, b"\xfe\x00\x00\x02\x00", 5), "EOF");
        assert!(may_be_in_rows(&text, b"\xff\x15\x04#HY000", 20), "ERR");
        let binary = cmd(Some(2), true);
        assert!(may_be_in_rows(&binary, b"\x00\x00\x01a", 4));
        assert!(!may_be_in_rows(&binary, b"\x05", 1));
        assert_eq!(min_row_packet(&text), 6);
        assert_eq!(min_row_packet(&binary), 6);
        assert_eq!(min_row_packet(&cmd(None, false)), 5);
    }

    #[test]
    fn what_statements_answer_with() {
        let rows = Some(Expect::Rows);
        let ok = Some(Expect::Ok);
        assert_eq!(expects("SELECT a FROM t", true), rows);
        assert_eq!(expects("(SELECT ?) UNION (SELECT ?)", true), rows);
        assert_eq!(expects("SELECT a INTO @x FROM t", true), None);
        assert_eq!(
            expects("SELECT a FROM t", false),
            None,
            "cut: INTO may follow"
        );
        assert_eq!(expects("UPDATE t SET a = ?", true), ok);
        assert_eq!(expects("DELETE FROM t RETURNING id", true), None);
        assert_eq!(expects("SET STATEMENT x=? FOR SELECT ?", true), None);
        assert_eq!(expects("CALL p()", true), None);
        let ok_packet = b"\x00\x01\x00\x02\x00\x00\x00";
        assert!(fits(ok, ok_packet, 7));
        assert!(!fits(rows, ok_packet, 7));
        assert!(!fits(ok, b"\x02", 1), "a column count");
        assert!(fits(rows, b"\xff\x15\x04#HY000", 9));
        assert!(fits(None, b"\x02", 1));
    }
}
