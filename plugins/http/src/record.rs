//! What the parser reports: attribute keys, error classes, and the request side of an
//! exchange (`Pending`) waiting for its response to become a [`RequestRecord`].

use sonde_sdk::protocol_parser::RequestRecord;

use crate::head::{Head, Start};
use crate::route;

/// `RequestRecord::protocol` of every record.
pub const PROTOCOL: &str = "http";

/// Attribute keys, in the order they appear in a record (each only when known). The ones the
/// daemon reads too are the SDK's ([`sonde_sdk::attributes`]).
pub mod attr {
    use sonde_sdk::attributes as a;

    /// The request method as sent.
    pub const METHOD: &str = a::HTTP_REQUEST_METHOD;
    /// The normalised route (see [`crate::route`]); for CONNECT, the authority.
    pub const ROUTE: &str = a::HTTP_ROUTE;
    /// The raw path, without the query string, at most [`super::MAX_PATH`] bytes.
    pub const URL_PATH: &str = a::URL_PATH;
    /// `1.0` or `1.1`, from the request line.
    pub const VERSION: &str = "http.version";
    /// The `Host` header (or the absolute-form target's authority) without the port.
    pub const SERVER_ADDRESS: &str = a::SERVER_ADDRESS;
    /// The port of the `Host` header, when it has one.
    pub const SERVER_PORT: &str = a::SERVER_PORT;
    /// The `User-Agent` header, at most [`super::MAX_USER_AGENT`] bytes.
    pub const USER_AGENT: &str = "user_agent.original";
    /// W3C trace context: the `traceparent` header as sent.
    pub const TRACEPARENT: &str = a::TRACEPARENT;
    /// W3C trace context: `tracestate`, at most [`super::MAX_TRACESTATE`] bytes.
    pub const TRACESTATE: &str = a::TRACESTATE;
    /// Zipkin B3, single-header form.
    pub const B3: &str = "b3";
    /// Zipkin B3, multi-header form: the trace id.
    pub const B3_TRACE_ID: &str = "x-b3-traceid";
    /// Zipkin B3, multi-header form: the span id.
    pub const B3_SPAN_ID: &str = "x-b3-spanid";
    /// Zipkin B3, multi-header form: the parent span id.
    pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
    /// Zipkin B3, multi-header form: the sampling decision.
    pub const B3_SAMPLED: &str = "x-b3-sampled";
    /// The protocol switched to (`Upgrade` header) on a 101 response.
    pub const UPGRADE: &str = "http.upgrade";
    /// The response's `Content-Length` header, when it had one.
    pub const RESPONSE_CONTENT_LENGTH: &str = "http.response.content_length";
}

/// `RequestRecord::error` values.
pub mod error {
    /// A 4xx status.
    pub const CLIENT: &str = "client-error";
    /// A 5xx status.
    pub const SERVER: &str = "server-error";
    /// The connection closed (or too many requests were waiting) before a response came.
    pub const NO_RESPONSE: &str = "no-response";
    /// The response was lost (or cut) in a gap of the capture or by the close: status 0 when
    /// its head was never seen, or when it cannot be told apart from another request's
    /// response (see `sonde_sdk::protocol_parser::pending`); the status otherwise.
    pub const TRUNCATED: &str = "truncated";
}

/// Bytes kept of `url.path`.
pub const MAX_PATH: usize = 256;
/// Bytes kept of `user_agent.original`.
pub const MAX_USER_AGENT: usize = 128;
/// Bytes kept of `tracestate` (the W3C limit is 32 members of up to 256+ bytes; real ones are short).
pub const MAX_TRACESTATE: usize = 512;
/// Bytes kept of any other header-derived value.
pub const MAX_VALUE: usize = 256;
/// Bytes kept of a CONNECT authority used as the route.
const MAX_AUTHORITY: usize = 128;

/// The error class of a final status.
pub fn error_class(status: u16) -> Option<&'static str> {
    match status {
        400..=499 => Some(error::CLIENT),
        500..=599 => Some(error::SERVER),
        _ => None,
    }
}

