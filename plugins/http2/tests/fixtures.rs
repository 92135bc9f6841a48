//! Real sessions recorded from real clients and servers (see fixtures/record.py), replayed
//! through the SDK harness the way the daemon feeds the parser: whole, re-cut at every split,
//! with the directions out of order, with gaps, and joined mid-stream.

use std::path::Path;

use sonde_http2_parser::Http2;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Direction, RequestRecord};

mod common;
use common::{Item, Ops, load, op, ops, server_side_first};

fn replay(items: &[Item]) -> Vec<RequestRecord> {
    let mut h = Harness::<Http2>::client();
    for it in items {
        match it {
            Item::Seg(d, ts, data) => {
                h.segment(*d, *ts, data);
            }
            Item::Gap(d, len) => {
                h.gap(*d, *len);
            }
        }
    }
    h.close();
    h.result.records
}

fn nghttp_expected() -> Ops {
    let mut v = vec![
        op("GET /api/users/{id}", 200, None),
        op("GET /big.txt", 200, None),
        op("GET /index.html", 200, None),
        op("GET /missing", 404, Some("client-error")),
    ];
    v.sort();
    v
}

fn grpc_expected() -> Ops {
    let mut v = vec![
        op("/sonde.test.Greeter/SayHello", 0, None),
        op("/sonde.test.Greeter/SayHello", 0, None),
        op("/sonde.test.Greeter/Count", 0, None),
        op("/sonde.test.Greeter/Count", 0, None),
        op("/sonde.test.Greeter/SayHello", 5, Some("NOT_FOUND")),
    ];
    v.sort();
    v
}

fn h2load_expected() -> Ops {
    vec![op("GET /index.html", 200, None); 30]
}

/// The timestamp of the segment holding byte `offset` of direction `dir`'s stream.
fn ts_at(items: &[Item], dir: Direction, offset: usize) -> u64 {
    let mut at = 0;
    for it in items {
        if let Item::Seg(d, ts, data) = it
            && *d == dir
        {
            if offset < at + data.len() {
                return *ts;
            }
            at += data.len();
        }
    }
    panic!("offset {offset} past the end");
}

/// Byte offset, in direction `dir`'s stream, of the first frame of `kind` on `stream`, and
/// of the end of the last one.
fn frame_span(
    items: &[Item],
    dir: Direction,
    preface: bool,
    kind: u8,
    stream: u32,
) -> (usize, usize) {
    let bytes = common::direction_bytes(items, dir);
    let mut at = if preface { 24 } else { 0 };
    let (mut first, mut end) = (None, 0);
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let id = u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
        if bytes[at + 3] == kind && id == stream {
            first.get_or_insert(at);
            end = at + 9 + len - 1;
        }
        at += 9 + len;
    }
    (first.unwrap(), end)
}

#[test]
fn nghttp_session_whole() {
    let items = load("nghttp-session.rec");
    let records = replay(&items);
    assert_eq!(ops(&records), nghttp_expected());
    for r in &records {
        assert_eq!(r.protocol, "http");
        assert_eq!(r.attr("network.protocol.version"), Some("2"));
        assert_eq!(r.attr("http.version"), Some("2"));
        assert_eq!(r.attr("server.address"), Some("127.0.0.1"));
        assert_eq!(r.attr("server.port"), Some("18081"));
        assert!(
            r.attr("user_agent.original")
                .unwrap()
                .starts_with("nghttp2/")
        );
    }
    let user = records
        .iter()
        .find(|r| r.operation == "GET /api/users/{id}")
        .unwrap();
    assert_eq!(user.attr("url.path"), Some("/api/users/12345"));
    // Timestamps: the request at its HEADERS' first byte, the response at the segment with
    // its END_STREAM (the big body's last DATA frame). Stream 15 is /big.txt.
    let big = records
        .iter()
        .find(|r| r.operation == "GET /big.txt")
        .unwrap();
    let (headers_at, _) = frame_span(&items, Direction::Egress, true, 1, 15);
    let (_, data_end) = frame_span(&items, Direction::Ingress, false, 0, 15);
    assert_eq!(
        big.request_ts_ns,
        ts_at(&items, Direction::Egress, headers_at)
    );
    assert_eq!(
        big.response_ts_ns,
        ts_at(&items, Direction::Ingress, data_end)
    );
    assert!(big.response_bytes > 54_038, "{}", big.response_bytes);
}

#[test]
fn grpc_session_whole() {
    let records = replay(&load("grpc-session.rec"));
    assert_eq!(ops(&records), grpc_expected());
    for r in &records {
        assert_eq!(r.protocol, "grpc");
        assert_eq!(r.attr("rpc.system"), Some("grpc"));
        assert_eq!(r.attr("rpc.service"), Some("sonde.test.Greeter"));
        let method = r.operation.rsplit('/').next().unwrap();
        assert_eq!(r.attr("rpc.method"), Some(method));
        assert_eq!(
            r.attr("rpc.grpc.status_code"),
            Some(r.status.to_string().as_str())
        );
        assert!(r.response_ts_ns > r.request_ts_ns);
    }
    let failed = records.iter().find(|r| r.status == 5).unwrap();
    assert_eq!(
        failed.attr("rpc.grpc.status_message"),
        Some("no such greeting")
    );
}

