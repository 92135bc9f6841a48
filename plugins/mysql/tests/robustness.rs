//! Damaged and unusual streams: every split point, capture gaps, 16 MiB continuation packets,
//! floods, detection negatives and random input. The parser must stay paired where it can, say
//! what it lost, never panic and never grow without bound.

mod common;

use common::*;
use sonde_mysql_parser::record::{attr as key, error};
use sonde_mysql_parser::{CARRY, KEEP, MAX_PACKET, MAX_PENDING, MAX_STATEMENTS, Mysql, MysqlState};
use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, Direction, ProtocolParser, RequestRecord, Role, Segment,
};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A whole conversation, as (is_request, bytes) messages in order.
fn conversation(deprecate: bool) -> Vec<(bool, Vec<u8>)> {
    let (g, l, o) = handshake(deprecate, Some("shop"));
    vec![
        (false, g),
        (true, l),
        (false, o),
        (
            true,
            query("SELECT id, name FROM users WHERE id IN (1, 2, 3)"),
        ),
        (
            false,
            result_set(
                &["id", "name"],
                &[vec!["1", "a"], vec!["2", "b"], vec!["3", "c"]],
                deprecate,
                AUTOCOMMIT,
            ),
        ),
        (true, prepare("UPDATE users SET name = ? WHERE id = ?")),
        (false, prepare_response(5, &[], 2, deprecate)),
        (true, execute(5, &["x", "1"])),
        (false, packet(1, &ok(1, AUTOCOMMIT))),
        (true, query("SELECT * FROM nope")),
        (false, packet(1, &err(1146, "42S02", "no such table"))),
    ]
}

fn run(role: Role, segments: &[(bool, u64, Vec<u8>)]) -> H {
    let mut h = with_role(role);
    for (is_request, ts, data) in segments {
        if *is_request {
            h.request(*ts, data);
        } else {
            h.response(*ts, data);
        }
    }
    h.close();
    h
}

#[test]
fn split_at_every_byte_gives_identical_records() {
    for deprecate in [false, true] {
        let conv = conversation(deprecate);
        let whole: Vec<_> = conv
            .iter()
            .enumerate()
            .map(|(i, (r, b))| (*r, i as u64, b.clone()))
            .collect();
        let base = run(Role::Client, &whole);
        assert_eq!(
            ops(&base),
            [
                op("SELECT", 0, None),
                op("PREPARE", 0, None),
                op("UPDATE", 0, None),
                op("SELECT", 1146, Some("1146"))
            ]
        );
        let total: usize = conv.iter().map(|(_, b)| b.len()).sum();
        for cut in 0..total {
            // Split the message holding byte `cut` in two at that byte.
            let mut segs = Vec::new();
            let mut at = 0;
            for (i, (r, b)) in conv.iter().enumerate() {
                if (at..at + b.len()).contains(&cut) && cut > at {
                    segs.push((*r, i as u64, b[..cut - at].to_vec()));
                    segs.push((*r, i as u64, b[cut - at..].to_vec()));
                } else {
                    segs.push((*r, i as u64, b.clone()));
                }
                at += b.len();
            }
            let h = run(Role::Client, &segs);
            assert_eq!(h.result.records, base.result.records, "cut at {cut}");
        }
        // One byte per segment, and the other roles.
        let bytewise: Vec<_> = whole
            .iter()
            .flat_map(|(r, ts, b)| b.iter().map(move |x| (*r, *ts, vec![*x])))
            .collect();
        assert_eq!(
            run(Role::Client, &bytewise).result.records,
            base.result.records
        );
        assert_eq!(
            run(Role::Server, &whole).result.records,
            base.result.records
        );
        assert_eq!(
            run(Role::Unknown, &bytewise).result.records,
            base.result.records
        );
    }
}

