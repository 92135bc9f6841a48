//! Damaged input: gaps of the capture over TCP, garbage frames, pointer loops, unanswered
//! floods, random and mutated messages. The parser must resynchronise where it can, say what
//! it lost, never panic and never grow without bound.

mod common;

use common::*;
use sonde_dns_parser::record::{attr as key, error};
use sonde_dns_parser::{Dns, DnsState, MAX_PENDING};
use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, Direction, ProtocolParser, RequestRecord, Role, Segment, Transport,
};

#[test]
fn pointer_loops_do_not_hang() {
    // Answer owner pointing to itself; answer owner pointing forward to a pointer back.
    let mut r = response(1, "loop.example", A, NOERROR, &[]);
    r[7] = 2; // ANCOUNT 2
    let at = r.len();
    r.extend_from_slice(&[0xC0 | (at >> 8) as u8, at as u8]);
    r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    let at2 = r.len();
    r.extend_from_slice(&[0xC0 | ((at2 + 2) >> 8) as u8, (at2 + 2) as u8]);
    r.extend_from_slice(&[0xC0 | (at2 >> 8) as u8, at2 as u8]);
    let mut h = udp_client();
    h.request(1, &query(1, "loop.example", A)).response(2, &r);
    // The answers do not read; the exchange still does.
    assert_eq!(ops(&h), [op("A", 0, None)]);
    assert_eq!(attr(&h.result.records[0], key::ANSWERS), None);

    // A question that is a pointer to itself: not a message.
    let mut q = query(2, "x", A);
    q.truncate(12);
    q.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let mut h = udp_client();
    h.request(1, &query(2, "x", A)).response(2, &q);
    assert!(h.result.records.is_empty());
    // A long chain of backward pointers is cut by the jump bound or the name length.
    let mut m = response(3, "c", A, NOERROR, &[]);
    m[7] = 1;
    let first = m.len();
    m.extend_from_slice(b"\x01a\x00");
    for i in 0..300usize {
        let target = if i == 0 { first } else { m.len() - 2 };
        m.extend_from_slice(&[0xC0 | (target >> 8) as u8, target as u8]);
    }
    let owner = m.len() - 2;
    m.extend_from_slice(&[0xC0 | (owner >> 8) as u8, owner as u8]);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    let mut h = udp_client();
    h.request(1, &query(3, "c", A)).response(2, &m);
    assert_eq!(ops(&h), [op("A", 0, None)]);
}

#[test]
fn tcp_gap_of_a_whole_response_then_resync() {
    let (q1, q2) = (
        tcp(&query(1, "a.example", A)),
        tcp(&query(2, "b.example", A)),
    );
    let r1 = tcp(&response(1, "a.example", A, NOERROR, &[]));
    let r2 = tcp(&response(2, "b.example", A, SERVFAIL, &[]));
    let mut h = tcp_client();
    h.request(1, &[q1, q2].concat());
    h.gap(Direction::Ingress, r1.len() as u64).response(5, &r2);
    assert_eq!(ops(&h), [op("A", 2, Some(error::SERVFAIL))]);
    // The first query is still waiting; the close gives it up.
    h.close();
    assert_eq!(
        ops(&h),
        [
            op("A", 2, Some(error::SERVFAIL)),
            op("A", 0, Some(error::TIMEOUT))
        ]
    );
    assert_eq!(names(&h), ["b.example", "a.example"]);
}

