//! Protocol parsers in the sandbox, without the kernel: the embedded HTTP component parses
//! a batch exactly like the same code compiled natively (which proves the SDK's
//! `export_protocol_parser!` glue and the host's WIT bindings agree), and misbehaving parser
//! components are stopped, classified and counted, through the same pipeline the daemon runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sonde_http_parser::Http;
use sonde_mqtt_parser::Mqtt;
use sonde_parse::{ConnInfo, Direction, ParseJob, ParserBackend, SegMeta};
use sonde_pipeline::dispatch::Dispatch;
use sonde_pipeline::native::NativeParser;
use sonde_pipeline::router::{Router, RouterConfig};
use sonde_pipeline::slot::ParserSlot;
use sonde_redis_parser::Resp;
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::parsers::{
    self, HTTP_PARSER_WASM, HTTP2_PARSER_WASM, MQTT_PARSER_WASM, REDIS_PARSER_WASM, WasmParser,
};
use sonde_sandbox::{FailureKind, Limits};
use sonde_sdk::protocol_parser::{Claim, Role};
use sonde_tests::wasm;

fn engine() -> Arc<sonde_sandbox::PluginEngine> {
    parsers::engine(&PluginsConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap()
}

/// Two connections, server side: keep-alive GETs split mid-header, a chunked response, and a
/// POST whose response never comes (flushed at close).
fn job() -> ParseJob {
    let mut j = ParseJob::default();
    for id in [1u64, 2] {
        j.opened.push(Arc::new(ConnInfo {
            id,
            role: Role::Server,
            comm: "nginx".into(),
            ..Default::default()
        }));
    }
    let mut seg = |conn: u64, dir: Direction, ts: u64, data: &[u8]| {
        j.push_segment(
            SegMeta {
                conn,
                direction: dir,
                ts_ns: ts,
                gap_before: 0,
            },
            data,
        )
    };
    use Direction::*;
    seg(1, Ingress, 10, b"GET /users/12 HTTP/1.1\r\nHo");
    seg(
        1,
        Ingress,
        11,
        b"st: a\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    );
    seg(
        1,
        Egress,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    seg(2, Ingress, 30, b"GET /feed HTTP/1.1\r\nHost: a\r\n\r\n");
    seg(
        2,
        Egress,
        40,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    seg(2, Egress, 45, b"0\r\n\r\n");
    seg(
        1,
        Ingress,
        50,
        b"POST /users HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    j.closed = vec![1, 2];
    j
}

/// A Redis client connection: a pipeline with an error, a transaction whose EXEC runs two
/// commands (one failing), a reply split inside a bulk string.
fn redis_job() -> ParseJob {
    let mut j = ParseJob::default();
    j.opened.push(Arc::new(ConnInfo {
        id: 7,
        role: Role::Client,
        comm: "redis-cli".into(),
        ..Default::default()
    }));
    let mut seg = |dir: Direction, ts: u64, data: &[u8]| {
        j.push_segment(
            SegMeta {
                conn: 7,
                direction: dir,
                ts_ns: ts,
                gap_before: 0,
            },
            data,
        )
    };
    use Direction::*;
    seg(
        Egress,
        10,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n",
    );
    seg(Ingress, 20, b"+OK\r\n$5\r\nhel");
    seg(
        Ingress,
        21,
        b"lo\r\n-ERR value is not an integer or out of range\r\n",
    );
    seg(
        Egress,
        30,
        b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*3\r\n$5\r\nLPUSH\r\n$1\r\nk\r\n$1\r\nx\r\n*1\r\n$4\r\nEXEC\r\n",
    );
    seg(
        Ingress,
        40,
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n-WRONGTYPE Operation against a key\r\n",
    );
    j.closed = vec![7];
    j
}

/// Appends the recording `path` (the SDK harness format: `> ts len` / `< ts len` lines, each
/// followed by its bytes; `#` comments) to `j` as client connection `conn` of `comm`, closed
/// at the end.
fn push_recording(j: &mut ParseJob, conn: u64, comm: &str, path: &str) {
    j.opened.push(Arc::new(ConnInfo {
        id: conn,
        role: Role::Client,
        comm: comm.into(),
        ..Default::default()
    }));
    let rec = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let mut at = 0;
    while at < rec.len() {
        let nl = at + rec[at..].iter().position(|b| *b == b'\n').unwrap();
        let header = std::str::from_utf8(&rec[at..nl]).unwrap();
        let f: Vec<&str> = header.split_whitespace().collect();
        if f[0] == "#" {
            at = nl + 1;
            continue;
        }
        let len: usize = f[2].parse().unwrap();
        let direction = if f[0] == ">" {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let meta = SegMeta {
            conn,
            direction,
            ts_ns: f[1].parse().unwrap(),
            gap_before: 0,
        };
        j.push_segment(meta, &rec[nl + 1..nl + 1 + len]);
        at = nl + 1 + len + 1;
    }
    j.closed.push(conn);
}

/// Two MQTT client connections, recorded from mosquitto (`plugins/mqtt/tests/fixtures`): an
/// MQTT 5 publisher at QoS 2 and an MQTT 3.1.1 subscriber receiving QoS 0, 1 and 2 messages.
fn mqtt_job() -> ParseJob {
    let mut j = ParseJob::default();
    for (conn, name) in [(8u64, "pub-v5-qos2"), (9, "sub-v311")] {
        let path = format!("../plugins/mqtt/tests/fixtures/{name}.rec");
        push_recording(&mut j, conn, "mosquitto_pub", &path);
    }
    j
}

/// The embedded component `wasm` and the native build `P` give the same records and claims
/// for `job()`; the component says it is `name` parsing `protocols`. Returns the records.
fn same_in_wasm_and_native<P>(
    wasm: &[u8],
    name: &str,
    protocols: &[&str],
    job: fn() -> ParseJob,
) -> Vec<sonde_sdk::protocol_parser::RequestRecord>
where
    P: sonde_sdk::protocol_parser::ProtocolParser,
    P::State: Send,
{
    let mut wasm = WasmParser::load(engine(), Limits::default(), wasm, "embedded").unwrap();
    assert_eq!(
        (wasm.name.as_str(), wasm.protocols.as_slice()),
        (
            name,
            &protocols.iter().map(|p| p.to_string()).collect::<Vec<_>>()[..]
        )
    );
    let mut native = NativeParser::<P>::new();
    let w = wasm.run(&mut job()).unwrap();
    let n = native.run(&mut job()).unwrap();
    assert_eq!(w, n, "same records and claims through Wasm and natively");
    w.records.iter().map(|r| r.to_owned()).collect()
}

#[test]
fn the_mqtt_component_parses_like_the_native_build() {
    let recs = same_in_wasm_and_native::<Mqtt>(MQTT_PARSER_WASM, "sonde-mqtt", &["mqtt"], mqtt_job);
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.operation.as_str(), r.status, r.error.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("connect", 0, None),
            ("publish", 0, None),
            ("publish", 0, None),
            ("publish release", 0, None),
            ("publish release", 0, None),
            ("connect", 0, None),
            ("subscribe", 0, None),
            ("deliver qos0", 0, None),
            ("deliver", 0, None),
            ("deliver", 0, None),
            ("deliver release", 0, None),
        ]
    );
    for r in &recs {
        assert!(
            r.attributes
                .iter()
                .any(|(k, v)| k == "messaging.system" && v == "mqtt"),
            "{r:?}"
        );
    }
}

#[test]
fn the_redis_component_parses_like_the_native_build() {
    let recs =
        same_in_wasm_and_native::<Resp>(REDIS_PARSER_WASM, "sonde-redis", &["redis"], redis_job);
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.operation.as_str(), r.status, r.error.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("SET", 0, None),
            ("GET", 0, None),
            ("INCR", 1, Some("ERR")),
            ("MULTI", 0, None),
            ("EXEC", 0, None),
            ("INCR", 0, None),
            ("LPUSH", 1, Some("WRONGTYPE")),
        ]
    );
    assert_eq!((recs[1].request_ts_ns, recs[1].response_ts_ns), (10, 21));
    for r in &recs {
        assert!(
            r.attributes
                .iter()
                .any(|(k, v)| k == "db.system.name" && v == "redis"),
            "{r:?}"
        );
        // The command's shape only: no key, no value.
        assert!(
            r.attributes
                .iter()
                .all(|(_, v)| !v.contains("hello") && v != "k"),
            "{r:?}"
        );
    }
}

/// A recorded gRPC session (plugins/http2/tests/fixtures/grpc-session.rec, the SDK harness
/// format) as one job, client side.
fn grpc_job() -> ParseJob {
    let mut j = ParseJob::default();
    let path = "../plugins/http2/tests/fixtures/grpc-session.rec";
    push_recording(&mut j, 9, "python3", path);
    j
}

#[test]
fn the_http2_component_parses_like_the_native_build() {
    let recs = same_in_wasm_and_native::<sonde_http2_parser::Http2>(
        HTTP2_PARSER_WASM,
        "sonde-http2",
        &["http", "grpc"],
        grpc_job,
    );
    let mut got: Vec<_> = recs
        .into_iter()
        .map(|r| (r.operation, r.status, r.error))
        .collect();
    got.sort();
    let ok = |m: &str| (format!("/sonde.test.Greeter/{m}"), 0, None);
    assert_eq!(
        got,
        [
            ok("Count"),
            ok("Count"),
            ok("SayHello"),
            ok("SayHello"),
            (
                "/sonde.test.Greeter/SayHello".to_string(),
                5,
                Some("NOT_FOUND".to_string())
            ),
        ]
    );
}

#[test]
fn the_http_component_parses_like_the_native_build() {
    let mut wasm =
        WasmParser::load(engine(), Limits::default(), HTTP_PARSER_WASM, "embedded").unwrap();
    let mut native = NativeParser::<Http>::new();
    let w = wasm.run(&mut job()).unwrap();
    let n = native.run(&mut job()).unwrap();
    assert_eq!(w, n, "same records and claims through Wasm and natively");
    assert_eq!(w.records.len(), 3, "{w:#?}");
    let recs: Vec<_> = w.records.iter().map(|r| r.to_owned()).collect();
    let get = &recs[0];
    assert_eq!(
        (
            get.conn,
            get.operation.as_str(),
            get.status,
            get.request_ts_ns,
            get.response_ts_ns
        ),
        (1, "GET /users/{id}", 200, 10, 20)
    );
    assert!(
        get.attributes
            .iter()
            .any(|(k, v)| k == "traceparent" && v.starts_with("00-4bf92f35")),
        "{get:?}"
    );
    assert_eq!(
        (recs[1].conn, recs[1].response_ts_ns),
        (2, 45),
        "chunked: the last chunk ends it"
    );
    assert_eq!(recs[2].error.as_deref(), Some("no-response"));
    assert!(w.claims.contains(&(1, Claim::Mine)) && w.claims.contains(&(2, Claim::Mine)));
    assert_eq!(wasm.health().failures, 0);
}

#[test]
fn misbehaving_parsers_are_stopped_classified_and_counted() {
    let limits = Limits {
        call_deadline_ms: 50,
        memory_bytes: 16 << 20,
        quarantine_after: 100,
        ..Limits::default()
    };
    for (feature, kind) in [
        ("spin", FailureKind::Deadline),
        ("trap", FailureKind::Trap),
        ("membomb", FailureKind::MemoryCap),
    ] {
        let bytes = std::fs::read(wasm::bad_parser(feature)).unwrap();
        let mut p = WasmParser::load(engine(), limits, &bytes, "test").unwrap();
        assert_eq!(p.name, format!("bad-parser-{feature}"));
        let t = Instant::now();
        let f = p.run(&mut job()).expect_err("it misbehaves");
        let took = t.elapsed();
        assert_eq!(f.kind, kind, "{feature}: {f}");
        assert!(
            took < Duration::from_secs(2),
            "{feature} stopped after {took:?}"
        );
        if feature == "trap" {
            assert!(
                f.message.contains("bad parser fed"),
                "the panic message reaches the operator: {f}"
            );
        }
        // The next call gets a fresh instance (the first one served `info` at load), and fails
        // the same way: counted each time.
        let _ = p.run(&mut job());
        let h = p.health();
        assert_eq!((h.failures, h.instantiations), (2, 2), "{feature}: {h:?}");
    }
}

#[test]
fn a_trapping_parser_beside_http_costs_http_nothing() {
    let bytes = std::fs::read(wasm::bad_parser("trap")).unwrap();
    let e = engine();
    let http =
        WasmParser::load(e.clone(), Limits::default(), HTTP_PARSER_WASM, "embedded").unwrap();
    let bad = WasmParser::load(e, Limits::default(), &bytes, "test").unwrap();
    let slots = vec![
        ParserSlot::new(0, Box::new(bad) as Box<dyn ParserBackend>),
        ParserSlot::new(1, Box::new(http)),
    ];
    let mut r = Router::new(
        Dispatch::threaded(slots, 64).unwrap(),
        RouterConfig::default(),
    );
    let tracker = sonde_capture::conntrack::ConnTracker::new(Default::default());
    use sonde_capture::conntrack::StreamEvent;
    use sonde_capture::events::Direction as D;
    use sonde_capture::reassembly::{Segment, SegmentBody};
    for conn in 1..=20u64 {
        for (dir, ts, data) in [
            (D::Ingress, 1, &b"GET /x HTTP/1.1\r\n\r\n"[..]),
            (D::Egress, 2, &b"HTTP/1.1 204 No Content\r\n\r\n"[..]),
        ] {
            r.on_stream_event(
                &StreamEvent::Segment {
                    conn_id: conn,
                    direction: dir,
                    segment: Segment {
                        pos: 0,
                        ts_ns: ts,
                        body: SegmentBody::Data(bytes::Bytes::from_static(data)),
                    },
                },
                &tracker,
            );
        }
        r.on_stream_event(&StreamEvent::Closed { conn_id: conn }, &tracker);
        r.flush();
    }
    assert!(r.settle(Duration::from_secs(30)));
    let mut recs = Vec::new();
    r.take_records(&mut recs);
    assert_eq!(recs.len(), 20, "every exchange parsed by HTTP");
    assert!(recs.iter().all(|t| t.record.status() == 204));
    let stats = r.parser_stats();
    // It trapped until quarantined, then was skipped; its jobs never held HTTP up.
    assert!(
        stats[0].health.traps >= 1
            && stats[0].health.quarantines >= 1
            && stats[0].health.skipped >= 1,
        "{:?}",
        stats[0]
    );
    assert_eq!(stats[1].health.failures, 0);
}

#[test]
fn the_http_component_imports_nothing_beyond_the_granted_wasi() {
    let e = sonde_sandbox::PluginEngine::new(None).unwrap();
    let (component, _) = e.component(HTTP_PARSER_WASM).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(e.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    for name in &imports {
        assert!(
            ["sonde:plugin/", "wasi:io/", "wasi:cli/", "wasi:random/"]
                .iter()
                .any(|p| name.starts_with(p)),
            "unexpected import {name} (all: {imports:?})"
        );
    }
}
