//! Gaps of the capture as the daemon reports them: a segment without bytes whose `gap_before`
//! is the length missing, stamped like the syscall it belongs to — the tail of a read or write
//! beyond the per-syscall capture cap, or a whole event lost. The parser must follow gaps by the
//! packet lengths it knows, find packets again where it does not, and never pair a response
//! with a command it does not certainly answer.

mod common;

use common::*;
use sonde_mysql_parser::record::{attr as key, error};
use sonde_sdk::protocol_parser::{Direction, RequestRecord};

const REQ: Direction = Direction::Egress;
const RESP: Direction = Direction::Ingress;

/// One syscall moving `bytes` one way: the first `cap` copied, the rest a gap stamped with the
/// same time.
fn syscall(h: &mut H, dir: Direction, ts: u64, bytes: &[u8], cap: usize) {
    let kept = bytes.len().min(cap);
    h.segment(dir, ts, &bytes[..kept]);
    if bytes.len() > kept {
        h.gap(dir, (bytes.len() - kept) as u64)
            .segment(dir, ts, b"");
    }
}

/// A response stream read `size` bytes at a time under a capture cap of `cap`, from time `ts`
/// (one per read); the time of the last read.
fn reads(h: &mut H, mut ts: u64, bytes: &[u8], size: usize, cap: usize) -> u64 {
    for chunk in bytes.chunks(size) {
        ts += 1;
        syscall(h, RESP, ts, chunk, cap);
    }
    ts
}

/// A whole event lost (the ring buffer was full): only its length is known.
fn lost(h: &mut H, dir: Direction, ts: u64, n: usize) {
    h.gap(dir, n as u64).segment(dir, ts, b"");
}

/// `n` rows of two text columns, 21 bytes a packet.
fn numbered(n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| vec![format!("{i:05}"), "some value".to_string()])
        .collect()
}

fn result_of(rows: &[Vec<String>], deprecate: bool) -> Vec<u8> {
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    result_set(&["id", "v"], &rows, deprecate, AUTOCOMMIT)
}

fn one<'a>(h: &'a H, operation: &str) -> &'a RequestRecord {
    let found: Vec<_> = h
        .result
        .records
        .iter()
        .filter(|r| r.operation == operation)
        .collect();
    assert_eq!(found.len(), 1, "{operation} in {:?}", ops(h));
    found[0]
}

/// A result set read 2 KiB at a time under the smallest cap (1 KiB): every read's second half,
/// row headers included, is a gap. The rows it hid are counted from the sequence ids (about 48
/// rows in 1 KiB: another 256 would not fit), so the result set is whole. Before, the first gap
/// truncated it and the rest was skipped.
#[test]
fn rows_hidden_with_their_headers_are_counted_by_sequence_ids() {
    for deprecate in [false, true] {
        let mut h = H::client();
        connect(&mut h, deprecate, None);
        let rs = result_of(&numbered(200), deprecate);
        h.request(10, &query("SELECT id, v FROM t"));
        let last = reads(&mut h, 10, &rs, 2048, 1024);
        h.request(100, &packet(0, &[0x0e]))
            .response(101, &packet(1, &ok(0, AUTOCOMMIT)));
        assert_eq!(
            ops(&h),
            [op("SELECT", 0, None), op("PING", 0, None)],
            "deprecate {deprecate}"
        );
        let r = &h.result.records[0];
        assert_eq!(attr(r, key::RETURNED_ROWS), Some("200"));
        assert_eq!(
            (r.response_bytes, r.response_ts_ns),
            (rs.len() as u64, last)
        );
    }
}

/// A gap hiding more rows than the sequence ids can count (ids repeat every 256 packets): the
/// result set still ends where it ends, paired, its bytes counted, but without a row count and
/// reported truncated. The next command pairs as usual.
#[test]
fn rows_too_many_to_count_keep_the_end_but_not_the_count() {
    let mut h = H::client();
    connect(&mut h, true, None);
    let rs = result_of(&numbered(1000), true);
    h.request(10, &query("SELECT id, v FROM t"));
    // One 16 KiB read capped at 1 KiB, then small reads copied whole.
    syscall(&mut h, RESP, 11, &rs[..16384], 1024);
    let last = reads(&mut h, 11, &rs[16384..], 1000, 1024);
    h.request(100, &query("SELECT 1"))
        .response(101, &result_set(&["1"], &[vec!["1"]], true, AUTOCOMMIT));
    assert_eq!(
        ops(&h),
        [
            op("SELECT", 0, Some(error::TRUNCATED)),
            op("SELECT", 0, None)
        ]
    );
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::RETURNED_ROWS), None);
    assert_eq!(
        (r.response_bytes, r.response_ts_ns),
        (rs.len() as u64, last)
    );
    assert_eq!(attr(&h.result.records[1], key::RETURNED_ROWS), Some("1"));
}

