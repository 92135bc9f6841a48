//! The Redis parser end to end, against a real `redis-server` and Debian's clients:
//! `redis-cli` (single commands, a MULTI/EXEC script, SUBSCRIBE) and `redis-benchmark`
//! (pipelines of 16). `sonde run` captures with eBPF, parses in the embedded Wasm component
//! and serves the RED metrics; the counts are checked against what the test sent and against
//! the server's own `INFO commandstats`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use sonde_tests::dblab::Redis;
use sonde_tests::httplab::{Daemon, Sample, sum};
use sonde_tests::{require_root, wait_until};

const T: Duration = Duration::from_secs(90);

const SERVER: &str = "sonde_request_duration_seconds_count";
const CLIENT: &str = "db_client_operation_duration_seconds_count";
const UNANSWERED: &str = "sonde_requests_unanswered_total";

/// Pipelined SETs and GETs: 100 pipelines of 16 each.
const BENCH_N: u64 = 1600;

#[test]
fn redis_commands_pipelines_transactions_pubsub_and_errors() {
    require_root();
    let redis = Redis::start().unwrap();
    let daemon = Daemon::start("", "");
    let port = redis.port.to_string();
    let before = redis.command_calls().unwrap();

    // Single commands, and two errors: ERR (not an integer) and WRONGTYPE.
    assert_eq!(
        redis.cli(&["SET", "greeting", "hello"]).unwrap().trim(),
        "OK"
    );
    assert_eq!(redis.cli(&["GET", "greeting"]).unwrap().trim(), "hello");
    let out = redis.cli(&["INCR", "greeting"]).unwrap();
    assert!(out.starts_with("ERR"), "{out}");
    let out = redis.cli(&["LPUSH", "greeting", "x"]).unwrap();
    assert!(out.starts_with("WRONGTYPE"), "{out}");

    // A transaction on one connection: three queued commands, one failing inside EXEC.
    let out = redis
        .cli_script("MULTI\nSET counter 1\nINCR counter\nLPUSH counter x\nEXEC\n")
        .unwrap();
    assert!(out.contains("QUEUED") && out.contains("WRONGTYPE"), "{out}");

    // Pipelines: one client, 16 commands per write.
    let bench = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-c", "1", "-P", "16", "-q"])
        .args(["-n", &BENCH_N.to_string(), "-t", "set,get"])
        .stdin(Stdio::null())
        .output()
        .expect("running redis-benchmark (Debian package redis-tools)");
    assert!(bench.status.success(), "{bench:?}");

    // Pub/sub: a subscriber, two messages published to it from another client.
    let mut sub = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "SUBSCRIBE", "news"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli SUBSCRIBE");
    wait_until(T, "the subscriber to be subscribed", || {
        let out = redis.cli(&["PUBSUB", "NUMSUB", "news"]).ok()?;
        (out.lines().nth(1).map(str::trim) == Some("1")).then_some(())
    })
    .unwrap();
    for _ in 0..2 {
        assert_eq!(redis.cli(&["PUBLISH", "news", "hi"]).unwrap().trim(), "1");
    }
    let _ = sub.kill();
    let _ = sub.wait();

    let after = redis.command_calls().unwrap();
    let delta: BTreeMap<String, u64> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(k, v)| *v > 0 && k != "INFO")
        .collect();
    // What the test sent (and Redis ran).
    let sent = |op: &str| delta.get(op).copied().unwrap_or(0);
    assert_eq!(sent("SET"), 1 + 1 + BENCH_N, "{delta:?}");
    assert_eq!(sent("GET"), 1 + BENCH_N, "{delta:?}");
    assert_eq!(
        (sent("INCR"), sent("LPUSH"), sent("MULTI"), sent("EXEC")),
        (2, 2, 1, 1)
    );
    assert_eq!((sent("SUBSCRIBE"), sent("PUBLISH")), (1, 2));

    let server = |s: &[Sample], op: &str| {
        sum(
            s,
            SERVER,
            &[
                ("protocol", "redis"),
                ("side", "server"),
                ("operation", op),
                ("server_port", &port),
            ],
        ) as u64
    };
    // Reported without a reply: `COMMAND DOCS` (redis-cli's first command when it reads a
    // script), whose reply is hundreds of KB of nested arrays, more than the capture copies:
    // the parser cannot tell where it ends and says `truncated` rather than guess.
    let unanswered = |s: &[Sample], op: &str| {
        sum(
            s,
            UNANSWERED,
            &[("protocol", "redis"), ("side", "server"), ("operation", op)],
        ) as u64
    };
    let reported = |s: &[Sample], op: &str| server(s, op) + unanswered(s, op);
    let samples = wait_until(T, "Sonde to count Redis's commands", || {
        let s = daemon.samples();
        (delta.iter().all(|(op, n)| reported(&s, op) >= *n)).then_some(s)
    })
    .unwrap_or_else(|e| {
        let s = daemon.samples();
        let seen: BTreeMap<&String, u64> = delta.keys().map(|op| (op, reported(&s, op))).collect();
        panic!("{e}: Redis ran {delta:?}, Sonde saw {seen:?}")
    });
    // Every command Redis ran, once (pipelined, queued in MULTI or not), nothing more: the
    // subscribe confirmation and the two message pushes are not replies to commands.
    for (op, n) in &delta {
        assert_eq!(reported(&samples, op), *n, "{op}");
        if op != "COMMAND DOCS" {
            assert_eq!(unanswered(&samples, op), 0, "{op} answered");
        }
    }
    let total = sum(
        &samples,
        SERVER,
        &[
            ("protocol", "redis"),
            ("side", "server"),
            ("server_port", &port),
        ],
    ) as u64;
    let info = server(&samples, "INFO");
    let lost = sum(
        &samples,
        UNANSWERED,
        &[("protocol", "redis"), ("side", "server")],
    ) as u64;
    assert_eq!(
        total + lost - info,
        delta.values().sum::<u64>(),
        "all records, INFO probes aside"
    );

    // Errors by prefix: the error type on the server side, the status code on the client's.
    let errors = |s: &[Sample], op: &str, code: &str| {
        sum(
            s,
            SERVER,
            &[
                ("protocol", "redis"),
                ("side", "server"),
                ("operation", op),
                ("error_type", code),
                ("server_port", &port),
            ],
        ) as u64
    };
    assert_eq!(errors(&samples, "INCR", "ERR"), 1);
    assert_eq!(errors(&samples, "LPUSH", "WRONGTYPE"), 2, "one inside EXEC");
    assert_eq!(
        sum(
            &samples,
            SERVER,
            &[
                ("protocol", "redis"),
                ("side", "server"),
                ("status", "1"),
                ("server_port", &port),
            ],
        ),
        3.0,
        "three error replies"
    );

    // The clients' side: redis-cli and redis-benchmark, as db client metrics.
    let client = |s: &[Sample], op: &str, code: &str| {
        sum(
            s,
            CLIENT,
            &[
                ("db_system_name", "redis"),
                ("db_operation_name", op),
                ("db_response_status_code", code),
                ("server_port", &port),
            ],
        ) as u64
    };
    let samples = wait_until(T, "the clients' side", || {
        let s = daemon.samples();
        (client(&s, "SET", "") >= sent("SET") && client(&s, "LPUSH", "WRONGTYPE") >= 2).then_some(s)
    })
    .unwrap();
    assert_eq!(client(&samples, "SET", ""), sent("SET"));
    assert_eq!(client(&samples, "GET", ""), sent("GET"));
    assert_eq!(client(&samples, "INCR", "ERR"), 1);
    assert_eq!(client(&samples, "INCR", ""), 1, "inside EXEC");
    assert_eq!(client(&samples, "LPUSH", "WRONGTYPE"), 2);
    assert_eq!(client(&samples, "SUBSCRIBE", ""), 1);
    assert_eq!(client(&samples, "PUBLISH", ""), 2);
    // No key or value anywhere in the metrics.
    let page = sonde_tests::httplab::http_get(daemon.port, "/metrics").unwrap();
    for secret in ["greeting", "news"] {
        assert!(!page.contains(secret), "{secret} in /metrics");
    }
}
