//! Gaps of the capture as the daemon reports them (a segment without bytes whose `gap_before`
//! is the length missing, stamped like the syscall it belongs to): reads beyond the
//! per-syscall capture cap, bodies sent with sendfile. The parser must follow them by the
//! lengths it knows, find the next message where it does not, and never pair a status with a
//! request it does not certainly answer.

mod common;

use common::*;
use sonde_http_parser::record::error;
use sonde_sdk::protocol_parser::{Direction, RequestRecord};

/// The kernel's default per-syscall capture cap.
const CAP: usize = 16 * 1024;

fn response(status: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// One read of `bytes`: the first [`CAP`] captured, the rest a gap stamped with the same time.
fn read(h: &mut H, ts: u64, bytes: &[u8]) {
    let kept = bytes.len().min(CAP);
    h.response(ts, &bytes[..kept]);
    if bytes.len() > kept {
        h.gap(Direction::Ingress, (bytes.len() - kept) as u64)
            .response(ts, b"");
    }
}

/// Every status reported is the one its request really got (`truth`: path → status); a record
/// without a status (given up) is allowed, a shifted one is not.
fn assert_no_shift(records: &[RequestRecord], truth: &[(&str, u32)]) {
    for r in records {
        let path = r.operation.split(' ').nth(1).unwrap_or_default();
        let want = truth.iter().find(|(p, _)| *p == path).map(|t| t.1);
        assert!(
            r.status == 0 || Some(r.status) == want,
            "{} got {} (its response was {want:?})",
            r.operation,
            r.status
        );
    }
}

fn by_path<'a>(h: &'a H, path: &str) -> &'a RequestRecord {
    let op = format!("GET {path}");
    h.result
        .records
        .iter()
        .find(|r| r.operation == op)
        .unwrap_or_else(|| panic!("no record for {path}: {:?}", ops(h)))
}

const TRUTH: &[(&str, u32)] = &[
    ("/a", 200),
    ("/b", 404),
    ("/c", 500),
    ("/d", 201),
    ("/e", 503),
];

/// The case: one ~30 KB read whose tail (beyond the 16 KiB cap) held the end of one
/// response and two whole ones. How many responses that tail held is not knowable (404 and 500
/// could be one longer response), so the 201 after it may answer /c or /d: it is not paired.
/// Before, the parser took the tail for one response and gave the 201 to /c.
#[test]
fn tail_with_two_whole_responses_shifts_no_status() {
    let mut h = H::client();
    h.request(
        1,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n",
    );
    let big = response("200 OK", &[b'a'; 20_000]);
    let lost = [
        response("404 Not Found", &[b'b'; 4000]),
        response("500 Oops", &[b'c'; 6000]),
    ];
    read(&mut h, 2, &[&big[..], &lost[0], &lost[1]].concat());
    h.response(3, &response("201 Created", b"ok"));
    h.close();
    assert_no_shift(&h.result.records, TRUTH);
    let a = by_path(&h, "/a");
    // Its length survived the gap: complete, all its bytes, ended in the truncated read.
    assert_eq!(
        (
            a.status,
            a.error.as_deref(),
            a.response_bytes,
            a.response_ts_ns
        ),
        (200, None, big.len() as u64, 2)
    );
    for path in ["/b", "/c", "/d"] {
        let r = by_path(&h, path);
        assert_eq!(
            (r.status, r.error.as_deref()),
            (0, Some(error::TRUNCATED)),
            "{path}"
        );
    }
    assert_eq!(h.result.records.len(), 4, "each request counted once");
}