#[test]
fn h2load_interleaved_streams() {
    let items = load("h2load-interleaved.rec");
    assert_eq!(ops(&replay(&items)), h2load_expected());
}

#[test]
fn post_with_a_body() {
    let records = replay(&load("nghttp-post.rec"));
    assert_eq!(ops(&records), [op("POST /api/users/{id}", 200, None)]);
    assert!(
        records[0].request_bytes > 19,
        "the body's DATA frame counts"
    );
}

/// Every fixture, each segment cut in two at every byte (a stride for the big one): the same
/// records.
#[test]
fn every_split_gives_the_same_records() {
    let cases = [
        ("grpc-session.rec", grpc_expected as fn() -> Ops, 1),
        ("h2load-interleaved.rec", h2load_expected, 1),
        ("nghttp-session.rec", nghttp_expected, 211),
    ];
    for (name, expected, stride) in cases {
        let items = load(name);
        let expected = expected();
        for (i, it) in items.iter().enumerate() {
            let Item::Seg(d, ts, data) = it else { continue };
            for cut in (1..data.len()).step_by(stride) {
                let mut recut = items[..i].to_vec();
                recut.push(Item::Seg(*d, *ts, data[..cut].to_vec()));
                recut.push(Item::Seg(*d, *ts, data[cut..].to_vec()));
                recut.extend_from_slice(&items[i + 1..]);
                assert_eq!(
                    ops(&replay(&recut)),
                    expected,
                    "{name}: segment {i} cut at {cut}"
                );
            }
        }
    }
}

/// Each direction in one piece, responses first: a batch may hold one direction's segments
/// before the other's, and pairing is by stream id, not by order of arrival.
#[test]
fn directions_out_of_order() {
    for (name, expected) in [
        ("nghttp-session.rec", nghttp_expected()),
        ("grpc-session.rec", grpc_expected()),
        ("h2load-interleaved.rec", h2load_expected()),
    ] {
        let reordered = server_side_first(&load(name));
        assert_eq!(ops(&replay(&reordered)), expected, "{name}");
    }
}

/// A gap inside a response body (DATA): frames stay in step, nothing is lost.
#[test]
fn a_gap_inside_a_body_costs_nothing() {
    let items = load("nghttp-session.rec");
    let big = items
        .iter()
        .position(|it| matches!(it, Item::Seg(Direction::Ingress, _, d) if d.len() > 40_000))
        .unwrap();
    let Item::Seg(d, ts, data) = &items[big] else {
        unreachable!()
    };
    // Lose 10000 bytes inside the first large DATA frame of the segment.
    let mut at = 0;
    let keep = loop {
        let len = u32::from_be_bytes([0, data[at], data[at + 1], data[at + 2]]) as usize;
        if data[at + 3] == 0 && len > 12_000 {
            break at + 9 + 100;
        }
        at += 9 + len;
    };
    let lose = 10_000;
    let mut gapped = items[..big].to_vec();
    gapped.push(Item::Seg(*d, *ts, data[..keep].to_vec()));
    gapped.push(Item::Gap(*d, lose as u64));
    gapped.push(Item::Seg(*d, *ts, data[keep + lose..].to_vec()));
    gapped.extend_from_slice(&items[big + 1..]);
    assert_eq!(ops(&replay(&gapped)), nghttp_expected());
}

/// Records are right or say why not: never another request's headers.
fn never_wrong(records: &[RequestRecord], good: &[(String, u32, Option<String>)]) -> usize {
    let mut refused = 0;
    for r in records {
        let o = (r.operation.clone(), r.status, r.error.clone());
        match r.error.as_deref() {
            Some("hpack-desync" | "truncated" | "no-response") => {
                assert_eq!(r.status, 0, "{r:?}");
                assert!(
                    r.operation == "_OTHER" || good.iter().any(|g| g.0 == r.operation),
                    "{r:?}"
                );
                refused += 1;
            }
            _ => assert!(good.contains(&o), "wrong record {r:?}"),
        }
    }
    refused
}

