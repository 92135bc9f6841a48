//! A stretch of the response side whose packet boundaries were lost: from the last boundary
//! known to the packet the scan (`scan`) finds after it. What it held is known only within
//! bounds, from its length in bytes and from the sequence id of the packet found:
//!
//! - the response the stretch began in may go on through it: then the packets hidden number
//!   `seq - next` modulo 256, and when only one such count fits in the bytes (each packet has a
//!   smallest size) it is exact — a result set whose hidden rows can be counted this way loses
//!   nothing;
//! - or it ended inside, and whole responses may have followed, each at least
//!   [`MIN_RESPONSE`] bytes, answering only commands already sent when those bytes were read;
//! - a packet with sequence id 1 begins a response unless a response that began in the stretch
//!   could have wrapped its ids around (255 packets hidden before it);
//! - where a packet may begin a response or be inside one, the packet after it often tells
//!   ([`settle`]): a row goes on with the next id, a lone OK is followed by another response.

use crate::wire::{self, MAX_PACKET};
use sonde_sdk::protocol_parser::pending::Count;

/// The smallest whole response: an EOF packet alone (COM_FIELD_LIST of a table without columns,
/// COM_STMT_FETCH past the last row). An OK is 11 bytes, an ERR 13.
pub(crate) const MIN_RESPONSE: u64 = 9;

/// The smallest packet inside a response: a header and one byte (a row of one empty value). Only
/// the piece ending a 16 MiB packet is ever empty.
const MIN_PACKET: u64 = 5;

/// The smallest end of a result set: its EOF.
const MIN_TERMINATOR: u64 = 9;

/// Where the response side was when its boundaries were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Before {
    /// Picked up mid-stream (or the handshake lost): what came before answers nothing seen.
    Start,
    /// Between responses. `sure`: the last one's end was certain and only responses follow
    /// (whether EOF packets are sent is known, so no stray EOF can come).
    Boundary { sure: bool },
    /// In the rows of the paired response: the next sequence id, the smallest row packet;
    /// `maybe_ended`: its last packet, of a kind lost, may have been its end.
    Rows {
        next: u8,
        min_packet: u64,
        maybe_ended: bool,
    },
    /// Inside a response elsewhere: the next sequence id if known. `paired`: the paired
    /// response, which needs one packet more at least.
    Inside { next: Option<u8>, paired: bool },
}

/// See the module documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stretch {
    pub before: Before,
    /// Bytes from the last boundary known to where the scan resumes (hidden, or seen and not
    /// placed).
    pub bytes: u64,
    /// What the queue could answer when the last of those bytes was read.
    pub answerable: u64,
}

impl Stretch {
    pub(crate) fn new(before: Before, bytes: u64, answerable: u64) -> Self {
        Stretch {
            before,
            bytes,
            answerable,
        }
    }

    /// Whether a packet with sequence id `seq`, `bytes` after the boundary, may continue the
    /// response the stretch began in; then the packets hidden, when only one count fits.
    pub(crate) fn continuation(&self, seq: u8, bytes: u64) -> Option<Option<u64>> {
        let (next, min) = match self.before {
            Before::Rows {
                next, min_packet, ..
            } => (Some(next), min_packet),
            Before::Inside { next, .. } => (next, MIN_PACKET),
            Before::Start | Before::Boundary { .. } => return None,
        };
        let Some(next) = next else {
            return Some(None);
        };
        if bytes == 0 {
            return (seq == next).then_some(Some(0));
        }
        let r = seq.wrapping_sub(next) as u64;
        let n = if r == 0 { 256 } else { r };
        if n.saturating_mul(min) > bytes {
            return None;
        }
        Some(((n + 256).saturating_mul(min) > bytes).then_some(n))
    }

    /// Whether a response that began inside the stretch, after the one it began in, could hold
    /// a packet with sequence id `seq` other than its first (all its packets before hidden).
    pub(crate) fn inner(&self, seq: u8, bytes: u64) -> bool {
        let lead = match seq.wrapping_sub(1) {
            0 => 256,
            n => n as u64,
        };
        self.answerable > 0
            && self.before != Before::Start
            && lead * MIN_PACKET <= self.after(bytes)
    }