/// A gap inside one packet is skipped by its length, whatever the cap; one that ends exactly
/// at a packet's end leaves the framing whole.
#[test]
fn gaps_inside_packets_are_skipped_by_length() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let big = "x".repeat(40_000);
    let rs = result_set(
        &["a"],
        &[vec!["1"], vec![&big], vec!["3"]],
        false,
        AUTOCOMMIT,
    );
    h.request(10, &query("SELECT a FROM t"));
    // A client reading the big row straight into its buffer: one 40 KB read.
    let row = rs.windows(3).position(|w| w == b"xxx").unwrap() - 7;
    reads(&mut h, 10, &rs[..row], 16384, 16384);
    syscall(&mut h, RESP, 20, &rs[row..row + 40_007], 16384);
    reads(&mut h, 20, &rs[row + 40_007..], 16384, 16384);
    assert_eq!(ops(&h), [op("SELECT", 0, None)]);
    assert_eq!(attr(&h.result.records[0], key::RETURNED_ROWS), Some("3"));
}

fn big_insert(rows: usize) -> String {
    let values: Vec<String> = (0..rows).map(|i| format!("({i}, 'value {i}')")).collect();
    format!("INSERT INTO t (a, b) VALUES {}", values.join(", "))
}

/// A 40 kB INSERT is more than the cap: its text is cut, but its first bytes say what it is and
/// its length where it ends, so the OK after it is its own and the SELECT after that pairs too.
#[test]
fn a_command_bigger_than_the_cap_pairs_with_its_response() {
    let sql = big_insert(2500);
    let insert = query(&sql);
    assert!(insert.len() > 40_000);
    // One write (a driver sending the packet at once), then libmysqlclient's way: its 16 KiB
    // buffer flushed, then the rest written directly; under the default and the smallest cap.
    let whole = vec![insert.clone()];
    let flushed = vec![insert[..16384].to_vec(), insert[16384..].to_vec()];
    for (cap, writes) in [(16384, whole), (16384, flushed.clone()), (1024, flushed)] {
        let mut h = H::client();
        connect(&mut h, true, Some("shop"));
        for (i, w) in writes.iter().enumerate() {
            syscall(&mut h, REQ, 10 + i as u64, w, cap);
        }
        h.response(20, &packet(1, &ok(2500, AUTOCOMMIT)))
            .request(30, &query("SELECT a, b FROM t WHERE a < 3"));
        reads(
            &mut h,
            30,
            &result_set(
                &["a", "b"],
                &[vec!["0", "value 0"], vec!["1", "value 1"]],
                true,
                AUTOCOMMIT,
            ),
            16384,
            cap,
        );
        assert_eq!(
            ops(&h),
            [op("INSERT", 0, None), op("SELECT", 0, None)],
            "cap {cap}"
        );
        let r = &h.result.records[0];
        assert_eq!(attr(r, key::AFFECTED_ROWS), Some("2500"));
        assert_eq!(r.request_bytes, insert.len() as u64);
        assert_eq!((r.request_ts_ns, r.response_ts_ns), (10, 20));
        let text = attr(r, key::QUERY_TEXT).unwrap();
        assert!(
            text.starts_with("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"),
            "{text}"
        );
        assert_eq!(attr(&h.result.records[1], key::RETURNED_ROWS), Some("2"));
    }
}