/// Lost response bytes across frames: HPACK of that direction desynchronises; the streams
/// waiting are reported truncated, later blocks that need lost table entries hpack-desync,
/// and every request is still reported once.
#[test]
fn a_gap_across_frames_never_gives_wrong_headers() {
    for name in [
        "h2load-interleaved.rec",
        "grpc-session.rec",
        "nghttp-session.rec",
    ] {
        let items = load(name);
        let good = match name {
            "h2load-interleaved.rec" => h2load_expected(),
            "grpc-session.rec" => grpc_expected(),
            _ => nghttp_expected(),
        };
        let ingress: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| matches!(it, Item::Seg(Direction::Ingress, ..)))
            .map(|(i, _)| i)
            .collect();
        let mut desynced = 0;
        for &lost in &ingress[1..] {
            let mut gapped = items.clone();
            if let Item::Seg(d, _, data) = &items[lost] {
                gapped[lost] = Item::Gap(*d, data.len() as u64);
            }
            let records = replay(&gapped);
            desynced += never_wrong(&records, &good);
            assert!(records.len() <= good.len(), "{name}: {records:?}");
        }
        assert!(desynced > 0, "{name}: losing responses must show");
    }
}

/// A first write cut by the capture (it copies at most 16 iovecs of a sendmsg, and gRPC's
/// C core writes its preface, settings and first request in 29): the first request's headers,
/// which fill the dynamic table, are lost. Every later request needs that table: each RPC is
/// still reported once, refused (`hpack-desync`) or `truncated`, never with wrong headers.
#[test]
fn a_first_write_cut_by_the_capture() {
    let mut items = load("grpc-session.rec");
    // The write with the first request (the proxy read the preface and settings apart).
    let first = items
        .iter()
        .position(|it| matches!(it, Item::Seg(Direction::Egress, _, d) if d.len() > 200))
        .unwrap();
    let Item::Seg(d, ts, data) = items[first].clone() else {
        unreachable!()
    };
    let keep = 20;
    items[first] = Item::Seg(d, ts, data[..keep].to_vec());
    items.insert(first + 1, Item::Gap(d, (data.len() - keep) as u64));
    let records = replay(&items);
    assert_eq!(records.len(), grpc_expected().len(), "{records:?}");
    assert_eq!(never_wrong(&records, &grpc_expected()), records.len());
    assert!(
        records
            .iter()
            .any(|r| r.error.as_deref() == Some("hpack-desync"))
    );
}

/// Joined mid-connection: from the k-th segment of each direction on. What the parser reports
/// is right, or refused (hpack-desync) when it needs table entries it never saw.
#[test]
fn joined_mid_stream_never_gives_wrong_headers() {
    let mut refused = 0;
    let mut right = 0;
    for name in ["h2load-interleaved.rec", "grpc-session.rec"] {
        let items = load(name);
        let good = match name {
            "h2load-interleaved.rec" => h2load_expected(),
            _ => grpc_expected(),
        };
        for skip in 1..items.len() {
            let records = replay(&items[skip..]);
            refused += never_wrong(&records, &good);
            right += records.iter().filter(|r| r.error.is_none()).count();
        }
    }
    assert!(refused > 0, "some blocks need the lost table");
    assert!(right > 0, "some use only what was seen");
}

/// A recording in the fuzzer's input format (`Harness::feed_arbitrary`): the role byte, then
/// chunks of at most 255 bytes, bit 0 of each chunk's control byte its direction (0 egress).
/// Seen from the server (`server`), the directions swap.
fn fuzz_seed(items: &[Item], server: bool) -> Vec<u8> {
    let mut seed = vec![u8::from(server)];
    for it in items {
        let Item::Seg(d, _, data) = it else { continue };
        let ingress = (*d == Direction::Ingress) != server;
        for chunk in data.chunks(255) {
            seed.push(u8::from(ingress));
            seed.push(chunk.len() as u8);
            seed.extend_from_slice(chunk);
        }
    }
    seed
}

/// The fuzz seeds (`fuzz/corpus/conversation/<recording>-<0 client|1 server>`) are the
/// recordings (SONDE_WRITE_FIXTURES=1 rewrites them): fed as the fuzzer feeds them, they give
/// the recordings' records.
#[test]
fn fuzz_seeds_are_the_recordings() {
    use sonde_sdk::protocol_parser::harness::check_fixture;
    use sonde_sdk::protocol_parser::{ConnInfo, Role};
    for (name, expected) in [
        ("grpc-session", grpc_expected()),
        ("h2load-interleaved", h2load_expected()),
        ("nghttp-post", vec![op("POST /api/users/{id}", 200, None)]),
    ] {
        let items = load(&format!("{name}.rec"));
        for (variant, role) in [(0u8, Role::Client), (1, Role::Server)] {
            let seed = fuzz_seed(&items, variant == 1);
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("fuzz/corpus/conversation/{name}-{variant}"));
            check_fixture(&path, &seed).unwrap();
            let mut h = Harness::<Http2>::new(ConnInfo {
                id: 1,
                role,
                ..Default::default()
            });
            h.feed_arbitrary(&seed[1..]);
            h.close();
            assert_eq!(ops(&h.result.records), expected, "{name}-{variant}");
        }
    }
}
