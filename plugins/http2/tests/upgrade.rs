//! h2c by `Upgrade: h2c` (RFC 7540 §3.2): a real session (`nghttp -u` against nghttpd behind
//! `fixtures/h2c_upgrade.py`, recorded by `fixtures/record.py`) replayed whole, re-cut at
//! every split, responses first and with gaps; a refused upgrade; and the split with the
//! HTTP/1 parser: it declines exactly what this parser claims.

use sonde_http_parser::Http as HttpParser;
use sonde_http2_parser::Http2;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, Direction, ProtocolParser, RequestRecord};

mod common;
use common::{Item, Ops, load, op, ops, server_side_first};

fn replay_with<P: ProtocolParser>(items: &[Item]) -> (Vec<RequestRecord>, Vec<Claim>) {
    let mut h = Harness::<P>::client();
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
    let claims = h.claims();
    (h.result.records, claims)
}

fn replay(items: &[Item]) -> Vec<RequestRecord> {
    replay_with::<Http2>(items).0
}

/// Stream 1 is the upgrade request, answered on stream 1 after the 101; two more streams.
fn expected() -> Ops {
    let mut v = vec![
        op("GET /index.html", 200, None),
        op("GET /b.txt", 200, None),
        op("GET /missing", 404, Some("client-error")),
    ];
    v.sort();
    v
}

const REC: &str = "nghttp-upgrade.rec";

fn seg(items: &[Item], i: usize) -> (Direction, u64, &[u8]) {
    match &items[i] {
        Item::Seg(d, ts, data) => (*d, *ts, data),
        Item::Gap(..) => unreachable!(),
    }
}

