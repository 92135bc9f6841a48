//! Finding packet boundaries again in bytes whose boundaries were lost (after a gap that hid a
//! packet header), and the shapes of the few packets the resynchronisation looks at.
//!
//! A packet header is three bytes of length and a sequence id; within an exchange the ids go up
//! by one per packet, and a new response starts again at 1. So a place where several headers in
//! a row check out (each where the previous packet's length says, with the next id) is where
//! packets begin. By chance a link holds with odds of 1 in 256 at best (the length must land on
//! a header too), and text, the usual content of rows, never starts one: its bytes read as
//! lengths of megabytes. Binary content (column definitions, binary rows, OK packets) is full
//! of small numbers, hence more than one link.

use crate::wire::{MAX_PACKET, lenenc, u24};

/// What makes a run of headers a place to resume at: links (a header where the previous
/// packet's length says) with the next sequence id are strong, those restarting at 1 after a
/// whole OK, ERR or EOF weaker (1 is the commonest id, and an OK's shape is loose). Two strong
/// links, or three of any kind, when the run goes past the bytes in view; one when it ends
/// exactly with them (that end being one more thing that holds).
fn enough(strong: usize, weak: usize) -> bool {
    strong >= 2 || strong + weak >= 3
}

/// The first offset of `data` where packets begin, as far as `data` can tell (see [`enough`]);
/// or one packet ending exactly at the end of `data` that is a whole ERR, or a whole response of
/// one OK or EOF starting at `segment` (where the last segment began: a read or write often
/// holds whole responses, and an OK's shape alone says little).
pub(crate) fn find(data: &[u8], segment: usize) -> Option<usize> {
    (0..data.len().saturating_sub(3))
        .find(|&o| links(data, o, o == segment).is_some_and(|n| !overlapped(data, o, n)))
}

/// Whether a run from inside the first packet of the run from `start` (of `n` links) is the
/// better one: it shares a header with it (a length read in the bytes before a run of real
/// headers can land on one of them, and then the rest holds), or it holds more links (false runs
/// are short: they break, or run past the bytes in view). Both cannot be packets; a real packet's
/// bytes hold a run of their own only by a coincidence of several bytes.
fn overlapped(d: &[u8], start: usize, n: usize) -> bool {
    let first = start + 4 + u24(&d[start..]);
    if first > d.len() {
        return false;
    }
    let run: Vec<usize> = headers(d, first).take(MAX_LINKS).collect();
    let last = run.last().copied().unwrap_or(first);
    (start + 1..first).any(|o| match links(d, o, false) {
        None => false,
        Some(m) => {
            m > n
                || headers(d, o)
                    .take_while(|&h| h <= last)
                    .any(|h| run.contains(&h))
        }
    })
}

/// Links counted at most along a run.
const MAX_LINKS: usize = 32;

/// The positions of the headers from `from`, as long as they are in `d`.
fn headers(d: &[u8], from: usize) -> impl Iterator<Item = usize> + '_ {
    let mut at = from;
    std::iter::from_fn(move || {
        let here = at;
        (here + 4 <= d.len()).then(|| {
            at = here + 4 + u24(&d[here..]);
            here
        })
    })
}

/// The links of a run of headers from `start` (at most [`MAX_LINKS`]), if it is one (see
/// [`enough`]); `at_segment`: `start` is where the last segment began.
fn links(d: &[u8], start: usize, at_segment: bool) -> Option<usize> {
    let mut at = start;
    let (mut strong, mut weak) = (0, 0);
    let mut prev: Option<(u8, usize, usize)> = None;
    let verdict = |ok: bool, n: usize| ok.then_some(n);
    loop {
        let n = strong + weak;
        if at == d.len() {
            // One packet alone: an ERR, or a whole response (sequence id 1) of one OK or EOF.
            let body = &d[start + 4..];
            let whole = at_segment && d[start + 3] == 1 && terminal(body);
            return verdict(n >= 1 || err(body) || whole, n);
        }
        if at + 4 > d.len() || n >= MAX_LINKS {
            return verdict(enough(strong, weak), n);
        }
        let len = u24(&d[at..]);
        let seq = d[at + 3];
        match prev {
            None if len == 0 => return None,
            None => {}
            Some((pseq, plen, pat)) => {
                if seq == pseq.wrapping_add(1) {
                    strong += 1;
                } else if seq == 1 && terminal(&d[pat + 4..at]) {
                    // A new response, after one that ended, seen whole.
                    weak += 1;
                } else {
                    // A new response after one that ends without an OK, ERR or EOF (PREPARE_OK's
                    // definitions without EOF packets) once enough is checked; else a mismatch.
                    return verdict(seq == 1 && enough(strong, weak), n);
                }
                // Only the piece after a 16 MiB one is ever empty.
                if len == 0 && plen != MAX_PACKET {
                    return None;
                }
            }
        }
        prev = Some((seq, len, at));
        at += 4 + len;
        if at > d.len() {
            return verdict(enough(strong, weak), strong + weak);
        }
    }
}

