//! The head of a message: start line and header fields, parsed in place from a byte slice
//! (the segment itself on the fast path, the per-direction buffer when the head was split).
//!
//! Only the fields the parser needs for framing or for record attributes are kept; they borrow
//! from the slice, so parsing a head allocates nothing.

use crate::detect::{MAX_METHOD, is_method_byte};
use crate::scan::find;

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start<'a> {
    Request {
        /// An uppercase token (validated ASCII).
        method: &'a str,
        /// As sent: origin form (`/p?q`), absolute form, authority form (CONNECT) or `*`.
        target: &'a [u8],
        /// The `x` of `HTTP/1.x`.
        minor: u8,
    },
    Response {
        minor: u8,
        status: u16,
    },
}

/// What `Content-Length` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Length {
    #[default]
    Absent,
    Value(u64),
    /// Not a number, or several different numbers: the framing cannot be trusted.
    Invalid,
}

/// The header fields the parser uses. Values are trimmed of surrounding whitespace; for
/// repeated fields the last one wins (except `Content-Length`, see [`Length`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    pub content_length: Length,
    /// A `Transfer-Encoding` field is present.
    pub transfer_encoding: bool,
    /// ... and its final coding is `chunked`.
    pub chunked: bool,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    pub host: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub upgrade: Option<&'a [u8]>,
    pub traceparent: Option<&'a [u8]>,
    pub tracestate: Option<&'a [u8]>,
    pub b3: Option<&'a [u8]>,
    pub b3_trace_id: Option<&'a [u8]>,
    pub b3_span_id: Option<&'a [u8]>,
    pub b3_parent_span_id: Option<&'a [u8]>,
    pub b3_sampled: Option<&'a [u8]>,
}

/// A parsed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub start: Start<'a>,
    pub fields: Fields<'a>,
}

/// The outcome of [`parse`].
// Returned by value and matched at once: boxing the head would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// The head and its length, terminating empty line included.
    Complete(Head<'a>, usize),
    /// No empty line yet.
    Incomplete,
    /// The start line is complete and is not HTTP/1.x.
    Invalid,
}

/// Parse the head at the start of `data` (which may go on with the body).
pub(crate) fn parse(data: &[u8]) -> Parsed<'_> {
    let Some(nl) = find(data, b'\n') else {
        return Parsed::Incomplete;
    };
    let Some(start) = start_line(trim_cr(&data[..nl])) else {
        return Parsed::Invalid;
    };
    let mut fields = Fields::default();
    let mut at = nl + 1;
    while let Some(p) = find(&data[at..], b'\n') {
        let line = trim_cr(&data[at..at + p]);
        at += p + 1;
        if line.is_empty() {
            return Parsed::Complete(Head { start, fields }, at);
        }
        fields.add(line);
    }
    Parsed::Incomplete
}

/// What the complete lines of an unfinished head say (used when the rest of it was lost).
pub(crate) fn parse_partial(data: &[u8]) -> Option<Head<'_>> {
    let nl = find(data, b'\n')?;
    let start = start_line(trim_cr(&data[..nl]))?;
    let mut fields = Fields::default();
    let mut at = nl + 1;
    while let Some(p) = find(&data[at..], b'\n') {
        fields.add(trim_cr(&data[at..at + p]));
        at += p + 1;
    }
    Some(Head { start, fields })
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Optional whitespace around field values and list elements.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn start_line(line: &[u8]) -> Option<Start<'_>> {
    if let Some(rest) = line.strip_prefix(b"HTTP/1.") {
        // `x SP ddd` then the end or SP reason-phrase.
        let minor = digit(*rest.first()?)?;
        if rest.get(1) != Some(&b' ') {
            return None;
        }
        let code = rest.get(2..5)?;
        let status = code
            .iter()
            .try_fold(0u16, |acc, b| Some(acc * 10 + u16::from(digit(*b)?)))?;
        return match rest.get(5) {
            None | Some(b' ') => Some(Start::Response { minor, status }),
            Some(_) => None,
        };
    }
    let sp = find(line, b' ')?;
    let method = &line[..sp];
    if method.is_empty()
        || method.len() > MAX_METHOD
        || !method.iter().all(|b| is_method_byte(*b))
        || method == b"PRI"
    {
        return None;
    }
    let rest = &line[sp + 1..];
    let last = rest.iter().rposition(|b| *b == b' ')?;
    let target = &rest[..last];
    let version = rest[last + 1..].strip_prefix(b"HTTP/1.")?;
    let [m] = version else { return None };
    let minor = digit(*m)?;
    if target.is_empty() || target.iter().any(|b| *b < b' ' || *b == 0x7f) {
        return None;
    }
    // Validated above: uppercase ASCII, `-` and `_`.
    let method = std::str::from_utf8(method).ok()?;
    Some(Start::Request {
        method,
        target,
        minor,
    })
}

fn digit(b: u8) -> Option<u8> {
    b.is_ascii_digit().then(|| b - b'0')
}

