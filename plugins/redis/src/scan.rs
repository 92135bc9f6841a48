//! An incremental RESP scanner: bytes of one direction in, complete top-level values out.
//!
//! It is fed a segment at a time and may be cut at any byte. It holds at most one line (a type
//! byte and its header, a simple string or error, an inline command) and the first bytes of a
//! few strings; bulk payloads are counted and skipped, so a 100 MB `GET` reply costs the same
//! memory as `+OK`. Values are described, not decoded: type, size, timing, element count and
//! the few strings the parser names things by.

use std::mem;

use crate::{BULK_MAX, DEPTH_MAX, LINE_MAX, WORD_CAP};

/// The `kind` of an inline command (`PING\r\n`), which has no type byte.
pub(crate) const INLINE: u8 = b' ';

/// Every RESP2 and RESP3 type byte, i.e. what a reply can start with.
pub(crate) const TYPES: &[u8] = b"+-:$*_,#!=(%~>|";

/// Strings kept per value: a command's name and its subcommand, a push's kind.
const WORDS: u64 = 2;

/// Which side of the conversation a scanner reads: commands are stricter (one array of bulk
/// strings, or an inline line), replies take every type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Commands,
    Replies,
}

/// One complete top-level value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Value {
    /// Its type byte (`*`, `+`, `-`, `>`…) or [`INLINE`].
    pub kind: u8,
    /// Timestamp of the segment that carried its first byte.
    pub first_ts: u64,
    /// Timestamp of the segment that carried its last byte.
    pub last_ts: u64,
    /// Bytes on the wire, a RESP3 attribute before it included.
    pub bytes: u64,
    /// Elements of a top-level aggregate (a command's arguments, its name included).
    pub len: u64,
    /// Strings among the first two elements of a top-level aggregate, the words of an inline
    /// command, or the text of a top-level error; each cut to [`WORD_CAP`] bytes.
    pub words: Vec<Vec<u8>>,
    /// The error elements of a top-level array (`EXEC`'s reply answers each queued command
    /// with one element): their index and the first bytes of their text (empty for a RESP3
    /// blob error). At most [`ELEMENT_ERRORS_MAX`].
    pub element_errors: Vec<(u64, Vec<u8>)>,
}

/// Error elements kept per value (see [`Value::element_errors`]).
pub(crate) const ELEMENT_ERRORS_MAX: usize = crate::PENDING_MAX;

/// Why a scanner lost its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Bytes were missing from the stream (`gap_before`).
    Gap,
    /// The bytes were not RESP (or broke a bound).
    Garbage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Value(Value),
    /// The value in progress is gone; the scanner skips to the next plausible start.
    Lost(Cause),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Reading a line.
    Line,
    /// Inside a bulk payload; `capture` while its first bytes are still wanted.
    Bulk { remaining: u64, capture: bool },
    /// After a bulk payload: `need` bytes of its CRLF to go.
    Crlf { need: u8 },
    /// Lost: skipping to a plausible value start at the beginning of a line.
    Resync { line_start: bool },
}

/// An open aggregate.
#[derive(Debug, Clone, Copy)]
struct Frame {
    total: u64,
    remaining: u64,
    /// A RESP3 attribute (`|`): metadata in front of a value, not an element of its own.
    attribute: bool,
}

#[derive(Debug)]
pub(crate) struct Scanner {
    side: Side,
    at: At,
    line: Vec<u8>,
    stack: Vec<Frame>,
    /// The top-level value in progress, from its first byte.
    cur: Option<Value>,
}

