//! Real sessions (`tests/fixtures/*.rec`, the SDK harness recording format, recorded with
//! `tests/fixtures/record.py` between the client and a PostgreSQL 15 server) replayed through
//! the parser, with the records each must produce; and the same bytes cut at every point, with
//! gaps, and fed from the middle.

use std::path::PathBuf;

use sonde_postgres_parser::Postgres;
use sonde_postgres_parser::record::attr as key;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, RequestRecord};

type H = Harness<Postgres>;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap()
}

fn replay(name: &str) -> H {
    let mut h = H::client();
    h.replay(&fixture(name)).unwrap();
    h.close();
    h
}

/// (operation, text, sqlstate, returned rows, affected rows) of a record.
type View = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The [`View`] of each record.
fn view(records: &[RequestRecord]) -> Vec<View> {
    records
        .iter()
        .map(|r| {
            let a = |k: &str| r.attr(k).map(str::to_string);
            (
                r.operation.clone(),
                a(key::QUERY_TEXT),
                a(key::STATUS_CODE),
                a(key::RETURNED_ROWS),
                a(key::AFFECTED_ROWS),
            )
        })
        .collect()
}

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

#[test]
fn psql_simple_queries_multi_statement_error_and_copy() {
    let h = replay("psql-simple.rec");
    let r = &h.result.records;
    assert_eq!(
        view(r),
        vec![
            (
                "SELECT".into(),
                s("SELECT * FROM items WHERE id IN (?)"),
                None,
                s("3"),
                None
            ),
            (
                "SELECT".into(),
                s("SELECT count(*) FROM items"),
                None,
                s("1"),
                None
            ),
            (
                "UPDATE".into(),
                s("UPDATE items SET name = ? WHERE id = ?"),
                None,
                None,
                s("1")
            ),
            (
                "INSERT".into(),
                s("INSERT INTO items VALUES (?, ?)"),
                None,
                None,
                s("1")
            ),
            (
                "SELECT".into(),
                s("SELECT * FROM missing_table"),
                s("42P01"),
                None,
                None
            ),
            ("COPY".into(), s("COPY items TO STDOUT"), None, None, s("4")),
            (
                "COPY".into(),
                s("COPY items (id, name) FROM STDIN"),
                None,
                None,
                s("2")
            ),
            (
                "DELETE".into(),
                s("DELETE FROM items WHERE id >= ?"),
                None,
                None,
                s("3")
            ),
        ]
    );
    for rec in r {
        assert_eq!(rec.attr(key::SYSTEM), Some("postgresql"));
        assert_eq!(rec.attr(key::NAMESPACE), Some("postgres"));
        assert!(rec.response_ts_ns >= rec.request_ts_ns && rec.request_ts_ns > 0);
        assert!(rec.request_bytes > 0 && rec.response_bytes > 0, "{rec:?}");
    }
    assert_eq!(r[4].error.as_deref(), Some("42P01"));
    assert_eq!(h.claims().first(), Some(&Claim::Mine));
}

#[test]
fn extended_protocol_pipelined() {
    let h = replay("extended.rec");
    let r = &h.result.records;
    let text = "SELECT n, ? FROM generate_series(?, $1::int) AS n";
    assert_eq!(
        view(r),
        vec![
            ("SELECT".into(), s(text), None, s("2"), None),
            ("SELECT".into(), s(text), None, s("3"), None),
            (
                "INSERT".into(),
                s("INSERT INTO items VALUES ($1, ?)"),
                None,
                None,
                s("1")
            ),
            (
                "SELECT".into(),
                s("SELECT * FROM missing WHERE id = $1"),
                s("42P01"),
                None,
                None
            ),
        ]
    );
    assert_eq!(r[0].attr(key::STATEMENT_NAME), Some("s1"));
    assert_eq!(r[2].attr(key::STATEMENT_NAME), None);
}

/// Every split of each recording into two segments at any byte gives the same records.
#[test]
fn any_segmentation_gives_the_same_records() {
    for name in ["psql-simple.rec", "extended.rec"] {
        let whole = view(&replay(name).result.records);
        // Re-cut: concatenate each direction's stream and feed it in chunks of n bytes, keeping
        // the order of the recording's segments.
        let segs = segments(&fixture(name));
        for n in [1usize, 2, 3, 7, 64] {
            let mut h = H::client();
            for (egress, ts, data) in &segs {
                for c in data.chunks(n) {
                    if *egress {
                        h.request(*ts, c);
                    } else {
                        h.response(*ts, c);
                    }
                }
            }
            h.close();
            assert_eq!(view(&h.result.records), whole, "{name} in chunks of {n}");
        }
    }
}