/// A request waiting for its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Identity in the connection's request sequence.
    pub seq: u64,
    /// HEAD: the response has no body whatever its headers say.
    pub head: bool,
    /// CONNECT: a 2xx response turns the connection into a tunnel.
    pub connect: bool,
    /// The request asked for the connection to close after this exchange.
    pub close: bool,
    /// `METHOD route`.
    pub operation: String,
    /// The request's attributes (see [`attr`]), in record order.
    pub attributes: Vec<(String, String)>,
    /// Timestamp of the segment with the request's first byte.
    pub request_ts_ns: u64,
    /// Head and body bytes seen so far.
    pub request_bytes: u64,
    /// Bytes of interim (1xx) responses so far.
    pub response_bytes: u64,
}

impl Pending {
    /// The request of a parsed head; `None` if the head is a response's.
    pub(crate) fn from_head(seq: u64, head: &Head<'_>, ts_ns: u64, bytes: u64) -> Option<Self> {
        let Start::Request {
            method,
            target,
            minor,
        } = head.start
        else {
            return None;
        };
        let f = &head.fields;
        let connect = method == "CONNECT";
        let (path, authority) = split_target(target, connect);
        // The route and path first: the operation is made of the route, which then moves
        // into its attribute (one allocation fewer per request).
        let (route, url_path) = match (path, authority) {
            (Some(path), _) => {
                let path = String::from_utf8_lossy(path);
                // `OPTIONS *` is about the server, not a resource.
                let route = if path == "*" {
                    path.to_string()
                } else {
                    route::normalise(&path)
                };
                (route, Some(route::truncate(&path, MAX_PATH).to_string()))
            }
            (None, Some(a)) => (text(a, MAX_AUTHORITY), None),
            (None, None) => (String::from("/"), None),
        };
        let mut operation = String::with_capacity(method.len() + 1 + route.len());
        operation.push_str(method);
        operation.push(' ');
        operation.push_str(&route);
        // Room for every request attribute and the two a response may add: no regrowth.
        let mut attributes = Vec::with_capacity(16);
        let mut push = |k: &str, v: String| attributes.push((k.to_string(), v));
        // Method and route are the operation's two words; they are not repeated as attributes
        // (each string costs an allocation on both sides of the sandbox). The raw path is
        // kept only when normalisation changed it.
        if let Some(p) = url_path.filter(|p| *p != route) {
            push(attr::URL_PATH, p);
        }
        push(
            attr::VERSION,
            match minor {
                0 => "1.0".into(),
                1 => "1.1".into(),
                m => format!("1.{m}"),
            },
        );
        if let Some((host, port)) = f.host.or(authority).and_then(split_host) {
            push(attr::SERVER_ADDRESS, text(host, MAX_VALUE));
            if let Some(port) = port {
                push(attr::SERVER_PORT, port.to_string());
            }
        }
        let headers = [
            (attr::USER_AGENT, f.user_agent, MAX_USER_AGENT),
            (attr::TRACEPARENT, f.traceparent, MAX_VALUE),
            (attr::TRACESTATE, f.tracestate, MAX_TRACESTATE),
            (attr::B3, f.b3, MAX_VALUE),
            (attr::B3_TRACE_ID, f.b3_trace_id, MAX_VALUE),
            (attr::B3_SPAN_ID, f.b3_span_id, MAX_VALUE),
            (attr::B3_PARENT_SPAN_ID, f.b3_parent_span_id, MAX_VALUE),
            (attr::B3_SAMPLED, f.b3_sampled, MAX_VALUE),
        ];
        for (key, value, max) in headers {
            if let Some(v) = value {
                push(key, text(v, max));
            }
        }
        Some(Pending {
            seq,
            head: method == "HEAD",
            connect,
            // HTTP/1.0 closes unless asked not to; HTTP/1.1 keeps alive unless asked to close.
            close: f.close || (minor == 0 && !f.keep_alive),
            operation,
            attributes,
            request_ts_ns: ts_ns,
            request_bytes: bytes,
            response_bytes: 0,
        })
    }

