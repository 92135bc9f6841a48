//! Real sessions (`tests/fixtures/*.rec`, the SDK harness recording format, recorded from the
//! client's side by `tests/fixtures/record.sh`: mosquitto 2.0 and Debian's `mosquitto_pub` /
//! `mosquitto_sub` on loopback through `record.py`) replayed through the parser, with the
//! records each must produce; then the same bytes cut at every point, fed from the broker's
//! side, with the directions of a batch swapped, with gaps, and from the middle.

use std::path::PathBuf;

use sonde_mqtt_parser::record::attr;
use sonde_mqtt_parser::{Mqtt, WAITING_MAX};
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role};

type H = Harness<Mqtt>;

const FIXTURES: [&str; 9] = [
    "pub-v311-qos0",
    "pub-v311-qos1",
    "pub-v311-qos2",
    "pub-v5-qos1",
    "pub-v5-qos2",
    "refused-v311",
    "refused-v5",
    "sub-v311",
    "sub-v5",
];

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.rec"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A recording's segments: (direction, timestamp, bytes).
type Seg = (Direction, u64, Vec<u8>);

fn segments(rec: &[u8]) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < rec.len() {
        let nl = at + rec[at..].iter().position(|b| *b == b'\n').unwrap();
        let header = std::str::from_utf8(&rec[at..nl]).unwrap();
        let f: Vec<&str> = header.split_whitespace().collect();
        if f[0] == "#" {
            at = nl + 1;
            continue;
        }
        let d = if f[0] == ">" {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let (ts, len): (u64, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        out.push((d, ts, rec[nl + 1..nl + 1 + len].to_vec()));
        at = nl + 1 + len + 1;
    }
    out
}

fn feed(mut h: H, segs: &[Seg]) -> H {
    for (d, ts, data) in segs {
        h.segment(*d, *ts, data);
    }
    h.close();
    h
}

fn replay(name: &str) -> H {
    let mut h = H::client();
    h.replay(&fixture(name)).unwrap();
    h.close();
    h
}

/// (operation, status, error, topic) of a record.
type View = (String, u32, Option<String>, Option<String>);

fn view(records: &[RequestRecord]) -> Vec<View> {
    records
        .iter()
        .map(|r| {
            (
                r.operation.clone(),
                r.status,
                r.error.clone(),
                r.attr(attr::DESTINATION).map(str::to_string),
            )
        })
        .collect()
}

fn v(op: &str, status: u32, error: Option<&str>, topic: Option<&str>) -> View {
    (
        op.into(),
        status,
        error.map(str::to_string),
        topic.map(str::to_string),
    )
}

fn ok(op: &str, topic: Option<&str>) -> View {
    v(op, 0, None, topic)
}

/// The records every fixture must produce.
fn expected(name: &str) -> Vec<View> {
    let temp = Some("sensors/temp");
    let hum = Some("sensors/humidity");
    match name {
        "pub-v311-qos0" => vec![ok("connect", None), ok("publish qos0", temp)],
        "pub-v311-qos1" | "pub-v5-qos1" => vec![
            ok("connect", None),
            ok("publish", temp),
            ok("publish", temp),
            ok("publish", temp),
        ],
        "pub-v311-qos2" => vec![
            ok("connect", None),
            ok("publish", hum),
            ok("publish release", hum),
        ],
        "pub-v5-qos2" => vec![
            ok("connect", None),
            ok("publish", hum),
            ok("publish", hum),
            ok("publish release", hum),
            ok("publish release", hum),
        ],
        "refused-v311" => vec![v("connect", 5, Some("not-authorized"), None)],
        "refused-v5" => vec![v("connect", 0x87, Some("not-authorized"), None)],
        "sub-v311" => vec![
            ok("connect", None),
            ok("subscribe", Some("news/b")),
            ok("deliver qos0", Some("news/b")),
            ok("deliver", Some("news/b")),
            ok("deliver", Some("news/b")),
            ok("deliver release", Some("news/b")),
        ],
        "sub-v5" => {
            let a = Some("news/a");
            let mut r = vec![
                ok("connect", None),
                ok("subscribe", a),
                ok("unsubscribe", Some("old/topic")),
                ok("deliver", a),
                ok("deliver", a),
                ok("deliver release", a),
            ];
            // Pings while idle between the messages (keep alive 5 s, 6 s apart).
            let pings = segments(&fixture(name))
                .iter()
                .filter(|(d, _, b)| *d == Direction::Egress && b.first() == Some(&0xc0))
                .count();
            assert!(pings >= 1, "the recording has a ping");
            r.extend((0..pings).map(|_| ok("ping", None)));
            r.push(ok("deliver", a));
            r
        }
        other => panic!("no expectation for {other}"),
    }
}

/// Records in a canonical order (pings interleave with deliveries by timing).
fn sorted(mut r: Vec<View>) -> Vec<View> {
    r.sort();
    r
}

#[test]
fn every_fixture_gives_its_exact_records() {
    for name in FIXTURES {
        let h = replay(name);
        let r = &h.result.records;
        assert_eq!(sorted(view(r)), sorted(expected(name)), "{name}");
        assert_eq!(h.claims(), vec![Claim::Mine], "{name}");
        for rec in r {
            assert_eq!(rec.protocol, "mqtt");
            assert_eq!(rec.attr(attr::SYSTEM), Some("mqtt"));
            assert_eq!(rec.attr(attr::OPERATION), Some(rec.operation.as_str()));
            assert!(
                rec.request_ts_ns > 0 && rec.request_bytes > 0,
                "{name}: {rec:?}"
            );
            if rec.operation.ends_with("qos0") {
                // One-way: no duration, no response.
                assert_eq!(rec.response_ts_ns, rec.request_ts_ns, "{name}");
                assert_eq!(rec.response_bytes, 0, "{name}");
            } else {
                assert!(rec.response_ts_ns > rec.request_ts_ns, "{name}: {rec:?}");
                assert!(rec.response_bytes >= 2, "{name}: {rec:?}");
            }
        }
    }
}

#[test]
fn exact_timing_and_sizes_of_a_qos2_publish() {
    let h = replay("pub-v311-qos2");
    let b = h.briefs();
    // CONNECT 14 bytes → CONNACK 4; PUBLISH 24 → PUBREC 4; PUBREL 4 → PUBCOMP 4.
    assert_eq!(
        (
            b[0].request_ts,
            b[0].response_ts,
            b[0].request_bytes,
            b[0].response_bytes
        ),
        (1_000_000, 1_081_906, 14, 4)
    );
    assert_eq!(
        (
            b[1].request_ts,
            b[1].response_ts,
            b[1].request_bytes,
            b[1].response_bytes
        ),
        (1_107_747, 1_126_646, 24, 4)
    );
    assert_eq!(
        (
            b[2].request_ts,
            b[2].response_ts,
            b[2].request_bytes,
            b[2].response_bytes
        ),
        (1_138_590, 1_155_291, 4, 4)
    );
}

#[test]
fn cut_at_every_point_gives_the_same_records() {
    for name in FIXTURES {
        let segs = segments(&fixture(name));
        let whole = view(&replay(name).result.records);
        for i in 0..segs.len() {
            let (d, ts, data) = &segs[i];
            for cut in 1..data.len() {
                let mut split = segs[..i].to_vec();
                split.push((*d, *ts, data[..cut].to_vec()));
                split.push((*d, *ts, data[cut..].to_vec()));
                split.extend_from_slice(&segs[i + 1..]);
                let h = feed(H::client(), &split);
                assert_eq!(
                    view(&h.result.records),
                    whole,
                    "{name}: segment {i} cut at {cut}"
                );
            }
        }
        // And byte by byte, everything.
        let bytes: Vec<Seg> = segs
            .iter()
            .flat_map(|(d, ts, data)| data.iter().map(move |b| (*d, *ts, vec![*b])))
            .collect();
        assert_eq!(
            view(&feed(H::client(), &bytes).result.records),
            whole,
            "{name}: bytewise"
        );
    }
}

#[test]
fn the_brokers_side_sees_the_same_exchanges() {
    for name in FIXTURES {
        let flipped: Vec<Seg> = segments(&fixture(name))
            .into_iter()
            .map(|(d, ts, b)| {
                let d = match d {
                    Direction::Egress => Direction::Ingress,
                    Direction::Ingress => Direction::Egress,
                };
                (d, ts, b)
            })
            .collect();
        let whole = view(&replay(name).result.records);
        assert_eq!(
            view(&feed(H::server(), &flipped).result.records),
            whole,
            "{name}"
        );
        // Role unknown: the CONNECT tells which side is the client.
        let unknown = H::new(ConnInfo {
            id: 1,
            role: Role::Unknown,
            ..Default::default()
        });
        assert_eq!(
            view(&feed(unknown, &flipped).result.records),
            whole,
            "{name}: unknown role"
        );
    }
}

#[test]
fn acknowledgements_fed_before_their_requests_still_pair() {
    // The daemon may feed a batch's ingress before its egress: swap each request segment
    // with the response after it.
    for name in FIXTURES {
        let mut segs = segments(&fixture(name));
        let mut i = 1;
        while i + 1 < segs.len() {
            if segs[i].0 == Direction::Egress && segs[i + 1].0 == Direction::Ingress {
                segs.swap(i, i + 1);
                i += 2;
            } else {
                i += 1;
            }
        }
        let whole = sorted(view(&replay(name).result.records));
        let h = feed(H::client(), &segs);
        assert_eq!(sorted(view(&h.result.records)), whole, "{name}");
    }
}

#[test]
fn a_lost_acknowledgement_is_truncated_and_the_rest_pair() {
    // pub-v311-qos1: the PUBACK of message 2 lost in a gap.
    let segs = segments(&fixture("pub-v311-qos1"));
    let mut h = H::client();
    for (d, ts, data) in &segs {
        if *d == Direction::Ingress && data.as_slice() == b"\x40\x02\x00\x02" {
            h.gap(Direction::Ingress, data.len() as u64);
            continue;
        }
        h.segment(*d, *ts, data);
    }
    h.close();
    let temp = Some("sensors/temp");
    assert_eq!(
        view(&h.result.records),
        vec![
            ok("connect", None),
            ok("publish", temp),
            ok("publish", temp),
            v("publish", 0, Some("truncated"), temp),
        ]
    );
    // The one truncated is message 2 (sent with message 3, answered never).
    let lost = &h.result.records[3];
    assert_eq!(lost.response_ts_ns, 0);
}

#[test]
fn a_gap_inside_a_large_payload_keeps_the_framing() {
    // A QoS 1 PUBLISH of 100 000 bytes, 50 000 of them lost in the middle.
    let mut h = H::client();
    h.request(1, b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd");
    h.response(2, b"\x20\x02\x00\x00");
    let payload = 100_000usize;
    let rem = 2 + 3 + 2 + payload;
    let mut head = vec![0x32];
    let mut n = rem;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        head.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    head.extend_from_slice(b"\x00\x03big\x00\x09");
    let body = vec![b'x'; payload];
    h.request(3, &[head.as_slice(), &body[..20_000]].concat());
    h.gap(Direction::Egress, 50_000);
    h.request(4, &body[70_000..]);
    h.response(5, b"\x40\x02\x00\x09");
    h.request(6, b"\xc0\x00");
    h.response(7, b"\xd0\x00");
    h.close();
    assert_eq!(
        view(&h.result.records),
        vec![
            ok("connect", None),
            ok("publish", Some("big")),
            ok("ping", None)
        ]
    );
    let b = h.briefs();
    assert_eq!((b[1].request_ts, b[1].response_ts), (3, 5));
    assert_eq!(b[1].request_bytes, (head.len() + payload) as u64);
}

#[test]
fn a_gap_that_breaks_the_framing_resumes_at_the_next_packet() {
    // Egress bytes lost across a packet boundary: the next segment starts a packet. The
    // PUBLISH cut by the gap is not reported (its end was never seen); its PUBACK pairs
    // nothing.
    let mut h = H::client();
    h.request(1, b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd");
    h.response(2, b"\x20\x02\x00\x00");
    h.request(3, b"\x32\x0a\x00\x01t\x00\x01hel");
    h.gap(Direction::Egress, 200);
    // Not a packet start (mid-payload bytes): skipped.
    h.request(4, b"\xffgarbage");
    h.request(5, b"\x32\x06\x00\x01t\x00\x02h");
    h.response(6, b"\x40\x02\x00\x01\x40\x02\x00\x02");
    h.close();
    let t = Some("t");
    assert_eq!(
        view(&h.result.records),
        vec![ok("connect", None), ok("publish", t)]
    );
}

#[test]
fn picked_up_mid_stream_is_not_claimed() {
    for name in ["pub-v311-qos1", "sub-v5"] {
        let segs = segments(&fixture(name));
        // Everything after the CONNECT and CONNACK.
        let h = feed(H::client(), &segs[2..]);
        assert!(h.result.records.is_empty(), "{name}");
        assert_eq!(h.claims(), vec![Claim::NotMine], "{name}");
    }
}

#[test]
fn requests_in_flight_at_close_are_no_response_and_bounded() {
    let mut h = H::client();
    h.request(1, b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd");
    h.response(2, b"\x20\x02\x00\x00");
    let n = WAITING_MAX + 10;
    for id in 1..=n as u16 {
        let mut p = b"\x32\x06\x00\x01t".to_vec();
        p.extend_from_slice(&id.to_be_bytes());
        p.push(b'x');
        h.request(10 + u64::from(id), &p);
    }
    // Overflow reports the oldest at once.
    assert_eq!(h.result.records.len(), 1 + 10);
    h.close();
    let r = &h.result.records;
    assert_eq!(r.len(), 1 + n);
    assert!(
        r[1..]
            .iter()
            .all(|r| r.error.as_deref() == Some("no-response"))
    );
}

#[test]
fn failures_carry_their_code() {
    // MQTT 5: a SUBACK refusing the second filter (0x87), a PUBACK with 0x97 (quota exceeded).
    let mut h = H::client();
    h.request(1, b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x04abcd");
    h.response(2, b"\x20\x03\x00\x00\x00");
    h.request(3, b"\x82\x0b\x00\x07\x00\x00\x01a\x01\x00\x01b\x01");
    h.response(4, b"\x90\x05\x00\x07\x00\x01\x87");
    h.request(5, b"\x32\x07\x00\x01a\x00\x08\x00x");
    h.response(6, b"\x40\x04\x00\x08\x97\x00");
    h.close();
    assert_eq!(
        view(&h.result.records),
        vec![
            ok("connect", None),
            v("subscribe", 0x87, Some("not-authorized"), Some("a")),
            v("publish", 0x97, Some("quota-exceeded"), Some("a")),
        ]
    );
}

#[test]
fn malformed_input_never_panics() {
    // Every prefix and every single-byte corruption of every fixture, fed as one stream.
    for name in FIXTURES {
        let segs = segments(&fixture(name));
        for i in 0..segs.len() {
            for pos in 0..segs[i].2.len() {
                for flip in [0xffu8, 0x80, 0x01] {
                    let mut s = segs.clone();
                    s[i].2[pos] ^= flip;
                    let _ = feed(H::client(), &s);
                }
            }
        }
    }
}

/// The fuzz seeds (`fuzz/corpus/conversation/<recording>-<0 client|1 server>`, in the format
/// of `Harness::feed_arbitrary`) are the recordings: written from them here
/// (`SONDE_WRITE_FIXTURES=1` rewrites them), and fed as the fuzzer feeds them, they give the
/// recordings' records.
#[test]
fn fuzz_seeds_are_the_recordings() {
    use sonde_sdk::protocol_parser::harness::check_fixture;
    for name in FIXTURES {
        let whole = sorted(view(&replay(name).result.records));
        for (variant, role) in [(0u8, Role::Client), (1, Role::Server)] {
            let mut seed = vec![variant];
            for (d, _, data) in segments(&fixture(name)) {
                // Bit 0: ingress as the observed process sees it.
                let from_client = d == Direction::Egress;
                let control = u8::from(from_client == (role == Role::Server));
                for chunk in data.chunks(255) {
                    seed.push(control);
                    seed.push(chunk.len() as u8);
                    seed.extend_from_slice(chunk);
                }
            }
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("fuzz/corpus/conversation/{name}-{variant}"));
            check_fixture(&path, &seed).unwrap();
            let mut h = H::new(ConnInfo {
                id: 1,
                role,
                ..Default::default()
            });
            h.feed_arbitrary(&seed[1..]);
            h.close();
            assert_eq!(sorted(view(&h.result.records)), whole, "{name}-{variant}");
        }
    }
}

#[test]
fn mqtt5_topic_aliases_name_the_destination() {
    let mut h = H::client();
    h.request(1, b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x04abcd");
    h.response(2, b"\x20\x03\x00\x00\x00");
    // QoS 1, topic "a/b", id 1, properties: topic alias 3; then topic "" with alias 3; then
    // QoS 0 with an alias never set: no destination.
    // One segment: the framing must hold across all three.
    h.request(
        3,
        b"\x32\x0c\x00\x03a/b\x00\x01\x03\x23\x00\x03x\
          \x32\x09\x00\x00\x00\x02\x03\x23\x00\x03y\
          \x30\x06\x00\x00\x03\x23\x00\x09",
    );
    h.response(6, b"\x40\x02\x00\x01\x40\x02\x00\x02");
    // The broker's aliases are its own: alias 3 from the broker is not the client's.
    h.response(7, b"\x30\x06\x00\x00\x03\x23\x00\x03");
    h.close();
    let ab = Some("a/b");
    assert_eq!(
        view(&h.result.records),
        vec![
            ok("connect", None),
            ok("publish qos0", None),
            ok("publish", ab),
            ok("publish", ab),
            ok("deliver qos0", None),
        ]
    );
}
