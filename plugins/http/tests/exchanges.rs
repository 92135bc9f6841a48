//! Request/response pairing over well-formed streams: keep-alive, pipelining, framing,
//! interim responses, upgrades, roles, attributes.

mod common;

use common::*;
use sonde_http_parser::record::{attr as key, error};
use sonde_sdk::protocol_parser::{Claim, Direction};

const GET: &[u8] = b"GET /users/42?expand=1 HTTP/1.1\r\nHost: api.example.com:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
const OK5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn simple_get() {
    let mut h = H::client();
    h.request(100, GET).response(250, OK5);
    assert_eq!(claims(&h), [Claim::Mine]);
    let r = &h.result.records;
    assert_eq!(r.len(), 1);
    assert_eq!(
        brief(&r[0]),
        Brief {
            operation: "GET /users/{id}".into(),
            status: 200,
            error: None,
            request_ts: 100,
            response_ts: 250,
            request_bytes: GET.len() as u64,
            response_bytes: OK5.len() as u64,
        }
    );
    assert_eq!(r[0].conn, 1);
    assert_eq!(r[0].protocol, "http");
    let attrs: Vec<(&str, &str)> = r[0]
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attrs,
        [
            (key::URL_PATH, "/users/42"),
            (key::VERSION, "1.1"),
            (key::SERVER_ADDRESS, "api.example.com"),
            (key::SERVER_PORT, "8080"),
            (key::USER_AGENT, "curl/8.5.0"),
            (key::RESPONSE_CONTENT_LENGTH, "5"),
        ]
    );
}

#[test]
fn keepalive_three_exchanges() {
    let mut h = H::client();
    for i in 0..3u64 {
        let req = format!("GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n");
        let resp = format!("HTTP/1.1 {} X\r\nContent-Length: 2\r\n\r\nok", 200 + i);
        h.request(10 * i + 1, req.as_bytes())
            .response(10 * i + 5, resp.as_bytes());
    }
    assert_eq!(
        ops(&h),
        [
            op("GET /item/{id}", 200, None),
            op("GET /item/{id}", 201, None),
            op("GET /item/{id}", 202, None)
        ]
    );
    let ts: Vec<(u64, u64)> = h
        .result
        .records
        .iter()
        .map(|r| (r.request_ts_ns, r.response_ts_ns))
        .collect();
    assert_eq!(ts, [(1, 5), (11, 15), (21, 25)]);
    h.close();
    assert_eq!(h.result.records.len(), 3, "nothing pending at close");
}

const PIPE_REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyzDELETE /c/9 HTTP/1.1\r\nHost: h\r\n\r\n";
const PIPE_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nbb\r\n0\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";

fn pipelined_expectation() -> Vec<(String, u32, Option<String>)> {
    vec![
        op("GET /a", 200, None),
        op("POST /b", 201, None),
        op("DELETE /c/{id}", 404, Some(error::CLIENT)),
    ]
}

#[test]
fn pipelining_fifo() {
    let mut h = H::client();
    h.request(1, PIPE_REQ).response(2, PIPE_RESP);
    assert_eq!(ops(&h), pipelined_expectation());
    let bytes: Vec<u64> = h.result.records.iter().map(|r| r.request_bytes).collect();
    assert_eq!(bytes, [28, 51, 33]);
    assert_eq!(bytes.iter().sum::<u64>(), PIPE_REQ.len() as u64);
    let resp: u64 = h.result.records.iter().map(|r| r.response_bytes).sum();
    assert_eq!(resp, PIPE_RESP.len() as u64);
}

