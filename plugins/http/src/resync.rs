//! Finding the next message start after the parser lost its place: at the start of a line (or
//! of a segment) as a prefix that may still become a start line, or anywhere as a start line
//! glued to what precedes it: a body hidden by a gap rarely ends with a newline (JSON does
//! not), and the next message follows its last byte directly. A glued start may also straddle
//! two segments: the end of the previous one is kept ([`Carry`]) to look for it.
//!
//! The count of messages a gap hid relies on this scan finding every start in the bytes it
//! sees; where it cannot tell (a request line longer than the carry, split), it says so.

use crate::detect::{self, MAX_METHOD, METHODS, Verdict, is_method_byte};
use crate::scan::find;

/// Which half of the exchange a direction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

/// Whether `data` may begin a message of this direction.
pub(crate) fn start_verdict(kind: Kind, data: &[u8]) -> Verdict {
    match kind {
        Kind::Request => detect::request_line(data),
        Kind::Response => detect::status_line(data),
    }
}

/// Where the next message may start in `data`. `line_start`: its first byte begins a line.
/// Not found: whether the byte after `data` begins a line.
pub(crate) fn next_start(kind: Kind, data: &[u8], line_start: bool) -> Result<usize, bool> {
    // Not at the first byte when it is not a line start: that is where the caller failed.
    let glued = glued_start(kind, data, usize::from(!line_start));
    let mut line = if line_start {
        Some(0)
    } else {
        find(data, b'\n').map(|p| p + 1)
    };
    while let Some(at) = line {
        if glued.is_some_and(|g| g < at) {
            break;
        }
        if at >= data.len() {
            return Err(true);
        }
        if start_verdict(kind, &data[at..]) != Verdict::No {
            return Ok(at);
        }
        line = find(&data[at..], b'\n').map(|p| at + p + 1);
    }
    glued.ok_or(false)
}

const VERSION: &[u8] = b"HTTP/1.";

/// Bytes kept from the end of a segment for a start line split by the segment boundary. A
/// status line needs 12; a request line, its method and target.
pub(crate) const CARRY: usize = 1024;

/// The end of the previous segment's last line, while resynchronising.
#[derive(Debug, Default)]
pub(crate) struct Carry {
    /// A longer line was cut to its last [`CARRY`] bytes, and was counted as perhaps holding a
    /// start the scan cannot confirm.
    counted: bool,
}

impl Carry {
    /// A start line that begins in `carry` and goes on in `data`: its offset in `carry`.
    pub(crate) fn split_start(kind: Kind, carry: &[u8], data: &[u8]) -> Option<usize> {
        if carry.is_empty() {
            return None;
        }
        // The line goes on at most to the first LF.
        let line = find(data, b'\n').map_or(data.len(), |p| p + 1);
        let mut joined = Vec::with_capacity(carry.len() + line);
        joined.extend_from_slice(carry);
        joined.extend_from_slice(&data[..line]);
        glued_start(kind, &joined, 0).filter(|&p| p < carry.len())
    }

    /// Keep what may begin a split start after `data` (wholly scanned) in `carry`: its last
    /// line, at most [`CARRY`] bytes of it. True when a start may hide in what could not be
    /// kept (the caller counts it as a maybe).
    pub(crate) fn keep(&mut self, kind: Kind, carry: &mut Vec<u8>, data: &[u8]) -> bool {
        let (line, cut) = match find_last_lf(data) {
            Some(lf) => {
                carry.clear();
                self.counted = false;
                let line = &data[lf + 1..];
                (line, line.len() > CARRY)
            }
            None => (data, carry.len() + data.len() > CARRY),
        };
        let tail = &line[line.len().saturating_sub(CARRY)..];
        let drop = (carry.len() + tail.len()).saturating_sub(CARRY);
        carry.drain(..drop);
        carry.extend_from_slice(tail);
        if !cut {
            return false;
        }
        // A request line that began before the kept bytes has no CR or LF and at most one more
        // space in them (between target and version); a status line always fits.
        let inside_line = kind == Kind::Request
            && !carry.iter().any(|b| matches!(b, b'\r' | b'\n'))
            && carry.iter().filter(|b| **b == b' ').count() <= 1;
        let maybe = inside_line && !self.counted;
        self.counted |= maybe;
        maybe
    }

    pub(crate) fn reset(&mut self, carry: &mut Vec<u8>) {
        carry.clear();
        self.counted = false;
    }
}

fn find_last_lf(data: &[u8]) -> Option<usize> {
    data.iter().rposition(|b| *b == b'\n')
}