/// LOAD DATA LOCAL under a small cap: the upload's writes are cut across its packets, so the
/// request side loses its boundaries; until the server answers the upload, what it sends is the
/// file (a client sends no command before), so the command after pairs as usual.
#[test]
fn load_data_local_upload_beyond_the_cap() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let load = query("LOAD DATA LOCAL INFILE '/tmp/big.csv' INTO TABLE t");
    h.request(10, &load);
    let mut want = vec![0xFB];
    want.extend_from_slice(b"/tmp/big.csv");
    h.response(11, &packet(1, &want));
    // Ten packets of 10000 bytes and the empty one, written 16 KiB at a time.
    let mut upload: Vec<Vec<u8>> = (0..10).map(|i| vec![b'0' + i as u8; 10_000]).collect();
    upload.push(vec![]);
    let upload = packets(2, &upload);
    for (i, w) in upload.chunks(16384).enumerate() {
        syscall(&mut h, REQ, 12 + i as u64, w, 1024);
    }
    h.response(30, &packet(13, &ok(100_000, AUTOCOMMIT)))
        .request(40, &query("SELECT COUNT(*) FROM t"))
        .response(
            41,
            &result_set(&["n"], &[vec!["100000"]], false, AUTOCOMMIT),
        );
    assert_eq!(ops(&h), [op("LOAD", 0, None), op("SELECT", 0, None)]);
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::AFFECTED_ROWS), Some("100000"));
    assert_eq!(r.request_bytes, (load.len() + upload.len()) as u64);
}

/// A client pipelining A (a big SELECT) and B (an INSERT) reads A's rows with a capped read
/// whose gap hides A's end; B's ERR (seq 1) follows in the next read. The ids say it cannot be
/// A's (A would need some 220 more packets, in 270 bytes), and B is the only other command
/// sent: the ERR is B's, with its SQLSTATE. Before, B was given up at the gap.
#[test]
fn err_after_a_gap_is_placed_when_only_one_command_can_own_it() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let rs = result_of(&numbered(40), false);
    let keep = rs.len() - 270;
    h.request(
        10,
        &[
            query("SELECT id, v FROM t"),
            query("INSERT INTO u VALUES (1)"),
        ]
        .concat(),
    );
    syscall(&mut h, RESP, 11, &rs, keep);
    h.response(12, &packet(1, &err(1062, "23000", "Duplicate entry '1'")));
    h.close();
    assert_eq!(
        ops(&h),
        [
            op("SELECT", 0, Some(error::TRUNCATED)),
            op("INSERT", 1062, Some("1062"))
        ]
    );
    assert_eq!(attr(&h.result.records[1], key::SQLSTATE), Some("23000"));
    assert_eq!(h.result.records[1].response_ts_ns, 12);
}

/// The same, but a third command was sent before the ERR came: it may be B's or C's (B's OK
/// could have been in the gap), so it is nobody's. C's own response, coming next, can only be
/// C's. Before, the ERR went to the first command waiting after the gap.
#[test]
fn err_after_a_gap_is_not_placed_when_two_commands_may_own_it() {
    let mut h = H::client();
    connect(&mut h, false, None);
    let rs = result_of(&numbered(40), false);
    let keep = rs.len() - 270;
    h.request(
        10,
        &[
            query("SELECT id, v FROM t"),
            query("INSERT INTO u VALUES (1)"),
        ]
        .concat(),
    );
    syscall(&mut h, RESP, 11, &rs, keep);
    h.request(12, &query("UPDATE u SET b = 2"))
        .response(13, &packet(1, &err(1062, "23000", "Duplicate entry '1'")))
        .response(14, &packet(1, &ok(3, AUTOCOMMIT)));
    h.close();
    assert_eq!(
        ops(&h),
        [
            op("SELECT", 0, Some(error::TRUNCATED)),
            op("INSERT", 0, Some(error::TRUNCATED)),
            op("UPDATE", 0, None)
        ]
    );
    let update = one(&h, "UPDATE");
    assert_eq!(attr(update, key::AFFECTED_ROWS), Some("3"));
    assert_eq!(update.response_ts_ns, 14);
}

/// Without pipelining, an ERR ending a result set after a gap too long to count its rows can
/// only be that result set's: no other command was sent. It is attributed, the row count is not.
#[test]
fn err_ending_rows_after_a_gap_belongs_to_the_only_command() {
    let mut h = H::client();
    connect(&mut h, true, None);
    let mut rs = result_of(&numbered(800), true);
    // The last row and the terminator replaced by an ERR (the query was interrupted).
    let cut = rs.len() - 11 - 21;
    rs.truncate(cut);
    let seq = rs[rs.len() - 21 + 3].wrapping_add(1);
    rs.extend(packet(
        seq,
        &err(3024, "HY000", "Query execution was interrupted"),
    ));
    h.request(10, &query("SELECT id, v FROM t"));
    syscall(&mut h, RESP, 11, &rs[..16000], 1024);
    h.response(12, &rs[16000..]);
    assert_eq!(ops(&h), [op("SELECT", 3024, Some("3024"))]);
    let r = &h.result.records[0];
    assert_eq!(attr(r, key::SQLSTATE), Some("HY000"));
    assert_eq!(attr(r, key::RETURNED_ROWS), None);
    assert_eq!(r.response_bytes, rs.len() as u64);
}

