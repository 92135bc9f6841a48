//! Frame-level cases the recordings do not cover, built by hand: CONTINUATION, padding and
//! priority, RST_STREAM, PUSH_PROMISE, trailers-only gRPC, 1xx, the streams bound, the close,
//! garbage. Header blocks are HPACK literals without indexing (what any encoder may send), or
//! static-table indices.

use sonde_http2_parser::{Http2, PREFACE, STREAMS_MAX};
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, RequestRecord};

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A header block of literals without indexing, new names.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0x00);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn get(path: &str) -> Vec<u8> {
    block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "svc:8080"),
    ])
}

fn grpc_call(method: &str) -> Vec<u8> {
    block(&[
        (":method", "POST"),
        (":path", method),
        (":authority", "svc:50051"),
        ("content-type", "application/grpc"),
    ])
}

/// A client connection after the preface and both SETTINGS.
fn client() -> Harness<Http2> {
    let mut h = Harness::<Http2>::client();
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    h.request(1, &start);
    h.response(2, &frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
    h
}

fn ops(h: &Harness<Http2>) -> Vec<(String, u32, Option<String>)> {
    h.ops()
}

fn op(o: &str, s: u32, e: Option<&str>) -> (String, u32, Option<String>) {
    (o.into(), s, e.map(Into::into))
}

fn last(h: &Harness<Http2>) -> &RequestRecord {
    h.result.records.last().unwrap()
}

#[test]
fn continuation_padding_and_priority() {
    let mut h = client();
    let b = get("/orders/42");
    // HEADERS padded (3 bytes) with a priority, the block split over two CONTINUATIONs.
    let mut payload = vec![3];
    payload.extend_from_slice(&[0, 0, 0, 0, 16]);
    payload.extend_from_slice(&b[..5]);
    payload.extend_from_slice(&[0, 0, 0]);
    let mut req = frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload);
    req.extend(frame(CONTINUATION, 0, 1, &b[5..20]));
    req.extend(frame(CONTINUATION, END_HEADERS, 1, &b[20..]));
    h.request(10, &req);
    // :status 200 from the static table (index 8), a body in two DATA frames.
    h.response(20, &frame(HEADERS, END_HEADERS, 1, &[0x88]));
    h.response(30, &frame(DATA, 0, 1, b"hello "));
    h.response(40, &frame(DATA, END_STREAM, 1, b"world"));
    assert_eq!(ops(&h), [op("GET /orders/{id}", 200, None)]);
    let r = last(&h);
    assert_eq!((r.request_ts_ns, r.response_ts_ns), (10, 40));
    assert_eq!(r.request_bytes, req.len() as u64);
    assert_eq!(r.response_bytes, 9 + 1 + 9 + 6 + 9 + 5);
    assert_eq!(r.attr("url.path"), Some("/orders/42"));
    assert_eq!(r.attr("server.port"), Some("8080"));
}

#[test]
fn interleaved_streams_pair_by_id() {
    let mut h = client();
    let mut reqs = frame(HEADERS, END_HEADERS | END_STREAM, 1, &get("/a"));
    reqs.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &get("/b")));
    reqs.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &get("/c")));
    h.request(10, &reqs);
    // Answered 5, 1, 3; 1 with a 100 Continue first, 3 with a 404 (index 13).
    h.response(20, &frame(HEADERS, END_HEADERS | END_STREAM, 5, &[0x88]));
    h.response(
        21,
        &frame(HEADERS, END_HEADERS, 1, &block(&[(":status", "100")])),
    );
    h.response(22, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x88]));
    h.response(23, &frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x8d]));
    assert_eq!(
        ops(&h),
        [
            op("GET /c", 200, None),
            op("GET /a", 200, None),
            op("GET /b", 404, Some("client-error"))
        ]
    );
}

#[test]
fn reset_streams_and_the_close() {
    let mut h = client();
    let mut reqs = frame(HEADERS, END_HEADERS | END_STREAM, 1, &get("/slow"));
    reqs.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &get("/never")));
    reqs.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &get("/cut")));
    h.request(10, &reqs);
    // The client cancels stream 1; stream 5 gets its head, not its end.
    h.request(15, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    h.response(20, &frame(HEADERS, END_HEADERS, 5, &[0x88]));
    h.close();
    assert_eq!(
        ops(&h),
        [
            op("GET /slow", 0, Some("reset")),
            op("GET /never", 0, Some("no-response")),
            op("GET /cut", 0, Some("truncated")),
        ]
    );
}

