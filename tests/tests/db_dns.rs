//! The MySQL and DNS parsers end to end, against real servers and clients from Debian's
//! packages: MariaDB with the `mariadb` client and a prepared-statement client speaking the
//! binary protocol; dnsmasq with `dig` over UDP and TCP. `sonde run` captures with eBPF, parses
//! in the embedded Wasm components and serves the metrics and the slow-query log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use sonde_tests::dblab::{Dnsmasq, MariaDb, RawMysql, dig};
use sonde_tests::httplab::{Daemon, Sample, Tshark, http_get, sum};
use sonde_tests::{require_root, wait_until};

const T: Duration = Duration::from_secs(90);

static SERIAL: Mutex<()> = Mutex::new(());

const SERVER: &str = "sonde_request_duration_seconds_count";
const CLIENT: &str = "db_client_operation_duration_seconds_count";

/// MariaDB's own statement counters (`Com_*`), the server's truth about what it executed.
fn com_counters(db: &MariaDb) -> BTreeMap<String, u64> {
    let out = db
        .client("SHOW GLOBAL STATUS LIKE 'Com\\_%'", false)
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn mysql_statements_errors_prepared_statements_and_slow_queries() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let db = MariaDb::start().unwrap();
    db.client(
        "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT); INSERT INTO shop.items VALUES (1,'a'),(2,'b'),(3,'c')",
        false,
    )
    .unwrap();
    let daemon = Daemon::start("slow_query_ms = 250", "");
    let tshark = Tshark::start(db.port).unwrap();
    let before = com_counters(&db);

    // The mariadb client: selects with known row counts, an insert, a sleep, an error.
    db.client("SELECT * FROM shop.items; SELECT name FROM shop.items WHERE id = 2; INSERT INTO shop.items VALUES (4, 'd'); SELECT SLEEP(0.3)", false).unwrap();
    db.client("SELECT * FROM shop.missing", true).unwrap();
    // A prepared statement, executed twice over the binary protocol; slow by construction.
    let mut c = RawMysql::connect(db.port).unwrap();
    let (id, params) = c
        .prepare("SELECT id, name, SLEEP(0.15) FROM shop.items WHERE id <= ?")
        .unwrap();
    assert_eq!(params, 1);
    assert_eq!(c.execute(id, &[2]).unwrap(), 2);
    assert_eq!(c.execute(id, &[3]).unwrap(), 3);
    c.close(id).unwrap();

    let after = com_counters(&db);
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    // The SHOW STATUS of `after` itself ran on the server; Sonde sees it too.
    let port = db.port.to_string();
    let server = |s: &[Sample], op: &str, status: &str| {
        sum(
            s,
            SERVER,
            &[
                ("protocol", "mysql"),
                ("side", "server"),
                ("operation", op),
                ("status", status),
                ("server_port", &port),
            ],
        ) as u64
    };
    let selects = delta("Com_select");
    let samples = wait_until(T, "Sonde to count MariaDB's statements", || {
        let s = daemon.samples();
        let seen = server(&s, "SELECT", "") + server(&s, "SELECT", "1146");
        (seen >= selects && server(&s, "PREPARE", "") >= 1).then_some(s)
    })
    .unwrap();
    // MariaDB's Com_select counts every SELECT it ran: the client's four (one failing) and
    // the two executions of the prepared SELECT.
    assert_eq!(delta("Com_stmt_execute"), 2);
    assert_eq!(
        server(&samples, "SELECT", "") + server(&samples, "SELECT", "1146"),
        selects,
        "every SELECT MariaDB ran"
    );
    assert_eq!(server(&samples, "SELECT", "1146"), 1, "the unknown table");
    assert_eq!(server(&samples, "INSERT", ""), delta("Com_insert"));
    assert_eq!(server(&samples, "PREPARE", ""), delta("Com_stmt_prepare"));
    assert_eq!(
        sum(
            &samples,
            SERVER,
            &[
                ("protocol", "mysql"),
                ("status", "1146"),
                ("error_type", "1146")
            ]
        ),
        1.0,
        "the error code is the error type"
    );
    // The client side of the same statements (the mariadb client's own view).
    assert_eq!(
        sum(
            &samples,
            CLIENT,
            &[
                ("db_system_name", "mysql"),
                ("db_operation_name", "SELECT"),
                ("db_response_status_code", "1146"),
                ("service_name", "mariadb")
            ]
        ),
        1.0
    );
    assert!(
        sum(
            &samples,
            CLIENT,
            &[
                ("db_system_name", "mysql"),
                ("db_operation_name", "INSERT"),
                ("service_name", "mariadb")
            ]
        ) >= 1.0
    );

    // The slow-query log: SLEEP(0.3), and the prepared statement's executions with its text
    // and row counts, seen from the server (and from the clients).
    let slow: Vec<serde_json::Value> = serde_json::from_str(
        http_get(daemon.port, "/api/slow-queries")
            .unwrap()
            .split("\r\n\r\n")
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    let server_side: Vec<&serde_json::Value> =
        slow.iter().filter(|q| q["side"] == "server").collect();
    let sleep = server_side
        .iter()
        .find(|q| {
            q["statement"].as_str().unwrap_or("").contains("SLEEP")
                && q["operation"] == "SELECT"
                && q["rows"] == 1
        })
        .expect("SELECT SLEEP(0.3) is logged");
    let d = sleep["duration_seconds"].as_f64().unwrap();
    assert!((0.3..1.5).contains(&d), "SLEEP(0.3) took {d} s");
    let executes: Vec<&&serde_json::Value> = server_side
        .iter()
        .filter(|q| {
            q["statement"]
                .as_str()
                .unwrap_or("")
                .starts_with("SELECT id, name, SLEEP(?) FROM shop.items WHERE id <= ?")
        })
        .collect();
    let rows: Vec<u64> = executes.iter().filter_map(|q| q["rows"].as_u64()).collect();
    assert_eq!(
        rows,
        [2, 3],
        "both executions, linked to the prepared text: {slow:#?}"
    );

    // tshark's MySQL dissection of the same packets: commands that get a response.
    let counted = tshark_mysql_commands(tshark, db.port);
    let mysql = [
        ("protocol", "mysql"),
        ("side", "server"),
        ("server_port", port.as_str()),
    ];
    let shows = [
        ("protocol", "mysql"),
        ("side", "server"),
        ("server_port", port.as_str()),
        ("operation", "SHOW"),
    ];
    let ours = (sum(&samples, SERVER, &mysql) - sum(&samples, SERVER, &shows)) as u64;
    assert_eq!(ours, counted, "commands: Sonde vs tshark");
}

/// Commands tshark dissects on the port, leaving out quit and statement close (no response,
/// no record) and the test's own `SHOW GLOBAL STATUS` probes (one of them runs as tshark
/// starts, so whether tshark has it is a race).
fn tshark_mysql_commands(mut t: Tshark, port: u16) -> u64 {
    t.stop().unwrap();
    let filter = "mysql.command && !(mysql.command == 1) && !(mysql.command == 25) && !(mysql.query contains \"SHOW\")";
    t.fields(port, "mysql", filter, "mysql.command")
        .unwrap()
        .len() as u64
}

#[test]
fn dns_queries_by_type_and_rcode_over_udp_and_tcp() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let dns = Dnsmasq::start().unwrap();
    let daemon = Daemon::start("", "");
    let ok = |o: String, status: &str| assert!(o.contains(&format!("status: {status}")), "{o}");
    for _ in 0..3 {
        ok(dig(dns.port, &["a.test", "A"]).unwrap(), "NOERROR");
    }
    ok(dig(dns.port, &["v6.test", "AAAA"]).unwrap(), "NOERROR");
    ok(dig(dns.port, &["v6.test", "AAAA"]).unwrap(), "NOERROR");
    ok(dig(dns.port, &["missing.test", "A"]).unwrap(), "NXDOMAIN");
    ok(
        dig(dns.port, &["x.dead.test", "A", "+tries=1", "+time=3"]).unwrap(),
        "SERVFAIL",
    );
    ok(dig(dns.port, &["a.test", "A", "+tcp"]).unwrap(), "NOERROR");
    let port = dns.port.to_string();
    let lookups = |s: &[Sample], qtype: &str, code: &str| {
        sum(
            s,
            "dns_lookup_duration_seconds_count",
            &[
                ("side", "server"),
                ("dns_question_type", qtype),
                ("dns_response_code", code),
                ("server_port", &port),
            ],
        ) as u64
    };
    let samples = wait_until(T, "Sonde to count the DNS queries", || {
        let s = daemon.samples();
        (lookups(&s, "A", "NOERROR") >= 4
            && lookups(&s, "A", "SERVFAIL") >= 1
            && lookups(&s, "A", "NXDOMAIN") >= 1
            && lookups(&s, "AAAA", "NOERROR") >= 2)
            .then_some(s)
    })
    .unwrap();
    // dnsmasq's side: 3 UDP + 1 TCP A, 2 AAAA, 1 NXDOMAIN, 1 SERVFAIL.
    assert_eq!(lookups(&samples, "A", "NOERROR"), 4);
    assert_eq!(lookups(&samples, "AAAA", "NOERROR"), 2);
    assert_eq!(lookups(&samples, "A", "NXDOMAIN"), 1);
    assert_eq!(lookups(&samples, "A", "SERVFAIL"), 1);
    assert_eq!(
        sum(
            &samples,
            "dns_lookup_duration_seconds_count",
            &[
                ("side", "server"),
                ("dns_response_code", "NXDOMAIN"),
                ("error_type", "nxdomain")
            ]
        ),
        1.0
    );
    // dig's side (the client; its comm is its network thread's name), and the latencies:
    // positive and bounded.
    let client_total = sum(
        &samples,
        "dns_lookup_duration_seconds_count",
        &[("side", "client"), ("server_port", &port)],
    );
    assert_eq!(client_total, 8.0, "dig's queries seen from its side");
    let total = sum(
        &samples,
        "dns_lookup_duration_seconds_count",
        &[("side", "server"), ("server_port", &port)],
    );
    let seconds = sum(
        &samples,
        "dns_lookup_duration_seconds_sum",
        &[("side", "server"), ("server_port", &port)],
    );
    assert!(
        seconds > 0.0 && seconds / total < 0.5,
        "mean server-side lookup {} s",
        seconds / total
    );
    let under = sum(
        &samples,
        "dns_lookup_duration_seconds_bucket",
        &[("side", "server"), ("server_port", &port), ("le", "5")],
    );
    assert_eq!(under, total, "every lookup answered within 5 s");
}
