//! The `protocol-parser` world: a parser turns reassembled connection payloads into request
//! records (protocol, operation, status, timing, sizes, attributes such as `traceparent`).
//!
//! An author implements [`ProtocolParser`]: `detect` on a connection's first bytes, then
//! `parse` per segment with a per-connection state, `close` to flush. [`Driver`] does the rest
//! and is the same code in the component and in the native `harness` (feature `harness`): it
//! keeps the connection table, decides when detection gives up (after [`DETECT_BUDGET`] bytes
//! per direction), tags records with their connection, and reports claim changes so the daemon
//! can stop the kernel copying payloads nobody wants.
//!
//! Modules, in the order a record is made: `conn` (what the daemon says about a connection),
//! `record` (what a parser says back), `driver` (the connection table), `batch` (the flat
//! wire form records cross the sandbox in), `wit` (the component glue, wasm32 only); plus
//! [`pending`] (a request queue for in-order protocols whose capture has gaps) and, with the
//! `harness` feature, the native `harness`.

mod batch;
mod conn;
mod driver;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod pending;
mod record;
#[cfg(test)]
mod tests;
#[cfg(all(target_arch = "wasm32", feature = "protocol-parser"))]
#[doc(hidden)]
pub mod wit;

// The wire form is the daemon's business (it decodes and checks what a component returns):
// public for it, hidden from authors.
#[doc(hidden)]
pub use batch::{RecordBatch, RecordHead, RecordRef, Span};
pub use conn::{Claim, ConnInfo, Direction, Endpoint, Role, Segment, Transport};
pub use driver::{Driver, FeedResult};
pub use record::{ParserInfo, RequestRecord};

/// Bytes per direction a parser may look at before an undecided connection counts as not its.
pub const DETECT_BUDGET: u64 = 4096;

/// A protocol parser. Implement it on a unit struct; the state lives per connection.
pub trait ProtocolParser {
    type State: Default;

    fn info() -> ParserInfo;

    /// Look at the first bytes of a connection (either direction, as they come). Return
    /// `Undecided` to see more; after [`DETECT_BUDGET`] bytes in both directions the driver
    /// gives up for you.
    fn detect(conn: &ConnInfo, segment: &Segment<'_>) -> Claim;

    /// A segment of a claimed connection, the detecting one included. Segments of one
    /// direction come in stream order; `gap_before` says bytes are missing.
    fn parse(
        state: &mut Self::State,
        conn: &ConnInfo,
        segment: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim;

    /// The connection closed: flush what is pending.
    fn close(_state: &mut Self::State, _conn: &ConnInfo, _out: &mut Vec<RequestRecord>) {}
}