/// The first start line at or after `from` found by its `HTTP/1.`, wherever it is.
fn glued_start(kind: Kind, data: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(p) = data.get(at..).and_then(|d| find(d, b'H')) {
        let h = at + p;
        at = h + 1;
        if !data[h..].starts_with(VERSION) {
            continue;
        }
        let start = match kind {
            Kind::Response => h,
            Kind::Request => match request_before(data, h) {
                Some(s) => s,
                None => continue,
            },
        };
        if start >= from && start_verdict(kind, &data[start..]) != Verdict::No {
            return Some(start);
        }
    }
    None
}

/// The start of `METHOD SP target SP` ending just before `data[version..]`. The method is the
/// longest standard method ending the run of method bytes (what precedes it is the end of the
/// hidden body), else the whole run, or its last [`MAX_METHOD`] bytes: a start is there either
/// way, and the count of messages needs it found.
fn request_before(data: &[u8], version: usize) -> Option<usize> {
    let target_end = version.checked_sub(1).filter(|&e| data[e] == b' ')?;
    let target = data[..target_end]
        .iter()
        .rposition(|b| *b <= b' ' || *b == 0x7f)
        .map_or(0, |p| p + 1);
    let method_end = target
        .checked_sub(1)
        .filter(|&e| e < target_end && data[e] == b' ')?;
    let run = data[..method_end]
        .iter()
        .rposition(|b| !is_method_byte(*b))
        .map_or(0, |p| p + 1);
    let word = &data[run..method_end];
    let known = METHODS
        .iter()
        .filter(|m| word.ends_with(m.as_bytes()))
        .map(|m| m.len())
        .max();
    match known {
        Some(n) => Some(method_end - n),
        None if !word.is_empty() => Some(run.max(method_end.saturating_sub(MAX_METHOD))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_lines_and_glued() {
        let r = Kind::Response;
        assert_eq!(next_start(r, b"HTTP/1.1 200 OK\r\n", true), Ok(0));
        assert_eq!(next_start(r, b"tail\r\nHTTP/1.1 200 OK\r\n", true), Ok(6));
        assert_eq!(next_start(r, b"{\"a\":1}HTTP/1.1 404 NF\r\n", true), Ok(7));
        assert_eq!(next_start(r, b"HTTP/1.1 200 OK\r\n", false), Err(true));
        // A prefix at a line start waits for more; in the middle of a line it is not enough.
        assert_eq!(next_start(r, b"x\nHTTP/1", true), Ok(2));
        assert_eq!(next_start(r, b"xHTTP/1", true), Err(false));
        assert_eq!(next_start(r, b"Via: HTTP/1.1 proxy\r\n", true), Err(true));

        let q = Kind::Request;
        assert_eq!(next_start(q, b"]}GET /a HTTP/1.1\r\n", true), Ok(2));
        assert_eq!(next_start(q, b"}DATAGET /a HTTP/1.1\r\n", true), Ok(5));
        assert_eq!(next_start(q, b"0}PROPFIND /d HTTP/1.1\r\n", true), Ok(2));
        // An unknown method glued to an uppercase body: the start is found all the same.
        let glued = b"0}ABCDEFGHIJKLMNOPQRSTUVWXYZ-PROPFIND /d HTTP/1.1\r\n";
        assert_eq!(next_start(q, glued, true), Ok(17));
        assert_eq!(next_start(q, b"x\r\nPOST /long/url", true), Ok(3));
        assert_eq!(next_start(q, b"see HTTP/1.1 spec", true), Err(false));
        assert_eq!(next_start(q, b"a b HTTP/1.1\r\n", true), Err(true));
    }

    #[test]
    fn starts_split_by_a_segment_boundary() {
        let r = Kind::Response;
        assert_eq!(
            Carry::split_start(r, b"abc}HTTP/1", b".1 200 OK\r\n"),
            Some(4)
        );
        assert_eq!(Carry::split_start(r, b"abc}", b"HTTP/1.1 200 OK\r\n"), None);
        let q = Kind::Request;
        assert_eq!(
            Carry::split_start(q, b"ppGET", b" /3 HTTP/1.1\r\n"),
            Some(2)
        );
        assert_eq!(
            Carry::split_start(q, b"ppGET /3 HT", b"TP/1.1\r\n"),
            Some(2)
        );
        assert_eq!(Carry::split_start(q, b"pp", b"GET /3 HTTP/1.1\r\n"), None);

        let mut c = Carry::default();
        let mut kept = Vec::new();
        assert!(!c.keep(q, &mut kept, b"xx\nppGET /lon"));
        assert_eq!(kept, b"ppGET /lon");
        // A line longer than the carry: one maybe, once.
        assert!(c.keep(q, &mut kept, &[b'p'; CARRY]));
        assert!(!c.keep(q, &mut kept, &[b'p'; CARRY]));
        assert_eq!(kept.len(), CARRY);
        assert!(!c.keep(r, &mut Vec::new(), &[b'r'; 2 * CARRY]));
    }
}