impl Scanner {
    /// A scanner at a value boundary: the parser claims a connection on a segment that starts
    /// with a command.
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            at: At::Line,
            line: Vec::new(),
            stack: Vec::new(),
            cur: None,
        }
    }

    /// Heap bytes held (tests check that skipping a bulk costs none).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        let words = self
            .cur
            .as_ref()
            .map_or(0, |v| v.words.iter().map(Vec::capacity).sum());
        self.line.capacity() + self.stack.capacity() * mem::size_of::<Frame>() + words
    }

    /// One segment's bytes.
    pub(crate) fn feed(&mut self, ts: u64, data: &[u8], out: &mut Vec<Event>) {
        let mut i = 0;
        while i < data.len() {
            match self.at {
                At::Resync { line_start } => match self.find_start(&data[i..], line_start) {
                    Some(p) => {
                        i += p;
                        self.at = At::Line;
                    }
                    None => {
                        self.at = At::Resync {
                            line_start: data.last() == Some(&b'\n'),
                        };
                        return;
                    }
                },
                At::Line => i += self.line_bytes(ts, &data[i..], out),
                At::Bulk { remaining, capture } => {
                    let take = remaining.min((data.len() - i) as u64) as usize;
                    let v = self.value(ts);
                    v.bytes += take as u64;
                    let mut capture = capture;
                    if capture && let Some(w) = v.words.last_mut() {
                        let room = WORD_CAP - w.len();
                        w.extend_from_slice(&data[i..i + take.min(room)]);
                        capture = w.len() < WORD_CAP;
                    }
                    i += take;
                    let remaining = remaining - take as u64;
                    self.at = if remaining == 0 {
                        At::Crlf { need: 2 }
                    } else {
                        At::Bulk { remaining, capture }
                    };
                }
                At::Crlf { need } => {
                    let want = if need == 2 { b'\r' } else { b'\n' };
                    if data[i] != want {
                        // Not consumed: the resync scan looks at it.
                        self.lose(Cause::Garbage, false, out);
                        continue;
                    }
                    i += 1;
                    self.value(ts).bytes += 1;
                    if need == 2 {
                        self.at = At::Crlf { need: 1 };
                    } else {
                        self.at = At::Line;
                        self.element_done(ts, out);
                    }
                }
            }
        }
    }

    /// `n` bytes of the stream are missing before the next segment. Inside a bulk payload
    /// whose first bytes are already kept, that loses nothing we need (the daemon copies only
    /// the head of big writes): count them and stay in place. Anywhere else the value in
    /// progress, and maybe whole values, are gone.
    pub(crate) fn gap(&mut self, n: u64, out: &mut Vec<Event>) {
        match self.at {
            At::Bulk {
                remaining,
                capture: false,
            } if n <= remaining => {
                if let Some(v) = self.cur.as_mut() {
                    v.bytes += n;
                }
                let remaining = remaining - n;
                self.at = if remaining == 0 {
                    At::Crlf { need: 2 }
                } else {
                    At::Bulk {
                        remaining,
                        capture: false,
                    }
                };
            }
            // Already lost; the gap may well end where a value starts.
            At::Resync { .. } => self.at = At::Resync { line_start: true },
            _ => self.lose(Cause::Gap, true, out),
        }
    }

    fn value(&mut self, ts: u64) -> &mut Value {
        self.cur.get_or_insert_with(|| Value {
            first_ts: ts,
            ..Value::default()
        })
    }

    /// Consumes up to and including the next `\n`; returns how many bytes it took.
    fn line_bytes(&mut self, ts: u64, data: &[u8], out: &mut Vec<Event>) -> usize {
        let (take, complete) = match data.iter().position(|&b| b == b'\n') {
            Some(p) => (p + 1, true),
            None => (data.len(), false),
        };
        self.value(ts).bytes += take as u64;
        // + 2: the CRLF is not part of the line.
        if self.line.len() + take > LINE_MAX + 2 {
            self.lose(Cause::Garbage, complete, out);
            return take;
        }
        self.line.extend_from_slice(&data[..take]);
        if complete {
            let mut line = mem::take(&mut self.line);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.on_line(ts, &line, out);
            // Keep a small allocation for the next line, drop a big one.
            if line.capacity() <= 256 {
                line.clear();
                self.line = line;
            }
        }
        take
    }

    fn on_line(&mut self, ts: u64, line: &[u8], out: &mut Vec<Event>) {
        let top = self.stack.is_empty();
        let Some((&kind, rest)) = line.split_first() else {
            // A blank line: Redis skips it between inline commands; anywhere else it is not RESP.
            if self.side == Side::Commands && top {
                self.cur = None;
            } else {
                self.lose(Cause::Garbage, true, out);
            }
            return;
        };
        if self.side == Side::Commands {
            if top && kind != b'*' {
                return self.inline(ts, line, out);
            }
            // A command is one array of bulk strings, nothing nested.
            if !top && kind != b'$' {
                return self.lose(Cause::Garbage, true, out);
            }
        }
        if top && kind != b'|' {
            self.value(ts).kind = kind;
        }
        let replies = self.side == Side::Replies;
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                if !simple_ok(kind, rest) {
                    return self.lose(Cause::Garbage, true, out);
                }
                if self.capturing(kind) {
                    self.value(ts)
                        .words
                        .push(rest[..rest.len().min(WORD_CAP)].to_vec());
                }
                if kind == b'-' {
                    self.element_error(ts, rest);
                }
                self.element_done(ts, out);
            }
            b'$' | b'!' | b'=' => match parse_len(rest) {
                // The RESP2 null bulk string.
                Some(-1) if kind == b'$' && replies => self.element_done(ts, out),
                Some(n) if (0..=BULK_MAX as i64).contains(&n) => {
                    if kind == b'!' {
                        self.element_error(ts, b"");
                    }
                    let capture = self.capturing(kind);
                    if capture {
                        self.value(ts).words.push(Vec::new());
                    }
                    self.at = if n == 0 {
                        At::Crlf { need: 2 }
                    } else {
                        At::Bulk {
                            remaining: n as u64,
                            capture,
                        }
                    };
                }
                _ => self.lose(Cause::Garbage, true, out),
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => match parse_len(rest) {
                // Redis ignores an empty or negative command array.
                Some(n) if n <= 0 && !replies => self.cur = None,
                // The RESP2 null array.
                Some(-1) if kind == b'*' => self.element_done(ts, out),
                // An empty attribute annotates nothing.
                Some(0) if kind == b'|' => {}
                Some(0) => self.element_done(ts, out),
                Some(n) if n > 0 => {
                    if self.stack.len() >= DEPTH_MAX {
                        return self.lose(Cause::Garbage, true, out);
                    }
                    // Maps and attributes count keys and values.
                    let per = if kind == b'%' || kind == b'|' { 2 } else { 1 };
                    let total = (n as u64).saturating_mul(per);
                    if top && kind != b'|' {
                        self.value(ts).len = n as u64;
                    }
                    self.stack.push(Frame {
                        total,
                        remaining: total,
                        attribute: kind == b'|',
                    });
                }
                _ => self.lose(Cause::Garbage, true, out),
            },
            _ => self.lose(Cause::Garbage, true, out),
        }
    }

    /// An inline command: words separated by spaces (Redis also allows quotes; a quoted
    /// argument with spaces only miscounts the `?`s of the query text).
    fn inline(&mut self, ts: u64, line: &[u8], out: &mut Vec<Event>) {
        let v = self.value(ts);
        v.kind = INLINE;
        for w in line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            if v.len < WORDS {
                v.words.push(w[..w.len().min(WORD_CAP)].to_vec());
            }
            v.len += 1;
        }
        if v.len == 0 {
            self.cur = None;
        } else {
            self.element_done(ts, out);
        }
    }

    /// Whether the element of type `kind` starting now is one whose text we keep: the first
    /// elements of a top-level aggregate, an error's text. Not a top-level string: the big
    /// payloads are `GET` replies, and a gap inside one is harmless only if we keep nothing.
    fn capturing(&self, kind: u8) -> bool {
        match self.stack.as_slice() {
            [] => matches!(kind, b'-' | b'!'),
            [f] => !f.attribute && f.total - f.remaining < WORDS,
            _ => false,
        }
    }

    /// An error element starts: kept if it is an element of a top-level array.
    fn element_error(&mut self, ts: u64, text: &[u8]) {
        let [f] = self.stack.as_slice() else {
            return;
        };
        if f.attribute {
            return;
        }
        let index = f.total - f.remaining;
        let v = self.value(ts);
        if v.kind == b'*' && v.element_errors.len() < ELEMENT_ERRORS_MAX {
            v.element_errors
                .push((index, text[..text.len().min(WORD_CAP)].to_vec()));
        }
    }

    /// An element is complete: close the aggregates it completes, and emit the top-level value
    /// when it is the one.
    fn element_done(&mut self, ts: u64, out: &mut Vec<Event>) {
        while let Some(f) = self.stack.last_mut() {
            f.remaining -= 1;
            if f.remaining > 0 {
                return;
            }
            if self.stack.pop().is_some_and(|f| f.attribute) {
                // Not an element of its parent; at the top, the value it annotates is next.
                return;
            }
        }
        if let Some(mut v) = self.cur.take() {
            v.last_ts = ts;
            out.push(Event::Value(v));
        }
    }

    fn lose(&mut self, cause: Cause, line_start: bool, out: &mut Vec<Event>) {
        self.line.clear();
        self.stack.clear();
        self.cur = None;
        self.at = At::Resync { line_start };
        out.push(Event::Lost(cause));
    }

    /// The next plausible value start at the beginning of a line: `*` for commands (clients
    /// send arrays), any type byte for replies. A wrong guess fails to parse and resyncs again.
    fn find_start(&self, data: &[u8], line_start: bool) -> Option<usize> {
        (0..data.len()).find(|&p| {
            let at_line_start = if p == 0 {
                line_start
            } else {
                data[p - 1] == b'\n'
            };
            at_line_start
                && match self.side {
                    Side::Commands => data[p] == b'*',
                    Side::Replies => TYPES.contains(&data[p]),
                }
        })
    }
}

