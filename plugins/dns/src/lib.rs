//! Sonde's DNS parser: a `protocol-parser` component (WIT world `sonde:plugin/protocol-parser`)
//! turning DNS queries and responses, over UDP and TCP, into one [`RequestRecord`] per
//! exchange.
//!
//! - [`detect`]: is a connection DNS, from its first message (never from port numbers).
//! - [`wire`]: the wire format: header, names with compression pointers, question, answers.
//! - `conn`: per-connection state: over TCP a reader per direction (length-prefix framing
//!   across segments, gaps, resynchronisation); over UDP one message per segment.
//! - `pairing`: queries waiting for responses (by id and question), timeouts.
//! - [`record`]: attribute keys, error strings, type and rcode names, the record itself.
//!
//! Built for `wasm32-wasip2` this crate is the component the daemon runs in its sandbox;
//! built natively it is a plain library, tested with the SDK's harness.
#![warn(missing_docs)]

use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, ParserInfo, ProtocolParser, RequestRecord, Segment,
};

mod conn;
#[allow(missing_docs)]
pub mod detect;
mod pairing;
mod query;
#[allow(missing_docs)]
pub mod record;
#[allow(missing_docs)]
pub mod wire;

pub use conn::DnsState;

/// The name the component reports in `info`.
pub const NAME: &str = "sonde-dns";

/// Queries waiting for a response on one connection, at most. Beyond, the oldest is reported
/// as `timeout`.
pub const MAX_PENDING: usize = 256;

/// A query is reported as `timeout` when a segment of its connection arrives more than this
/// long after it (nanoseconds, by the segments' timestamps) and no response came.
pub const TIMEOUT_NS: u64 = 5_000_000_000;

/// The DNS parser.
pub struct Dns;

impl ProtocolParser for Dns {
    type State = DnsState;

    fn info() -> ParserInfo {
        ParserInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocols: vec![record::PROTOCOL.into()],
        }
    }

    fn detect(conn: &ConnInfo, segment: &Segment<'_>) -> Claim {
        detect::detect(conn.transport, segment.data)
    }

    fn parse(
        state: &mut DnsState,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        state.parse(conn, segment, out)
    }

    fn close(state: &mut DnsState, conn: &ConnInfo, out: &mut Vec<RequestRecord>) {
        state.close(conn, out)
    }
}

sonde_sdk::export_protocol_parser!(Dns);
