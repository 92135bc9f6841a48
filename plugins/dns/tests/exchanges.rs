//! Queries and responses over UDP and TCP, as client and server: pairing, records, attributes.

mod common;

use common::*;
use sonde_dns_parser::record::{attr as key, error};
use sonde_sdk::protocol_parser::{Claim, Direction, Role, Transport};

const V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn udp_a_query_as_client() {
    let q = query(0x1a2b, "www.Example.COM", A);
    let r = response(
        0x1a2b,
        "www.example.com",
        A,
        NOERROR,
        &[Rr::A([93, 184, 216, 34])],
    );
    let mut h = udp_client();
    h.request(1_000, &q).response(3_500, &r);
    assert_eq!(
        briefs(&h),
        [b(
            "A",
            0,
            None,
            (1_000, 3_500),
            (q.len() as u64, r.len() as u64)
        )]
    );
    let rec = &h.result.records[0];
    assert_eq!(
        rec.attributes,
        [
            (key::QUESTION_NAME, "www.example.com"),
            (key::QUESTION_TYPE, "A"),
            (key::ID, "6699"),
            (key::TRANSPORT, "udp"),
            (key::RESPONSE_CODE, "NOERROR"),
            (key::ANSWER_COUNT, "1"),
            (key::ANSWERS, "93.184.216.34"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(rec.protocol, "dns");
    assert_eq!(rec.conn, 1);
    assert_eq!(claims(&h), [Claim::Mine]);
    h.close();
    assert_eq!(h.result.records.len(), 1, "nothing left at close");
}

#[test]
fn udp_a_query_as_server() {
    let q = query(7, "api.internal", A);
    let r = response(
        7,
        "api.internal",
        A,
        NOERROR,
        &[Rr::A([10, 0, 0, 1]), Rr::A([10, 0, 0, 2])],
    );
    let mut h = udp_server();
    h.request(10, &q).response(12, &r);
    assert_eq!(
        briefs(&h),
        [b("A", 0, None, (10, 12), (q.len() as u64, r.len() as u64))]
    );
    assert_eq!(
        attr(&h.result.records[0], key::ANSWERS),
        Some("10.0.0.1,10.0.0.2")
    );
    // The same messages with the role unknown pair the same way: QR says which is which.
    let mut u = H::new(conn(Role::Unknown, Transport::Udp));
    u.segment(Direction::Ingress, 10, &q)
        .segment(Direction::Egress, 12, &r);
    assert_eq!(u.result.records, h.result.records);
}

#[test]
fn aaaa_and_other_types() {
    let mut h = udp_client();
    h.request(1, &query(1, "v6.example.net", AAAA)).response(
        2,
        &response(1, "v6.example.net", AAAA, NOERROR, &[Rr::Aaaa(V6)]),
    );
    for (i, (t, opname)) in [
        (MX, "MX"),
        (TXT, "TXT"),
        (SRV, "SRV"),
        (HTTPS, "HTTPS"),
        (NS, "NS"),
        (99, "SPF"),
        (1000, "TYPE1000"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = 100 + i as u16;
        h.request(10, &query(id, "example.net", t))
            .response(11, &response(id, "example.net", t, NOERROR, &[]));
        let last = h.result.records.last().unwrap();
        assert_eq!(last.operation, opname);
        assert_eq!(attr(last, key::QUESTION_TYPE), Some(opname));
        assert_eq!(attr(last, key::ANSWERS), None);
    }
    let first = &h.result.records[0];
    assert_eq!(first.operation, "AAAA");
    assert_eq!(attr(first, key::ANSWERS), Some("2001:db8::10"));
}

#[test]
fn error_rcodes() {
    let mut h = udp_client();
    for (id, rcode) in [
        (1, NXDOMAIN),
        (2, SERVFAIL),
        (3, REFUSED),
        (4, FORMERR),
        (5, NOTIMP),
        (6, 9),
    ] {
        h.request(id as u64, &query(id, "missing.example", A))
            .response(
                id as u64 + 1,
                &response(id, "missing.example", A, rcode, &[]),
            );
    }
    assert_eq!(
        ops(&h),
        [
            op("A", 3, Some(error::NXDOMAIN)),
            op("A", 2, Some(error::SERVFAIL)),
            op("A", 5, Some(error::REFUSED)),
            op("A", 1, Some(error::FORMERR)),
            op("A", 4, Some("rcode-4")),
            op("A", 9, Some("rcode-9")),
        ]
    );
    let codes: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| attr(r, key::RESPONSE_CODE).unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "NOTAUTH"
        ]
    );
    assert!(
        h.result
            .records
            .iter()
            .all(|r| attr(r, key::ANSWER_COUNT) == Some("0"))
    );
}

#[test]
fn concurrent_queries_answered_out_of_order() {
    let mut h = udp_client();
    h.request(1, &query(11, "a.example", A))
        .request(2, &query(12, "a.example", AAAA))
        .request(3, &query(13, "b.example", A));
    h.response(
        10,
        &response(13, "b.example", A, NOERROR, &[Rr::A([1, 1, 1, 1])]),
    )
    .response(20, &response(11, "a.example", A, NXDOMAIN, &[]))
    .response(30, &response(12, "a.example", AAAA, NOERROR, &[]));
    assert_eq!(
        ops(&h),
        [
            op("A", 0, None),
            op("A", 3, Some(error::NXDOMAIN)),
            op("AAAA", 0, None)
        ]
    );
    assert_eq!(names(&h), ["b.example", "a.example", "a.example"]);
    let ts: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| (r.request_ts_ns, r.response_ts_ns))
        .collect();
    assert_eq!(ts, [(3, 10), (1, 20), (2, 30)]);
}

#[test]
fn same_id_different_questions_pair_by_name() {
    // An unconnected server socket: two clients picked the same id.
    let mut h = udp_server();
    h.request(1, &query(42, "one.example", A))
        .request(2, &query(42, "two.example", A))
        .response(3, &response(42, "two.example", A, NOERROR, &[]))
        .response(4, &response(42, "one.example", A, REFUSED, &[]));
    assert_eq!(names(&h), ["two.example", "one.example"]);
    assert_eq!(
        ops(&h),
        [op("A", 0, None), op("A", 5, Some(error::REFUSED))]
    );
    // A response to a query not seen, or with another question, pairs with nothing.
    let mut h = udp_client();
    h.request(1, &query(5, "x.example", A))
        .response(2, &response(5, "y.example", A, NOERROR, &[]))
        .response(3, &response(6, "x.example", A, NOERROR, &[]));
    assert!(h.result.records.is_empty());
    h.response(4, &response(5, "X.EXAMPLE", A, NOERROR, &[]));
    assert_eq!(
        ops(&h),
        [op("A", 0, None)],
        "names compare case-insensitively"
    );
}

#[test]
fn retransmission_keeps_the_first_send() {
    let q = query(9, "slow.example", A);
    let mut h = udp_client();
    h.request(1_000, &q)
        .request(1_001_000_000, &q)
        .response(1_200_000_000, &response(9, "slow.example", A, NOERROR, &[]));
    assert_eq!(
        briefs(&h),
        [b(
            "A",
            0,
            None,
            (1_000, 1_200_000_000),
            (q.len() as u64, q.len() as u64)
        )]
    );
    h.close();
    assert_eq!(h.result.records.len(), 1);
}

#[test]
fn compressed_names_in_answers() {
    let r = compressed_cname_response(77);
    let mut h = udp_client();
    h.request(1, &query(77, "www.example.com", A))
        .response(2, &r);
    let rec = &h.result.records[0];
    assert_eq!(rec.operation, "A");
    assert_eq!(attr(rec, key::ANSWER_COUNT), Some("3"));
    assert_eq!(attr(rec, key::ANSWERS), Some("93.184.216.34,93.184.216.35"));
    assert_eq!(attr(rec, key::QUESTION_NAME), Some("www.example.com"));
}

#[test]
fn at_most_four_addresses() {
    let answers: Vec<Rr> = (1..=9).map(|i| Rr::A([10, 0, 0, i])).collect();
    let mut h = udp_client();
    h.request(1, &query(3, "many.example", A))
        .response(2, &response(3, "many.example", A, NOERROR, &answers));
    let rec = &h.result.records[0];
    assert_eq!(
        attr(rec, key::ANSWERS),
        Some("10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4")
    );
    assert_eq!(attr(rec, key::ANSWER_COUNT), Some("9"));
}

#[test]
fn tc_bit() {
    let mut h = udp_client();
    h.request(1, &query(8, "big.example", TXT))
        .response(2, &with_tc(response(8, "big.example", TXT, NOERROR, &[])));
    let rec = &h.result.records[0];
    assert_eq!((rec.status, rec.error.as_deref()), (0, None));
    assert_eq!(attr(rec, key::TRUNCATED), Some("true"));
    // Without TC, no attribute.
    let mut h = udp_client();
    h.request(1, &query(8, "big.example", TXT))
        .response(2, &response(8, "big.example", TXT, NOERROR, &[]));
    assert_eq!(attr(&h.result.records[0], key::TRUNCATED), None);
}

#[test]
fn tcp_two_messages_in_one_segment() {
    let (q1, q2) = (query(1, "a.example", A), query(2, "a.example", AAAA));
    let (r1, r2) = (
        response(1, "a.example", A, NOERROR, &[Rr::A([192, 0, 2, 1])]),
        response(2, "a.example", AAAA, NOERROR, &[Rr::Aaaa(V6)]),
    );
    let mut h = tcp_client();
    h.request(100, &[tcp(&q1), tcp(&q2)].concat())
        .response(200, &[tcp(&r2), tcp(&r1)].concat());
    assert_eq!(
        briefs(&h),
        [
            b(
                "AAAA",
                0,
                None,
                (100, 200),
                (q2.len() as u64 + 2, r2.len() as u64 + 2)
            ),
            b(
                "A",
                0,
                None,
                (100, 200),
                (q1.len() as u64 + 2, r1.len() as u64 + 2)
            ),
        ]
    );
    assert!(
        h.result
            .records
            .iter()
            .all(|r| attr(r, key::TRANSPORT) == Some("tcp"))
    );
    assert_eq!(claims(&h), [Claim::Mine]);
}

#[test]
fn tcp_message_split_at_every_byte() {
    let q1 = tcp(&query(0xbeef, "www.example.com", A));
    let q2 = tcp(&query(0xbef0, "next.example.org", MX));
    let r1 = tcp(&compressed_cname_response(0xbeef));
    let r2 = tcp(&response(0xbef0, "next.example.org", MX, NOERROR, &[]));
    let stream = [&q1[..], &q2[..]].concat();
    let len = |m: &[u8]| m.len() as u64;
    for role in [Role::Client, Role::Server] {
        for at in 0..=stream.len() {
            for rat in 0..=r1.len() {
                let mut h = H::new(conn(role, Transport::Tcp));
                h.request(10, &stream[..at]).request(11, &stream[at..]);
                h.response(20, &r1[..rat]).response(21, &r1[rat..]);
                h.response(30, &r2);
                let q1_ts = if at > 0 { 10 } else { 11 };
                // Until the first question is whole detection is undecided and the driver
                // hands both pieces over joined, with the first one's timestamp.
                let q2_ts = if at > q1.len() || (at > 0 && at < q1.len()) {
                    10
                } else {
                    11
                };
                let r1_ts = if rat == r1.len() { 20 } else { 21 };
                assert_eq!(
                    briefs(&h),
                    [
                        b("A", 0, None, (q1_ts, r1_ts), (len(&q1), len(&r1))),
                        b("MX", 0, None, (q2_ts, 30), (len(&q2), len(&r2))),
                    ],
                    "{role:?} split at {at}/{rat}"
                );
                assert_eq!(
                    attr(&h.result.records[0], key::ANSWERS),
                    Some("93.184.216.34,93.184.216.35")
                );
            }
        }
    }
}

#[test]
fn tcp_server_role() {
    let q = query(5, "db.svc.cluster.local", SRV);
    let r = response(5, "db.svc.cluster.local", SRV, NXDOMAIN, &[]);
    let mut h = tcp_server();
    h.request(1, &tcp(&q)).response(2, &tcp(&r));
    assert_eq!(
        briefs(&h),
        [b(
            "SRV",
            3,
            Some(error::NXDOMAIN),
            (1, 2),
            (q.len() as u64 + 2, r.len() as u64 + 2)
        )]
    );
}

#[test]
fn timeout_by_a_later_timestamp() {
    let s = 1_000_000_000u64;
    let mut h = udp_client();
    h.request(s, &query(1, "lost.example", A))
        .request(2 * s, &query(2, "found.example", A))
        .response(2 * s + 10, &response(2, "found.example", A, NOERROR, &[]));
    // Exactly 5 s later is not yet a timeout.
    h.request(6 * s, &query(3, "x.example", A));
    assert_eq!(ops(&h), [op("A", 0, None)]);
    // One nanosecond more is.
    h.request(6 * s + 1, &query(4, "y.example", A));
    assert_eq!(
        briefs(&h)[1],
        b(
            "A",
            0,
            Some(error::TIMEOUT),
            (s, 0),
            (query(1, "lost.example", A).len() as u64, 0)
        )
    );
    let rec = &h.result.records[1];
    assert_eq!(attr(rec, key::QUESTION_NAME), Some("lost.example"));
    assert_eq!(attr(rec, key::RESPONSE_CODE), None);
    // A response after its query timed out pairs with nothing.
    h.response(7 * s, &response(1, "lost.example", A, NOERROR, &[]));
    assert_eq!(h.result.records.len(), 2);
    // At close, what still waits is a timeout too.
    h.close();
    assert_eq!(
        ops(&h)[2..],
        [
            op("A", 0, Some(error::TIMEOUT)),
            op("A", 0, Some(error::TIMEOUT))
        ]
    );
    assert_eq!(names(&h)[2..], ["x.example", "y.example"]);
}

#[test]
fn timeout_at_close() {
    let mut h = tcp_client();
    h.request(5, &tcp(&query(1, "a.example", A))).close();
    assert_eq!(
        briefs(&h),
        [b(
            "A",
            0,
            Some(error::TIMEOUT),
            (5, 0),
            (query(1, "a.example", A).len() as u64 + 2, 0)
        )]
    );
}

#[test]
fn root_and_odd_names() {
    let mut h = udp_client();
    h.request(1, &query(1, ".", NS))
        .response(2, &response(1, ".", NS, NOERROR, &[]));
    h.request(3, &query(2, "_sip._tcp.Example.org", SRV))
        .response(4, &response(2, "_sip._tcp.example.org", SRV, NOERROR, &[]));
    assert_eq!(names(&h), [".", "_sip._tcp.example.org"]);
}

#[test]
fn notify_is_named_by_its_opcode() {
    let mut q = query(3, "zone.example", 6);
    q[2] = 4 << 3; // NOTIFY, no RD
    let mut r = response(3, "zone.example", 6, NOERROR, &[]);
    r[2] = 0x80 | (4 << 3) | 0x04; // QR, NOTIFY, AA
    let mut h = udp_server();
    h.request(1, &q).response(2, &r);
    assert_eq!(ops(&h), [op("NOTIFY", 0, None)]);
    assert_eq!(attr(&h.result.records[0], key::QUESTION_TYPE), Some("SOA"));
}
