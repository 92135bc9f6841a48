//! Recorded connections (`tests/fixtures/*.rec`, the SDK harness recording format) replayed
//! through the parser, with the records each must produce.
//!
//! The recordings are binary (DNS is), so they are written by [`recordings`] below; the test
//! `fixtures_match_their_generator` keeps files and generator in step. To rewrite the files
//! after changing the generator:
//!
//! ```sh
//! SONDE_WRITE_FIXTURES=1 cargo test -p sonde-dns-parser --test fixtures
//! ```

mod common;

use std::path::PathBuf;

use common::*;
use sonde_dns_parser::record::{attr as key, error};
use sonde_sdk::protocol_parser::harness::{Recording, check_fixture};
use sonde_sdk::protocol_parser::{Claim, Direction, Role, Transport};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Fixtures are written with the SDK's recording writer.
type Rec = Recording;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// Every fixture: file name and contents.
fn recordings() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();

    let mut r = Rec::default();
    r.comment("udp client (a stub resolver): A and AAAA together, answered out of order,")
        .comment("an NXDOMAIN, then a query never answered: the next query, 6 s later,")
        .comment("times it out");
    r.egress(1_000, &query(0x3e01, "www.example.com", A))
        .egress(1_010, &query(0x3e02, "www.example.com", AAAA))
        .ingress(
            21 * MS,
            &response(
                0x3e02,
                "www.example.com",
                AAAA,
                NOERROR,
                &[Rr::Aaaa([
                    0x26, 0x06, 0x28, 0x00, 0x02, 0x20, 0, 1, 0x2, 0x48, 0x18, 0x93, 0x25, 0xc8,
                    0x19, 0x46,
                ])],
            ),
        )
        .ingress(25 * MS, &compressed_cname_response(0x3e01))
        .egress(30 * MS, &query(0x3e03, "nope.invalid", A))
        .ingress(31 * MS, &response(0x3e03, "nope.invalid", A, NXDOMAIN, &[]))
        .egress(40 * MS, &query(0x3e04, "lost.example", TXT))
        .egress(
            40 * MS + 6 * S,
            &query(0x3e05, "_http._tcp.example.com", SRV),
        )
        .ingress(
            41 * MS + 6 * S,
            &response(0x3e05, "_http._tcp.example.com", SRV, NOERROR, &[]),
        );
    out.push(("udp-resolver.rec", r.0));

    let mut r = Rec::default();
    r.comment("udp server (an authoritative server on an unconnected socket): queries from")
        .comment("several clients, two with the same id, a SERVFAIL, a REFUSED, a TC answer");
    r.ingress(100, &query(7, "db.corp.example", A))
        .ingress(110, &query(7, "mail.corp.example", MX))
        .ingress(120, &query(8, "corp.example", TXT))
        .ingress(130, &query(9, "other.example", A))
        .egress(200, &response(7, "mail.corp.example", MX, SERVFAIL, &[]))
        .egress(
            210,
            &response(7, "db.corp.example", A, NOERROR, &[Rr::A([10, 1, 2, 3])]),
        )
        .egress(
            220,
            &with_tc(response(8, "corp.example", TXT, NOERROR, &[])),
        )
        .egress(230, &response(9, "other.example", A, REFUSED, &[]));
    out.push(("udp-server.rec", r.0));

    let mut r = Rec::default();
    r.comment("tcp client: two queries in one segment, the responses in three segments")
        .comment("(one split inside its length prefix, one inside its answers)");
    let q = [
        tcp(&query(0x0101, "www.example.com", A)),
        tcp(&query(0x0102, "example.com", MX)),
    ]
    .concat();
    let resp = [
        tcp(&compressed_cname_response(0x0101)),
        tcp(&response(
            0x0102,
            "example.com",
            MX,
            NOERROR,
            &[Rr::Raw(
                MX,
                [&[0, 10][..], &name("mx.example.com")].concat(),
            )],
        )),
    ]
    .concat();
    let first = tcp(&compressed_cname_response(0x0101)).len();
    r.egress(5 * MS, &q)
        .ingress(9 * MS, &resp[..1])
        .ingress(10 * MS, &resp[1..first + 1])
        .ingress(11 * MS, &resp[first + 1..]);
    out.push(("tcp-pipelined.rec", r.0));

    let mut r = Rec::default();
    r.comment("tcp client: three queries; the capture lost the end of the first response and")
        .comment("the start of the second; the reader resynchronises on the third");
    let rs: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            tcp(&response(
                0x2000 + i as u16,
                &format!("{n}.svc.local"),
                A,
                NOERROR,
                &[Rr::A([10, 96, 0, 10 + i as u8])],
            ))
        })
        .collect();
    let qs: Vec<u8> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .flat_map(|(i, n)| tcp(&query(0x2000 + i as u16, &format!("{n}.svc.local"), A)))
        .collect();
    r.egress(MS, &qs)
        .ingress(2 * MS, &rs[0][..30])
        .gap(Direction::Ingress, (rs[0].len() - 30 + 9) as u64)
        .ingress(3 * MS, &[&rs[1][9..], &rs[2][..]].concat());
    out.push(("tcp-gap.rec", r.0));

    let mut r = Rec::default();
    r.comment("tcp: a TLS ClientHello is not DNS");
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ];
    hello.extend((0..60u8).map(|i| i.wrapping_mul(29)));
    r.egress(1, &hello);
    out.push(("not-dns.rec", r.0));

    out
}