/// 400 bytes of rows hidden with their headers: the rows are counted from the sequence ids (14
/// rows fit in 400 bytes, 270 would not), so the result set is whole.
#[test]
fn gap_over_row_headers_keeps_the_result_whole() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let rows: Vec<Vec<&str>> = (0..50)
        .map(|_| vec!["some value", "another value"])
        .collect();
    let rs = result_set(&["a", "b"], &rows, false, AUTOCOMMIT);
    h.request(10, &query("SELECT a, b FROM t"))
        .response(11, &rs[..300])
        .gap(Direction::Ingress, 400)
        .response(12, &rs[700..900])
        .response(13, &rs[900..]);
    assert_eq!(ops(&h), [op("SELECT", 0, None)]);
    let r = &h.result.records[0];
    assert_eq!((r.response_ts_ns, r.response_bytes), (13, rs.len() as u64));
    assert_eq!(attr(r, key::RETURNED_ROWS), Some("50"));
    h.request(20, &query("SELECT 1"))
        .response(21, &result_set(&["1"], &[vec!["1"]], false, AUTOCOMMIT));
    assert_eq!(ops(&h), [op("SELECT", 0, None), op("SELECT", 0, None)]);
    assert_eq!(attr(&h.result.records[1], key::RETURNED_ROWS), Some("1"));
}

#[test]
fn gap_inside_one_row_keeps_the_count() {
    let mut h = H::client();
    connect(&mut h, true, None);
    let big = "x".repeat(1000);
    let rs = result_set(
        &["a"],
        &[vec!["1"], vec![&big], vec!["3"]],
        true,
        AUTOCOMMIT,
    );
    let at = rs.windows(10).position(|w| w == b"xxxxxxxxxx").unwrap() + 10;
    h.request(10, &query("SELECT a FROM t"))
        .response(11, &rs[..at])
        .gap(Direction::Ingress, 500)
        .response(12, &rs[at + 500..]);
    assert_eq!(ops(&h), [op("SELECT", 0, None)]);
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::RETURNED_ROWS), Some("3"));
    assert_eq!(r.response_bytes, rs.len() as u64);
}

#[test]
fn gap_in_the_request_direction() {
    // A command cut by the capture, its first bytes seen: known, and its response pairs.
    let mut h = H::client();
    connect(&mut h, false, None);
    let q = query("SELECT a FROM t WHERE x = 'lost'");
    h.request(10, &q[..12])
        .gap(Direction::Egress, (q.len() - 12) as u64)
        .request(10, &[])
        .response(11, &result_set(&["a"], &[vec!["1"]], false, AUTOCOMMIT))
        .request(12, &packet(0, &[0x0e]))
        .response(13, &packet(1, &ok(0, AUTOCOMMIT)));
    assert_eq!(ops(&h), [op("SELECT", 0, None), op("PING", 0, None)]);
    assert_eq!(h.result.records[0].request_bytes, q.len() as u64);
    // A gap over a header: what it held is not known (commands, perhaps), so the response
    // after it may be theirs: it is not placed, never guessed.
    let mut h = H::client();
    connect(&mut h, false, None);
    h.request(10, &q[..2])
        .gap(Direction::Egress, 50)
        .request(11, b"garbage after the gap")
        .response(12, &packets(7, &[ok(0, 0)]))
        .request(13, &packet(0, &[0x0e]))
        .response(14, &packet(1, &ok(0, AUTOCOMMIT)))
        .close();
    assert_eq!(ops(&h), [op("PING", 0, Some(error::TRUNCATED))]);
}

#[test]
fn gap_only_segment_and_gap_during_handshake() {
    // A gap running past the end of the login: the handshake cannot be followed, the next
    // command resynchronises.
    let mut h = H::client();
    let (g, l, o) = handshake(false, None);
    h.response(1, &g)
        .request(2, &l[..20])
        .gap(Direction::Egress, (l.len() - 20 + 30) as u64)
        .request(3, &[])
        .request(4, &query("SELECT 1"))
        .response(5, &packet(1, &ok(0, 0)));
    assert_eq!(ops(&h), [op("SELECT", 0, None)]);
    // A gap ending exactly at the end of the login: still in step.
    let mut h = H::client();
    h.response(1, &g)
        .request(2, &l[..20])
        .gap(Direction::Egress, (l.len() - 20) as u64)
        .request(3, &[])
        .response(4, &o)
        .request(5, &query("SELECT 1"))
        .response(6, &packet(1, &ok(0, 0)));
    assert_eq!(ops(&h), [op("SELECT", 0, None)]);
}