#[test]
fn tcp_gap_inside_a_response_of_known_length() {
    let (q1, q2) = (
        tcp(&query(1, "a.example", A)),
        tcp(&query(2, "b.example", A)),
    );
    let r1 = tcp(&response(
        1,
        "a.example",
        A,
        NXDOMAIN,
        &[Rr::Raw(TXT, vec![b'x'; 200])],
    ));
    let r2 = tcp(&response(
        2,
        "b.example",
        A,
        NOERROR,
        &[Rr::A([8, 8, 8, 8])],
    ));
    let mut h = tcp_client();
    h.request(1, &[q1, q2].concat());
    // r1's first 40 bytes (header and question), 100 lost, the rest then r2 in one segment.
    h.response(2, &r1[..40])
        .gap(Direction::Ingress, 100)
        .response(3, &[&r1[140..], &r2[..]].concat());
    assert_eq!(
        briefs(&h),
        [
            b(
                "A",
                3,
                Some(error::TRUNCATED),
                (1, 2),
                (29, r1.len() as u64)
            ),
            b("A", 0, None, (1, 3), (29, r2.len() as u64)),
        ]
    );
    assert_eq!(
        attr(&h.result.records[0], key::RESPONSE_CODE),
        Some("NXDOMAIN")
    );
    assert_eq!(attr(&h.result.records[1], key::ANSWERS), Some("8.8.8.8"));
}

#[test]
fn tcp_gap_past_a_message_resyncs_on_the_next_plausible_one() {
    let q: Vec<Vec<u8>> = (1..=3)
        .map(|i| tcp(&query(i, &format!("h{i}.example"), A)))
        .collect();
    let r: Vec<Vec<u8>> = (1..=3)
        .map(|i| tcp(&response(i, &format!("h{i}.example"), A, NOERROR, &[])))
        .collect();
    let mut h = tcp_client();
    h.request(1, &q.concat());
    // r1 starts, the gap takes the rest of it and the first 5 bytes of r2; the segment after
    // the gap starts inside r2, then r3 whole, split across two segments.
    h.response(2, &r[0][..10]);
    h.gap(Direction::Ingress, (r[0].len() - 10 + 5) as u64);
    let rest = [&r[1][5..], &r[2][..]].concat();
    let cut = rest.len() - 7;
    h.response(3, &rest[..cut]).response(4, &rest[cut..]);
    assert_eq!(
        ops(&h),
        [op("A", 0, None)],
        "r1 was cut before its header was whole, r2 was lost"
    );
    assert_eq!(names(&h), ["h3.example"]);
    assert_eq!(h.result.records[0].response_ts_ns, 4);
    h.close();
    assert_eq!(names(&h), ["h3.example", "h1.example", "h2.example"]);
}

#[test]
fn tcp_resync_candidate_split_across_segments() {
    let q = tcp(&query(7, "split-candidate.example", A));
    let r = tcp(&response(7, "split-candidate.example", A, NOERROR, &[]));
    let mut h = tcp_client();
    h.request(1, &q);
    h.gap(Direction::Ingress, 3)
        .response(2, &[&b"\x00junk"[..], &r[..20]].concat())
        .response(3, &r[20..]);
    assert_eq!(
        briefs(&h),
        [b("A", 0, None, (1, 3), (q.len() as u64, r.len() as u64))]
    );
}

#[test]
fn tcp_gap_in_the_query_direction() {
    let q0 = tcp(&query(9, "claim.example", A));
    let q1 = tcp(&query(1, "first.example", A));
    let q2 = tcp(&query(2, "second.example", AAAA));
    for (cut, what) in [
        (q1.len() - 4, "after its question's name"),
        (18, "inside its question"),
        (5, "inside its header"),
    ] {
        let mut h = tcp_client();
        h.request(0, &q0);
        h.request(1, &q1[..cut])
            .gap(Direction::Egress, (q1.len() - cut) as u64)
            .request(2, &q2);
        h.response(3, &tcp(&response(1, "first.example", A, NOERROR, &[])))
            .response(4, &tcp(&response(2, "second.example", AAAA, NOERROR, &[])));
        h.close();
        if cut >= 14 {
            // The id was read: paired by id, the question taken from the response.
            assert_eq!(
                ops(&h),
                [
                    op("A", 0, None),
                    op("AAAA", 0, None),
                    op("A", 0, Some(error::TIMEOUT))
                ],
                "{what}"
            );
            assert_eq!(
                names(&h),
                ["first.example", "second.example", "claim.example"],
                "{what}"
            );
            assert_eq!(h.result.records[0].request_ts_ns, 1);
        } else {
            // Too little of it: lost; its response pairs with nothing.
            assert_eq!(names(&h), ["second.example", "claim.example"], "{what}");
        }
    }
}