    /// Responses that began unseen in the stretch: before the packet found if it begins a
    /// response, and before the next response start if it does not (`continues`: it may
    /// continue the response the stretch began in).
    pub(crate) fn unseen(&self, seq: u8, bytes: u64, continues: bool) -> (Count, Count) {
        if self.before == Before::Start {
            return (Count::ZERO, Count::ZERO);
        }
        let after = self.after(bytes);
        let first = u64::from(matches!(self.before, Before::Boundary { sure: true }) && bytes > 0);
        let if_start = Count::new(first, after / MIN_RESPONSE);
        let lead = match seq.wrapping_sub(1) {
            0 => 256,
            n => n as u64,
        };
        let inner = self
            .inner(seq, bytes)
            .then(|| Count::new(first.max(1), (after - lead * MIN_PACKET) / MIN_RESPONSE + 1));
        let if_not = match (continues, inner) {
            (true, None) => Count::ZERO,
            (true, Some(c)) => c.either(Count::ZERO),
            (false, Some(c)) => c,
            // Nothing explains it (bytes that were not packets after all): the widest count.
            (false, None) => Count::new(0, if_start.max + 1),
        };
        (if_start, if_not)
    }

    /// Bytes left once the response the stretch began in has had its smallest end.
    fn after(&self, bytes: u64) -> u64 {
        let rest = match self.before {
            Before::Rows {
                maybe_ended: false, ..
            } => MIN_TERMINATOR,
            Before::Inside { paired: true, .. } => MIN_PACKET,
            _ => 0,
        };
        bytes.saturating_sub(rest)
    }
}

/// What a packet that may begin a response is, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// OK (or PREPARE_OK); `more`: it says more results follow.
    Ok { more: bool },
    /// ERR, or EOF (`more`: more results follow).
    Ends { more: bool },
    /// A result set's column count.
    Columns,
    /// LOCAL INFILE's request for the file.
    Infile,
}

/// Bodies of more than this many columns do not exist (MySQL's limit is 4096).
const MAX_COLUMNS: u64 = 4096;

/// The shape of a packet (payload `len` long, first bytes `body`) as the first of a response;
/// `None` when no response starts like it.
pub(crate) fn shape(body: &[u8], len: u64) -> Option<Shape> {
    // Flags cut off by a gap: more results may follow.
    let more =
        |status: Option<u16>| status.is_none_or(|s| s & wire::SERVER_MORE_RESULTS_EXISTS != 0);
    match *body.first()? {
        0x00 => Some(Shape::Ok {
            more: more(wire::ok(body).1),
        }),
        0xFF => Some(Shape::Ends { more: false }),
        0xFE if len < MAX_PACKET as u64 => {
            let status = if len == 5 {
                body.get(3..5).map(|s| u16::from_le_bytes([s[0], s[1]]))
            } else {
                wire::ok(body).1
            };
            Some(Shape::Ends { more: more(status) })
        }
        0xFB => Some(Shape::Infile),
        _ => match wire::lenenc(body) {
            Some((n, _)) if (1..=MAX_COLUMNS).contains(&n) => Some(Shape::Columns),
            _ => None,
        },
    }
}

/// What the packet after a tentative start said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Start,
    NotStart,
    Unresolved,
}

