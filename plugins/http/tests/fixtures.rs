//! Recorded connections (`tests/fixtures/*.rec`, the SDK harness recording format) replayed
//! through the parser, with the records each must produce.

mod common;

use std::path::PathBuf;

use common::*;
use sonde_http_parser::record::{attr as key, error};
use sonde_sdk::protocol_parser::Claim;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn replay(mut h: H, name: &str) -> H {
    h.replay_file(&fixture(name))
        .unwrap_or_else(|e| panic!("{e}"));
    h.close();
    assert_bounded(&h.result.records);
    h
}

fn b(
    operation: &str,
    status: u32,
    error: Option<&str>,
    ts: (u64, u64),
    bytes: (u64, u64),
) -> Brief {
    Brief {
        operation: operation.into(),
        status,
        error: error.map(str::to_string),
        request_ts: ts.0,
        response_ts: ts.1,
        request_bytes: bytes.0,
        response_bytes: bytes.1,
    }
}

fn briefs(h: &H) -> Vec<Brief> {
    h.result.records.iter().map(brief).collect()
}

#[test]
fn keepalive() {
    let h = replay(H::client(), "keepalive.rec");
    assert_eq!(
        briefs(&h),
        [
            b("GET /api/users/{id}", 200, None, (1000, 3000), (154, 97)),
            b("POST /api/users", 201, None, (5000, 9000), (121, 70)),
            b(
                "GET /api/users/{id}/avatar.png",
                404,
                Some(error::CLIENT),
                (10000, 12000),
                (68, 54)
            ),
        ]
    );
    let first = &h.result.records[0];
    assert_eq!(
        attr(first, key::TRACEPARENT),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(attr(first, key::USER_AGENT), Some("okhttp/4.12.0"));
    assert_eq!(attr(first, key::SERVER_PORT), Some("8080"));
    assert_eq!(claims(&h), [Claim::Mine]);
}

#[test]
fn pipelined() {
    let h = replay(H::client(), "pipelined.rec");
    assert_eq!(
        briefs(&h),
        [
            b("GET /a", 200, None, (100, 200), (28, 39)),
            b("GET /b/{id}", 200, None, (100, 400), (65, 40)),
            b("GET /c", 503, Some(error::SERVER), (100, 400), (35, 71)),
        ]
    );
    // The raw path is an attribute only where normalisation changed it.
    assert_eq!(attr(&h.result.records[2], key::URL_PATH), None);
    assert!(attr(&h.result.records[1], key::URL_PATH).is_some_and(|p| p.starts_with("/b/")));
}

#[test]
fn chunked() {
    let h = replay(H::server(), "chunked.rec");
    assert_eq!(
        briefs(&h),
        [
            b("GET /stream/events", 200, None, (50, 90), (105, 135)),
            b("GET /health", 204, None, (100, 110), (41, 27))
        ]
    );
    assert_eq!(
        attr(&h.result.records[0], key::B3),
        Some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
    );
}

#[test]
fn continue_100() {
    let h = replay(H::client(), "continue.rec");
    assert_eq!(
        briefs(&h),
        [b(
            "PUT /files/report.pdf",
            413,
            Some(error::CLIENT),
            (10, 40),
            (100, 97)
        )]
    );
}

#[test]
fn upgrade() {
    let h = replay(H::client(), "upgrade.rec");
    assert_eq!(
        briefs(&h),
        [b("GET /ws/chat", 101, None, (1, 2), (158, 129))]
    );
    assert_eq!(attr(&h.result.records[0], key::UPGRADE), Some("websocket"));
    assert_eq!(claims(&h), [Claim::Mine, Claim::Finished]);
}

#[test]
fn gap_resync() {
    let h = replay(H::client(), "gap-resync.rec");
    assert_eq!(
        briefs(&h),
        [
            b("GET /download/{id}", 200, None, (100, 300), (42, 5041)),
            b("GET /a", 0, Some(error::TRUNCATED), (400, 0), (32, 0)),
            b("GET /b", 500, Some(error::SERVER), (400, 600), (32, 61)),
            b("GET /c", 200, None, (700, 800), (32, 38)),
        ]
    );
}

#[test]
fn http10_close() {
    let h = replay(H::client(), "http10-close.rec");
    assert_eq!(
        briefs(&h),
        [b("GET /index.html", 200, None, (5, 25), (51, 72))]
    );
    assert_eq!(attr(&h.result.records[0], key::VERSION), Some("1.0"));
}

#[test]
fn not_http() {
    let h = replay(H::client(), "not-http.rec");
    assert!(h.result.records.is_empty());
    assert_eq!(claims(&h), [Claim::NotMine]);
}

/// Every fixture replays the same whichever role the daemon reported, or none.
#[test]
fn fixtures_replay_with_unknown_role() {
    for (name, server) in [
        ("keepalive.rec", false),
        ("pipelined.rec", false),
        ("chunked.rec", true),
        ("gap-resync.rec", false),
    ] {
        let known = replay(if server { H::server() } else { H::client() }, name);
        let unknown = replay(unknown_role(), name);
        assert_eq!(unknown.result.records, known.result.records, "{name}");
    }
}