#[test]
fn fixtures_match_their_generator() {
    for (name, bytes) in recordings() {
        check_fixture(&fixture(name), &bytes).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn replay(mut h: H, name: &str) -> H {
    h.replay_file(&fixture(name))
        .unwrap_or_else(|e| panic!("{e}"));
    h.close();
    assert_bounded(&h.result.records);
    h
}

#[test]
fn udp_resolver() {
    let h = replay(udp_client(), "udp-resolver.rec");
    let q = |n: &str, t| query(0, n, t).len() as u64;
    assert_eq!(
        briefs(&h),
        [
            b(
                "AAAA",
                0,
                None,
                (1_010, 21 * MS),
                (q("www.example.com", AAAA), 61)
            ),
            b(
                "A",
                0,
                None,
                (1_000, 25 * MS),
                (
                    q("www.example.com", A),
                    compressed_cname_response(0).len() as u64
                )
            ),
            b(
                "A",
                3,
                Some(error::NXDOMAIN),
                (30 * MS, 31 * MS),
                (q("nope.invalid", A), q("nope.invalid", A))
            ),
            b(
                "TXT",
                0,
                Some(error::TIMEOUT),
                (40 * MS, 0),
                (q("lost.example", TXT), 0)
            ),
            b(
                "SRV",
                0,
                None,
                (40 * MS + 6 * S, 41 * MS + 6 * S),
                (
                    q("_http._tcp.example.com", SRV),
                    q("_http._tcp.example.com", SRV)
                )
            ),
        ]
    );
    let r = &h.result.records;
    assert_eq!(
        attr(&r[0], key::ANSWERS),
        Some("2606:2800:220:1:248:1893:25c8:1946")
    );
    assert_eq!(
        attr(&r[1], key::ANSWERS),
        Some("93.184.216.34,93.184.216.35")
    );
    assert_eq!(attr(&r[1], key::ID), Some("15873"));
    assert_eq!(attr(&r[2], key::RESPONSE_CODE), Some("NXDOMAIN"));
    assert_eq!(attr(&r[3], key::QUESTION_NAME), Some("lost.example"));
    assert_eq!(claims(&h), [Claim::Mine]);
}

#[test]
fn udp_server() {
    let h = replay(common::udp_server(), "udp-server.rec");
    assert_eq!(
        ops(&h),
        [
            op("MX", 2, Some(error::SERVFAIL)),
            op("A", 0, None),
            op("TXT", 0, None),
            op("A", 5, Some(error::REFUSED)),
        ]
    );
    assert_eq!(
        names(&h),
        [
            "mail.corp.example",
            "db.corp.example",
            "corp.example",
            "other.example"
        ]
    );
    let r = &h.result.records;
    assert_eq!((r[0].request_ts_ns, r[0].response_ts_ns), (110, 200));
    assert_eq!(attr(&r[1], key::ANSWERS), Some("10.1.2.3"));
    assert_eq!(attr(&r[2], key::TRUNCATED), Some("true"));
    assert!(r.iter().all(|r| attr(r, key::TRANSPORT) == Some("udp")));
}

#[test]
fn tcp_pipelined() {
    let h = replay(tcp_client(), "tcp-pipelined.rec");
    let r1 = tcp(&compressed_cname_response(0)).len() as u64;
    assert_eq!(
        briefs(&h),
        [
            b(
                "A",
                0,
                None,
                (5 * MS, 10 * MS),
                (tcp(&query(0, "www.example.com", A)).len() as u64, r1)
            ),
            b(
                "MX",
                0,
                None,
                (5 * MS, 11 * MS),
                (tcp(&query(0, "example.com", MX)).len() as u64, 2 + 29 + 30)
            ),
        ]
    );
    assert!(
        h.result
            .records
            .iter()
            .all(|r| attr(r, key::TRANSPORT) == Some("tcp"))
    );
}

#[test]
fn tcp_gap() {
    let h = replay(tcp_client(), "tcp-gap.rec");
    assert_eq!(
        ops(&h),
        [
            op("A", 0, Some(error::TRUNCATED)),
            op("A", 0, None),
            op("A", 0, Some(error::TIMEOUT)),
        ]
    );
    assert_eq!(names(&h), ["a.svc.local", "c.svc.local", "b.svc.local"]);
    let r = &h.result.records;
    assert_eq!((r[0].response_ts_ns, r[1].response_ts_ns), (2 * MS, 3 * MS));
    assert_eq!(attr(&r[1], key::ANSWERS), Some("10.96.0.12"));
    assert_eq!(attr(&r[0], key::ANSWERS), None, "cut before its answers");
}

#[test]
fn not_dns() {
    let h = replay(tcp_client(), "not-dns.rec");
    assert!(h.result.records.is_empty());
    assert_eq!(claims(&h), [Claim::NotMine]);
}

/// The UDP fixtures replay the same with the role unknown: QR tells queries from responses.
#[test]
fn fixtures_replay_with_unknown_role() {
    for (name, role) in [
        ("udp-resolver.rec", Role::Client),
        ("udp-server.rec", Role::Server),
    ] {
        let known = replay(H::new(conn(role, Transport::Udp)), name);
        let unknown = replay(H::new(conn(Role::Unknown, Transport::Udp)), name);
        assert_eq!(unknown.result.records, known.result.records, "{name}");
    }
}
