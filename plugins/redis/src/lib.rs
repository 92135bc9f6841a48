//! Sonde's Redis parser: RESP2 and RESP3, embedded in the daemon, and written against
//! `sonde-sdk` only, the way any plugin author would (it is the SDK's worked example).
//!
//! Per connection: `detect.rs` claims it on the client's first command; a scanner per
//! direction (`scan.rs`) turns bytes into top-level values without buffering payloads;
//! [`State`] (`conn.rs`) pairs commands with replies in order (pipelining is just several in
//! flight) and turns each pair into a [`RequestRecord`]; `names.rs` says what a command and an
//! error are called. See README.md for the walk-through.
//!
//! A record: protocol `redis`; operation the command, uppercased (`GET`, `CLIENT SETNAME`);
//! status 1 and error the code of an error reply, its prefix (`ERR`, `WRONGTYPE`…; also the
//! attribute `db.response.status_code`), else 0; attributes `db.system.name`, `db.operation.name`,
//! `db.query.text` (the command with its arguments replaced by `?`, at most [`QUERY_MAX`]
//! bytes). The request timestamp is the segment carrying the command's first byte, the
//! response timestamp the one carrying the reply's last byte; sizes are bytes on the wire.
//! A command without a reply is reported with error `truncated` (bytes went missing) or
//! `no-response` (the connection closed, or too many were in flight). Commands queued in a
//! `MULTI` are reported when `EXEC` runs them, with their element's status (see `conn.rs`);
//! pub/sub messages are never replies.
//!
//! Everything is bounded: commands in flight, line length, nesting depth, kept text. Bad
//! input never panics; it costs at most the exchanges around it.

use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, ParserInfo, ProtocolParser, RequestRecord, Segment,
};

mod conn;
mod detect;
mod names;
mod scan;

pub use conn::State;

/// The parser's name (its `info`, the `plugin` label of its metrics), like the other embedded
/// parsers' (`sonde-http`, `sonde-mysql`, `sonde-dns`).
pub const NAME: &str = "sonde-redis";
/// The protocol name in records.
pub const PROTOCOL: &str = "redis";
/// Commands in flight (pipelined, unanswered) per connection; beyond that the oldest is
/// reported as `no-response` and its reply skipped when it comes.
pub const PENDING_MAX: usize = 128;
/// Replies kept that arrived before their command (see [`State`]).
pub const EARLY_MAX: usize = 128;
/// Longest line (header, simple string, error, inline command); longer is not RESP to us.
pub const LINE_MAX: usize = 8 * 1024;
/// Deepest nesting of aggregates in a reply.
pub const DEPTH_MAX: usize = 16;
/// Largest bulk string: Redis's default `proto-max-bulk-len`. A bigger length is far more
/// likely garbage than data, and believing it would swallow the stream.
pub const BULK_MAX: u64 = 512 * 1024 * 1024;
/// Bytes kept of a command or subcommand name, a push kind, an error text.
pub const WORD_CAP: usize = 64;
/// Longest `db.query.text`.
pub const QUERY_MAX: usize = 128;

/// The parser. The state lives per connection in [`State`].
pub struct Resp;

impl ProtocolParser for Resp {
    type State = State;

    fn info() -> ParserInfo {
        ParserInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocols: vec![PROTOCOL.into()],
        }
    }

    fn detect(conn: &ConnInfo, segment: &Segment<'_>) -> Claim {
        detect::detect(conn, segment)
    }

    fn parse(
        state: &mut State,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        state.parse(conn, segment, out)
    }

    fn close(state: &mut State, _conn: &ConnInfo, out: &mut Vec<RequestRecord>) {
        state.close(out);
    }
}

sonde_sdk::export_protocol_parser!(Resp);
