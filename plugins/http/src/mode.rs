//! Where a direction's reader is: the framing state both the connection reader and the
//! request/response pairing move.

use crate::body::Chunked;

/// Where a direction's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// Between messages: a start line is expected (empty lines before it are skipped).
    #[default]
    Idle,
    /// Inside a head split across segments; its first bytes are in [`crate::conn::Side`]'s buffer.
    Head,
    /// Inside a body of known length, with this many bytes left.
    Fixed(u64),
    Chunked(Chunked),
    /// A response without framing: its body ends with the connection. On a keep-alive
    /// exchange, also where a segment starts with the next status line (servers that omit
    /// `Content-Length` on empty bodies and keep the connection open exist).
    UntilClose {
        keep_alive: bool,
    },
    /// Lost the message boundaries: looking for the next plausible start line (see
    /// `Side::region` in [`crate::conn`]).
    Resync,
}
