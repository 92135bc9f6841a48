//! Sonde's MySQL parser: a `protocol-parser` component (WIT world `sonde:plugin/protocol-parser`)
//! turning the MySQL client/server protocol (MySQL 8, MariaDB 10.11/11) into one
//! [`RequestRecord`] per command.
//!
//! - [`detect`]: is a connection MySQL, from the server's initial handshake or a command packet.
//! - `wire`: packet framing (16 MiB continuations, bounded payload prefixes, gaps) and packet
//!   decoders.
//! - `conn`: per-connection state: handshake, authentication, commands, responses, gaps.
//! - `response`: the shape of each command's response (where it ends, what its rows look like).
//! - `stretch`, `scan`, and the SDK's `pending` queue: pairing through capture gaps — which
//!   command a response certainly answers, what a stretch of lost boundaries may have held, and
//!   where packets begin again.
//! - [`sql`]: statement normalisation and the statement kind.
//! - [`record`]: attribute keys, error strings, the record itself.
//!
//! Built for `wasm32-wasip2` this crate is the component the daemon runs in its sandbox;
//! built natively it is a plain library, tested with the SDK's harness.
#![warn(missing_docs)]

use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, ParserInfo, ProtocolParser, RequestRecord, Segment,
};

mod command;
mod conn;
pub mod detect;
pub mod record;
mod response;
mod scan;
pub mod sql;
mod stretch;
mod wire;

pub use command::name as command_name;
pub use conn::MysqlState;
pub use wire::MAX_PACKET;

/// The name the component reports in `info`.
pub const NAME: &str = "sonde-mysql";

/// Bytes of a packet's payload kept at most (statement text, OK/ERR fields); the rest of a large
/// packet is skipped by count, never buffered.
pub const KEEP: usize = 4096;

/// Bytes of normalised statement text in a record, at most.
pub const MAX_TEXT: usize = 1024;

/// Bytes of a database name, at most.
pub const MAX_NAME: usize = 64;

/// Response bytes kept at most while the response side looks for packet boundaries after a gap
/// that hid some (for a run of headers split between two segments).
pub const CARRY: usize = 1024;

/// Commands waiting for a response on one connection, at most. Beyond, the oldest is reported
/// as `no-response`. (MySQL is strictly request/response: more than one is already unusual.)
pub const MAX_PENDING: usize = 8;

/// Prepared statements remembered per connection, at most; beyond, the oldest is forgotten.
pub const MAX_STATEMENTS: usize = 256;

/// The MySQL parser.
pub struct Mysql;

impl ProtocolParser for Mysql {
    type State = MysqlState;

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
        state: &mut MysqlState,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        state.parse(conn, segment, out)
    }

    fn close(state: &mut MysqlState, _conn: &ConnInfo, out: &mut Vec<RequestRecord>) {
        state.close(out)
    }
}

sonde_sdk::export_protocol_parser!(Mysql);