/// Split one direction at every byte (both parts with the same timestamp, so the records must
/// be identical to the unsplit run), including before the detector can decide: the SDK's
/// driver keeps undecided bytes and hands them to `parse` once the connection is claimed.
fn split_everywhere(requests: &[u8], responses: &[u8]) {
    let mut whole = H::client();
    whole.request(1, requests).response(2, responses).close();
    let want = whole.result.records.clone();
    assert!(!want.is_empty());
    for k in 0..=requests.len() {
        let mut h = H::client();
        h.request(1, &requests[..k])
            .request(1, &requests[k..])
            .response(2, responses)
            .close();
        assert_eq!(h.result.records, want, "request split at {k}");
    }
    for k in 0..=responses.len() {
        let mut h = H::client();
        h.request(1, requests)
            .response(2, &responses[..k])
            .response(2, &responses[k..])
            .close();
        assert_eq!(h.result.records, want, "response split at {k}");
    }
    // One byte per segment, both ways.
    let mut h = H::client();
    for b in requests.chunks(1) {
        h.request(1, b);
    }
    for b in responses.chunks(1) {
        h.response(2, b);
    }
    h.close();
    assert_eq!(h.result.records, want, "byte by byte");
}

#[test]
fn pipelining_split_at_every_byte() {
    split_everywhere(PIPE_REQ, PIPE_RESP);
    let mut h = H::client();
    h.request(1, PIPE_REQ).response(2, PIPE_RESP);
    assert_eq!(ops(&h), pipelined_expectation());
}

const CHUNKED_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Expires\r\n\r\n4;name=value\r\nWiki\r\n5 ; q=\"x;y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0; last\r\nExpires: never\r\nX-Checksum: 1\r\n\r\n";

#[test]
fn chunked_with_extensions_and_trailers() {
    let get = b"GET /wiki HTTP/1.1\r\nHost: w\r\n\r\n";
    let next = b"GET /next HTTP/1.1\r\nHost: w\r\n\r\n";
    let requests = [&get[..], &next[..]].concat();
    let responses = [CHUNKED_RESP, b"HTTP/1.1 204 No Content\r\n\r\n"].concat();
    let mut h = H::client();
    h.request(1, &requests).response(2, &responses);
    assert_eq!(
        ops(&h),
        [op("GET /wiki", 200, None), op("GET /next", 204, None)]
    );
    assert_eq!(
        h.result.records[0].response_bytes,
        CHUNKED_RESP.len() as u64
    );
    // Chunked: no content length attribute.
    assert_eq!(
        attr(&h.result.records[0], key::RESPONSE_CONTENT_LENGTH),
        None
    );
    split_everywhere(&requests, &responses);
}

#[test]
fn chunked_request_body() {
    let req = b"POST /upload HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /after HTTP/1.1\r\n\r\n";
    let resp = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut h = H::client();
    h.request(1, req).response(2, resp);
    assert_eq!(
        ops(&h),
        [op("POST /upload", 201, None), op("GET /after", 200, None)]
    );
    split_everywhere(req, resp);
}