/// Four pipelined commands; the read holding B's whole OK was lost (a ring-buffer drop). The
/// gap began where A's response ended, and 11 bytes hold exactly one response: C's and D's
/// responses are theirs. Before, every command waiting at the gap was given up.
#[test]
fn a_lost_read_of_one_whole_response_leaves_the_others_placed() {
    let mut h = H::client();
    connect(&mut h, true, None);
    let cmds = [
        query("UPDATE a SET x = 1"),
        query("UPDATE b SET x = 1"),
        query("SELECT x FROM c"),
        query("DELETE FROM d"),
    ];
    h.request(10, &cmds.concat())
        .response(11, &packet(1, &ok(1, AUTOCOMMIT)));
    lost(&mut h, RESP, 12, packet(1, &ok(2, AUTOCOMMIT)).len());
    h.response(
        13,
        &[
            result_set(&["x"], &[vec!["7"], vec!["8"]], true, AUTOCOMMIT),
            packet(1, &ok(4, AUTOCOMMIT)),
        ]
        .concat(),
    );
    h.close();
    let statuses: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| {
            (
                attr(r, key::QUERY_TEXT).unwrap_or_default().to_string(),
                r.error.clone(),
                attr(r, key::AFFECTED_ROWS).map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("UPDATE a SET x = ?".into(), None, Some("1".into())),
            (
                "UPDATE b SET x = ?".into(),
                Some(error::TRUNCATED.into()),
                None
            ),
            ("SELECT x FROM c".into(), None, None),
            ("DELETE FROM d".into(), None, Some("4".into())),
        ]
    );
    assert_eq!(attr(one(&h, "SELECT"), key::RETURNED_ROWS), Some("2"));
}

/// Two whole OKs lost (22 bytes: two responses, or one with a longer message): the OK after
/// them may be C's or D's, so it lands on nobody, and the commands it may have answered are
/// reported without a status. Had a SELECT been among them, a result set could only be its own.
#[test]
fn a_lost_read_of_several_responses_is_never_guessed() {
    let update = |t: &str| query(&format!("UPDATE {t} SET x = 1"));
    let mut h = H::client();
    connect(&mut h, true, None);
    h.request(
        10,
        &[update("a"), update("b"), update("c"), update("d")].concat(),
    )
    .response(11, &packet(1, &ok(1, AUTOCOMMIT)));
    lost(&mut h, RESP, 12, 2 * packet(1, &ok(2, AUTOCOMMIT)).len());
    h.response(13, &packet(1, &ok(4, AUTOCOMMIT)));
    h.close();
    assert_eq!(h.result.records.len(), 4);
    for r in &h.result.records[1..] {
        assert_eq!(r.error.as_deref(), Some(error::TRUNCATED), "{r:?}");
        assert_eq!(attr(r, key::AFFECTED_ROWS), None);
    }

    // C an UPDATE, D a SELECT: the result set is D's.
    let mut h = H::client();
    connect(&mut h, true, None);
    let select = query("SELECT x FROM d");
    h.request(
        10,
        &[update("a"), update("b"), update("c"), select].concat(),
    )
    .response(11, &packet(1, &ok(1, AUTOCOMMIT)));
    lost(&mut h, RESP, 12, 2 * packet(1, &ok(2, AUTOCOMMIT)).len());
    h.response(
        13,
        &result_set(&["x"], &[vec!["7"], vec!["8"]], true, AUTOCOMMIT),
    );
    h.close();
    let r = one(&h, "SELECT");
    assert_eq!((r.error.as_deref(), r.response_ts_ns), (None, 13));
    assert_eq!(attr(r, key::RETURNED_ROWS), Some("2"));
    let updates: Vec<_> = h
        .result
        .records
        .iter()
        .filter(|r| r.operation == "UPDATE")
        .collect();
    assert_eq!(updates.len(), 3);
    assert!(
        updates[1..]
            .iter()
            .all(|r| r.error.as_deref() == Some(error::TRUNCATED))
    );
}

