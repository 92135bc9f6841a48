//! What a stream becomes: the request's fields, the response's, and the record made of both,
//! plain HTTP (like the HTTP/1 parser's) or gRPC.

use sonde_sdk::attributes as a;
use sonde_sdk::protocol_parser::RequestRecord;
use sonde_sdk::route;

use crate::hpack::Field;
use crate::{GRPC_MESSAGE_MAX, PROTOCOL_GRPC, PROTOCOL_HTTP};

/// `RequestRecord::error` values besides the status classes and gRPC code names.
pub mod error {
    /// A 4xx status (plain HTTP), as the HTTP/1 parser says.
    pub const CLIENT: &str = "client-error";
    /// A 5xx status.
    pub const SERVER: &str = "server-error";
    /// The connection closed (or too many streams were open) before the response.
    pub const NO_RESPONSE: &str = "no-response";
    /// The response was cut: by a gap of the capture, or by the close after its headers.
    pub const TRUNCATED: &str = "truncated";
    /// A RST_STREAM ended the stream before its response did.
    pub const RESET: &str = "reset";
    /// A header block of the stream needed HPACK state we do not have (joined mid-stream, a
    /// gap, an undecodable block): its headers are unknown, and not guessed.
    pub const HPACK_DESYNC: &str = "hpack-desync";
}

/// HTTP/2 attribute keys of this parser beyond the HTTP/1 parser's.
pub mod attr {
    /// `2`, for HTTP/1's `http.version` readers.
    pub const HTTP_VERSION: &str = "http.version";
    /// A gRPC error's `grpc-message`, at most [`crate::GRPC_MESSAGE_MAX`] bytes.
    pub const GRPC_MESSAGE: &str = "rpc.grpc.status_message";
    /// The `user-agent` header, at most 128 bytes (as the HTTP/1 parser).
    pub const USER_AGENT: &str = "user_agent.original";
}

/// Bytes kept of `url.path`, a header value, a gRPC service or method (as the HTTP/1 parser).
const MAX_PATH: usize = 256;
const MAX_VALUE: usize = 256;
const MAX_USER_AGENT: usize = 128;
const MAX_TRACESTATE: usize = 512;
const MAX_RPC_NAME: usize = 128;

/// gRPC status codes by number (grpc/doc/statuscodes.md).
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a gRPC status code; `UNKNOWN` for numbers gRPC does not define.
pub fn grpc_code_name(code: u32) -> &'static str {
    GRPC_CODES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The request side of a stream, from its first header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) ts: u64,
    method: String,
    path: String,
    authority: String,
    grpc: bool,
    user_agent: Option<String>,
    /// Trace context headers as sent: (attribute key, value).
    trace: Vec<(&'static str, String)>,
}

impl Request {
    pub(crate) fn from_fields(fields: &[Field], ts: u64) -> Self {
        let mut r = Request {
            ts,
            ..Request::default()
        };
        let mut host = None;
        for f in fields {
            let v = |max| text(&f.value, max);
            match f.name.as_slice() {
                b":method" => r.method = v(32),
                b":path" => r.path = v(4 * MAX_PATH),
                b":authority" => r.authority = v(MAX_VALUE),
                b"host" => host = Some(v(MAX_VALUE)),
                b"content-type" => r.grpc = f.value.starts_with(b"application/grpc"),
                b"user-agent" => r.user_agent = Some(v(MAX_USER_AGENT)),
                b"traceparent" => r.trace.push((a::TRACEPARENT, v(MAX_VALUE))),
                b"tracestate" => r.trace.push((a::TRACESTATE, v(MAX_TRACESTATE))),
                b"b3" | b"x-b3-traceid" | b"x-b3-spanid" | b"x-b3-parentspanid"
                | b"x-b3-sampled" => {
                    let key = match f.name.as_slice() {
                        b"b3" => "b3",
                        b"x-b3-traceid" => "x-b3-traceid",
                        b"x-b3-spanid" => "x-b3-spanid",
                        b"x-b3-parentspanid" => "x-b3-parentspanid",
                        _ => "x-b3-sampled",
                    };
                    r.trace.push((key, v(MAX_VALUE)));
                }
                _ => {}
            }
        }
        if r.authority.is_empty()
            && let Some(h) = host
        {
            r.authority = h;
        }
        if r.method.is_empty() {
            r.method = "_OTHER".into();
        }
        r
    }

