//! Sonde's PostgreSQL parser: a `protocol-parser` component (WIT world
//! `sonde:plugin/protocol-parser`) turning the PostgreSQL frontend/backend protocol 3.0 into one
//! [`RequestRecord`] per statement executed.
//!
//! - [`detect`]: is a connection PostgreSQL, from the client's StartupMessage (after an
//!   SSLRequest the server declined, or accepted: then inside TLS, as plaintext) or, for a
//!   connection first seen mid-stream, a plausible Query or Parse message.
//! - `wire`: message framing (typed and startup messages, bounded body prefixes).
//! - `conn`: per-connection state: startup and authentication, the simple query protocol
//!   (several statements per Query), the extended protocol (Parse/Bind/Describe/Execute/Sync,
//!   pipelined: each Execute is paired in order with its CommandComplete or ErrorResponse
//!   inside the Sync's group, and groups with ReadyForQuery), COPY skipped.
//! - [`record`]: attribute keys, error strings, the record itself.
//!
//! Statement text is normalised by the SDK's [`sonde_sdk::sql`] (PostgreSQL dialect), the same
//! normaliser as MySQL's.
//!
//! Capture gaps: a gap inside a message body is skipped by count (the statement's row count is
//! then not reported). A gap that hides the server's message boundaries is resynchronised at
//! the next ReadyForQuery followed by clean frames, and pairing resumes once it is certain
//! which group it closed (the groups in between are reported `truncated`). A gap that hides
//! the client's boundaries, or a header that cannot be a message, ends the parsing of the
//! connection (its waiting statements are reported `truncated`, the claim becomes
//! `Finished`): PostgreSQL pipelines requests, and pairing a response with the wrong
//! statement is worse than none.
#![warn(missing_docs)]

use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, ParserInfo, ProtocolParser, RequestRecord, Segment,
};

mod conn;
pub mod detect;
pub mod record;
mod wire;

pub use conn::PostgresState;

/// The name the component reports in `info`.
pub const NAME: &str = "sonde-postgres";

/// Bytes of a request message's body kept at most (statement text); the rest is skipped by
/// count, never buffered.
pub const KEEP: usize = 4096;

/// Bytes of a response message's body kept at most (CommandComplete tags, error fields).
pub const RESPONSE_KEEP: usize = 512;

/// Bytes of normalised statement text in a record, at most.
pub const MAX_TEXT: usize = 1024;

/// Bytes of a database name, at most.
pub const MAX_NAME: usize = 64;

/// Groups of requests (a simple Query, or extended messages up to a Sync) waiting for their
/// ReadyForQuery, at most. Beyond, the connection is given up (its statements `truncated`).
pub const MAX_PENDING: usize = 64;

/// Statements executed in one group, at most; beyond, further ones are not reported.
pub const MAX_ITEMS: usize = 256;

/// Prepared statements (and portals) remembered per connection, at most; beyond, the oldest
/// is forgotten.
pub const MAX_STATEMENTS: usize = 256;

/// The PostgreSQL parser.
pub struct Postgres;

impl ProtocolParser for Postgres {
    type State = PostgresState;

    fn info() -> ParserInfo {
        ParserInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocols: vec![record::PROTOCOL.into()],
        }
    }

    fn detect(conn: &ConnInfo, segment: &Segment<'_>) -> Claim {
        detect::detect(conn, segment)
    }

    fn parse(
        state: &mut PostgresState,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        state.parse(conn, segment, out)
    }

    fn close(state: &mut PostgresState, _conn: &ConnInfo, out: &mut Vec<RequestRecord>) {
        state.close(out)
    }
}

sonde_sdk::export_protocol_parser!(Postgres);
