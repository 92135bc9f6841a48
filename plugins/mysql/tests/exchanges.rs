//! Whole exchanges built packet by packet: handshake, queries, result sets, prepared statements,
//! simple commands, role handling and TLS.

mod common;

use common::*;
use sonde_mysql_parser::record::{attr as key, error};
use sonde_sdk::protocol_parser::{Claim, Role};

fn five_rows() -> Vec<Vec<&'static str>> {
    (0..5)
        .map(|_| vec!["1", "bob", "bob@example.com"])
        .collect()
}

fn select_with(deprecate_eof: bool) {
    let mut h = H::client();
    connect(&mut h, deprecate_eof, Some("shop"));
    let q = query("SELECT id, name, email FROM users WHERE id > 10");
    let rs = result_set(
        &["id", "name", "email"],
        &five_rows(),
        deprecate_eof,
        AUTOCOMMIT,
    );
    h.request(10, &q).response(20, &rs);
    assert_eq!(ops(&h), [op("SELECT", 0, None)]);
    let r = &h.result.records[0];
    assert_eq!(
        brief(r),
        Brief {
            operation: "SELECT".into(),
            status: 0,
            error: None,
            request_ts: 10,
            response_ts: 20,
            request_bytes: q.len() as u64,
            response_bytes: rs.len() as u64,
        }
    );
    assert_eq!(
        r.attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        [
            (key::SYSTEM, "mysql"),
            (key::OPERATION, "SELECT"),
            (
                key::QUERY_TEXT,
                "SELECT id, name, email FROM users WHERE id > ?"
            ),
            (key::NAMESPACE, "shop"),
            (key::RETURNED_ROWS, "5"),
        ]
    );
    assert_eq!(claims(&h), [Claim::Mine]);
}

#[test]
fn select_result_set_with_eof_packets() {
    select_with(false);
}

#[test]
fn select_result_set_with_deprecate_eof() {
    select_with(true);
}

#[test]
fn empty_result_sets_in_both_modes() {
    for deprecate in [false, true] {
        let mut h = H::client();
        connect(&mut h, deprecate, None);
        h.request(10, &query("SELECT a FROM t WHERE 0"))
            .response(11, &result_set(&["a"], &[], deprecate, AUTOCOMMIT))
            .request(12, &query("SELECT 1"))
            .response(13, &result_set(&["1"], &[vec!["1"]], deprecate, AUTOCOMMIT));
        let rows: Vec<_> = h
            .result
            .records
            .iter()
            .map(|r| attr(r, key::RETURNED_ROWS))
            .collect();
        assert_eq!(rows, [Some("0"), Some("1")], "deprecate_eof {deprecate}");
    }
}

#[test]
fn insert_ok_with_affected_rows() {
    let mut h = H::client();
    connect(&mut h, true, None);
    h.request(
        10,
        &query("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')"),
    )
    .response(12, &packet(1, &ok(3, AUTOCOMMIT)));
    assert_eq!(ops(&h), [op("INSERT", 0, None)]);
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::AFFECTED_ROWS), Some("3"));
    assert_eq!(attr(r, key::RETURNED_ROWS), None);
    assert_eq!(attr(r, key::NAMESPACE), None);
    assert_eq!(
        attr(r, key::QUERY_TEXT),
        Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)")
    );
}

#[test]
fn err_with_code_and_sqlstate() {
    let mut h = H::client();
    connect(&mut h, false, Some("shop"));
    h.request(10, &query("SELECT * FROM missing")).response(
        11,
        &packet(1, &err(1146, "42S02", "Table 'shop.missing' doesn't exist")),
    );
    assert_eq!(ops(&h), [op("SELECT", 1146, Some("1146"))]);
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::STATUS_CODE), Some("1146"));
    assert_eq!(attr(r, key::SQLSTATE), Some("42S02"));
    assert_eq!(attr(r, key::RETURNED_ROWS), None);
}