#[test]
fn content_length_body_across_ten_segments() {
    let body = vec![b'x'; 1000];
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    let mut h = H::client();
    h.request(5, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    h.response(10, head);
    for (i, piece) in body.chunks(100).enumerate() {
        assert!(h.result.records.is_empty(), "emitted before the last byte");
        h.response(20 + i as u64, piece);
    }
    let r = &h.result.records;
    assert_eq!(r.len(), 1);
    // The response time is the last byte's: latency covers the body transfer.
    assert_eq!((r[0].request_ts_ns, r[0].response_ts_ns), (5, 29));
    assert_eq!(r[0].response_bytes, (head.len() + 1000) as u64);
    assert_eq!(attr(&r[0], key::RESPONSE_CONTENT_LENGTH), Some("1000"));
}

#[test]
fn headers_split_across_segments_keep_first_byte_timestamp() {
    let mut h = H::client();
    h.request(7, b"GET /x HTTP/1.1\r\nHo")
        .request(8, b"st: h\r\n")
        .request(9, b"\r\n");
    h.response(20, b"HTTP/1.1 200 OK\r\nContent-")
        .response(21, b"Length: 2\r\n\r\n")
        .response(22, b"o")
        .response(23, b"k");
    let r = &h.result.records;
    assert_eq!(
        (r[0].request_ts_ns, r[0].response_ts_ns, r[0].status),
        (7, 23, 200)
    );
    assert_eq!(attr(&r[0], key::SERVER_ADDRESS), Some("h"));
}

#[test]
fn expect_100_continue() {
    let mut h = H::client();
    h.request(
        1,
        b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    h.response(2, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(h.result.records.is_empty(), "100 is not the final response");
    h.request(3, b"data");
    h.response(4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let r = &h.result.records;
    assert_eq!(ops(&h), [op("POST /upload", 200, None)]);
    assert_eq!((r[0].request_ts_ns, r[0].response_ts_ns), (1, 4));
    assert_eq!(r[0].request_bytes, 75 + 4);
    // Interim bytes count with the response.
    assert_eq!(r[0].response_bytes, 25 + 38);
}

#[test]
fn interim_and_final_in_one_segment() {
    let mut h = H::client();
    h.request(1, b"GET / HTTP/1.1\r\n\r\n");
    h.response(2, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(ops(&h), [op("GET /", 200, None)]);
}

#[test]
fn head_response_has_no_body() {
    let mut h = H::client();
    h.request(1, b"HEAD /file HTTP/1.1\r\nHost: h\r\n\r\n");
    h.response(2, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
    h.request(3, b"GET /file HTTP/1.1\r\nHost: h\r\n\r\n");
    h.response(4, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(
        ops(&h),
        [op("HEAD /file", 200, None), op("GET /file", 200, None)]
    );
    assert_eq!(h.result.records[0].response_ts_ns, 2);
    assert_eq!(
        attr(&h.result.records[0], key::RESPONSE_CONTENT_LENGTH),
        Some("5000")
    );
}

#[test]
fn no_body_statuses() {
    let mut h = H::client();
    h.request(1, b"DELETE /k/1 HTTP/1.1\r\n\r\nGET /k/2 HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\nGET /k/3 HTTP/1.1\r\n\r\n");
    // 204 and 304 have no body even with framing headers.
    h.response(2, b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!");
    assert_eq!(
        ops(&h),
        [
            op("DELETE /k/{id}", 204, None),
            op("GET /k/{id}", 304, None),
            op("GET /k/{id}", 200, None)
        ]
    );
}

#[test]
fn websocket_upgrade_finishes() {
    let mut h = H::client();
    h.request(1, b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    h.response(2, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello");
    assert_eq!(ops(&h), [op("GET /chat", 101, None)]);
    assert_eq!(attr(&h.result.records[0], key::UPGRADE), Some("websocket"));
    assert_eq!(claims(&h), [Claim::Mine, Claim::Finished]);
    // Frames afterwards are not HTTP and are ignored.
    h.request(3, b"\x81\x85abcdGET / HTTP/1.1\r\n\r\n")
        .response(4, b"HTTP/1.1 200 OK\r\n\r\n")
        .close();
    assert_eq!(h.result.records.len(), 1);
}

#[test]
fn connect_tunnel_finishes() {
    let mut h = H::client();
    h.request(
        1,
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
    );
    h.response(2, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    assert_eq!(ops(&h), [op("CONNECT db.internal:5432", 200, None)]);
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::SERVER_ADDRESS), Some("db.internal"));
    assert_eq!(attr(r, key::SERVER_PORT), Some("5432"));
    assert_eq!(attr(r, key::URL_PATH), None);
    assert_eq!(claims(&h), [Claim::Mine, Claim::Finished]);
    // A refused CONNECT is an ordinary exchange.
    let mut h = H::client();
    h.request(1, b"CONNECT x:1 HTTP/1.1\r\n\r\n")
        .response(2, b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(ops(&h), [op("CONNECT x:1", 407, Some(error::CLIENT))]);
    assert_eq!(claims(&h), [Claim::Mine]);
}

#[test]
fn http10_response_reads_until_close() {
    let mut h = H::client();
    h.request(1, b"GET /legacy HTTP/1.0\r\n\r\n");
    h.response(
        2,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>",
    );
    h.response(3, b"HTTP/1.1 200 looks like a status line but is body\r\n");
    h.response(4, b"</html>");
    assert!(
        h.result.records.is_empty(),
        "the body ends with the connection"
    );
    h.close();
    let r = &h.result.records;
    assert_eq!(ops(&h), [op("GET /legacy", 200, None)]);
    assert_eq!(r[0].response_ts_ns, 4);
    assert_eq!(r[0].response_bytes, 44 + 6 + 51 + 7);
    assert_eq!(attr(&r[0], key::VERSION), Some("1.0"));
}

#[test]
fn keepalive_response_without_length_ends_at_next_status_line() {
    let mut h = H::client();
    h.request(1, b"GET /a HTTP/1.1\r\n\r\n")
        .response(2, b"HTTP/1.1 200 OK\r\n\r\n");
    h.request(3, b"GET /b HTTP/1.1\r\n\r\n")
        .response(4, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        ops(&h),
        [
            op("GET /a", 200, None),
            op("GET /b", 500, Some(error::SERVER))
        ]
    );
    assert_eq!(h.result.records[0].response_ts_ns, 2);
}

#[test]
fn no_response_at_close() {
    let mut h = H::client();
    h.request(1, b"GET /a HTTP/1.1\r\n\r\n")
        .response(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.request(3, b"GET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n")
        .close();
    assert_eq!(
        ops(&h),
        [
            op("GET /a", 200, None),
            op("GET /b", 0, Some(error::NO_RESPONSE)),
            op("GET /c", 0, Some(error::NO_RESPONSE))
        ]
    );
    assert_eq!(h.result.records[1].response_ts_ns, 0);
}

#[test]
fn response_cut_by_close_is_truncated() {
    let mut h = H::client();
    h.request(1, b"GET /a HTTP/1.1\r\n\r\n")
        .response(2, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        .close();
    assert_eq!(ops(&h), [op("GET /a", 200, Some(error::TRUNCATED))]);
}

#[test]
fn error_classes() {
    let mut h = H::client();
    for (i, status) in [200u32, 301, 400, 404, 500, 503].iter().enumerate() {
        h.request(i as u64, b"GET / HTTP/1.1\r\n\r\n");
        h.response(
            i as u64,
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
    }
    let got: Vec<(u32, Option<String>)> = h
        .result
        .records
        .iter()
        .map(|r| (r.status, r.error.clone()))
        .collect();
    let c = Some(error::CLIENT.to_string());
    let s = Some(error::SERVER.to_string());
    assert_eq!(
        got,
        [
            (200, None),
            (301, None),
            (400, c.clone()),
            (404, c),
            (500, s.clone()),
            (503, s)
        ]
    );
}

#[test]
fn server_and_client_roles() {
    let req = b"PUT /v1/items/550e8400-e29b-41d4-a716-446655440000 HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\n{}";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut client = H::client();
    client
        .segment(Direction::Egress, 1, req)
        .segment(Direction::Ingress, 2, resp);
    let mut server = H::server();
    server
        .segment(Direction::Ingress, 1, req)
        .segment(Direction::Egress, 2, resp);
    assert_eq!(client.result.records, server.result.records);
    assert_eq!(ops(&server), [op("PUT /v1/items/{id}", 200, None)]);
    // Unknown role: inferred from the direction of the first request line...
    for (rq, rs) in [
        (Direction::Egress, Direction::Ingress),
        (Direction::Ingress, Direction::Egress),
    ] {
        let mut h = unknown_role();
        h.segment(rq, 1, req).segment(rs, 2, resp);
        assert_eq!(h.result.records, client.result.records, "requests {rq:?}");
    }
    // ...or of the first status line.
    let mut h = unknown_role();
    h.segment(
        Direction::Ingress,
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    h.segment(Direction::Egress, 1, req)
        .segment(Direction::Ingress, 2, resp);
    assert_eq!(h.result.records, client.result.records);
}

#[test]
fn trace_context_headers() {
    let mut h = H::client();
    h.request(
        1,
        b"GET /t HTTP/1.1\r\nHost: h\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nTraceState: congo=t61rcWkgMzE\r\nb3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90\r\nX-B3-TraceId: 463ac35c9f6413ad48485a3953bb6124\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\nX-B3-ParentSpanId: 0020000000000001\r\nX-B3-Sampled: 1\r\n\r\n",
    );
    h.response(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let r = &h.result.records[0];
    assert_eq!(
        attr(r, key::TRACEPARENT),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(attr(r, key::TRACESTATE), Some("congo=t61rcWkgMzE"));
    assert_eq!(
        attr(r, key::B3),
        Some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
    );
    assert_eq!(
        attr(r, key::B3_TRACE_ID),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
    assert_eq!(attr(r, key::B3_SPAN_ID), Some("a2fb4a1d1a96d312"));
    assert_eq!(attr(r, key::B3_PARENT_SPAN_ID), Some("0020000000000001"));
    assert_eq!(attr(r, key::B3_SAMPLED), Some("1"));
    assert_eq!(attr(r, key::USER_AGENT), None);
}

#[test]
fn long_values_are_truncated() {
    let ua = "M".repeat(500);
    // A word-like segment (a random-looking one would become `{id}`).
    let path = format!("/p/{}", "zo".repeat(200));
    let mut h = H::client();
    h.request(
        1,
        format!("GET {path}?q=1 HTTP/1.1\r\nUser-Agent: {ua}\r\n\r\n").as_bytes(),
    );
    h.response(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::USER_AGENT).map(str::len), Some(128));
    assert_eq!(attr(r, key::URL_PATH).map(str::len), Some(256));
    assert_eq!(r.operation, format!("GET /p/{}", "zo".repeat(32)));
    assert_bounded(&h.result.records);
}

#[test]
fn absolute_form_and_ipv6_host() {
    let mut h = H::client();
    h.request(1, b"GET http://proxy.example:3128/a/1?x HTTP/1.1\r\n\r\n");
    h.request(2, b"GET /b HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n");
    h.request(3, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    h.response(
        3,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            .repeat(3)
            .as_slice(),
    );
    let r = &h.result.records;
    assert_eq!(
        ops(&h),
        [
            op("GET /a/{id}", 200, None),
            op("GET /b", 200, None),
            op("OPTIONS *", 200, None)
        ]
    );
    assert_eq!(
        (
            attr(&r[0], key::SERVER_ADDRESS),
            attr(&r[0], key::SERVER_PORT)
        ),
        (Some("proxy.example"), Some("3128"))
    );
    assert_eq!(
        (
            attr(&r[1], key::SERVER_ADDRESS),
            attr(&r[1], key::SERVER_PORT)
        ),
        (Some("2001:db8::1"), Some("8443"))
    );
}

#[test]
fn leading_empty_lines_and_bare_lf() {
    let mut h = H::client();
    h.request(1, b"\r\nGET /lf HTTP/1.1\nHost: h\n\n")
        .response(2, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
    assert_eq!(ops(&h), [op("GET /lf", 200, None)]);
}

#[test]
fn detection_rejects_other_protocols() {
    let cases: [&[u8]; 5] = [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"*1\r\n$4\r\nPING\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe",
        b"\x4a\x00\x00\x00\x0a8.0.36\x00",
    ];
    for data in cases {
        let mut h = H::client();
        h.request(1, data);
        assert_eq!(claims(&h), [Claim::NotMine], "{data:?}");
    }
    // Too short to tell: wait.
    let mut h = H::client();
    h.request(1, b"GE");
    assert!(claims(&h).is_empty());
    // A response seen first is enough.
    let mut h = H::client();
    h.response(1, b"HTTP/1.1 200 OK\r\n");
    assert_eq!(claims(&h), [Claim::Mine]);
}