/// A length or count: `-1` (null) or up to 18 digits.
fn parse_len(s: &[u8]) -> Option<i64> {
    if s == b"-1" {
        return Some(-1);
    }
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Whether a simple value's text fits its type: checking it makes a wrong resync guess fail
/// fast.
fn simple_ok(kind: u8, rest: &[u8]) -> bool {
    let digits = |s: &[u8]| {
        let s = s
            .strip_prefix(b"-")
            .or_else(|| s.strip_prefix(b"+"))
            .unwrap_or(s);
        !s.is_empty() && s.iter().all(u8::is_ascii_digit)
    };
    match kind {
        b':' => rest.len() <= 20 && digits(rest),
        b'(' => digits(rest),
        b'_' => rest.is_empty(),
        b'#' => rest == b"t" || rest == b"f",
        // 1.5, -inf, nan, 1e10.
        b',' => {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
        }
        // Simple strings and errors: any text.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(side: Side, chunks: &[&[u8]]) -> Vec<Event> {
        let mut s = Scanner::new(side);
        let mut out = Vec::new();
        for (ts, c) in chunks.iter().enumerate() {
            s.feed(ts as u64, c, &mut out);
        }
        out
    }

    fn values(events: &[Event]) -> Vec<&Value> {
        events
            .iter()
            .filter_map(|e| {
                if let Event::Value(v) = e {
                    Some(v)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn every_type_is_one_value_with_its_size() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":-12\r\n",
            b"$3\r\nabc\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"_\r\n",
            b",3.14\r\n",
            b"#t\r\n",
            b"!9\r\nERR boom!\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"(123456789012345678901234567890\r\n",
            b"%1\r\n+k\r\n:1\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b">2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n",
            b"|1\r\n+ttl\r\n:3\r\n+OK\r\n",
        ];
        for r in replies {
            let ev = scan(Side::Replies, &[r]);
            let v = values(&ev);
            assert_eq!(
                (v.len(), ev.len()),
                (1, 1),
                "{}",
                String::from_utf8_lossy(r)
            );
            assert_eq!(v[0].bytes, r.len() as u64, "{}", String::from_utf8_lossy(r));
        }
    }

    #[test]
    fn attribute_is_not_the_value() {
        let ev = scan(
            Side::Replies,
            &[b"|1\r\n+key-popularity\r\n%0\r\n*2\r\n:1\r\n:2\r\n"],
        );
        let v = values(&ev);
        assert_eq!((v[0].kind, v[0].len), (b'*', 2));
    }

    #[test]
    fn command_words_and_count() {
        let ev = scan(
            Side::Commands,
            &[b"*3\r\n$6\r\nclient\r\n$7\r\nsetname\r\n$1\r\nx\r\nPING hello\r\n"],
        );
        let v = values(&ev);
        assert_eq!(
            (v[0].kind, v[0].len, v[0].words.clone()),
            (b'*', 3, vec![b"client".to_vec(), b"setname".to_vec()])
        );
        assert_eq!(
            (v[1].kind, v[1].len, v[1].words.clone()),
            (INLINE, 2, vec![b"PING".to_vec(), b"hello".to_vec()])
        );
    }

    #[test]
    fn nested_command_is_garbage_then_resync() {
        let ev = scan(
            Side::Commands,
            &[b"*1\r\n*1\r\n$1\r\nx\r\n*1\r\n$4\r\nPING\r\n"],
        );
        assert_eq!(ev[0], Event::Lost(Cause::Garbage));
        assert_eq!(values(&ev)[0].words, [b"PING".to_vec()]);
    }

    #[test]
    fn big_bulk_is_skipped_not_buffered() {
        let mut s = Scanner::new(Side::Replies);
        let mut out = Vec::new();
        s.feed(1, b"$10000000\r\n", &mut out);
        let chunk = vec![b'x'; 10_000];
        for ts in 0..1000 {
            s.feed(2 + ts, &chunk, &mut out);
            assert!(s.buffered() < 512, "{} bytes held", s.buffered());
        }
        s.feed(5000, b"\r\n", &mut out);
        let v = values(&out);
        assert_eq!(
            (v[0].bytes, v[0].first_ts, v[0].last_ts),
            (10_000_000 + 13, 1, 5000)
        );
    }

    #[test]
    fn gap_inside_an_uncaptured_bulk_is_absorbed() {
        let mut s = Scanner::new(Side::Commands);
        let mut out = Vec::new();
        s.feed(1, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabcd", &mut out);
        s.gap(90, &mut out);
        s.feed(2, b"efghij\r\n", &mut out);
        assert_eq!(values(&out)[0].bytes, 26 + 100 + 2);
        // The same gap while the command name is being read loses the command.
        let mut s = Scanner::new(Side::Commands);
        let mut out = Vec::new();
        s.feed(1, b"*1\r\n$100\r\nab", &mut out);
        s.gap(90, &mut out);
        assert_eq!(out, [Event::Lost(Cause::Gap)]);
    }

    #[test]
    fn bounds_depth_line_and_bulk_length() {
        // Too deep: lost (and resynced at the innermost `:1`, a value of its own).
        let deep = "*1\r\n".repeat(DEPTH_MAX + 1) + ":1\r\n";
        let ev = scan(Side::Replies, &[deep.as_bytes()]);
        assert_eq!(ev[0], Event::Lost(Cause::Garbage));
        assert!(values(&ev).iter().all(|v| v.kind == b':'));
        let ok = "*1\r\n".repeat(DEPTH_MAX) + ":1\r\n";
        assert_eq!(values(&scan(Side::Replies, &[ok.as_bytes()])).len(), 1);
        let long = [b"+".as_slice(), &vec![b'a'; LINE_MAX + 1], b"\r\n"].concat();
        let ev = scan(Side::Replies, &[&long[..4000], &long[4000..]]);
        assert_eq!(ev, [Event::Lost(Cause::Garbage)]);
        let huge = format!("${}\r\n", BULK_MAX + 1);
        assert_eq!(
            scan(Side::Replies, &[huge.as_bytes()]),
            [Event::Lost(Cause::Garbage)]
        );
    }

    #[test]
    fn resync_finds_the_next_value_at_a_line_start() {
        // Lost in the middle of a line; `:5` in mid-line is not a start, the next line's is.
        let ev = scan(Side::Replies, &[b"$3\r\nabcX+no:5\r\n:7\r\n"]);
        assert_eq!(ev[0], Event::Lost(Cause::Garbage));
        let v = values(&ev);
        assert_eq!((v.len(), v[0].kind, v[0].bytes), (1, b':', 4));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"*$+-:_,#!=(%~>|0123456789\r\n\r\nabc-";
        for side in [Side::Commands, Side::Replies] {
            let mut s = Scanner::new(side);
            let mut out = Vec::new();
            for round in 0..20_000u64 {
                let mut chunk = Vec::new();
                for _ in 0..(round % 23) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.push(alphabet[(x % alphabet.len() as u64) as usize]);
                }
                if round % 97 == 0 {
                    s.gap(x % 50, &mut out);
                }
                s.feed(round, &chunk, &mut out);
                out.clear();
                assert!(s.buffered() <= 2 * LINE_MAX + 4096);
            }
        }
    }
}