#[test]
fn err_in_the_middle_of_rows() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let mut rs = packets(1, &[lenenc(1), column_def("a"), eof(0), text_row(&["1"])]);
    rs.extend(packet(
        5,
        &err(1317, "70100", "Query execution was interrupted"),
    ));
    h.request(10, &query("SELECT a FROM big")).response(11, &rs);
    assert_eq!(ops(&h), [op("SELECT", 1317, Some("1317"))]);
}

#[test]
fn sleep_timing() {
    let mut h = H::client();
    connect(&mut h, true, None);
    h.request(1_000_000_000, &query("SELECT SLEEP(0.3)"))
        .response(
            1_300_400_000,
            &result_set(&["SLEEP(0.3)"], &[vec!["0"]], true, AUTOCOMMIT),
        );
    let r = &h.result.records[0];
    assert_eq!(r.response_ts_ns - r.request_ts_ns, 300_400_000);
    assert_eq!(attr(r, key::QUERY_TEXT), Some("SELECT SLEEP(?)"));
}

#[test]
fn response_ts_is_the_segment_with_the_last_byte() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let rs = result_set(&["a"], &[vec!["1"], vec!["2"]], false, AUTOCOMMIT);
    h.request(10, &query("SELECT a FROM t"))
        .response(20, &rs[..rs.len() - 3])
        .response(30, &rs[rs.len() - 3..]);
    assert_eq!(h.result.records[0].response_ts_ns, 30);
}

fn prepared(deprecate_eof: bool) {
    let mut h = H::client();
    connect(&mut h, deprecate_eof, Some("shop"));
    let sql = "SELECT name, email FROM users WHERE id = ? AND status = 'active'";
    h.request(10, &prepare(sql)).response(
        11,
        &prepare_response(7, &["name", "email"], 1, deprecate_eof),
    );
    let row = |v: &[&str]| binary_row(v);
    for (i, id) in ["1", "2"].iter().enumerate() {
        let t = 20 + 10 * i as u64;
        h.request(t, &execute(7, &[id])).response(
            t + 1,
            &rows_response(
                &["name", "email"],
                vec![row(&["bob", "b@x"]), row(&["al", "a@x"])],
                deprecate_eof,
                AUTOCOMMIT,
            ),
        );
    }
    let text = "SELECT name, email FROM users WHERE id = ? AND status = ?";
    let r = &h.result.records;
    assert_eq!(
        ops(&h),
        [
            op("PREPARE", 0, None),
            op("SELECT", 0, None),
            op("SELECT", 0, None)
        ]
    );
    for r in r {
        assert_eq!(attr(r, key::STATEMENT_ID), Some("7"));
        assert_eq!(attr(r, key::QUERY_TEXT), Some(text));
        assert_eq!(attr(r, key::NAMESPACE), Some("shop"));
    }
    assert_eq!(attr(&r[0], key::OPERATION), Some("PREPARE"));
    assert_eq!(attr(&r[1], key::OPERATION), Some("SELECT"));
    assert_eq!(attr(&r[1], key::RETURNED_ROWS), Some("2"));
    assert_eq!((r[1].request_ts_ns, r[1].response_ts_ns), (20, 21));
    assert_eq!((r[2].request_ts_ns, r[2].response_ts_ns), (30, 31));
}

#[test]
fn prepare_and_two_executes_with_eof_packets() {
    prepared(false);
}

#[test]
fn prepare_and_two_executes_with_deprecate_eof() {
    prepared(true);
}

#[test]
fn prepared_insert_without_columns_and_statement_close() {
    let mut h = H::client();
    connect(&mut h, false, None);
    h.request(10, &prepare("INSERT INTO t VALUES (?, ?)"))
        .response(11, &prepare_response(3, &[], 2, false))
        .request(12, &execute(3, &["a", "b"]))
        .response(13, &packet(1, &ok(1, AUTOCOMMIT)));
    // COM_STMT_CLOSE: no response, no record; the id is forgotten.
    let mut close = vec![0x19];
    close.extend_from_slice(&3u32.to_le_bytes());
    h.request(14, &packet(0, &close))
        .request(15, &execute(3, &["c", "d"]))
        .response(16, &packet(1, &ok(1, AUTOCOMMIT)));
    assert_eq!(
        ops(&h),
        [
            op("PREPARE", 0, None),
            op("INSERT", 0, None),
            op("EXECUTE", 0, None)
        ]
    );
    assert_eq!(attr(&h.result.records[1], key::AFFECTED_ROWS), Some("1"));
    assert_eq!(attr(&h.result.records[2], key::QUERY_TEXT), None);
    assert_eq!(attr(&h.result.records[2], key::STATEMENT_ID), Some("3"));
}