#[test]
fn grpc_trailers_only_and_cancelled() {
    let mut h = client();
    let mut reqs = frame(HEADERS, END_HEADERS, 1, &grpc_call("/pkg.Svc/Get"));
    reqs.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    reqs.extend(frame(HEADERS, END_HEADERS, 3, &grpc_call("/pkg.Svc/Watch")));
    h.request(10, &reqs);
    // Trailers-only: PERMISSION_DENIED with a message.
    h.response(
        20,
        &frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &block(&[
                (":status", "200"),
                ("grpc-status", "7"),
                ("grpc-message", "nope"),
            ]),
        ),
    );
    // The server resets the stream: CANCELLED.
    h.response(30, &frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
    assert_eq!(
        ops(&h),
        [
            op("/pkg.Svc/Get", 7, Some("PERMISSION_DENIED")),
            op("/pkg.Svc/Watch", 1, Some("CANCELLED")),
        ]
    );
    let r = &h.result.records[0];
    assert_eq!(r.protocol, "grpc");
    assert_eq!(r.attr("rpc.grpc.status_message"), Some("nope"));
    assert_eq!(r.attr("rpc.grpc.status_code"), Some("7"));
}

/// A pushed response's block is decoded (it may change the table) but not reported, and the
/// table it filled is used by the next response.
#[test]
fn pushes_are_decoded_not_reported() {
    let mut h = client();
    h.request(
        10,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, &get("/page")),
    );
    // PUSH_PROMISE for stream 2 whose block inserts `x-pushed: yes` (literal with indexing).
    let mut promise = 2u32.to_be_bytes().to_vec();
    promise.extend_from_slice(&[0x40, 8]);
    promise.extend_from_slice(b"x-pushed");
    promise.extend_from_slice(&[3]);
    promise.extend_from_slice(b"yes");
    h.response(20, &frame(PUSH_PROMISE, END_HEADERS, 1, &promise));
    // The response uses index 62 (the pushed entry) and :status 200.
    h.response(
        21,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x88, 0xbe]),
    );
    h.response(22, &frame(HEADERS, END_HEADERS | END_STREAM, 2, &[0x88]));
    assert_eq!(ops(&h), [op("GET /page", 200, None)]);
}

/// Interrupting a header block is a protocol error: the stream is refused, not guessed.
#[test]
fn an_interrupted_header_block_is_refused() {
    let mut h = client();
    let b = get("/x");
    let mut reqs = frame(HEADERS, END_STREAM, 1, &b[..4]);
    reqs.extend(frame(DATA, 0, 1, b"oops"));
    h.request(10, &reqs);
    h.response(20, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x88]));
    h.close();
    assert_eq!(ops(&h), [op("_OTHER", 0, Some("hpack-desync"))]);
}

#[test]
fn streams_in_flight_are_bounded() {
    let mut h = client();
    let n = STREAMS_MAX as u32 + 10;
    let mut reqs = Vec::new();
    for i in 0..n {
        reqs.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &get("/q"),
        ));
    }
    h.request(10, &reqs);
    let flushed = h.result.records.len();
    assert_eq!(flushed, 10, "the oldest beyond the bound");
    assert!(
        h.ops()
            .iter()
            .all(|o| o.2.as_deref() == Some("no-response"))
    );
    h.close();
    assert_eq!(h.result.records.len(), n as usize);
}

#[test]
fn garbage_before_any_frame_gives_the_connection_up() {
    let mut h = Harness::<Http2>::client();
    h.request(1, &PREFACE[..10]);
    h.request(2, b"GET / HTTP/1.1\r\n\r\n");
    assert!(h.claims().contains(&Claim::NotMine), "{:?}", h.claims());
    assert!(h.result.records.is_empty());
}

/// A connection whose role the kernel did not tell: the server's preface, read first, says
/// which way requests go.
#[test]
fn an_unknown_role_learns_the_direction_from_the_prefaces() {
    use sonde_sdk::protocol_parser::{ConnInfo, Direction, Role};
    let mut h = Harness::<Http2>::new(ConnInfo {
        id: 1,
        role: Role::Unknown,
        ..Default::default()
    });
    // Seen from the server: its SETTINGS go out before the client's preface is read.
    h.segment(Direction::Egress, 1, &frame(SETTINGS, 0, 0, &[]));
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    start.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &get("/x")));
    h.segment(Direction::Ingress, 2, &start);
    h.segment(
        Direction::Egress,
        3,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x88]),
    );
    assert_eq!(ops(&h), [op("GET /x", 200, None)]);
}