/// What is knowable is used: /b's response was certainly lost (bytes followed /a's end), and a
/// response answers a request already sent, so with /c the only one left the 500 is its
/// answer. Where it is not knowable (the next case), nothing is guessed: before, the parser
/// took every tail for one response and shifted the statuses after it onto earlier requests.
#[test]
fn lost_responses_are_counted_never_guessed() {
    let mut h = H::client();
    h.request(
        1,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    );
    let big = response("200 OK", &[b'a'; 20_000]);
    let b = response("404 Not Found", &[b'b'; 9000]);
    read(&mut h, 2, &[&big[..], &b].concat());
    h.response(3, &response("500 Oops", b"e"));
    h.request(4, b"GET /d HTTP/1.1\r\n\r\n")
        .response(5, &response("201 Created", b"ok"));
    h.close();
    assert_eq!(
        ops(&h),
        [
            op("GET /a", 200, None),
            op("GET /b", 0, Some(error::TRUNCATED)),
            op("GET /c", 500, Some(error::SERVER)),
            op("GET /d", 201, None),
        ]
    );

    // The tail holds /b's and /c's responses: the 201 after it may be /c's (had the tail held
    // one long response) or /d's, and the 503 /d's or /e's. None is paired; all are counted.
    let mut h = H::client();
    h.request(
        1,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    );
    let c = response("500 Oops", &[b'c'; 3000]);
    read(&mut h, 2, &[&big[..], &b, &c].concat());
    h.request(4, b"GET /d HTTP/1.1\r\n\r\n")
        .response(5, &response("201 Created", b"ok"));
    h.request(6, b"GET /e HTTP/1.1\r\n\r\n")
        .response(7, &response("503 Busy", b""));
    h.close();
    assert_no_shift(&h.result.records, TRUTH);
    assert_eq!(by_path(&h, "/a").status, 200);
    assert_eq!(h.result.records.len(), 5, "each request counted once");
}

/// After a gap of unknown content the next response may be glued to the hidden body's last
/// bytes (JSON ends without a newline): it is found anyway, and counts for the right request.
#[test]
fn response_glued_to_a_hidden_body_is_found() {
    let mut h = H::client();
    h.request(
        1,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    );
    let big = response("200 OK", &[b'a'; 20_000]);
    let b = response("404 Not Found", b"{\"error\":\"no such thing\"}");
    // The read ends inside /b's body; the next read starts with that body's last bytes.
    let split = b.len() - 5;
    read(&mut h, 2, &[&big[..], &b[..split]].concat());
    h.response(3, &[&b[split..], &response("500 Oops", b"")[..]].concat());
    h.close();
    assert_eq!(
        ops(&h),
        [
            op("GET /a", 200, None),
            op("GET /b", 0, Some(error::TRUNCATED)),
            op("GET /c", 500, Some(error::SERVER)),
        ]
    );
}