#[test]
fn tcp_response_cut_by_the_close() {
    let q = tcp(&query(1, "a.example", A));
    let r = tcp(&response(
        1,
        "a.example",
        A,
        NOERROR,
        &[Rr::A([1, 2, 3, 4])],
    ));
    let mut h = tcp_client();
    h.request(1, &q).response(2, &r[..r.len() - 3]).close();
    assert_eq!(
        briefs(&h),
        [b(
            "A",
            0,
            Some(error::TRUNCATED),
            (1, 2),
            (q.len() as u64, r.len() as u64)
        )]
    );
}

#[test]
fn tcp_garbage_frame_resyncs() {
    let q = tcp(&query(1, "a.example", A));
    let r = tcp(&response(1, "a.example", A, NOERROR, &[]));
    let mut h = tcp_client();
    h.request(1, &q);
    // A frame too short to be a message, then a frame whose question does not read.
    let mut bad = tcp(&response(9, "zzz", A, NOERROR, &[]));
    bad[2 + 12] = 0x41;
    h.response(2, &[&[0, 3, 1, 2, 3][..], &bad, &r].concat());
    assert_eq!(names(&h), ["a.example"]);
}

#[test]
fn udp_gap_only_means_lost_datagrams() {
    let mut h = udp_client();
    h.request(1, &query(1, "a.example", A))
        .request(2, &query(2, "b.example", A));
    h.gap(Direction::Ingress, 60)
        .response(3, &response(2, "b.example", A, NOERROR, &[]));
    assert_eq!(names(&h), ["b.example"]);
    // A gap-only segment with a later timestamp times out the other one.
    h.gap(Direction::Ingress, 10).response(6_000_000_001, &[]);
    assert_eq!(
        ops(&h),
        [op("A", 0, None), op("A", 0, Some(error::TIMEOUT))]
    );
}

#[test]
fn pending_queries_are_capped() {
    let mut h = udp_client();
    for i in 0..(MAX_PENDING + 44) {
        h.request(i as u64, &query(i as u16, "flood.example", A));
    }
    assert_eq!(h.result.records.len(), 44);
    assert!(
        h.result
            .records
            .iter()
            .all(|r| r.error.as_deref() == Some(error::TIMEOUT))
    );
    assert_eq!(h.result.records[0].request_ts_ns, 0);
    // The newest is still answered.
    let last = (MAX_PENDING + 43) as u16;
    h.response(1_000, &response(last, "flood.example", A, NOERROR, &[]));
    assert_eq!(h.result.records.len(), 45);
    assert_eq!(h.result.records[44].error, None);
    h.close();
    assert_eq!(h.result.records.len(), MAX_PENDING + 44);
}

/// Feed straight into the parser's state (as if claimed) and check its bounds after each
/// segment.
struct Direct {
    state: DnsState,
    conn: ConnInfo,
    out: Vec<RequestRecord>,
}

impl Direct {
    fn new(transport: Transport) -> Self {
        Direct {
            state: DnsState::default(),
            conn: ConnInfo {
                id: 1,
                role: Role::Client,
                transport,
                ..Default::default()
            },
            out: Vec::new(),
        }
    }

    fn feed(&mut self, direction: Direction, ts: u64, gap: u64, data: &[u8]) {
        let seg = Segment {
            direction,
            ts_ns: ts,
            gap_before: gap,
            data,
        };
        assert_eq!(
            Dns::parse(&mut self.state, &self.conn, &seg, &mut self.out),
            Claim::Mine
        );
        assert!(self.state.pending() <= MAX_PENDING);
        assert!(self.state.buffered() <= 2 * (2 + 65_535));
        assert_bounded(&self.out);
        self.out.clear();
    }
}