/// The last capped read of a big result set hides its end; the client (not pipelining) then
/// sends a PING, whose OK comes at the start of the next read. By its ids that OK could be one of
/// the SELECT's rows, so it is held until the next packet: the response to the command after
/// begins with id 1, which a row would not. Both are paired; the SELECT is truncated.
#[test]
fn an_ok_after_a_hidden_end_is_told_from_a_row_by_the_next_packet() {
    let mut h = H::client();
    connect(&mut h, true, None);
    // Five columns: an OK packet (00 00 00 02 00 00 00) also reads as a row of five values.
    let ids: Vec<String> = (0..1000).map(|i| format!("{i:05}")).collect();
    let rows: Vec<Vec<&str>> = ids
        .iter()
        .map(|i| vec![i.as_str(), "a", "b", "c", ""])
        .collect();
    let rs = result_set(&["id", "a", "b", "c", "d"], &rows, true, AUTOCOMMIT);
    h.request(10, &query("SELECT id, a, b, c, d FROM t"));
    reads(&mut h, 10, &rs, 16384, 1024);
    h.request(40, &packet(0, &[0x0e]))
        .response(41, &packet(1, &ok(0, AUTOCOMMIT)))
        .request(50, &query("SELECT 1"))
        .response(51, &result_set(&["1"], &[vec!["1"]], true, AUTOCOMMIT))
        .request(60, &query("SELECT 2"))
        .response(61, &result_set(&["2"], &[vec!["2"]], true, AUTOCOMMIT));
    assert_eq!(
        ops(&h),
        [
            op("SELECT", 0, Some(error::TRUNCATED)),
            op("PING", 0, None),
            op("SELECT", 0, None),
            op("SELECT", 0, None)
        ]
    );
    assert_eq!(h.result.records[1].response_ts_ns, 41);
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The commands of exchange `i` with their responses: an UPDATE whose OK carries `i` affected
/// rows, a SELECT of `i` rows (one column, or five so that an OK packet also reads as a row), a
/// CALL whose result of `i` rows is followed by an OK of `i` affected rows, a DELETE failing
/// with error `1000 + i`, or a statement prepared as id `i` and executed (`i` binary rows).
fn exchange(i: usize, deprecate: bool, rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let n: Vec<String> = (0..i).map(|r| r.to_string()).collect();
    let one: Vec<Vec<&str>> = n.iter().map(|r| vec![r.as_str()]).collect();
    let end = if deprecate { 11 } else { 9 };
    match rng.below(6) {
        0 => vec![(
            query(&format!("UPDATE t{i}x SET x = 1")),
            packet(1, &ok(i as u64, AUTOCOMMIT)),
        )],
        1 => vec![(
            query(&format!("SELECT x FROM t{i}x")),
            result_set(&["x"], &one, deprecate, AUTOCOMMIT),
        )],
        2 => {
            let rows: Vec<Vec<&str>> = n.iter().map(|r| vec![r, "", "", "", ""]).collect();
            vec![(
                query(&format!("SELECT a, b, c, d, e FROM t{i}x")),
                result_set(&["a", "b", "c", "d", "e"], &rows, deprecate, AUTOCOMMIT),
            )]
        }
        3 => {
            let mut rs = result_set(&["x"], &one, deprecate, AUTOCOMMIT | MORE_RESULTS);
            let last = rs[rs.len() - end + 3];
            rs.extend(packet(last.wrapping_add(1), &ok(i as u64, AUTOCOMMIT)));
            vec![(query(&format!("CALL t{i}x()")), rs)]
        }
        4 => vec![(
            query(&format!("DELETE FROM t{i}x")),
            packet(
                1,
                &err(1000 + i as u16, "HY000", &"e".repeat(rng.below(40))),
            ),
        )],
        _ => {
            let rows = n.iter().map(|r| binary_row(&[r])).collect();
            vec![
                (
                    prepare(&format!("SELECT x FROM t{i}x WHERE y = ?")),
                    prepare_response(i as u32, &["x"], 1, deprecate),
                ),
                (
                    execute(i as u32, &["v"]),
                    rows_response(&["x"], rows, deprecate, AUTOCOMMIT),
                ),
            ]
        }
    }
}

/// Every status, statement id, affected-row and row count reported is the one its command
/// really got (told by the table name, `t<i>x`, when the capture kept it whole, or by the
/// statement id).
fn assert_true_to_its_command(r: &RequestRecord) {
    let text = attr(r, key::QUERY_TEXT).unwrap_or_default();
    let id = attr(r, key::STATEMENT_ID).and_then(|n| n.parse::<u64>().ok());
    let named = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('t')?.strip_suffix('x')?.parse::<u64>().ok());
    let Some(i) = named.or(id) else {
        return;
    };
    if let Some(id) = id {
        assert_eq!(id, i, "{r:?}");
    }
    if r.status != 0 {
        assert_eq!(r.status as u64, 1000 + i, "{r:?}");
    }
    let kind = r.operation.as_str();
    if let Some(n) = attr(r, key::AFFECTED_ROWS) {
        assert_eq!(n, i.to_string(), "{r:?}");
        assert!(matches!(kind, "UPDATE" | "CALL"), "{r:?}");
    }
    if let Some(n) = attr(r, key::RETURNED_ROWS) {
        assert_eq!(n, i.to_string(), "{r:?}");
        assert!(matches!(kind, "SELECT" | "CALL" | "EXECUTE"), "{r:?}");
    }
    if r.error.is_none() {
        assert_ne!(kind, "DELETE", "{r:?}");
    }
}

