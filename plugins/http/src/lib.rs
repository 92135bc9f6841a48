//! Sonde's HTTP/1.x parser: a `protocol-parser` component (WIT world
//! `sonde:plugin/protocol-parser`) turning reassembled connection payloads into one
//! [`RequestRecord`] per exchange.
//!
//! - [`detect`]: is a connection HTTP/1.x, from its first bytes in either direction.
//! - `head`: start line and header fields, parsed in place.
//! - `body`: the chunked transfer coding as a byte state machine.
//! - `conn`: per-connection state: a reader per direction (framing, gaps, resynchronisation).
//! - `resync`: where the next message starts after the boundaries were lost.
//! - `gap`: how many messages a stretch of lost boundaries held, within bounds.
//! - `pairing`: requests waiting for responses (keep-alive, pipelining, 1xx, HEAD, upgrades)
//!   and the records they become; the SDK's `pending` queue says which request a response
//!   answers, pairing only when that is certain.
//! - [`route`]: path → low-cardinality route.
//! - [`record`]: attribute keys, error classes, the record itself.
//!
//! Built for `wasm32-wasip2` this crate is the component the daemon runs in its sandbox;
//! built natively it is a plain library, tested with the SDK's harness.
#![warn(missing_docs)]

use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, ParserInfo, ProtocolParser, RequestRecord, Segment,
};

mod body;
mod conn;
pub mod detect;
mod gap;
mod head;
mod mode;
mod pairing;
pub mod record;
mod resync;
pub use sonde_sdk::route;
mod scan;

pub use conn::HttpState;

/// The name the component reports in `info`.
pub const NAME: &str = "sonde-http";

/// Bytes of one head (start line and header fields) the parser reads at most. A longer head
/// is dropped as unparseable and the direction resynchronises on the next message; it also
/// caps what a head split across segments can make a connection buffer.
pub const MAX_HEAD: usize = 16 * 1024;

/// Requests waiting for a response on one connection, at most. Beyond, the oldest is reported
/// as `no-response` (its response, if it comes, is still counted in order, not paired).
pub const MAX_PENDING: usize = 64;

/// The HTTP/1.x parser.
pub struct Http;

impl ProtocolParser for Http {
    type State = HttpState;

    fn info() -> ParserInfo {
        ParserInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocols: vec![record::PROTOCOL.into()],
        }
    }

    fn detect(_conn: &ConnInfo, segment: &Segment<'_>) -> Claim {
        detect::detect(segment.data)
    }

    fn parse(
        state: &mut HttpState,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        state.parse(conn, segment, out)
    }

    fn close(state: &mut HttpState, _conn: &ConnInfo, out: &mut Vec<RequestRecord>) {
        state.close(out)
    }
}

sonde_sdk::export_protocol_parser!(Http);
