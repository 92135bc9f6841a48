//! Damaged streams: gaps of the capture, garbage, oversized heads, unanswered floods, random
//! input. The parser must stay paired where it can, say what it lost, never panic and never
//! grow without bound.

mod common;

use common::*;
use sonde_http_parser::record::error;
use sonde_http_parser::{Http, HttpState, MAX_HEAD, MAX_PENDING};
use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, Direction, ProtocolParser, RequestRecord, Role, Segment,
};

const OK0: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

#[test]
fn gap_inside_content_length_body_stays_in_sync() {
    let mut h = H::client();
    h.request(1, b"GET /big HTTP/1.1\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    h.response(2, &[&head[..], &[b'x'; 100]].concat());
    h.gap(Direction::Ingress, 800).response(3, &[b'y'; 100]);
    h.request(4, b"GET /next HTTP/1.1\r\n\r\n")
        .response(5, b"HTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        ops(&h),
        [
            op("GET /big", 200, None),
            op("GET /next", 404, Some(error::CLIENT))
        ]
    );
    let r = &h.result.records[0];
    assert_eq!(
        (r.response_ts_ns, r.response_bytes),
        (3, (head.len() + 1000) as u64)
    );
}

#[test]
fn gap_ending_exactly_at_body_end() {
    let mut h = H::client();
    h.request(1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    h.response(2, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123");
    h.gap(Direction::Ingress, 6).response(3, OK0);
    assert_eq!(ops(&h), [op("GET /a", 200, None), op("GET /b", 200, None)]);
    assert_eq!(h.result.records[0].response_ts_ns, 3);
}

#[test]
fn gap_inside_chunk_data_stays_in_sync() {
    let mut h = H::client();
    h.request(1, b"GET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n");
    h.response(
        2,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3f0\r\nabc",
    );
    h.gap(Direction::Ingress, 1002)
        .response(3, b"xyz\r\n0\r\n\r\n");
    h.response(4, OK0);
    assert_eq!(ops(&h), [op("GET /c", 200, None), op("GET /d", 200, None)]);
}

#[test]
fn gap_beyond_body_loses_the_next_response() {
    let mut h = H::client();
    h.request(
        1,
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
    );
    h.response(2, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123");
    // The rest of response 1 (6 bytes) and all of response 2 are missing.
    h.gap(Direction::Ingress, 6 + OK0.len() as u64)
        .response(3, b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        ops(&h),
        [
            op("GET /{id}", 200, None),
            op("GET /{id}", 0, Some(error::TRUNCATED)),
            op("GET /{id}", 503, Some(error::SERVER))
        ]
    );
    let urls: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| attr(r, "url.path").unwrap().to_string())
        .collect();
    assert_eq!(urls, ["/1", "/2", "/3"]);
}

#[test]
fn gap_inside_response_headers_resyncs() {
    let mut h = H::client();
    h.request(1, b"GET /lost HTTP/1.1\r\n\r\n")
        .request(2, b"GET /kept HTTP/1.1\r\n\r\n");
    h.response(3, b"HTTP/1.1 200 OK\r\nContent-Ty");
    // The rest of response 1, then a segment that starts in the middle of its body.
    h.gap(Direction::Ingress, 40).response(
        4,
        b"dy of the lost one</p>\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    );
    h.request(5, b"GET /after HTTP/1.1\r\n\r\n")
        .response(6, OK0);
    assert_eq!(
        ops(&h),
        [
            op("GET /lost", 0, Some(error::TRUNCATED)),
            op("GET /kept", 201, None),
            op("GET /after", 200, None)
        ]
    );
    let lost = &h.result.records[0];
    assert_eq!((lost.response_ts_ns, lost.response_bytes), (0, 0));
    assert_eq!(h.result.records[1].response_ts_ns, 4);
}

#[test]
fn gap_inside_request_headers_keeps_the_request_line() {
    // A gap of 13 bytes can only be the rest of the head ("ngth: 0\r\n\r\n"): nothing else hid.
    let mut h = H::client();
    h.request(1, b"POST /orders/77 HTTP/1.1\r\nHost: shop\r\nContent-Le");
    h.gap(Direction::Egress, 13)
        .request(2, b"GET /orders HTTP/1.1\r\nHost: shop\r\n\r\n");
    h.response(3, b"HTTP/1.1 500 Err\r\nContent-Length: 0\r\n\r\n")
        .response(4, OK0);
    assert_eq!(
        ops(&h),
        [
            op("POST /orders/{id}", 500, Some(error::SERVER)),
            op("GET /orders", 200, None)
        ]
    );
    assert_eq!(attr(&h.result.records[0], "server.address"), Some("shop"));
    // 500 bytes may also have held pipelined requests: the POST is still the oldest and gets
    // the first response, but the second may answer one of those, so the GET is given up.
    let mut h = H::client();
    h.request(1, b"POST /orders/77 HTTP/1.1\r\nHost: shop\r\nContent-Le");
    h.gap(Direction::Egress, 500)
        .request(2, b"GET /orders HTTP/1.1\r\nHost: shop\r\n\r\n");
    h.response(3, b"HTTP/1.1 500 Err\r\nContent-Length: 0\r\n\r\n")
        .response(4, OK0)
        .close();
    assert_eq!(
        ops(&h),
        [
            op("POST /orders/{id}", 500, Some(error::SERVER)),
            op("GET /orders", 0, Some(error::TRUNCATED))
        ]
    );
}

#[test]
fn lost_request_keeps_pairing_aligned() {
    let mut h = H::client();
    h.request(1, b"GET /1 HTTP/1.1\r\n\r\n");
    // All of request 2 is missing.
    h.gap(Direction::Egress, 20)
        .request(3, b"GET /3 HTTP/1.1\r\n\r\n");
    h.response(4, OK0)
        .response(5, b"HTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n")
        .response(6, b"HTTP/1.1 204 NC\r\n\r\n");
    assert_eq!(
        ops(&h),
        [op("GET /{id}", 200, None), op("GET /{id}", 204, None)]
    );
    assert_eq!(attr(&h.result.records[1], "url.path"), Some("/3"));
}

#[test]
fn gap_in_chunk_framing_truncates_with_status() {
    let mut h = H::client();
    h.request(1, b"GET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n");
    h.response(
        2,
        b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    h.gap(Direction::Ingress, 12)
        .response(3, b"\r\n0\r\n\r\n")
        .response(4, OK0);
    assert_eq!(
        ops(&h),
        [
            op("GET /c", 502, Some(error::TRUNCATED)),
            op("GET /d", 200, None)
        ]
    );
    assert_eq!(h.result.records[0].response_ts_ns, 2);
}

#[test]
fn gap_before_the_first_segment() {
    // The first bytes were lost: 1234 bytes of one request or of dozens. The first response
    // answers one of them, certainly (nothing else was sent before it); the second may too, so
    // /x cannot be paired, and is given up when the connection closes.
    let mut h = H::client();
    h.gap(Direction::Egress, 1234)
        .request(1, b"GET /x HTTP/1.1\r\n\r\n")
        .response(2, OK0);
    h.response(3, OK0);
    assert_eq!(ops(&h), []);
    h.close();
    assert_eq!(ops(&h), [op("GET /x", 0, Some(error::TRUNCATED))]);
    // With a response gap too, the counts on both sides are unknown: the same.
    let mut h = H::client();
    h.gap(Direction::Egress, 1234)
        .request(1, b"GET /x HTTP/1.1\r\n\r\n");
    h.gap(Direction::Ingress, 4321).response(2, OK0).close();
    assert_eq!(ops(&h), [op("GET /x", 0, Some(error::TRUNCATED))]);
    // A gap that holds exactly one request (too short for two) keeps the pairing.
    let mut h = H::client();
    h.gap(Direction::Egress, 20)
        .request(1, b"GET /x HTTP/1.1\r\n\r\n")
        .response(2, OK0)
        .response(3, OK0);
    assert_eq!(ops(&h), [op("GET /x", 200, None)]);
    assert_eq!(h.result.records[0].response_ts_ns, 3);
}

#[test]
fn garbage_between_responses_is_skipped() {
    let mut h = H::client();
    h.request(1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    h.response(
        2,
        &[
            OK0,
            b"\x00\x01garbage\xff\r\nmore junk\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        ]
        .concat(),
    );
    assert_eq!(ops(&h), [op("GET /a", 200, None), op("GET /b", 202, None)]);
}

#[test]
fn response_without_request_is_ignored() {
    let mut h = H::client();
    h.response(1, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
    h.request(2, b"GET /z HTTP/1.1\r\n\r\n").response(3, OK0);
    assert_eq!(ops(&h), [op("GET /z", 200, None)]);
}

#[test]
fn invalid_content_length_truncates_and_resyncs() {
    let mut h = H::client();
    h.request(1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    h.response(
        2,
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    h.response(3, OK0);
    assert_eq!(
        ops(&h),
        [
            op("GET /a", 200, Some(error::TRUNCATED)),
            op("GET /b", 200, None)
        ]
    );
}

/// Drive the parser directly, to look at its state.
struct Direct {
    conn: ConnInfo,
    state: HttpState,
    out: Vec<RequestRecord>,
    claim: Claim,
}

impl Direct {
    fn new() -> Self {
        Direct {
            conn: ConnInfo {
                id: 1,
                role: Role::Client,
                ..Default::default()
            },
            state: HttpState::default(),
            out: Vec::new(),
            claim: Claim::Mine,
        }
    }
    fn seg(&mut self, direction: Direction, ts: u64, gap: u64, data: &[u8]) {
        let s = Segment {
            direction,
            ts_ns: ts,
            gap_before: gap,
            data,
        };
        self.claim = Http::parse(&mut self.state, &self.conn, &s, &mut self.out);
    }
    fn close(&mut self) {
        Http::close(&mut self.state, &self.conn, &mut self.out);
    }
}

#[test]
fn oversized_request_head_is_capped_and_recovered() {
    let mut d = Direct::new();
    d.seg(Direction::Egress, 1, 0, b"GET /small HTTP/1.1\r\n\r\n");
    d.seg(Direction::Ingress, 2, 0, OK0);
    let filler = format!("X-Filler: {}\r\n", "f".repeat(1000));
    d.seg(Direction::Egress, 3, 0, b"GET /huge HTTP/1.1\r\n");
    let mut peak = 0;
    for _ in 0..40 {
        d.seg(Direction::Egress, 4, 0, filler.as_bytes());
        peak = peak.max(d.state.buffer_capacity());
    }
    assert!(peak <= MAX_HEAD, "buffered {peak}");
    d.seg(Direction::Egress, 5, 0, b"\r\nGET /after HTTP/1.1\r\n\r\n");
    // The huge request's response, then the next one's.
    d.seg(
        Direction::Ingress,
        6,
        0,
        b"HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\n",
    );
    d.seg(Direction::Ingress, 7, 0, OK0);
    let ops: Vec<_> = d
        .out
        .iter()
        .map(|r| (r.operation.as_str(), r.status))
        .collect();
    assert_eq!(ops, [("GET /small", 200), ("GET /after", 200)]);
    assert!(d.state.buffer_capacity() <= 2048, "the big buffer is freed");
    assert_eq!(d.claim, Claim::Mine);
}

#[test]
fn oversized_head_in_one_segment() {
    let mut d = Direct::new();
    let big = format!(
        "GET /huge HTTP/1.1\r\nX-Big: {}\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
        "b".repeat(MAX_HEAD)
    );
    d.seg(Direction::Egress, 1, 0, big.as_bytes());
    d.seg(Direction::Ingress, 2, 0, &[OK0, OK0].concat());
    let ops: Vec<_> = d
        .out
        .iter()
        .map(|r| (r.operation.as_str(), r.status))
        .collect();
    assert_eq!(ops, [("GET /ok", 200)]);
    assert_eq!(d.state.buffer_capacity(), 0, "never buffered");
}

#[test]
fn oversized_response_head_truncates_its_request() {
    let mut d = Direct::new();
    d.seg(
        Direction::Egress,
        1,
        0,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    );
    d.seg(Direction::Ingress, 2, 0, b"HTTP/1.1 200 OK\r\n");
    for _ in 0..20 {
        d.seg(
            Direction::Ingress,
            3,
            0,
            format!("Set-Cookie: {}\r\n", "c".repeat(1000)).as_bytes(),
        );
        assert!(d.state.buffer_capacity() <= MAX_HEAD);
    }
    d.seg(Direction::Ingress, 4, 0, &[b"\r\n", OK0].concat());
    let ops: Vec<_> = d
        .out
        .iter()
        .map(|r| (r.operation.as_str(), r.status, r.error.as_deref()))
        .collect();
    assert_eq!(
        ops,
        [("GET /a", 0, Some(error::TRUNCATED)), ("GET /b", 200, None)]
    );
}

#[test]
fn pending_requests_are_capped() {
    let mut d = Direct::new();
    for i in 0..MAX_PENDING + 6 {
        d.seg(
            Direction::Egress,
            i as u64,
            0,
            b"GET /flood HTTP/1.1\r\n\r\n",
        );
        assert!(d.state.pending() <= MAX_PENDING);
    }
    assert_eq!(d.out.len(), 6);
    assert!(
        d.out
            .iter()
            .all(|r| r.error.as_deref() == Some(error::NO_RESPONSE))
    );
    let ts: Vec<u64> = d.out.iter().map(|r| r.request_ts_ns).collect();
    assert_eq!(ts, [0, 1, 2, 3, 4, 5], "the oldest go first");
    // Responses still come in order: the first six answer the requests given up (no record),
    // the seventh the oldest still waiting.
    for ts in 100..107 {
        d.seg(Direction::Ingress, ts, 0, OK0);
    }
    assert_eq!(d.out.len(), 7);
    assert_eq!((d.out[6].request_ts_ns, d.out[6].status), (6, 200));
    d.close();
    assert_eq!(d.out.len(), MAX_PENDING + 6);
}

#[test]
fn finished_connection_stays_finished() {
    let mut d = Direct::new();
    d.seg(
        Direction::Egress,
        1,
        0,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    );
    d.seg(
        Direction::Ingress,
        2,
        0,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(d.claim, Claim::Finished);
    d.seg(Direction::Ingress, 3, 0, OK0);
    assert_eq!(d.claim, Claim::Finished);
    d.close();
    let ops: Vec<_> = d
        .out
        .iter()
        .map(|r| (r.operation.as_str(), r.status, r.error.as_deref()))
        .collect();
    // Whatever was queued behind the upgrade will never be answered in HTTP/1.
    assert_eq!(
        ops,
        [
            ("GET /ws", 101, None),
            ("GET /x", 0, Some(error::NO_RESPONSE))
        ]
    );
}

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const CORPUS_REQ: &[u8] = b"GET /a/1 HTTP/1.1\r\nHost: h:1\r\ntraceparent: 00-01-02-01\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: v\r\n\r\nPUT /c HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbodyHEAD /d HTTP/1.0\r\n\r\n";
const CORPUS_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 500 E\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 200 OK\r\n\r\ntail";

fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    for _ in 0..rng.below(4) {
        if v.is_empty() {
            break;
        }
        let at = rng.below(v.len());
        match rng.below(4) {
            0 => v[at] = rng.next() as u8,
            1 => {
                v.remove(at);
            }
            2 => v.insert(at, b"\r\n: 0123456789abcdefHTTP/1. GET"[rng.below(31)]),
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn random_damage_never_panics_or_grows() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let req = mutate(&mut rng, CORPUS_REQ);
        let resp = mutate(&mut rng, CORPUS_RESP);
        let mut d = Direct::new();
        if round % 3 == 0 {
            d.conn.role = Role::Unknown;
        }
        let (mut i, mut j) = (0, 0);
        let mut ts = 0;
        while (i < req.len() || j < resp.len()) && d.claim != Claim::Finished {
            ts += 1;
            let egress = j >= resp.len() || (i < req.len() && rng.below(2) == 0);
            let (buf, at, dir) = if egress {
                (&req, &mut i, Direction::Egress)
            } else {
                (&resp, &mut j, Direction::Ingress)
            };
            let n = 1 + rng.below(40).min(buf.len() - *at - 1);
            let gap = if rng.below(10) == 0 {
                rng.below(30) as u64
            } else {
                0
            };
            let chunk = buf[*at..*at + n].to_vec();
            *at += n;
            d.seg(dir, ts, gap, &chunk);
            assert!(d.state.buffer_capacity() <= 2 * MAX_HEAD);
            assert!(d.state.pending() <= MAX_PENDING);
        }
        d.close();
        assert_bounded(&d.out);
        for r in &d.out {
            assert!(r.status == 0 || (100..1000).contains(&r.status), "{r:?}");
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let mut d = Direct::new();
        for ts in 0..8 {
            let len = rng.below(200);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let dir = if rng.below(2) == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            d.seg(dir, ts, rng.below(3) as u64 * 7, &data);
        }
        d.close();
        assert_bounded(&d.out);
    }
}