#[test]
fn prepare_error() {
    let mut h = H::client();
    connect(&mut h, true, None);
    h.request(10, &prepare("SELEC nonsense"))
        .response(11, &packet(1, &err(1064, "42000", "You have an error")));
    assert_eq!(ops(&h), [op("PREPARE", 1064, Some("1064"))]);
    assert_eq!(attr(&h.result.records[0], key::STATEMENT_ID), None);
}

#[test]
fn ping_init_db_and_quit() {
    let mut h = H::client();
    connect(&mut h, false, None);
    h.request(10, &packet(0, &[0x0e]))
        .response(11, &packet(1, &ok(0, AUTOCOMMIT)))
        .request(12, &packet(0, b"\x02inventory"))
        .response(13, &packet(1, &ok(0, AUTOCOMMIT)))
        .request(14, &query("SELECT 1"))
        .response(15, &result_set(&["1"], &[vec!["1"]], false, AUTOCOMMIT))
        .request(16, &packet(0, &[0x01]))
        .close();
    assert_eq!(
        ops(&h),
        [
            op("PING", 0, None),
            op("INIT_DB", 0, None),
            op("SELECT", 0, None)
        ]
    );
    let r = &h.result.records;
    assert_eq!(attr(&r[0], key::NAMESPACE), None);
    assert_eq!(attr(&r[1], key::NAMESPACE), Some("inventory"));
    assert_eq!(attr(&r[2], key::NAMESPACE), Some("inventory"));
    assert_eq!((r[0].request_bytes, r[0].response_bytes), (5, 11));
}

#[test]
fn use_statement_changes_the_namespace() {
    let mut h = H::client();
    connect(&mut h, true, Some("a"));
    h.request(10, &query("USE `b`"))
        .response(11, &packet(1, &ok(0, AUTOCOMMIT)))
        .request(12, &packet(0, &[0x0e]))
        .response(13, &packet(1, &ok(0, AUTOCOMMIT)));
    let ns: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| attr(r, key::NAMESPACE))
        .collect();
    assert_eq!(ns, [Some("a"), Some("b")]);
}

#[test]
fn other_commands_are_named() {
    let mut h = H::client();
    connect(&mut h, true, None);
    h.request(10, &packet(0, &[0x1f]))
        .response(11, &packet(1, &ok(0, AUTOCOMMIT)))
        .request(12, &packet(0, &[0x09]))
        .response(13, &packet(1, b"Uptime: 5  Threads: 1"));
    assert_eq!(
        ops(&h),
        [
            op("COM_RESET_CONNECTION", 0, None),
            op("COM_STATISTICS", 0, None)
        ]
    );
}

#[test]
fn multi_results_end_at_the_last_result() {
    for deprecate in [false, true] {
        let mut h = H::client();
        connect(&mut h, deprecate, None);
        // CALL p(): two result sets then the final OK; the sequence continues across them.
        let st = AUTOCOMMIT | MORE_RESULTS;
        let mut ps = vec![lenenc(1), column_def("a")];
        if !deprecate {
            ps.push(eof(st));
        }
        ps.extend([text_row(&["1"]), text_row(&["2"])]);
        ps.push(if deprecate { ok_fe(st) } else { eof(st) });
        ps.extend([lenenc(1), column_def("b")]);
        if !deprecate {
            ps.push(eof(st));
        }
        ps.push(text_row(&["3"]));
        ps.push(if deprecate { ok_fe(st) } else { eof(st) });
        ps.push(ok(0, AUTOCOMMIT));
        let resp = packets(1, &ps);
        h.request(10, &query("CALL p(1)"))
            .response(11, &resp[..resp.len() - 11])
            .response(12, &resp[resp.len() - 11..])
            .request(13, &packet(0, &[0x0e]))
            .response(14, &packet(1, &ok(0, AUTOCOMMIT)));
        assert_eq!(ops(&h), [op("CALL", 0, None), op("PING", 0, None)]);
        let r = &h.result.records[0];
        assert_eq!(attr(r, key::RETURNED_ROWS), Some("3"));
        assert_eq!(
            (r.response_ts_ns, r.response_bytes),
            (12, resp.len() as u64)
        );
    }
}