#[test]
fn continuation_packets_of_17_mib_stay_bounded() {
    let conn = ConnInfo {
        id: 1,
        role: Role::Client,
        ..Default::default()
    };
    let mut state = MysqlState::default();
    let mut out: Vec<RequestRecord> = Vec::new();
    let feed = |state: &mut MysqlState, dir, ts, data: &[u8], out: &mut Vec<RequestRecord>| {
        let c = Mysql::parse(
            state,
            &conn,
            &Segment {
                direction: dir,
                ts_ns: ts,
                gap_before: 0,
                data,
            },
            out,
        );
        assert_eq!(c, Claim::Mine);
        assert!(
            state.buffer_capacity() <= KEEP + 512,
            "{}",
            state.buffer_capacity()
        );
    };
    let (g, l, o) = handshake(true, None);
    feed(&mut state, Direction::Ingress, 1, &g, &mut out);
    feed(&mut state, Direction::Egress, 2, &l, &mut out);
    feed(&mut state, Direction::Ingress, 3, &o, &mut out);
    // 17 MiB of statement: one full 0xFFFFFF packet (seq 0) and its continuation (seq 1).
    let total = 17 << 20;
    let head = b"\x03INSERT INTO blobs VALUES (42, '";
    let mut stream = Vec::with_capacity(total + 8);
    stream.extend_from_slice(&[0xff, 0xff, 0xff, 0]);
    stream.extend_from_slice(head);
    stream.resize(4 + MAX_PACKET, b'x');
    let rest = total - MAX_PACKET;
    stream.extend_from_slice(&[rest as u8, (rest >> 8) as u8, (rest >> 16) as u8, 1]);
    stream.resize(stream.len() + rest - 2, b'y');
    stream.extend_from_slice(b"')");
    for (i, chunk) in stream.chunks(64 * 1024 + 7).enumerate() {
        feed(
            &mut state,
            Direction::Egress,
            10 + i as u64,
            chunk,
            &mut out,
        );
    }
    assert_eq!(state.pending(), 1);
    // The response continues the sequence: its first packet has id 2.
    feed(
        &mut state,
        Direction::Ingress,
        1000,
        &packet(2, &ok(1, 0)),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r.operation, "INSERT");
    assert_eq!(r.request_bytes, (total + 8) as u64);
    assert_eq!((r.request_ts_ns, r.response_ts_ns), (10, 1000));
    assert_eq!(
        attr(r, key::QUERY_TEXT),
        Some("INSERT INTO blobs VALUES (?, ?")
    );
    assert_eq!(attr(r, key::AFFECTED_ROWS), Some("1"));
}

#[test]
fn big_rows_in_a_result_set() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let big = vec![b'z'; MAX_PACKET - 4];
    let mut row = lenenc_str(&big);
    row.truncate(MAX_PACKET);
    // A 16 MiB row (continued by an empty packet) starting with a lenenc 0xFD: not a terminator.
    let mut rs = packets(1, &[lenenc(1), column_def("a"), eof(0)]);
    rs.extend_from_slice(&[0xff, 0xff, 0xff, 4]);
    rs.extend_from_slice(&row);
    rs.extend(packets(5, &[vec![], text_row(&["2"]), eof(AUTOCOMMIT)]));
    h.request(1, &query("SELECT a FROM t"));
    for c in rs.chunks(100_000) {
        h.response(2, c);
    }
    assert_eq!(ops(&h), [op("SELECT", 0, None)]);
    assert_eq!(attr(&h.result.records[0], key::RETURNED_ROWS), Some("2"));
}

#[test]
fn unanswered_commands_are_bounded() {
    let mut h = H::client();
    connect(&mut h, false, None);
    for i in 0..100 {
        h.request(10 + i, &query("SELECT 1"));
    }
    h.close();
    assert_eq!(h.result.records.len(), 100);
    assert!(
        h.result
            .records
            .iter()
            .all(|r| r.error.as_deref() == Some(error::NO_RESPONSE))
    );
    let conn = ConnInfo {
        id: 1,
        role: Role::Client,
        ..Default::default()
    };
    let mut s = MysqlState::default();
    let mut out = Vec::new();
    for _ in 0..100 {
        let seg = Segment {
            direction: Direction::Egress,
            ts_ns: 1,
            gap_before: 0,
            data: &query("SELECT 1"),
        };
        Mysql::parse(&mut s, &conn, &seg, &mut out);
        assert!(s.pending() <= MAX_PENDING);
    }
}