/// nginx with `sendfile on`: the head through writev (captured), the body through sendfile (a
/// gap of exactly Content-Length bytes). The response is complete when the gap ends, and the
/// next exchange on the connection parses normally.
#[test]
fn sendfile_body_is_a_gap_of_its_length() {
    let mut h = H::server();
    h.request(1, b"GET /big.iso HTTP/1.1\r\nHost: files\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n";
    h.response(2, head);
    h.gap(Direction::Egress, 1_048_576).response(3, b"");
    assert_eq!(h.result.records.len(), 1, "done when its last byte went");
    h.request(4, b"GET /missing HTTP/1.1\r\nHost: files\r\n\r\n");
    let nf = response("404 Not Found", b"not found");
    h.response(5, &nf);
    h.close();
    let head_len = head.len() as u64;
    assert_eq!(
        h.briefs(),
        [
            Brief {
                operation: "GET /big.iso".into(),
                status: 200,
                error: None,
                request_ts: 1,
                response_ts: 3,
                request_bytes: 38,
                response_bytes: head_len + 1_048_576,
            },
            Brief {
                operation: "GET /missing".into(),
                status: 404,
                error: Some(error::CLIENT.into()),
                request_ts: 4,
                response_ts: 5,
                request_bytes: 38,
                response_bytes: nf.len() as u64,
            },
        ]
    );
}

/// A large chunk whose read was cut by the cap: the gap covers the rest of the chunk data and
/// the CR LF after it (or just its CR). The decoder follows it by the chunk size: the response
/// is complete, with every byte counted, and the next one pairs.
#[test]
fn chunked_gap_through_chunk_data_and_its_crlf() {
    // The gap hides the end of the chunk data and both bytes of its CR LF, or only the CR.
    for crlf_hidden in [2, 1] {
        let mut h = H::client();
        h.request(1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        let head = &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..];
        let chunk = [&b"6000\r\n"[..], &[b'x'; 0x6000], b"\r\n"].concat();
        let whole = [head, &chunk, b"10\r\n0123456789abcdef\r\n0\r\n\r\n"].concat();
        // One read up to `end`: its first CAP bytes captured, the rest a gap.
        let end = head.len() + chunk.len() - (2 - crlf_hidden);
        read(&mut h, 2, &whole[..end]);
        h.response(
            3,
            &[&whole[end..], &response("404 Not Found", b"")[..]].concat(),
        );
        h.close();
        let case = format!("{crlf_hidden} bytes of the CR LF hidden");
        assert_eq!(
            ops(&h),
            [
                op("GET /a", 200, None),
                op("GET /b", 404, Some(error::CLIENT))
            ],
            "{case}"
        );
        let a = &h.result.records[0];
        assert_eq!(
            (a.response_bytes, a.response_ts_ns),
            (whole.len() as u64, 3),
            "{case}"
        );
    }
}

/// A gap inside a response head: that response is lost (its request `truncated`, no status),
/// and the next one, whole, pairs with its own request. When the hidden rest is long enough to
/// have held more responses too, the next is not guessed either.
#[test]
fn gap_inside_a_head_loses_that_response_only() {
    let mut h = H::client();
    h.request(1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    let a = response("500 Internal Server Error", &[b'e'; 300]);
    h.response(2, &a[..30]);
    h.gap(Direction::Ingress, (a.len() - 30) as u64)
        .response(2, b"");
    h.response(3, &response("404 Not Found", b"nope"));
    h.request(4, b"GET /c HTTP/1.1\r\n\r\n")
        .response(5, &response("201 Created", b""));
    h.close();
    assert_eq!(
        ops(&h),
        [
            op("GET /a", 0, Some(error::TRUNCATED)),
            op("GET /b", 404, Some(error::CLIENT)),
            op("GET /c", 201, None),
        ]
    );

    // Pipelined: the gap hides the rest of /a's response and all of /b's. The 201 after it may
    // answer /b (had /a's been longer) or /c: neither is paired (before, /b got it).
    let mut h = H::client();
    h.request(
        1,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    );
    let b = response("404 Not Found", &[b'n'; 100]);
    h.response(2, &a[..30]);
    h.gap(Direction::Ingress, (a.len() - 30 + b.len()) as u64)
        .response(2, b"");
    h.response(3, &response("201 Created", b""));
    h.close();
    assert_no_shift(&h.result.records, &[("/a", 500), ("/b", 404), ("/c", 201)]);
    assert_eq!(h.result.records.len(), 3);
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
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A conversation: both byte streams, where each request ends in its stream and each response
/// in its own, and every request's true status.
struct Conversation {
    requests: Vec<u8>,
    responses: Vec<u8>,
    request_end: Vec<usize>,
    response_end: Vec<usize>,
    status: Vec<u32>,
}

/// Body bytes: lowercase, uppercase (a hidden body's end then looks like a method glued to the
/// next request), or text with spaces and quotes. Never an LF or `HTTP/1.`: a body that holds
/// a whole start line on a line of its own is beyond what any scan can tell from a message.
const FILLERS: [&[u8]; 3] = [b"p", b"P", b"{\"Key\": [1, 2], \"Name\": \"AbC\"} "];

fn fill(v: &mut Vec<u8>, filler: &[u8], n: usize) {
    v.extend(filler.iter().cycle().take(n));
}

fn conversation(rng: &mut Rng, n: usize) -> Conversation {
    let filler = FILLERS[rng.below(FILLERS.len())];
    let mut c = Conversation {
        requests: Vec::new(),
        responses: Vec::new(),
        request_end: Vec::new(),
        response_end: Vec::new(),
        status: Vec::new(),
    };
    // Distinct statuses, none without a body by definition.
    let mut statuses = (200..1000).filter(|s| *s != 204 && *s != 304);
    for i in 0..n {
        let status = statuses.next().expect("enough statuses");
        let body = rng.below(6000);
        let (method, sent) = match rng.below(8) {
            0 => ("HEAD", 0),
            1 | 2 => ("POST", rng.below(3000)),
            _ => ("GET", 0),
        };
        let mut req = format!("{method} /{i} HTTP/1.1\r\nHost: h\r\n").into_bytes();
        if sent > 0 {
            req.extend_from_slice(format!("Content-Length: {sent}\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        fill(&mut req, filler, sent);
        c.requests.extend_from_slice(&req);
        c.request_end.push(c.requests.len());
        let resp = &mut c.responses;
        if method == "HEAD" || rng.below(2) == 0 {
            resp.extend_from_slice(
                format!("HTTP/1.1 {status} X\r\nContent-Length: {body}\r\n\r\n").as_bytes(),
            );
            if method != "HEAD" {
                fill(resp, filler, body);
            }
        } else {
            resp.extend_from_slice(
                format!("HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes(),
            );
            let mut left = body;
            while left > 0 {
                let n = 1 + rng.below(left.min(3000));
                resp.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                fill(resp, filler, n);
                resp.extend_from_slice(b"\r\n");
                left -= n;
            }
            resp.extend_from_slice(b"0\r\n\r\n");
        }
        c.response_end.push(resp.len());
        c.status.push(status);
    }
    c
}

/// Random conversations (pipelined to random depths, bodies of known length and chunked,
/// HEAD), cut into syscalls of random size, each captured up to a random cap with the rest a
/// gap, a few lost whole. Whatever is lost, no status lands on a request it does not answer.
/// `SEED=n ROUNDS=n` run other or more conversations.
#[test]
fn random_gaps_never_shift_a_status() {
    let mut rng = Rng(std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed0f_9a95));
    let mut paired = 0;
    let mut given_up = 0;
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    for round in 0..rounds {
        let n = 1 + rng.below(12);
        let c = conversation(&mut rng, n);
        let ends = &c.response_end;
        let server = round % 2 == 1;
        let mut h = if server { H::server() } else { H::client() };
        let (req_dir, resp_dir) = if server {
            (Direction::Ingress, Direction::Egress)
        } else {
            (Direction::Egress, Direction::Ingress)
        };
        let cap = 20 + rng.below(3000);
        let max_io = 1 + rng.below(9000);
        let (mut rq, mut rs, mut ts) = (0, 0, 0);
        let mut started = false;
        loop {
            let sent = c.request_end.iter().take_while(|e| **e <= rq).count();
            let readable = if sent == 0 { 0 } else { ends[sent - 1] };
            let write = rq < c.requests.len() && (rs >= readable || rng.below(2) == 0);
            let (dir, stream, at, limit) = if write {
                (req_dir, &c.requests, &mut rq, c.requests.len())
            } else if rs < readable {
                (resp_dir, &c.responses, &mut rs, readable)
            } else {
                break;
            };
            let end = (*at + 1 + rng.below(max_io)).min(limit);
            let io = &stream[*at..end];
            *at = end;
            ts += 1;
            // Not before the first request's start was read: a gap while the SDK driver is still
            // detecting is not passed on (a known limitation of the driver, not of this parser).
            let lost = started && rng.below(40) == 0;
            started |= write && rq >= 8;
            if lost {
                // The whole event lost.
                h.gap(dir, io.len() as u64).segment(dir, ts, b"");
                continue;
            }
            let kept = io.len().min(cap);
            h.segment(dir, ts, &io[..kept]);
            if io.len() > kept {
                h.gap(dir, (io.len() - kept) as u64).segment(dir, ts, b"");
            }
        }
        h.close();
        assert_bounded(&h.result.records);
        let mut seen = std::collections::HashSet::new();
        for r in &h.result.records {
            let path = attr(r, "url.path").expect("a path");
            let i: usize = path[1..].parse().expect("a request of the conversation");
            assert!(seen.insert(i), "round {round}: {path} reported twice");
            assert!(
                r.status == 0 || r.status == c.status[i],
                "round {round} (cap {cap}, io {max_io}, server {server}): {} {path} got {} but was answered {}",
                r.operation,
                r.status,
                c.status[i]
            );
            if r.status == 0 {
                given_up += 1;
            } else {
                paired += 1;
            }
        }
    }
    // Not vacuous: with this much lost, still a good share paired.
    eprintln!("paired {paired}, given up {given_up}");
    assert!(
        2 * paired > given_up,
        "paired {paired}, given up {given_up}"
    );
}