impl<'a> Fields<'a> {
    /// One `name: value` line. Malformed lines and obsolete line folding are skipped: a
    /// monitoring parser has no one to answer 400 to.
    fn add(&mut self, line: &'a [u8]) {
        if matches!(line.first(), Some(b' ' | b'\t') | None) {
            return;
        }
        let Some(colon) = find(line, b':') else {
            return;
        };
        let name = &line[..colon];
        let value = trim_ows(&line[colon + 1..]);
        let is = |want: &str| name.eq_ignore_ascii_case(want.as_bytes());
        // Dispatch on the length first: most fields are of no interest and fail here.
        let slot = match name.len() {
            2 if is("b3") => &mut self.b3,
            4 if is("host") => &mut self.host,
            7 if is("upgrade") => &mut self.upgrade,
            10 if is("user-agent") => &mut self.user_agent,
            10 if is("tracestate") => &mut self.tracestate,
            10 if is("connection") => {
                for token in value.split(|b| *b == b',').map(trim_ows) {
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
                return;
            }
            11 if is("traceparent") => &mut self.traceparent,
            11 if is("x-b3-spanid") => &mut self.b3_span_id,
            12 if is("x-b3-traceid") => &mut self.b3_trace_id,
            12 if is("x-b3-sampled") => &mut self.b3_sampled,
            14 if is("content-length") => {
                self.content_length = merge_length(self.content_length, value);
                return;
            }
            17 if is("x-b3-parentspanid") => &mut self.b3_parent_span_id,
            17 if is("transfer-encoding") => {
                self.transfer_encoding = true;
                // The final coding decides; a later field line continues the list.
                if let Some(last) = value
                    .split(|b| *b == b',')
                    .map(trim_ows)
                    .rfind(|t| !t.is_empty())
                {
                    self.chunked = last.eq_ignore_ascii_case(b"chunked");
                }
                return;
            }
            _ => return,
        };
        *slot = Some(value);
    }
}

/// `Content-Length` may come as a list or repeated (RFC 9110 §8.6): fine if all values agree.
fn merge_length(seen: Length, value: &[u8]) -> Length {
    let mut out = seen;
    for item in value.split(|b| *b == b',').map(trim_ows) {
        let n = match parse_decimal(item) {
            Some(n) => n,
            None => return Length::Invalid,
        };
        out = match out {
            Length::Absent => Length::Value(n),
            Length::Value(m) if m == n => out,
            _ => return Length::Invalid,
        };
    }
    out
}

/// A non-empty run of ASCII digits that fits comfortably in a u64.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    s.iter()
        .try_fold(0u64, |acc, b| Some(acc * 10 + u64::from(digit(*b)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(data: &[u8]) -> (Head<'_>, usize) {
        match parse(data) {
            Parsed::Complete(h, n) => (h, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_head() {
        let data = b"POST /a?b=1 HTTP/1.1\r\nHost: x:8\r\ncontent-LENGTH: 5\r\nConnection: Keep-Alive, Upgrade\r\nX-B3-TraceId: abc\r\n\r\nhello";
        let (h, n) = complete(data);
        assert_eq!(n, data.len() - 5);
        assert_eq!(
            h.start,
            Start::Request {
                method: "POST",
                target: b"/a?b=1",
                minor: 1
            }
        );
        assert_eq!(h.fields.content_length, Length::Value(5));
        assert_eq!(h.fields.host, Some(&b"x:8"[..]));
        assert_eq!(h.fields.b3_trace_id, Some(&b"abc"[..]));
        assert!(h.fields.keep_alive && !h.fields.close);
    }

    #[test]
    fn response_head() {
        let (h, _) = complete(b"HTTP/1.0 404 Not Found\nTransfer-Encoding: gzip, chunked\n\n");
        assert_eq!(
            h.start,
            Start::Response {
                minor: 0,
                status: 404
            }
        );
        assert!(h.fields.transfer_encoding && h.fields.chunked);
        let (h, _) = complete(b"HTTP/1.1 200\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert!(h.fields.transfer_encoding && !h.fields.chunked);
    }

    #[test]
    fn lengths() {
        assert_eq!(merge_length(Length::Absent, b"5, 5"), Length::Value(5));
        assert_eq!(merge_length(Length::Value(5), b"6"), Length::Invalid);
        assert_eq!(merge_length(Length::Absent, b"-1"), Length::Invalid);
        assert_eq!(merge_length(Length::Absent, b""), Length::Invalid);
        assert_eq!(
            merge_length(Length::Absent, b"99999999999999999999"),
            Length::Invalid
        );
    }

    #[test]
    fn invalid_and_incomplete() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1"), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Parsed::Invalid);
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n\r\n"), Parsed::Invalid);
        assert_eq!(parse(b"HTTP/1.1 20x OK\r\n\r\n"), Parsed::Invalid);
        assert_eq!(parse(b"hello world\r\n\r\n"), Parsed::Invalid);
        let p = parse_partial(b"GET /x HTTP/1.1\r\nHost: h\r\nUser-Ag").unwrap();
        assert_eq!(p.fields.host, Some(&b"h"[..]));
        assert_eq!(p.fields.user_agent, None);
    }
}