#[test]
fn prepared_statements_are_bounded() {
    let mut h = H::client();
    connect(&mut h, true, None);
    for id in 1..=300u32 {
        h.request(10, &prepare(&format!("SELECT c{id} FROM t")))
            .response(11, &prepare_response(id, &["c"], 0, true));
    }
    h.request(20, &execute(1, &[]))
        .response(21, &packet(1, &ok(0, 0)))
        .request(22, &execute(300, &[]))
        .response(23, &packet(1, &ok(0, 0)));
    let r = &h.result.records;
    assert_eq!(r.len(), 302);
    assert_eq!(r[300].operation, "EXECUTE", "statement 1 was evicted");
    assert_eq!(attr(&r[301], key::QUERY_TEXT), Some("SELECT c300 FROM t"));
    let conn = ConnInfo {
        id: 1,
        role: Role::Client,
        ..Default::default()
    };
    let mut s = MysqlState::default();
    let mut out = Vec::new();
    for id in 1..=300u32 {
        for (dir, data) in [
            (Direction::Egress, prepare("SELECT 1")),
            (Direction::Ingress, prepare_response(id, &[], 0, true)),
        ] {
            let seg = Segment {
                direction: dir,
                ts_ns: 1,
                gap_before: 0,
                data: &data,
            };
            Mysql::parse(&mut s, &conn, &seg, &mut out);
        }
    }
    assert_eq!(s.statements(), MAX_STATEMENTS);
}

fn detect(role: Role, dir: Direction, data: &[u8]) -> Claim {
    let conn = ConnInfo {
        id: 1,
        role,
        ..Default::default()
    };
    Mysql::detect(
        &conn,
        &Segment {
            direction: dir,
            ts_ns: 0,
            gap_before: 0,
            data,
        },
    )
}

#[test]
fn detection() {
    let g = packet(
        0,
        &greeting("10.11.6-MariaDB-1:10.11.6+maria~ubu2204", BASE_CAPS),
    );
    assert_eq!(detect(Role::Client, Direction::Ingress, &g), Claim::Mine);
    assert_eq!(detect(Role::Server, Direction::Egress, &g), Claim::Mine);
    assert_eq!(detect(Role::Unknown, Direction::Egress, &g), Claim::Mine);
    assert_eq!(detect(Role::Client, Direction::Egress, &g), Claim::NotMine);
    assert_eq!(
        detect(Role::Client, Direction::Ingress, &g[..10]),
        Claim::Undecided
    );
    for cmd in [
        query("SELECT * FROM t"),
        query("\n  insert into t values (1)"),
        prepare("SELECT ?"),
        execute(1, &[]),
        packet(0, &[0x0e]),
        packet(0, &[0x01]),
        packet(0, b"\x02shop"),
    ] {
        assert_eq!(
            detect(Role::Client, Direction::Egress, &cmd),
            Claim::Mine,
            "{cmd:?}"
        );
        assert_eq!(detect(Role::Server, Direction::Ingress, &cmd), Claim::Mine);
        assert_eq!(detect(Role::Unknown, Direction::Ingress, &cmd), Claim::Mine);
        assert_eq!(
            detect(Role::Client, Direction::Ingress, &cmd),
            Claim::NotMine
        );
    }
    // Mid-stream response bytes on the response side: wait for the other side.
    assert_eq!(
        detect(
            Role::Client,
            Direction::Ingress,
            &packet(3, &text_row(&["a"]))
        ),
        Claim::Undecided
    );
}