    /// The record of this exchange (`extra` attributes come from the response).
    pub(crate) fn into_record(
        self,
        status: u16,
        error: Option<&str>,
        response_ts_ns: u64,
        response_bytes: u64,
        extra: impl IntoIterator<Item = (&'static str, String)>,
    ) -> RequestRecord {
        let mut attributes = self.attributes;
        attributes.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        RequestRecord {
            conn: 0,
            protocol: PROTOCOL.into(),
            operation: self.operation,
            status: u32::from(status),
            error: error.map(str::to_string),
            request_ts_ns: self.request_ts_ns,
            response_ts_ns,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes + response_bytes,
            attributes,
        }
    }
}

/// Path (origin and absolute forms, and `*`) or authority (CONNECT, absolute form) of a
/// request target. The path excludes the query string and fragment.
fn split_target(target: &[u8], connect: bool) -> (Option<&[u8]>, Option<&[u8]>) {
    let cut = |p: &[u8]| -> usize {
        p.iter()
            .position(|b| *b == b'?' || *b == b'#')
            .unwrap_or(p.len())
    };
    if connect {
        return (None, Some(target));
    }
    if target.first() == Some(&b'/') || target == b"*" {
        return (Some(&target[..cut(target)]), None);
    }
    // Absolute form: scheme://authority/path?query
    let Some(sep) = target.windows(3).position(|w| w == b"://") else {
        return (Some(&target[..cut(target)]), None);
    };
    let rest = &target[sep + 3..];
    let auth_end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let path = &rest[auth_end..];
    let path = &path[..cut(path)];
    (
        Some(if path.is_empty() { b"/" } else { path }),
        Some(&rest[..auth_end]),
    )
}

/// `host[:port]` or `[v6][:port]` → host (without brackets) and the port if it is one.
fn split_host(h: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let port = |p: &[u8]| {
        std::str::from_utf8(p)
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
    };
    if let Some(v6) = h.strip_prefix(b"[") {
        let close = v6.iter().position(|b| *b == b']')?;
        let after = &v6[close + 1..];
        return Some((&v6[..close], after.strip_prefix(b":").and_then(port)));
    }
    let (host, p) = match h.iter().rposition(|b| *b == b':') {
        Some(c) => (&h[..c], port(&h[c + 1..])),
        None => (h, None),
    };
    (!host.is_empty()).then_some((host, p))
}

/// A header value as text: at most `max` bytes, invalid UTF-8 replaced.
pub(crate) fn text(v: &[u8], max: usize) -> String {
    let cut = &v[..v.len().min(max)];
    match std::str::from_utf8(cut) {
        Ok(s) => s.to_string(),
        // A multi-byte character cut at the end: drop its start.
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&cut[..e.valid_up_to()]).into_owned()
        }
        Err(_) => {
            let s = String::from_utf8_lossy(cut);
            route::truncate(&s, max).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(split_target(b"/a/b?c", false), (Some(&b"/a/b"[..]), None));
        assert_eq!(split_target(b"*", false), (Some(&b"*"[..]), None));
        assert_eq!(
            split_target(b"http://h:1/x?y", false),
            (Some(&b"/x"[..]), Some(&b"h:1"[..]))
        );
        assert_eq!(
            split_target(b"http://h", false),
            (Some(&b"/"[..]), Some(&b"h"[..]))
        );
        assert_eq!(split_target(b"h:443", true), (None, Some(&b"h:443"[..])));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            split_host(b"example.com:8080"),
            Some((&b"example.com"[..], Some(8080)))
        );
        assert_eq!(
            split_host(b"example.com"),
            Some((&b"example.com"[..], None))
        );
        assert_eq!(split_host(b"[::1]:80"), Some((&b"::1"[..], Some(80))));
        assert_eq!(split_host(b"[::1]"), Some((&b"::1"[..], None)));
        assert_eq!(split_host(b"h:99999"), Some((&b"h"[..], None)));
        assert_eq!(split_host(b""), None);
    }

    #[test]
    fn texts_are_bounded() {
        assert_eq!(text(b"abc", 2), "ab");
        assert_eq!(text("é".as_bytes(), 1), "");
        assert_eq!(text(b"a\xffb", 10), "a\u{fffd}b");
        assert!(text(&[0xff; 300], 256).len() <= 256);
    }

    #[test]
    fn classes() {
        assert_eq!(error_class(200), None);
        assert_eq!(error_class(304), None);
        assert_eq!(error_class(404), Some(error::CLIENT));
        assert_eq!(error_class(503), Some(error::SERVER));
    }
}
