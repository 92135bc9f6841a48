//! Detection: DNS messages are claimed from the first one (either direction, UDP or TCP, whole
//! or in pieces); other protocols and random bytes are not, whatever the port.

mod common;

use common::*;
use sonde_dns_parser::Dns;
use sonde_sdk::protocol_parser::{
    Claim, ConnInfo, Direction, ProtocolParser, Role, Segment, Transport,
};

fn detect(transport: Transport, data: &[u8]) -> Claim {
    let conn = ConnInfo {
        transport,
        ..Default::default()
    };
    Dns::detect(
        &conn,
        &Segment {
            direction: Direction::Egress,
            ts_ns: 0,
            gap_before: 0,
            data,
        },
    )
}

fn tls_client_hello() -> Vec<u8> {
    let mut m = vec![
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    m.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    m.extend_from_slice(&[0x20]);
    m.extend((0..32u8).map(|i| i.wrapping_mul(11)));
    m.extend_from_slice(&[
        0x00, 0x08, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0x00, 0xff, 0x01, 0x00,
    ]);
    m.extend_from_slice(&[
        0x00, 0x93, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x0c, 0x00, 0x00, 0x09,
    ]);
    m.extend_from_slice(b"localhost");
    m
}

fn mysql_handshake() -> Vec<u8> {
    let mut m = vec![0x4a, 0x00, 0x00, 0x00, 0x0a];
    m.extend_from_slice(b"8.0.36\0");
    m.extend_from_slice(&[0x0b, 0, 0, 0]);
    m.extend_from_slice(b"abcdefgh\0");
    m.extend_from_slice(&[0xff, 0xff, 0xff, 0x02, 0x00, 0xff, 0xdf, 0x15]);
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    m
}

fn negatives() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "http request",
            b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(),
        ),
        (
            "http response",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("tls client hello", tls_client_hello()),
        (
            "tls server hello",
            [
                &[
                    0x16, 0x03, 0x03, 0x00, 0x5a, 0x02, 0x00, 0x00, 0x56, 0x03, 0x03,
                ][..],
                &[7; 40],
            ]
            .concat(),
        ),
        ("resp ping", b"*1\r\n$4\r\nPING\r\n".to_vec()),
        (
            "resp set",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n".to_vec(),
        ),
        ("mysql handshake", mysql_handshake()),
        ("ssh banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        (
            "postgres startup",
            [
                &[0, 0, 0, 0x25, 0, 3, 0, 0][..],
                b"user\0postgres\0database\0app\0\0",
            ]
            .concat(),
        ),
        ("zeros", vec![0; 64]),
        ("ones", vec![0xff; 64]),
    ]
}

#[test]
fn queries_and_responses_are_claimed() {
    let q = query(0x4242, "example.com", A);
    let r = response(0x4242, "example.com", A, NXDOMAIN, &[]);
    for m in [&q, &r, &compressed_cname_response(9)] {
        assert_eq!(detect(Transport::Udp, m), Claim::Mine);
        assert_eq!(detect(Transport::Tcp, &tcp(m)), Claim::Mine);
    }
    // Over UDP a prefix is not a message; over TCP it is a message still coming.
    assert_eq!(detect(Transport::Udp, &q[..q.len() - 1]), Claim::NotMine);
    assert_eq!(detect(Transport::Tcp, &tcp(&q)[..10]), Claim::Undecided);
    assert_eq!(detect(Transport::Tcp, b""), Claim::Undecided);
    assert_eq!(detect(Transport::Udp, b""), Claim::Undecided);
    // A TCP length that does not frame the message.
    let mut bad = tcp(&q);
    bad[1] = bad[1].wrapping_sub(6);
    assert_eq!(detect(Transport::Tcp, &bad), Claim::NotMine);
    // An unframed message over TCP.
    assert_eq!(detect(Transport::Tcp, &q), Claim::NotMine);
    // Only the first message of a UDP segment is looked at.
    assert_eq!(
        detect(Transport::Udp, &[&q[..], b"trailing junk"].concat()),
        Claim::Mine
    );
}

#[test]
fn other_protocols_are_not_dns() {
    for (what, bytes) in negatives() {
        for transport in [Transport::Udp, Transport::Tcp] {
            assert_eq!(
                detect(transport, &bytes),
                Claim::NotMine,
                "{what} over {transport:?}"
            );
            // Every prefix too is at most undecided, never claimed.
            for n in 0..bytes.len() {
                assert_ne!(
                    detect(transport, &bytes[..n]),
                    Claim::Mine,
                    "{what} over {transport:?}, {n} bytes"
                );
            }
        }
        // Through the driver, either role, and with no records.
        for role in [Role::Client, Role::Server] {
            let mut h = H::new(conn(role, Transport::Tcp));
            h.request(1, &bytes).response(2, &bytes);
            assert_eq!(claims(&h), [Claim::NotMine], "{what}");
            assert!(h.result.records.is_empty());
        }
    }
}

#[test]
fn random_bytes_are_not_dns() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut mine = 0;
    for i in 0..20_000 {
        let n = 1 + rng.below(600) as usize;
        let bytes = rng.bytes(n);
        for transport in [Transport::Udp, Transport::Tcp] {
            if detect(transport, &bytes) == Claim::Mine {
                mine += 1;
                eprintln!("{i} {transport:?} {bytes:02x?}");
            }
        }
    }
    assert_eq!(mine, 0);
}

#[test]
fn tcp_detection_in_pieces_keeps_every_byte() {
    let q = tcp(&query(3, "pieces.example", AAAA));
    let r = tcp(&response(3, "pieces.example", AAAA, NOERROR, &[]));
    let mut h = tcp_client();
    for (i, byte) in q.iter().enumerate() {
        h.request(100 + i as u64, std::slice::from_ref(byte));
    }
    h.response(500, &r);
    assert_eq!(claims(&h), [Claim::Mine]);
    assert_eq!(
        briefs(&h),
        [b(
            "AAAA",
            0,
            None,
            (100, 500),
            (q.len() as u64, r.len() as u64)
        )]
    );
}

#[test]
fn udp_response_first_is_claimed_and_pairs_nothing() {
    let mut h = udp_client();
    h.response(1, &response(1, "early.example", A, NOERROR, &[]));
    assert_eq!(claims(&h), [Claim::Mine]);
    h.request(2, &query(2, "next.example", A))
        .response(3, &response(2, "next.example", A, NOERROR, &[]));
    assert_eq!(names(&h), ["next.example"]);
}

#[test]
fn udp_non_dns_datagram_is_not_mine() {
    let mut h = udp_client();
    h.request(1, b"\x01\x02hello there, this is not dns at all");
    assert_eq!(claims(&h), [Claim::NotMine]);
}