    /// The request of an `Upgrade: h2c` HTTP/1.1 head (RFC 7540 §3.2: it becomes stream 1):
    /// the request line's method and target (origin or absolute form), the headers as
    /// HTTP/2 names them (lowercase; `Host` is the authority). Never gRPC: gRPC does not
    /// upgrade.
    pub(crate) fn from_h1(head: &[u8], ts: u64) -> Self {
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let line = lines.next().unwrap_or_default();
        let mut parts = line.split(|b| *b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let mut fields = vec![Field {
            name: b":method".to_vec(),
            value: method.to_vec(),
        }];
        let path = match target.windows(3).position(|w| w == b"://") {
            Some(sep) => {
                let rest = &target[sep + 3..];
                let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
                fields.push(Field {
                    name: b":authority".to_vec(),
                    value: rest[..end].to_vec(),
                });
                if end == rest.len() {
                    b"/"
                } else {
                    &rest[end..]
                }
            }
            None => target,
        };
        fields.push(Field {
            name: b":path".to_vec(),
            value: path.to_vec(),
        });
        for l in lines {
            if let Some(colon) = l.iter().position(|b| *b == b':') {
                fields.push(Field {
                    name: l[..colon].to_ascii_lowercase(),
                    value: l[colon + 1..].trim_ascii().to_vec(),
                });
            }
        }
        let mut r = Request::from_fields(&fields, ts);
        r.grpc = false;
        r
    }

    /// The record's operation: `METHOD route`, or the gRPC `/service/method`.
    pub(crate) fn operation(&self) -> String {
        if self.grpc {
            return route::truncate(self.path_only(), MAX_PATH).to_string();
        }
        format!("{} {}", self.method, self.route())
    }

    fn path_only(&self) -> &str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        &self.path[..end]
    }

    fn route(&self) -> String {
        match self.path_only() {
            // CONNECT has no path: its authority is the route, as in HTTP/1.
            "" => route::truncate(&self.authority, 128).to_string(),
            "*" => "*".into(),
            p => route::normalise(p),
        }
    }

    fn protocol(&self) -> &'static str {
        if self.grpc {
            PROTOCOL_GRPC
        } else {
            PROTOCOL_HTTP
        }
    }

    /// The record with the request's fields and no response yet.
    fn record(&self, bytes: u64) -> RequestRecord {
        let mut attrs: Vec<(String, String)> = Vec::with_capacity(16);
        let mut push = |k: &str, v: String| attrs.push((k.to_string(), v));
        if self.grpc {
            let p = self.path_only().trim_start_matches('/');
            let (service, method) = p.rsplit_once('/').unwrap_or((p, ""));
            push(a::RPC_SYSTEM, "grpc".into());
            push(
                a::RPC_SERVICE,
                route::truncate(service, MAX_RPC_NAME).into(),
            );
            push(a::RPC_METHOD, route::truncate(method, MAX_RPC_NAME).into());
        } else {
            let route = self.route();
            let path = route::truncate(self.path_only(), MAX_PATH);
            if !path.is_empty() && path != route {
                push(a::URL_PATH, path.to_string());
            }
            push(attr::HTTP_VERSION, "2".into());
        }
        push(a::NETWORK_PROTOCOL_VERSION, "2".into());
        if let Some((host, port)) = split_host(&self.authority) {
            push(a::SERVER_ADDRESS, host.to_string());
            if let Some(port) = port {
                push(a::SERVER_PORT, port.to_string());
            }
        }
        if let Some(ua) = &self.user_agent {
            push(attr::USER_AGENT, ua.clone());
        }
        for (k, v) in &self.trace {
            push(k, v.clone());
        }
        RequestRecord {
            protocol: self.protocol().into(),
            operation: self.operation(),
            request_ts_ns: self.ts,
            request_bytes: bytes,
            attributes: attrs,
            ..RequestRecord::default()
        }
    }
}