/// Random conversations — some pipelined, with or without EOF packets — read and written
/// through random caps, with events lost on either side: whatever is lost, no status, statement
/// id, affected-row or row count ever lands on another command, every command seen is reported
/// once, and when nothing is lost all are paired. (Once responses of a pipelined batch are
/// lost, the ones after often stay unplaced: how many were lost is not knowable. That is the
/// price of never guessing.)
#[test]
fn random_gaps_never_give_a_command_another_ones_response() {
    let mut rng = Rng(0);
    // The second seed once found a run of headers that began before the real ones.
    for (seed, round) in [0x0ddba11, 114]
        .into_iter()
        .flat_map(|s| (0..1000).map(move |r| (s, r)))
    {
        if round == 0 {
            rng = Rng(seed);
        }
        let deprecate = rng.below(2) == 0;
        let mut h = H::client();
        connect(&mut h, deprecate, None);
        let (mut ts, mut sent, mut i) = (10, 0, 0);
        // Responses cut or lost; commands hidden.
        let (mut damaged, mut hidden) = (false, false);
        for _ in 0..1 + rng.below(20) {
            // A batch of pipelined exchanges (mostly one), written at once.
            let batch = if rng.below(4) == 0 {
                1 + rng.below(4)
            } else {
                1
            };
            let ex: Vec<_> = (0..batch)
                .flat_map(|_| {
                    i += 1;
                    exchange(i, deprecate, &mut rng)
                })
                .collect();
            sent += ex.len();
            let writes: Vec<u8> = ex.iter().flat_map(|e| e.0.clone()).collect();
            let answers: Vec<u8> = ex.iter().flat_map(|e| e.1.clone()).collect();
            ts += 1;
            match rng.below(12) {
                0 if round % 2 == 1 => {
                    lost(&mut h, REQ, ts, writes.len());
                    hidden = true;
                }
                1 => {
                    let cap = 1 + rng.below(writes.len());
                    syscall(&mut h, REQ, ts, &writes, cap);
                    // A command cut before its first byte, or commands after it: hidden.
                    hidden |= cap < 5 || (ex.len() > 1 && cap < writes.len());
                }
                _ => {
                    h.request(ts, &writes);
                }
            }
            let size = 1 + rng.below(answers.len());
            for chunk in answers.chunks(size) {
                ts += 1;
                match rng.below(8) {
                    0 => {
                        lost(&mut h, RESP, ts, chunk.len());
                        damaged = true;
                    }
                    1 => {
                        let cap = 1 + rng.below(chunk.len());
                        damaged |= cap < chunk.len();
                        syscall(&mut h, RESP, ts, chunk, cap);
                    }
                    _ => {
                        h.response(ts, chunk);
                    }
                }
            }
        }
        h.close();
        let seen = h.result.records.len();
        assert!(seen <= sent, "round {round}: {:?}", ops(&h));
        for r in &h.result.records {
            assert_true_to_its_command(r);
        }
        if !hidden {
            assert_eq!(seen, sent, "round {round}: {:?}", ops(&h));
        }
        if !damaged && !hidden {
            let paired = h
                .result
                .records
                .iter()
                .filter(|r| r.error.as_deref() != Some(error::TRUNCATED));
            assert_eq!(paired.count(), sent, "round {round}: {:?}", ops(&h));
        }
    }
}