#[test]
fn the_upgrade_session_whole() {
    let items = load(REC);
    let (head_dir, head_ts, head) = seg(&items, 0);
    assert_eq!(head_dir, Direction::Egress);
    assert!(head.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    assert!(seg(&items, 1).2.starts_with(b"HTTP/1.1 101 "));
    let (records, claims) = replay_with::<Http2>(&items);
    assert_eq!(claims, [Claim::Mine]);
    assert_eq!(ops(&records), expected());
    for r in &records {
        assert_eq!(r.protocol, "http");
        assert_eq!(r.attr("network.protocol.version"), Some("2"));
        assert_eq!(r.attr("server.address"), Some("127.0.0.1"));
        assert_eq!(r.attr("server.port"), Some("18093"));
        assert!(
            r.attr("user_agent.original")
                .unwrap()
                .starts_with("nghttp2/")
        );
        assert!(r.response_ts_ns > r.request_ts_ns, "{r:?}");
    }
    // Stream 1: the HTTP/1.1 request (its head's bytes and segment), the 101 and its
    // HEADERS and DATA on the server's side.
    let first = records
        .iter()
        .find(|r| r.operation == "GET /index.html")
        .unwrap();
    assert_eq!(first.request_ts_ns, head_ts);
    // The head, and the PRIORITY frame nghttp sends on stream 1 after the preface.
    assert_eq!(first.request_bytes, head.len() as u64 + 9 + 5);
    let switch = seg(&items, 1).2.len() as u64;
    assert!(first.response_bytes > switch + 9 + 22, "{first:?}");
    // Nothing of it for the HTTP/1 parser: it declines on the same bytes.
    let (h1, h1_claims) = replay_with::<HttpParser>(&items);
    assert_eq!((h1.len(), h1_claims), (0, vec![Claim::NotMine]));
}

/// Every segment cut in two at every byte: the same records. The request head cut after
/// `GET ` still upgrades; cut later, the HTTP/1 parser has claimed the request line already,
/// so this parser declines it and the HTTP/1 parser reports it (one record, never two).
#[test]
fn every_split_gives_the_same_records() {
    let items = load(REC);
    for (i, it) in items.iter().enumerate() {
        let Item::Seg(d, ts, data) = it else { continue };
        for cut in 1..data.len() {
            let mut recut = items[..i].to_vec();
            recut.push(Item::Seg(*d, *ts, data[..cut].to_vec()));
            recut.push(Item::Seg(*d, *ts, data[cut..].to_vec()));
            recut.extend_from_slice(&items[i + 1..]);
            let h2 = replay(&recut);
            let (h1, _) = replay_with::<HttpParser>(&recut);
            if i == 0 && cut > 4 {
                assert_eq!(h2, [], "cut at {cut}");
                assert_eq!(ops(&h1), [op("GET /index.html", 101, None)], "cut at {cut}");
            } else {
                assert_eq!(ops(&h2), expected(), "segment {i} cut at {cut}");
                assert_eq!(h1, [], "segment {i} cut at {cut}");
            }
        }
    }
}

/// Each direction in one piece, the server's first (a batch may feed it first): both
/// parsers wait for the request, which decides.
#[test]
fn the_server_side_first() {
    let reordered = server_side_first(&load(REC));
    assert_eq!(ops(&replay(&reordered)), expected());
    assert_eq!(replay_with::<HttpParser>(&reordered).0, []);
}

/// A gap inside stream 1's DATA costs nothing; a gap that hides the whole 101 loses only its
/// bytes: the frames after it are believable and the server's table starts with them.
#[test]
fn gaps() {
    let items = load(REC);
    // The server's segment with stream 1's DATA (22 bytes of body).
    let i = items
        .iter()
        .position(|it| matches!(it, Item::Seg(Direction::Ingress, _, d) if d.len() > 100))
        .unwrap();
    let (d, ts, data) = seg(&items, i);
    let mut at = 0;
    let keep = loop {
        let len = u32::from_be_bytes([0, data[at], data[at + 1], data[at + 2]]) as usize;
        let stream = u32::from_be_bytes([data[at + 5], data[at + 6], data[at + 7], data[at + 8]]);
        if data[at + 3] == 0 && stream == 1 {
            assert_eq!(len, 22);
            break at + 9 + 5;
        }
        at += 9 + len;
    };
    let mut gapped = items[..i].to_vec();
    gapped.push(Item::Seg(d, ts, data[..keep].to_vec()));
    gapped.push(Item::Gap(d, 10));
    gapped.push(Item::Seg(d, ts, data[keep + 10..].to_vec()));
    gapped.extend_from_slice(&items[i + 1..]);
    assert_eq!(ops(&replay(&gapped)), expected());

    // Bytes lost before the request head (the capture started late): not ours anyway.
    let mut late = vec![Item::Gap(Direction::Egress, 7)];
    late.extend_from_slice(&items);
    assert_eq!(ops(&replay(&late)), expected());

    let (d, _, switch) = seg(&items, 1);
    let mut lost_101 = items.clone();
    lost_101[1] = Item::Gap(d, switch.len() as u64);
    assert_eq!(ops(&replay(&lost_101)), expected());
}

const UPGRADE: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: shop:8080\r\n\
    Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\
    User-Agent: curl/7.88.1\r\n\r\n";

/// A server that does not upgrade answers in HTTP/1.1: that exchange is reported as the
/// HTTP/1.1 exchange it is, and the connection given up (`Finished`).
#[test]
fn a_refused_upgrade_is_an_http1_exchange() {
    let mut h = Harness::<Http2>::client();
    h.request(10, UPGRADE);
    h.response(20, b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno");
    h.request(30, b"GET /next HTTP/1.1\r\nHost: shop:8080\r\n\r\n");
    h.close();
    assert_eq!(h.claims(), [Claim::Mine, Claim::Finished]);
    let r = &h.result.records;
    assert_eq!(ops(r), [op("GET /index.html", 404, Some("client-error"))]);
    assert_eq!(r[0].attr("http.version"), Some("1.1"));
    assert_eq!(r[0].attr("network.protocol.version"), Some("1.1"));
    assert_eq!(r[0].attr("server.address"), Some("shop"));
    assert_eq!(r[0].attr("server.port"), Some("8080"));
    assert_eq!(r[0].attr("user_agent.original"), Some("curl/7.88.1"));
    assert_eq!((r[0].request_ts_ns, r[0].response_ts_ns), (10, 20));
    assert_eq!(r[0].request_bytes, UPGRADE.len() as u64);

    // 100 Continue first, then a refusal; and a server that never answers.
    let mut h = Harness::<Http2>::client();
    h.request(10, UPGRADE);
    h.response(15, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n");
    h.response(20, b"Content-Length: 0\r\n\r\n");
    assert_eq!(ops(&h.result.records), [op("GET /index.html", 200, None)]);
    let mut h = Harness::<Http2>::client();
    h.request(10, UPGRADE).close();
    assert_eq!(
        ops(&h.result.records),
        [op("GET /index.html", 0, Some("no-response"))]
    );
    assert_eq!(h.result.records[0].attr("http.version"), Some("1.1"));
}

/// An ordinary HTTP/1.1 GET (or another upgrade) is declined by this parser, at once, and
/// still parsed by the HTTP/1 parser.
#[test]
fn plain_http1_is_declined_and_left_to_http1() {
    for req in [
        &b"GET /users/7 HTTP/1.1\r\nHost: shop\r\nUser-Agent: curl\r\n\r\n"[..],
        b"GET /chat HTTP/1.1\r\nHost: shop\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: shop\r\nUpgrade: h2c\r\n\r\n",
    ] {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut h2 = Harness::<Http2>::client();
        h2.request(1, req).response(2, resp).close();
        assert_eq!(h2.claims(), [Claim::NotMine]);
        assert_eq!(h2.result.records, []);
        let mut h1 = Harness::<HttpParser>::client();
        h1.request(1, req).response(2, resp).close();
        assert_eq!(h1.claims(), [Claim::Mine]);
        assert_eq!(h1.result.records.len(), 1);
        assert_eq!(h1.result.records[0].status, 200);
    }
}