/// A packet of `shape` whose last sequence id is `last_seq` may begin a response or be inside
/// one; the next packet, with sequence id `next_seq` (`next_is_def`: a column definition), tells
/// which when only one of them predicts it. `another`: a command after the one it would answer
/// was sent by the time the next packet was read (a response after a whole one answers it);
/// `may_end`: the response it would be inside may end with an OK.
pub(crate) fn settle(
    shape: Shape,
    last_seq: u8,
    next_seq: u8,
    next_is_def: bool,
    another: bool,
    may_end: bool,
) -> Verdict {
    #[derive(PartialEq)]
    enum Q {
        Next,
        One,
        Jump,
    }
    let q = if next_seq == last_seq.wrapping_add(1) {
        Q::Next
    } else if next_seq == 1 {
        Q::One
    } else {
        Q::Jump
    };
    // As a response's first packet: what follows it.
    let start = match shape {
        Shape::Ok { more: false } | Shape::Ends { more: false } => q == Q::One && another,
        Shape::Ok { more: true } | Shape::Ends { more: true } => q == Q::Next,
        Shape::Columns => q == Q::Next && next_is_def,
        // The server's OK after the file, whose packets took the ids between.
        Shape::Infile => q == Q::Jump,
    };
    // Inside a response: more of it, or the next response after its end.
    let inside = match q {
        Q::Next => match shape {
            Shape::Ends { more: false } => false,
            Shape::Columns => !next_is_def,
            _ => true,
        },
        Q::One => may_end || matches!(shape, Shape::Ends { more: false }),
        Q::Jump => false,
    };
    match (start, inside) {
        (true, false) => Verdict::Start,
        (false, true) => Verdict::NotStart,
        _ => Verdict::Unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(next: u8, bytes: u64, answerable: u64) -> Stretch {
        Stretch::new(
            Before::Rows {
                next,
                min_packet: 7,
                maybe_ended: false,
            },
            bytes,
            answerable,
        )
    }

    #[test]
    fn hidden_rows_counted_by_sequence_ids() {
        // 10 rows hidden in 300 bytes: 10, or 266 (too many for 300 bytes).
        assert_eq!(rows(20, 0, 0).continuation(30, 300), Some(Some(10)));
        // 10 or 266 rows both fit in 2000 bytes: not countable, still possible.
        assert_eq!(rows(20, 0, 0).continuation(30, 2000), Some(None));
        // 250 rows of at least 7 bytes do not fit in 300 bytes.
        assert_eq!(rows(20, 0, 0).continuation(14, 300), None);
        // A whole cycle: 256 packets.
        assert_eq!(rows(20, 0, 0).continuation(20, 300), None);
        assert_eq!(rows(20, 0, 0).continuation(20, 256 * 7), Some(Some(256)));
        // Between responses nothing continues.
        let b = Stretch::new(Before::Boundary { sure: true }, 0, 0);
        assert_eq!(b.continuation(1, 50), None);
    }

    #[test]
    fn responses_a_stretch_may_hold() {
        // Rows then 40 bytes: the result set's end (9) and up to 3 responses of 9 bytes.
        let s = rows(20, 0, 5);
        assert_eq!(s.unseen(1, 40, false).0, Count::new(0, 3));
        // At a sure boundary, hidden bytes begin a response.
        let b = Stretch::new(Before::Boundary { sure: true }, 0, 5);
        assert_eq!(b.unseen(1, 11, false).0, Count::new(1, 1));
        assert_eq!(b.unseen(1, 22, false).0, Count::new(1, 2));
        // Sequence id 1 inside a response needs 256 packets before it.
        assert!(!b.inner(1, 1000));
        assert!(b.inner(1, 1280));
        assert!(b.inner(3, 10));
        // Nothing else could be answered when the bytes were read: no response began there.
        assert!(!rows(20, 0, 0).inner(3, 10_000));
        assert_eq!(rows(20, 0, 0).unseen(25, 100, true).1, Count::ZERO);
        // Mid-stream: what came before answers nothing.
        let s = Stretch::new(Before::Start, 0, 3);
        assert_eq!(s.unseen(1, 500, false), (Count::ZERO, Count::ZERO));
    }

    #[test]
    fn shapes() {
        assert_eq!(
            shape(b"\x00\x01\x00\x02\x00\x00\x00", 7),
            Some(Shape::Ok { more: false })
        );
        assert_eq!(
            shape(b"\x00\x01\x00\x0a\x00\x00\x00", 7),
            Some(Shape::Ok { more: true })
        );
        assert_eq!(
            shape(b"\xff\x15\x04#28000", 9),
            Some(Shape::Ends { more: false })
        );
        assert_eq!(
            shape(b"\xfe\x00\x00\x0a\x00", 5),
            Some(Shape::Ends { more: true })
        );
        assert_eq!(shape(b"\x03", 1), Some(Shape::Columns));
        assert_eq!(shape(b"\xfc\x00\x20", 3), None, "8192 columns");
        assert_eq!(shape(b"\xfb/tmp/x", 7), Some(Shape::Infile));
    }

    #[test]
    fn the_next_packet_tells() {
        let ok = Shape::Ok { more: false };
        // A row goes on with the next id; a whole OK is followed by another response.
        assert_eq!(settle(ok, 1, 2, false, true, false), Verdict::NotStart);
        assert_eq!(settle(ok, 1, 1, false, true, false), Verdict::Start);
        // No other command sent: the next response cannot be a later one's.
        assert_eq!(settle(ok, 1, 1, false, false, false), Verdict::Unresolved);
        assert_eq!(settle(ok, 1, 1, false, false, true), Verdict::NotStart);
        // It may end the response it would continue: either way.
        assert_eq!(settle(ok, 1, 1, false, true, true), Verdict::Unresolved);
        let err = Shape::Ends { more: false };
        assert_eq!(settle(err, 1, 1, false, true, false), Verdict::Unresolved);
        assert_eq!(settle(err, 1, 1, false, false, false), Verdict::NotStart);
        let cols = Shape::Columns;
        assert_eq!(settle(cols, 1, 2, true, true, false), Verdict::Start);
        assert_eq!(settle(cols, 1, 2, false, true, false), Verdict::NotStart);
        assert_eq!(
            settle(Shape::Infile, 1, 5, false, true, false),
            Verdict::Start
        );
    }
}