#[test]
fn detection_negatives() {
    let client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xaa\xbb";
    let tls13 = b"\x16\x03\x01\x00\xf8\x01\x00\x00\xf4\x03\x03";
    let negatives: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n",
        client_hello,
        tls13,
        b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
        b"+OK\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x00\x00\x00\x00\x00\x00",
        b"\x05\x00\x00\x00\x03\x01\x02\x03\x04",
        b"\x0a\x00\x00\x00\x0a\x00abc",
    ];
    for n in negatives {
        assert_eq!(
            detect(Role::Client, Direction::Egress, n),
            Claim::NotMine,
            "{n:?}"
        );
        assert_eq!(
            detect(Role::Unknown, Direction::Egress, n),
            Claim::NotMine,
            "{n:?}"
        );
    }
    let mut rng = Rng(0x5eed);
    let mut mine = 0;
    for _ in 0..10_000 {
        let n = 4 + rng.below(200);
        let b = rng.bytes(n);
        if detect(Role::Client, Direction::Egress, &b) != Claim::NotMine {
            mine += 1;
        }
    }
    assert_eq!(mine, 0, "random bytes are never claimed");
    // Through the driver, with the role unknown: not claimed either.
    let mut h = with_role(Role::Unknown);
    h.request(1, negatives[0]).response(2, negatives[2]);
    assert_eq!(claims(&h), [Claim::NotMine]);
}

fn check_state(s: &MysqlState) {
    assert!(
        s.buffer_capacity() <= KEEP + 512 + CARRY,
        "{}",
        s.buffer_capacity()
    );
    assert!(s.pending() <= MAX_PENDING);
    assert!(s.statements() <= MAX_STATEMENTS);
}

#[test]
fn random_and_damaged_input_never_panics_and_stays_bounded() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let convs = [conversation(false), conversation(true)];
    for round in 0..3000 {
        let role = [Role::Client, Role::Server, Role::Unknown][rng.below(3)];
        let conn = ConnInfo {
            id: 1,
            role,
            ..Default::default()
        };
        let mut s = MysqlState::default();
        let mut out = Vec::new();
        let req_dir = conn.request_direction();
        let other = |d| match d {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        };
        // A conversation, damaged: bytes flipped, segments cut anywhere, gaps, garbage.
        let mut msgs: Vec<(bool, Vec<u8>)> = if round % 4 == 0 {
            (0..rng.below(20))
                .map(|_| {
                    let n = rng.below(300);
                    (rng.below(2) == 0, rng.bytes(n))
                })
                .collect()
        } else {
            convs[round % 2].clone()
        };
        for (_, b) in &mut msgs {
            for _ in 0..rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
            }
        }
        let mut ts = 0;
        for (is_req, b) in &msgs {
            let dir = if (role == Role::Unknown && rng.below(5) == 0) || !*is_req {
                other(req_dir)
            } else {
                req_dir
            };
            let mut rest = &b[..];
            while !rest.is_empty() {
                let take = 1 + rng.below(rest.len());
                let gap = if rng.below(10) == 0 {
                    rng.below(2000) as u64
                } else {
                    0
                };
                ts += 1;
                let seg = Segment {
                    direction: dir,
                    ts_ns: ts,
                    gap_before: gap,
                    data: &rest[..take],
                };
                let claim = Mysql::parse(&mut s, &conn, &seg, &mut out);
                check_state(&s);
                if claim == Claim::Finished {
                    break;
                }
                rest = &rest[take..];
            }
        }
        Mysql::close(&mut s, &conn, &mut out);
        assert_bounded(&out);
        assert_eq!(s.pending(), 0);
    }
}

#[test]
fn random_input_through_the_driver() {
    let mut rng = Rng(42);
    for _ in 0..1000 {
        let mut h = with_role([Role::Client, Role::Server, Role::Unknown][rng.below(3)]);
        // Start like MySQL often enough for the parser to claim, then go wild.
        if rng.below(2) == 0 {
            connect(&mut h, rng.below(2) == 0, None);
        }
        for i in 0..rng.below(30) {
            let n = rng.below(500);
            let data = rng.bytes(n);
            if rng.below(8) == 0 {
                h.gap(Direction::Egress, rng.below(100) as u64);
            }
            if rng.below(2) == 0 {
                h.request(i as u64, &data);
            } else {
                h.response(i as u64, &data);
            }
        }
        h.close();
        assert_bounded(&h.result.records);
    }
}