#[test]
fn local_infile() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let mut infile = vec![0xFB];
    infile.extend_from_slice(b"/tmp/data.csv");
    h.request(
        10,
        &query("LOAD DATA LOCAL INFILE '/tmp/data.csv' INTO TABLE t"),
    )
    .response(11, &packet(1, &infile))
    .request(12, &packets(2, &[b"1,a\n2,b\n".to_vec(), vec![]]))
    .response(13, &packet(4, &ok(2, AUTOCOMMIT)));
    assert_eq!(ops(&h), [op("LOAD", 0, None)]);
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::AFFECTED_ROWS), Some("2"));
    assert_eq!(r.response_ts_ns, 13);
}

#[test]
fn server_role_reads_requests_ingress() {
    let mut h = H::server();
    let (g, l, o) = handshake(false, Some("shop"));
    h.response(1, &g).request(2, &l).response(3, &o);
    h.request(10, &query("DELETE FROM t WHERE id = 9"))
        .response(11, &packet(1, &ok(1, AUTOCOMMIT)));
    assert_eq!(ops(&h), [op("DELETE", 0, None)]);
}

#[test]
fn unknown_role_infers_the_direction_from_the_handshake() {
    for server_writes_egress in [false, true] {
        let mut h = with_role(Role::Unknown);
        let (g, l, o) = handshake(true, None);
        let (to_client, to_server) = if server_writes_egress {
            (
                sonde_sdk::protocol_parser::Direction::Egress,
                sonde_sdk::protocol_parser::Direction::Ingress,
            )
        } else {
            (
                sonde_sdk::protocol_parser::Direction::Ingress,
                sonde_sdk::protocol_parser::Direction::Egress,
            )
        };
        h.segment(to_client, 1, &g)
            .segment(to_server, 2, &l)
            .segment(to_client, 3, &o)
            .segment(to_server, 4, &query("UPDATE t SET a = 1"))
            .segment(to_client, 5, &packet(1, &ok(4, AUTOCOMMIT)));
        assert_eq!(ops(&h), [op("UPDATE", 0, None)]);
    }
}

#[test]
fn mid_stream_connection_starts_at_a_command() {
    let mut h = H::client();
    // The tail of a response whose command was not seen, then a query.
    h.response(1, &packets(3, &[text_row(&["x"]), eof(AUTOCOMMIT)]))
        .request(2, &query("SELECT a FROM t"))
        .response(3, &result_set(&["a"], &[vec!["1"]], false, AUTOCOMMIT))
        .request(4, &query("COMMIT"))
        .response(5, &packet(1, &ok(0, AUTOCOMMIT)));
    assert_eq!(ops(&h), [op("SELECT", 0, None), op("COMMIT", 0, None)]);
    assert_eq!(attr(&h.result.records[0], key::RETURNED_ROWS), Some("1"));
    assert_eq!(claims(&h), [Claim::Mine]);
}

#[test]
fn mid_stream_learns_deprecate_eof_from_result_sets() {
    for deprecate in [false, true] {
        let mut h = H::client();
        h.request(1, &query("SELECT a FROM t"))
            .response(2, &result_set(&["a"], &[], deprecate, AUTOCOMMIT))
            .request(3, &prepare("SELECT a FROM t WHERE b = ?"))
            .response(4, &prepare_response(1, &["a"], 1, deprecate))
            .request(5, &execute(1, &["x"]))
            .response(
                6,
                &rows_response(&["a"], vec![binary_row(&["y"])], deprecate, AUTOCOMMIT),
            );
        assert_eq!(
            ops(&h),
            [
                op("SELECT", 0, None),
                op("PREPARE", 0, None),
                op("SELECT", 0, None)
            ],
            "deprecate_eof {deprecate}"
        );
        assert_eq!(attr(&h.result.records[2], key::RETURNED_ROWS), Some("1"));
    }
}

