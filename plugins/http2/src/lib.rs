//! Sonde's HTTP/2 parser, gRPC included: h2c with prior knowledge (the client preface) or by
//! `Upgrade: h2c` (the HTTP/1.1 request becomes stream 1, see `conn`), or a connection joined
//! mid-stream. Embedded in the daemon, written against `sonde-sdk` only.
//!
//! Per connection: `detect` claims it on the preface (or on believable frames mid-stream); a
//! frame reader per direction (`frame`) turns bytes into frames, skipping DATA payloads; a
//! HPACK decoder per direction (`hpack`, with its dynamic table and Huffman) turns header
//! blocks into fields; [`State`] (`conn`) follows streams, interleaved as they come, pairs each
//! request with its response by stream id, and `record` turns the pair into a
//! [`RequestRecord`]. See README.md.
//!
//! Records: plain HTTP/2 → protocol `http`, operation `METHOD route`, the HTTP/1 parser's
//! attributes, `http.version` and `network.protocol.version` `2`, status the `:status`.
//! gRPC (`content-type: application/grpc…`) → protocol `grpc`, operation `/service/method`,
//! `rpc.*` attributes, status the `grpc-status` (trailers, or a trailers-only response), error
//! its name when not OK. The request timestamp is the segment with the first byte of the
//! request's HEADERS, the response timestamp the one with the response's END_STREAM.
//!
//! Never wrong headers: a header block that needs dynamic-table entries we did not see (joined
//! mid-stream, a capture gap, an undecodable block) is refused, and its stream is reported
//! with error `hpack-desync` and no status.

use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, ParserInfo, ProtocolParser, RequestRecord, Segment,
};

mod conn;
mod detect;
mod frame;
mod hpack;
mod record;

pub use conn::State;
pub use frame::PREFACE;
pub use record::{attr, error, grpc_code_name};

/// The parser's name (its `info`, the `plugin` label of its metrics).
pub const NAME: &str = "sonde-http2";
/// The protocol of plain HTTP/2 records: the HTTP/1 parser's, so the HTTP metrics count both.
pub const PROTOCOL_HTTP: &str = "http";
/// The protocol of gRPC records.
pub const PROTOCOL_GRPC: &str = "grpc";
/// Streams followed at once per connection; beyond, the oldest is reported `no-response`.
pub const STREAMS_MAX: usize = 256;
/// Largest dynamic table kept per direction (bytes, as HPACK counts them). A peer may allow
/// more; entries beyond are then unknown, never wrong.
pub const TABLE_MAX: usize = 64 * 1024;
/// Largest header block (HEADERS plus CONTINUATIONs) decoded; larger loses HPACK sync.
pub const BLOCK_MAX: usize = 64 * 1024;
/// Bytes kept of `grpc-message`.
pub const GRPC_MESSAGE_MAX: usize = 128;

/// The parser. The state lives per connection in [`State`].
pub struct Http2;

impl ProtocolParser for Http2 {
    type State = State;

    fn info() -> ParserInfo {
        ParserInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocols: vec![PROTOCOL_HTTP.into(), PROTOCOL_GRPC.into()],
        }
    }

    fn detect(_conn: &ConnInfo, segment: &Segment<'_>) -> Claim {
        detect::detect(segment)
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

sonde_sdk::export_protocol_parser!(Http2);