/// A valid message, or a damaged one.
fn message(rng: &mut Rng) -> Vec<u8> {
    let id = rng.below(8) as u16;
    let qname = ["a.example", "b.example", "www.example.com", "."][rng.below(4) as usize];
    let qtype = [A, AAAA, MX, 255, 9999][rng.below(5) as usize];
    let mut m = match rng.below(4) {
        0 => query(id, qname, qtype),
        1 => compressed_cname_response(id),
        _ => {
            let n = rng.below(10) as usize;
            let answers: Vec<Rr> = (0..n)
                .map(|i| match rng.below(3) {
                    0 => Rr::A([10, 0, 0, i as u8]),
                    1 => Rr::Aaaa([i as u8; 16]),
                    _ => Rr::Cname("alias.example"),
                })
                .collect();
            response(id, qname, qtype, rng.below(12) as u8, &answers)
        }
    };
    match rng.below(6) {
        // Flip bytes.
        0 | 1 => {
            for _ in 0..=rng.below(6) {
                let i = rng.below(m.len() as u64) as usize;
                m[i] = rng.next() as u8;
            }
        }
        // Cut.
        2 => m.truncate(rng.below(m.len() as u64) as usize),
        // Pointers anywhere.
        3 => {
            let i = rng.below(m.len() as u64) as usize;
            m[i] = 0xC0 | rng.below(4) as u8;
            if i + 1 < m.len() {
                m[i + 1] = rng.next() as u8;
            }
        }
        // Pure noise.
        4 if rng.below(4) == 0 => {
            let n = rng.below(300) as usize;
            m = rng.bytes(n);
        }
        _ => {}
    }
    m
}

#[test]
fn random_and_damaged_messages() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for transport in [Transport::Udp, Transport::Tcp] {
        for round in 0..40 {
            let mut d = Direct::new(transport);
            let mut ts = 0u64;
            for _ in 0..200 {
                ts += rng.below(2_000_000_000);
                let direction = if rng.below(2) == 0 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let gap = if rng.below(20) == 0 {
                    rng.below(100)
                } else {
                    0
                };
                let m = message(&mut rng);
                let data = match transport {
                    Transport::Udp => m,
                    Transport::Tcp => {
                        let mut f = tcp(&m);
                        if rng.below(10) == 0 {
                            // A wrong length prefix.
                            f[0] = rng.next() as u8;
                        }
                        f
                    }
                };
                // Split into random pieces over TCP.
                if transport == Transport::Tcp && data.len() > 1 && rng.below(3) == 0 {
                    let at = rng.below(data.len() as u64) as usize;
                    d.feed(direction, ts, gap, &data[..at]);
                    d.feed(direction, ts, 0, &data[at..]);
                } else {
                    d.feed(direction, ts, gap, &data);
                }
            }
            let mut out = Vec::new();
            Dns::close(&mut d.state, &d.conn, &mut out);
            assert_bounded(&out);
            assert_eq!(d.state.pending(), 0, "round {round}");
        }
    }
}

#[test]
fn random_streams_through_the_driver() {
    let mut rng = Rng(42);
    for i in 0..2_000 {
        let transport = if i % 2 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let mut h = H::new(conn(Role::Unknown, transport));
        for _ in 0..20 {
            let m = message(&mut rng);
            let data = if transport == Transport::Tcp {
                tcp(&m)
            } else {
                m
            };
            let d = if rng.below(2) == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            h.segment(d, rng.below(10_000_000_000), &data);
        }
        h.close();
        assert_bounded(&h.result.records);
    }
}

#[test]
fn huge_tcp_frame_is_bounded() {
    // A 65535-byte message announced, sent in 1 KiB pieces, with junk inside: buffered at most
    // once, then dropped as garbage.
    let mut d = Direct::new(Transport::Tcp);
    d.feed(Direction::Egress, 1, 0, &tcp(&query(1, "a.example", A)));
    let mut frame = vec![0xff, 0xff];
    frame.extend_from_slice(&[0x55; 65_535]);
    for (i, piece) in frame.chunks(1024).enumerate() {
        d.feed(Direction::Ingress, 2 + i as u64, 0, piece);
    }
    assert_eq!(d.state.buffered(), 0);
    d.feed(
        Direction::Ingress,
        100,
        0,
        &tcp(&response(1, "a.example", A, NOERROR, &[])),
    );
    assert_eq!(d.state.pending(), 0);
}
