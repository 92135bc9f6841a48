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

/// A client connection fed straight to the parser (no driver), so the test can read the
/// parser's counters.
struct Direct {
    state: sonde_postgres_parser::PostgresState,
    conn: sonde_sdk::protocol_parser::ConnInfo,
    records: Vec<RequestRecord>,
    claims: Vec<Claim>,
}

impl Direct {
    fn client() -> Self {
        Direct {
            state: Default::default(),
            conn: sonde_sdk::protocol_parser::ConnInfo {
                id: 1,
                role: sonde_sdk::protocol_parser::Role::Client,
                ..Default::default()
            },
            records: Vec::new(),
            claims: Vec::new(),
        }
    }

    fn feed(&mut self, egress: bool, ts: u64, gap_before: u64, data: &[u8]) {
        use sonde_sdk::protocol_parser::{Direction, ProtocolParser, Segment};
        let seg = Segment {
            direction: if egress {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            ts_ns: ts,
            gap_before,
            data,
        };
        let claim = Postgres::parse(&mut self.state, &self.conn, &seg, &mut self.records);
        self.claims.push(claim);
    }

    fn close(&mut self) {
        use sonde_sdk::protocol_parser::ProtocolParser;
        Postgres::close(&mut self.state, &self.conn, &mut self.records);
    }
}

/// Replays `name`, except segment `at`: its bytes `[..from]`, then a gap of `to - from` bytes,
/// then `[to..]` in chunks of `chunk` bytes. `order` gives the order of the segments.
fn replay_with_gap(
    name: &str,
    order: &[usize],
    at: usize,
    from: usize,
    to: usize,
    chunk: usize,
) -> Direct {
    let segs = segments(&fixture(name));
    let mut d = Direct::client();
    // A gap is reported with the next bytes of its direction, wherever they come.
    let mut gap = [0u64; 2];
    for &i in order {
        let (egress, ts, data) = &segs[i];
        let side = usize::from(*egress);
        if i != at {
            d.feed(*egress, *ts, std::mem::take(&mut gap[side]), data);
            continue;
        }
        d.feed(*egress, *ts, std::mem::take(&mut gap[side]), &data[..from]);
        gap[side] = (to - from) as u64;
        for c in data[to..].chunks(chunk) {
            d.feed(*egress, *ts, std::mem::take(&mut gap[side]), c);
        }
    }
    d.close();
    d
}

fn all(name: &str) -> Vec<usize> {
    (0..segments(&fixture(name)).len()).collect()
}

fn truncated(v: &View) -> View {
    (v.0.clone(), v.1.clone(), None, None, None)
}

/// A gap inside a SELECT's DataRow stream that hides where the next row begins: the SELECT is
/// given up (`truncated`), the server bytes up to its ReadyForQuery are passed over, and every
/// later statement is paired exactly as in the whole session, however the rest is cut.
#[test]
fn gap_in_a_data_row_stream_resyncs_at_ready_for_query() {
    let whole = view(&replay("psql-simple.rec").result.records);
    // Segment 5 answers the first SELECT: T (0..51), D (51..68), D (68..85), D (85..102),
    // C (102..116), Z (116..122). The gap: the first row's last 8 bytes and 12 of the next.
    for chunk in [usize::MAX, 1, 2, 3, 7] {
        let d = replay_with_gap("psql-simple.rec", &all("psql-simple.rec"), 5, 60, 80, chunk);
        let got = view(&d.records);
        let mut want = whole.clone();
        want[0] = truncated(&whole[0]);
        assert_eq!(got, want, "in chunks of {chunk}");
        assert_eq!(d.records[0].error.as_deref(), Some("truncated"));
        assert_eq!(d.state.resyncs(), 1);
        assert_eq!(d.state.skipped_bytes(), 36, "80..116 passed over");
        assert!(!d.state.in_doubt());
        assert!(d.claims.iter().all(|c| *c == Claim::Mine), "{:?}", d.claims);
    }
}

/// A gap of exactly one message header (the first CommandComplete of a three-statement Query)
/// loses the framing: the Query's statements are given up, the next ones paired exactly.
#[test]
fn gap_hiding_a_header_resyncs() {
    let whole = view(&replay("psql-simple.rec").result.records);
    // Segment 7: T (0..31), D (31..43), C (43..57), C (57..71), C (71..87), Z (87..93).
    let d = replay_with_gap(
        "psql-simple.rec",
        &all("psql-simple.rec"),
        7,
        43,
        48,
        usize::MAX,
    );
    let mut want = whole.clone();
    for w in &mut want[1..4] {
        *w = truncated(w);
    }
    assert_eq!(view(&d.records), want);
    assert_eq!(d.state.resyncs(), 1);
    assert_eq!(d.state.skipped_bytes(), 87 - 48);
    // The same gap one byte later (inside the header: its type byte seen).
    let d = replay_with_gap(
        "psql-simple.rec",
        &all("psql-simple.rec"),
        7,
        44,
        49,
        usize::MAX,
    );
    assert_eq!(view(&d.records), want);
}

/// A gap in the rows of the first pipelined group (two Executes behind one Sync), then two
/// more groups pipelined: the first group's statements are given up, the later ones paired.
/// When the later groups were already sent at the gap (the client pipelined all three before
/// reading), which ReadyForQuery closes which group is not known until the queue drains:
/// those are given up too, never paired with another group's answer.
#[test]
fn gap_then_pipelined_extended_queries() {
    let name = "extended.rec";
    let whole = view(&replay(name).result.records);
    // Segment 3 answers group 1 (ParseComplete, descriptions, BindComplete, rows…): the gap
    // begins 8 bytes into its first DataRow (17 bytes) and ends 8 bytes into the second.
    let segs = segments(&fixture(name));
    let rows_at = segs[3].2.iter().position(|b| *b == b'D').unwrap();
    let (from, to) = (rows_at + 8, rows_at + 25);
    let d = replay_with_gap(name, &all(name), 3, from, to, usize::MAX);
    let mut want = whole.clone();
    want[0] = truncated(&whole[0]);
    want[1] = truncated(&whole[1]);
    assert_eq!(view(&d.records), want);
    assert_eq!(d.state.resyncs(), 1);
    assert!(!d.state.in_doubt());

    // Groups 2 and 3 sent before group 1's response was read.
    let order = [0, 1, 2, 4, 3, 5, 6, 7, 8];
    let d = replay_with_gap(name, &order, 3, from, to, usize::MAX);
    let got = view(&d.records);
    assert_eq!(got.len(), whole.len(), "{got:?}");
    for (g, w) in got.iter().zip(&whole) {
        assert_eq!(*g, truncated(w));
    }
    assert!(
        d.records
            .iter()
            .all(|r| r.error.as_deref() == Some("truncated"))
    );
    // The queue drained at group 3's ReadyForQuery: certain again for the Close + Sync.
    assert_eq!(d.state.resyncs(), 1);
    assert!(!d.state.in_doubt());
}

/// A gap that hides boundaries on the request side: the groups it held cannot be counted, so
/// the connection is given up (`Finished`), its waiting statements `truncated`.
#[test]
fn gap_hiding_request_boundaries_gives_up() {
    let name = "psql-simple.rec";
    // Segment 6 is a 108-byte Query: a gap of its first 10 bytes and 5 of the previous one's.
    let segs = segments(&fixture(name));
    let mut d = Direct::client();
    for (i, (egress, ts, data)) in segs.iter().enumerate() {
        if i == 6 {
            d.feed(*egress, *ts, 200, &data[10..]);
        } else {
            d.feed(*egress, *ts, 0, data);
        }
    }
    d.close();
    assert_eq!(d.claims.last(), Some(&Claim::Finished));
    assert_eq!(view(&d.records)[0].0, "SELECT");
    assert_eq!(d.records.len(), 1, "{:?}", view(&d.records));
}

/// A response-side gap of 1, 5, 6, 17 or 40 bytes at every offset of every server segment:
/// each statement is still reported once, in order, either as in the whole session (its row
/// count possibly lost) or `truncated` — never with another statement's answer.
#[test]
fn response_gaps_anywhere_never_pair_wrongly() {
    for name in ["psql-simple.rec", "extended.rec"] {
        let whole = view(&replay(name).result.records);
        let segs = segments(&fixture(name));
        let mut resynced = 0;
        for (at, (egress, _, data)) in segs.iter().enumerate() {
            if *egress {
                continue;
            }
            for len in [1, 5, 6, 17, 40] {
                for from in 0..data.len() {
                    let to = (from + len).min(data.len());
                    let d = replay_with_gap(name, &all(name), at, from, to, usize::MAX);
                    resynced += d.state.resyncs();
                    let got = view(&d.records);
                    let finished = d.claims.contains(&Claim::Finished);
                    assert!(
                        got.len() == whole.len() || (finished && got.len() < whole.len()),
                        "{name} segment {at} gap {from}..{to}: {got:?}"
                    );
                    for (i, (g, w)) in got.iter().zip(&whole).enumerate() {
                        let paired = g.0 == w.0
                            && g.1 == w.1
                            && g.2 == w.2
                            && (g.3.is_none() || g.3 == w.3)
                            && (g.4.is_none() || g.4 == w.4);
                        let given_up =
                            d.records[i].error.as_deref() == Some("truncated") && g.1 == w.1;
                        assert!(
                            paired || given_up,
                            "{name} segment {at} gap {from}..{to}, record {i}: {g:?} vs {w:?}"
                        );
                    }
                }
            }
        }
        assert!(resynced > 0, "{name}: some gap was resynchronised");
    }
}

/// TLS begun inside the connection: the server accepts psql's SSLRequest with `S`, and the
/// daemon hands over the TLS plaintext (libssl uprobes) as the rest of each stream, never the
/// records. The recording's cleartext session stands for that plaintext; the answer comes
/// after the request, or first (the driver may hand over the other direction first).
#[test]
fn an_accepted_ssl_request_goes_on_with_the_plaintext() {
    let clear = replay("psql-simple.rec");
    assert!(!clear.result.records.is_empty());
    let rec = fixture("psql-simple.rec");
    let (request, answer) = (&b"> 3043642 8\n"[..], &b"< 6806990 1\nN\n"[..]);
    let find = |needle: &[u8]| rec.windows(needle.len()).position(|w| w == needle).unwrap();
    let (r, a) = (find(request), find(answer));
    let accepted = b"< 6806990 1\nS\n";
    // In order: request, `S`.
    let mut in_order = rec.clone();
    in_order[a..a + answer.len()].copy_from_slice(accepted);
    // `S` first, then the request.
    let req_line = &rec[r..a];
    let mut answer_first = rec[..r].to_vec();
    answer_first.extend_from_slice(accepted);
    answer_first.extend_from_slice(req_line);
    answer_first.extend_from_slice(&rec[a + answer.len()..]);
    for (name, bytes) in [("in order", in_order), ("answer first", answer_first)] {
        let mut h = H::client();
        h.replay(&bytes).unwrap();
        h.close();
        assert_eq!(
            view(&h.result.records),
            view(&clear.result.records),
            "{name}"
        );
    }
}