/// A gap anywhere never pairs a statement with another's response: every record either
/// matches one of the complete replay's, or is reported without a status (`truncated`).
#[test]
fn gaps_never_pair_wrongly() {
    for name in ["psql-simple.rec", "extended.rec"] {
        let whole = view(&replay(name).result.records);
        let segs = segments(&fixture(name));
        for (i, _) in segs.iter().enumerate() {
            for cut in [1u64, 3, 50] {
                let mut h = H::client();
                for (j, (egress, ts, data)) in segs.iter().enumerate() {
                    let data: &[u8] = if i == j {
                        let k = (cut as usize).min(data.len());
                        let dir = if *egress {
                            h.gap_request()
                        } else {
                            h.gap_response()
                        };
                        h.gap(dir, k as u64);
                        &data[k..]
                    } else {
                        data
                    };
                    if *egress {
                        h.request(*ts, data);
                    } else {
                        h.response(*ts, data);
                    }
                }
                h.close();
                for rec in &h.result.records {
                    if rec.error.as_deref() == Some("truncated") {
                        continue;
                    }
                    let v = view(std::slice::from_ref(rec)).remove(0);
                    let ok = whole.iter().any(|w| {
                        w.0 == v.0 && w.1 == v.1 && w.2 == v.2 && (v.3.is_none() || w.3 == v.3)
                    });
                    assert!(
                        ok,
                        "{name}, gap in segment {i} ({cut}): {v:?} not in {whole:?}"
                    );
                }
            }
        }
    }
}

/// A connection first seen mid-stream: picked up at a Query, the statements answered before
/// the first ReadyForQuery given up, the ones after paired.
#[test]
fn picked_up_mid_stream() {
    let segs = segments(&fixture("psql-simple.rec"));
    let whole = view(&replay("psql-simple.rec").result.records);
    // Start at each client segment that begins with a Query.
    for (i, (egress, _, data)) in segs.iter().enumerate() {
        if !*egress || data.first() != Some(&b'Q') {
            continue;
        }
        let mut h = H::client();
        for (egress, ts, data) in &segs[i..] {
            if *egress {
                h.request(*ts, data);
            } else {
                h.response(*ts, data);
            }
        }
        h.close();
        let got = view(&h.result.records);
        assert!(!got.is_empty(), "from segment {i}");
        assert!(whole.ends_with(&got), "from segment {i}: {got:?}");
    }
}

/// The recording's segments: (egress, ts, bytes).
fn segments(rec: &[u8]) -> Vec<(bool, u64, Vec<u8>)> {
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
        let (ts, len): (u64, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        out.push((f[0] == ">", ts, rec[nl + 1..nl + 1 + len].to_vec()));
        at = nl + 1 + len + 1;
    }
    out
}

trait Dirs {
    fn gap_request(&self) -> sonde_sdk::protocol_parser::Direction;
    fn gap_response(&self) -> sonde_sdk::protocol_parser::Direction;
}

impl Dirs for H {
    fn gap_request(&self) -> sonde_sdk::protocol_parser::Direction {
        sonde_sdk::protocol_parser::Direction::Egress
    }
    fn gap_response(&self) -> sonde_sdk::protocol_parser::Direction {
        sonde_sdk::protocol_parser::Direction::Ingress
    }
}

/// The same session seen from the server (it reads the requests), fed segment by segment as
/// the daemon does.
#[test]
fn seen_from_the_server() {
    let segs = segments(&fixture("psql-simple.rec"));
    let whole = view(&replay("psql-simple.rec").result.records);
    let mut h = H::server();
    for (egress, ts, data) in &segs {
        if *egress {
            h.request(*ts, data);
        } else {
            h.response(*ts, data);
        }
    }
    h.close();
    assert_eq!(view(&h.result.records), whole);
}

/// The fuzz seeds (`fuzz/corpus/conversation/<recording>-<0 client|1 server>`, in the format of
/// `Harness::feed_arbitrary`) are the recordings: fed as the fuzzer feeds them, they give the
/// recordings' records.
#[test]
fn fuzz_seeds_are_the_recordings() {
    use sonde_sdk::protocol_parser::{ConnInfo, Role};
    for name in ["psql-simple", "extended"] {
        let whole = view(&replay(&format!("{name}.rec")).result.records);
        for (variant, role) in [(0, Role::Client), (1, Role::Server)] {
            let seed = std::fs::read(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("fuzz/corpus/conversation/{name}-{variant}")),
            )
            .unwrap();
            assert_eq!(seed[0] % 3, variant as u8);
            let mut h = H::new(ConnInfo {
                id: 1,
                role,
                ..Default::default()
            });
            h.feed_arbitrary(&seed[1..]);
            h.close();
            assert_eq!(view(&h.result.records), whole, "{name}-{variant}");
        }
    }
}