/// A whole OK, ERR or EOF packet: exactly `body`.
fn terminal(body: &[u8]) -> bool {
    match body.first() {
        Some(0xFE) => body.len() == 5 || ok_fields(&body[1..]),
        Some(0x00) => ok_fields(&body[1..]),
        _ => err(body),
    }
}

/// A whole ERR packet (protocol 41: code, `#`, SQLSTATE): exactly `body`.
fn err(body: &[u8]) -> bool {
    body.len() >= 9
        && body[0] == 0xFF
        && body[3] == b'#'
        && body[4..9].iter().all(|b| b.is_ascii_alphanumeric())
}

/// The fields of an OK packet after its header byte: affected rows, last insert id, status,
/// warnings, then anything (an info string, session state).
fn ok_fields(b: &[u8]) -> bool {
    let Some((_, a)) = lenenc(b) else {
        return false;
    };
    let Some((_, i)) = b.get(a..).and_then(lenenc) else {
        return false;
    };
    b.len() >= a + i + 4
}

/// A column definition (protocol 41): catalog `def`, schema, table, original table, name,
/// original name, then the fixed fields (length 0x0c) — `body` being the first bytes of a
/// payload `len` long.
pub(crate) fn column_def(body: &[u8], len: u64) -> bool {
    if !body.starts_with(b"\x03def") {
        return false;
    }
    let mut at = 4;
    for _ in 0..5 {
        match body.get(at..).and_then(lenenc) {
            Some((n, used)) => at += used + n as usize,
            None => return body.len() <= at,
        }
    }
    match body.get(at) {
        None => body.len() as u64 <= len,
        Some(0x0c) => (at + 13) as u64 <= len,
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    fn rows(from: u8, n: u8) -> Vec<u8> {
        (0..n)
            .flat_map(|i| frame(from.wrapping_add(i), b"\x05hello\x03abc"))
            .collect()
    }

    #[test]
    fn finds_the_first_packet_after_a_cut() {
        let stream = rows(7, 6);
        for cut in 1..14 {
            // Cut inside the first row: the next header is at 14.
            assert_eq!(find(&stream[cut..], 0), Some(14 - cut), "cut at {cut}");
        }
        assert_eq!(find(&stream, 0), Some(0));
        // Text alone: nothing.
        assert_eq!(
            find(b"hello world, these are the bytes of a long row", 0),
            None
        );
        // Two rows and an EOF then the next response (sequence 1).
        let mut d = b"tail of a row".to_vec();
        d.extend(rows(3, 2));
        d.extend(frame(5, b"\xfe\x00\x00\x02\x00"));
        d.extend(frame(1, b"\x00\x01\x00\x02\x00\x00\x00"));
        assert_eq!(find(&d, 0), Some(13));
        // One packet ending exactly at the end: only a whole ERR, or OK or EOF.
        let ok = frame(1, b"\x00\x00\x00\x02\x00\x00\x00");
        let glued = [b"zz".as_slice(), &ok].concat();
        assert_eq!(find(&glued, 2), Some(2), "an OK where a segment begins");
        assert_eq!(find(&glued, 0), None, "an OK's shape alone elsewhere");
        let zero = frame(0, b"\x00\x00\x00\x02\x00\x00\x00");
        assert_eq!(
            find(&zero, 0),
            None,
            "a response's only packet has sequence id 1"
        );
        let row = frame(9, b"\x02ab");
        assert_eq!(find(&[b"zz".as_slice(), &row].concat(), 2), None);
        let err = frame(1, b"\xff\x7a\x04#42S02No table");
        assert_eq!(find(&err, 0), Some(0));
        // A length read before real headers that lands on one of them: not a start.
        let mut d = vec![14, 0, 0, 3];
        d.extend(rows(3, 4));
        assert_eq!(d[4 + 14 + 3], 4, "lands on the second row");
        assert!(links(&d, 0, false).is_some());
        assert_eq!(find(&d, 0), Some(4));
        // Headers whose ids do not follow: no.
        let mut d = frame(3, b"\x01a");
        d.extend(frame(9, b"\x01a"));
        d.extend(frame(10, b"\x01a"));
        assert_eq!(find(&d, 0), Some(6));
    }

    #[test]
    fn column_definitions() {
        let mut def = b"\x03def\x04shop\x01t\x01t\x02id\x02id\x0c".to_vec();
        def.extend_from_slice(&[0x21, 0, 11, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
        assert!(column_def(&def, def.len() as u64));
        assert!(column_def(&def[..10], def.len() as u64));
        assert!(!column_def(b"\x03abc", 4));
        let mut bad = def.clone();
        let at = bad.iter().position(|b| *b == 0x0c).unwrap();
        bad[at] = 0x0d;
        assert!(!column_def(&bad, bad.len() as u64));
    }
}