/// The response side of a stream, from its header blocks (headers, then trailers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Response {
    /// The final `:status`.
    pub(crate) status: Option<u16>,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
}

impl Response {
    /// Fold a header block in. Interim (1xx) heads are skipped.
    pub(crate) fn add(&mut self, fields: &[Field]) {
        let status = fields
            .iter()
            .find(|f| f.name == b":status")
            .and_then(|f| std::str::from_utf8(&f.value).ok()?.parse::<u16>().ok());
        if let Some(s) = status {
            if (100..200).contains(&s) {
                return;
            }
            self.status.get_or_insert(s);
        }
        for f in fields {
            match f.name.as_slice() {
                b"grpc-status" => {
                    self.grpc_status = std::str::from_utf8(&f.value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                }
                b"grpc-message" => self.grpc_message = Some(text(&f.value, GRPC_MESSAGE_MAX)),
                _ => {}
            }
        }
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The response's END_STREAM, at this timestamp.
    Complete(u64),
    /// RST_STREAM, at this timestamp.
    Reset(u64),
    /// Never answered (closed, evicted): this error.
    Unanswered(&'static str),
    /// A header block could not be decoded.
    Desync(u64),
}

/// The record of a stream whose request is known.
pub(crate) fn record(
    req: &Request,
    resp: &Response,
    end: End,
    request_bytes: u64,
    response_bytes: u64,
) -> RequestRecord {
    let mut r = req.record(request_bytes);
    r.response_bytes = response_bytes;
    match end {
        End::Desync(ts) => {
            r.response_ts_ns = ts;
            r.error = Some(error::HPACK_DESYNC.into());
            return r;
        }
        End::Unanswered(why) => {
            r.error = Some(if resp.status.is_some() {
                error::TRUNCATED.into()
            } else {
                why.into()
            });
            return r;
        }
        End::Complete(ts) | End::Reset(ts) => r.response_ts_ns = ts,
    }
    let reset = matches!(end, End::Reset(_));
    if req.grpc {
        // A missing grpc-status: gRPC's HTTP-to-status mapping (grpc/doc/http-grpc-status-mapping.md),
        // CANCELLED for a reset stream.
        let code = resp.grpc_status.unwrap_or(match (reset, resp.status) {
            (true, _) => 1,
            (_, Some(400)) => 13,
            (_, Some(401)) => 16,
            (_, Some(403)) => 7,
            (_, Some(404)) => 12,
            (_, Some(429 | 502 | 503 | 504)) => 14,
            _ => 2,
        });
        r.status = code;
        r.attributes
            .push((a::RPC_GRPC_STATUS_CODE.into(), code.to_string()));
        if code != 0 {
            r.error = Some(grpc_code_name(code).into());
            if let Some(m) = &resp.grpc_message {
                r.attributes.push((attr::GRPC_MESSAGE.into(), m.clone()));
            }
        }
        return r;
    }
    match resp.status {
        Some(s) => {
            r.status = u32::from(s);
            r.error = match s {
                400..=499 => Some(error::CLIENT.into()),
                500..=599 => Some(error::SERVER.into()),
                _ if reset => Some(error::RESET.into()),
                _ => None,
            };
        }
        None => {
            r.error = Some(error::RESET.into());
            r.response_ts_ns = 0;
        }
    }
    r
}

/// The record of an exchange that stayed HTTP/1.1 (an `Upgrade: h2c` the server refused, or
/// never answered): as the HTTP/2 record of it, with the HTTP/1.1 version attributes.
pub(crate) fn h1_record(mut r: RequestRecord) -> RequestRecord {
    for (k, v) in &mut r.attributes {
        if k == attr::HTTP_VERSION || k == a::NETWORK_PROTOCOL_VERSION {
            *v = "1.1".into();
        }
    }
    r
}

/// The record of a stream whose request headers could not be decoded.
pub(crate) fn desync_record(ts: u64, request_bytes: u64, response_bytes: u64) -> RequestRecord {
    RequestRecord {
        protocol: PROTOCOL_HTTP.into(),
        operation: "_OTHER".into(),
        error: Some(error::HPACK_DESYNC.into()),
        request_ts_ns: ts,
        request_bytes,
        response_bytes,
        attributes: vec![(a::NETWORK_PROTOCOL_VERSION.into(), "2".into())],
        ..RequestRecord::default()
    }
}

/// `host[:port]` or `[v6][:port]` → host and port.
fn split_host(h: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return Some((host, after.strip_prefix(':').and_then(|p| p.parse().ok())));
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((host, p)) => (host, p.parse().ok()),
        None => (h, None),
    };
    (!host.is_empty()).then_some((host, port))
}

/// A header value as text: at most `max` bytes, invalid UTF-8 replaced.
fn text(v: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&v[..v.len().min(max)]);
    route::truncate(&s, max).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: &str, v: &str) -> Field {
        Field {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn plain_requests_read_like_http1() {
        let req = Request::from_fields(
            &[
                f(":method", "GET"),
                f(":path", "/users/12345?x=1"),
                f(":authority", "example.com:8443"),
                f("user-agent", "nghttp2/1.52"),
            ],
            10,
        );
        let mut resp = Response::default();
        resp.add(&[f(":status", "100")]);
        resp.add(&[f(":status", "404")]);
        let r = record(&req, &resp, End::Complete(20), 30, 40);
        assert_eq!(
            (r.protocol.as_str(), r.operation.as_str(), r.status),
            ("http", "GET /users/{id}", 404)
        );
        assert_eq!(r.error.as_deref(), Some("client-error"));
        assert_eq!(r.attr("url.path"), Some("/users/12345"));
        assert_eq!(r.attr("network.protocol.version"), Some("2"));
        assert_eq!(r.attr("server.address"), Some("example.com"));
        assert_eq!(r.attr("server.port"), Some("8443"));
        assert_eq!((r.request_ts_ns, r.response_ts_ns), (10, 20));
    }

    #[test]
    fn grpc_status_from_trailers_or_headers() {
        let req = Request::from_fields(
            &[
                f(":method", "POST"),
                f(":path", "/helloworld.Greeter/SayHello"),
                f("content-type", "application/grpc+proto"),
            ],
            1,
        );
        let mut resp = Response::default();
        resp.add(&[f(":status", "200"), f("content-type", "application/grpc")]);
        resp.add(&[f("grpc-status", "5"), f("grpc-message", "no such greeting")]);
        let r = record(&req, &resp, End::Complete(2), 0, 0);
        assert_eq!(
            (r.protocol.as_str(), r.operation.as_str(), r.status),
            ("grpc", "/helloworld.Greeter/SayHello", 5)
        );
        assert_eq!(r.error.as_deref(), Some("NOT_FOUND"));
        assert_eq!(r.attr("rpc.service"), Some("helloworld.Greeter"));
        assert_eq!(r.attr("rpc.method"), Some("SayHello"));
        assert_eq!(r.attr("rpc.grpc.status_code"), Some("5"));
        assert_eq!(r.attr("rpc.grpc.status_message"), Some("no such greeting"));
        // Trailers-only OK.
        let mut only = Response::default();
        only.add(&[f(":status", "200"), f("grpc-status", "0")]);
        let r = record(&req, &only, End::Complete(2), 0, 0);
        assert_eq!((r.status, r.error), (0, None));
        // No grpc-status at all, HTTP 503: UNAVAILABLE.
        let mut bad = Response::default();
        bad.add(&[f(":status", "503")]);
        assert_eq!(record(&req, &bad, End::Complete(2), 0, 0).status, 14);
    }

    #[test]
    fn hosts() {
        assert_eq!(split_host("h:80"), Some(("h", Some(80))));
        assert_eq!(split_host("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(split_host("h"), Some(("h", None)));
        assert_eq!(split_host(""), None);
    }
}
