//! From reassembled streams to request records and RED metrics.
//!
//! ```text
//!  StreamEvent ──► Router ──ParseJob (per parser)──► ParserSlot ──► backend (Wasm / native)
//!   (conntrack)     │  one flat batch per parser        │ conn table, poisoning,
//!                   │  per capture batch                │ records tagged with ConnInfo
//!                   ◄───────────── SlotOutput ──────────┘
//!                   │  claims → who owns a connection → kernel verdicts
//!                   └► records ──► RED metrics ([`red`]), the record log ([`records`])
//! ```
//!
//! - [`router`]: decides which parsers see which connection, batches segments (many
//!   connections per call: the per-call cost must not dominate), and turns the parsers'
//!   claims into kernel verdicts (stop copying a connection's payload once no parser wants it,
//!   or its owner has what it needs).
//! - [`slot`]: one parser's side of the channel: the connections it has been told about, the
//!   ones its last failure poisoned, and the records it produced, tagged with their connection.
//! - [`dispatch`]: runs slots inline (deterministic; benchmarks and tests) or each on its own
//!   thread behind a bounded queue, so a slow or looping plugin never stalls capture or the
//!   other plugins. A full queue drops the job (counted) and the router stops feeding that
//!   parser the connections concerned.
//! - [`native`]: a [`sonde_sdk::protocol_parser::ProtocolParser`] compiled into the daemon, as
//!   a backend (the Wasm one is `sonde_sandbox::parsers`).

//! - [`red`]: rate, errors and duration per service, route and peer, from records.
//! - [`records`]: the latest records and their JSON form for `/api/records`.
#![forbid(unsafe_code)]

pub mod dispatch;
pub mod native;
pub mod records;
pub mod red;
pub mod router;
pub mod slot;

#[cfg(test)]
mod tests;
