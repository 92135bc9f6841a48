//! The PostgreSQL parser end to end, against a throwaway cluster of Debian's `postgresql`
//! (initdb, pg_ctl on a free loopback port): `psql` with simple queries (a multi-statement one,
//! one failing with SQLSTATE 42P01 undefined table, a slow one), and a client speaking the
//! extended query protocol (Parse/Bind/Describe/Execute/Sync, pipelined). `sonde run` captures
//! with eBPF, parses in the embedded Wasm component and serves the RED metrics and the
//! slow-query log; the counts per operation and error code must be exact.

use std::time::Duration;

use sonde_tests::dblab::{Postgres, RawPg};
use sonde_tests::httplab::{Daemon, Sample, http_get, sum};
use sonde_tests::{require_root, wait_until};

const T: Duration = Duration::from_secs(90);

const SERVER: &str = "sonde_request_duration_seconds_count";
const CLIENT: &str = "db_client_operation_duration_seconds_count";

#[test]
fn postgres_simple_and_extended_queries_errors_and_slow_queries() {
    require_root();
    let db = Postgres::start().unwrap();
    db.psql(
        &["CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c')"],
        false,
    )
    .unwrap();
    let daemon = Daemon::start("slow_query_ms = 250", "");

    // psql (it asks for TLS first; the server declines): one connection, three simple
    // Queries, the second with three statements; then a failing one.
    db.psql(
        &[
            "SELECT * FROM items WHERE id <= 2",
            "SELECT count(*) FROM items; UPDATE items SET name = 'z' WHERE id = 3; INSERT INTO items VALUES (4, 'd')",
            "SELECT pg_sleep(0.3)",
        ],
        false,
    )
    .unwrap();
    db.psql(&["SELECT * FROM missing_table"], true).unwrap();

    // The extended protocol: a named statement executed twice in one pipeline, then two
    // groups sent before reading either (an insert, a failing select).
    let mut c = RawPg::connect(db.port).unwrap();
    let a = c
        .pipeline(
            &[
                RawPg::parse("s1", "SELECT id, name FROM items WHERE id <= $1"),
                RawPg::describe_statement("s1"),
                RawPg::bind("s1", &["2"]),
                RawPg::execute(),
                RawPg::bind("s1", &["3"]),
                RawPg::execute(),
                RawPg::sync(),
            ],
            1,
        )
        .unwrap();
    assert_eq!(a[0].rows, [2, 3]);
    let a = c
        .pipeline(
            &[
                RawPg::parse("", "INSERT INTO items VALUES ($1, 'e')"),
                RawPg::bind("", &["5"]),
                RawPg::execute(),
                RawPg::sync(),
                RawPg::parse("", "SELECT * FROM missing WHERE id = $1"),
                RawPg::bind("", &["1"]),
                RawPg::execute(),
                RawPg::sync(),
            ],
            2,
        )
        .unwrap();
    assert_eq!(a[0].tags, ["INSERT 0 1"]);
    assert_eq!(a[1].sqlstate.as_deref(), Some("42P01"));
    c.terminate().unwrap();

    let port = db.port.to_string();
    let server = |s: &[Sample], op: &str, status: &str| {
        sum(
            s,
            SERVER,
            &[
                ("protocol", "postgresql"),
                ("side", "server"),
                ("operation", op),
                ("status", status),
                ("server_port", &port),
            ],
        ) as u64
    };
    // SELECT: psql 3 (one in the multi-statement Query, pg_sleep), extended 2; failing: one
    // each. UPDATE 1; INSERT: psql 1, extended 1.
    let samples = wait_until(T, "Sonde to count PostgreSQL's statements", || {
        let s = daemon.samples();
        (server(&s, "SELECT", "") >= 5
            && server(&s, "SELECT", "42P01") >= 2
            && server(&s, "INSERT", "") >= 2
            && server(&s, "UPDATE", "") >= 1)
            .then_some(s)
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", postgres_samples(&daemon)));
    assert_eq!(server(&samples, "SELECT", ""), 5, "SELECTs");
    assert_eq!(server(&samples, "SELECT", "42P01"), 2, "undefined tables");
    assert_eq!(server(&samples, "INSERT", ""), 2, "INSERTs");
    assert_eq!(server(&samples, "UPDATE", ""), 1, "UPDATEs");
    let everything = sum(
        &samples,
        SERVER,
        &[
            ("protocol", "postgresql"),
            ("side", "server"),
            ("server_port", &port),
        ],
    ) as u64;
    assert_eq!(everything, 10, "no other statement: {samples:#?}");
    assert_eq!(
        sum(
            &samples,
            SERVER,
            &[("protocol", "postgresql"), ("error_type", "42P01")]
        ),
        2.0,
        "the SQLSTATE is the error type"
    );

    // psql's own view, in the database client metric.
    let client = |s: &[Sample], op: &str, code: &str| {
        sum(
            s,
            CLIENT,
            &[
                ("db_system_name", "postgresql"),
                ("db_operation_name", op),
                ("db_response_status_code", code),
                ("service_name", "psql"),
            ],
        ) as u64
    };
    let samples = wait_until(T, "psql's statements as a database client", || {
        let s = daemon.samples();
        (client(&s, "SELECT", "") >= 3 && client(&s, "SELECT", "42P01") >= 1).then_some(s)
    })
    .unwrap();
    assert_eq!(client(&samples, "SELECT", ""), 3);
    assert_eq!(client(&samples, "SELECT", "42P01"), 1);
    assert_eq!(client(&samples, "UPDATE", ""), 1);
    assert_eq!(client(&samples, "INSERT", ""), 1);

    // The slow-query log: pg_sleep(0.3), normalised, seen from the server.
    let slow: Vec<serde_json::Value> = serde_json::from_str(
        http_get(daemon.port, "/api/slow-queries")
            .unwrap()
            .split("\r\n\r\n")
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    let sleep = slow
        .iter()
        .find(|q| {
            q["side"] == "server"
                && q["statement"] == "SELECT pg_sleep(?)"
                && q["operation"] == "SELECT"
                && q["rows"] == 1
        })
        .unwrap_or_else(|| panic!("SELECT pg_sleep(0.3) is logged: {slow:#?}"));
    let d = sleep["duration_seconds"].as_f64().unwrap();
    assert!((0.3..1.5).contains(&d), "pg_sleep(0.3) took {d} s");
    assert_eq!(sleep["system"], "postgresql");
}

/// What the daemon says about PostgreSQL, for a failure's message.
fn postgres_samples(daemon: &Daemon) -> Vec<Sample> {
    daemon
        .samples()
        .into_iter()
        .filter(|s| {
            format!("{s:?}").contains("postgresql")
                || s.name.contains("parser")
                || s.name.contains("plugin")
        })
        .collect()
}