#[test]
fn mid_stream_query_attributes_prefix() {
    let mut h = H::client();
    h.request(1, &packet(0, b"\x03\x00\x01SELECT 7"))
        .response(2, &packet(1, &ok(0, AUTOCOMMIT)));
    assert_eq!(
        attr(&h.result.records[0], key::QUERY_TEXT),
        Some("SELECT ?")
    );
}

/// TLS after an SSLRequest: the daemon hands over the plaintext (libssl uprobes) as the
/// continuation of the stream. The full login comes inside it (sequence 2), then commands.
#[test]
fn ssl_request_then_the_plaintext_goes_on_as_one_stream() {
    let mut h = H::client();
    h.response(
        1,
        &packet(0, &greeting("10.11.6-MariaDB", BASE_CAPS | CLIENT_SSL)),
    )
    .request(2, &packet(1, &ssl_request(BASE_CAPS)))
    .request(3, &packet(2, &login(BASE_CAPS | CLIENT_SSL, "app", None)))
    .response(4, &packet(3, &ok(0, AUTOCOMMIT)))
    .request(5, &query("SELECT 1"))
    .response(6, &packet(1, &err(1227, "42000", "denied")));
    assert_eq!(ops(&h), [op("SELECT", 1227, Some("1227"))]);
}

/// TLS records where the plaintext should be (no uprobes on that libssl): nothing more can
/// be read, the parser lets the connection go.
#[test]
fn ssl_request_then_tls_records_finishes_the_connection() {
    let mut h = H::client();
    h.response(
        1,
        &packet(0, &greeting("10.11.6-MariaDB", BASE_CAPS | CLIENT_SSL)),
    )
    .request(2, &packet(1, &ssl_request(BASE_CAPS)))
    .request(3, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert_eq!(claims(&h), [Claim::Mine, Claim::Finished]);
    assert!(h.result.records.is_empty());
}

#[test]
fn auth_switch_and_failed_login() {
    let mut h = H::client();
    h.response(1, &packet(0, &greeting("8.0.36", BASE_CAPS)))
        .request(2, &packet(1, &login(BASE_CAPS, "app", None)));
    let mut switch = vec![0xFE];
    switch.extend_from_slice(b"mysql_native_password\0abcdefghijklmnopqrst\0");
    h.response(3, &packet(2, &switch))
        .request(4, &packet(3, &[0x11; 20]))
        .response(5, &packet(4, &ok(0, AUTOCOMMIT)))
        .request(6, &query("SELECT 1"))
        .response(7, &packet(1, &err(1227, "42000", "denied")));
    assert_eq!(ops(&h), [op("SELECT", 1227, Some("1227"))]);

    let mut h = H::client();
    h.response(1, &packet(0, &greeting("8.0.36", BASE_CAPS)))
        .request(2, &packet(1, &login(BASE_CAPS, "app", None)))
        .response(3, &packet(2, &err(1045, "28000", "Access denied")))
        .close();
    assert!(
        h.result.records.is_empty(),
        "authentication is not a command"
    );
}

#[test]
fn close_flushes_waiting_commands() {
    let mut h = H::client();
    connect(&mut h, false, None);
    h.request(10, &query("SELECT a FROM t"))
        .response(11, &packets(1, &[lenenc(1), column_def("a")]))
        .close();
    assert_eq!(ops(&h), [op("SELECT", 0, Some(error::TRUNCATED))]);
    let mut h = H::client();
    connect(&mut h, false, None);
    h.request(10, &query("SELECT a FROM t")).close();
    assert_eq!(ops(&h), [op("SELECT", 0, Some(error::NO_RESPONSE))]);
    assert_eq!(h.result.records[0].response_ts_ns, 0);
}
