//! The parser driven the way the daemon drives it, natively through the SDK harness: inline
//! bytes, and recorded exchanges under `tests/fixtures/`.

use std::path::Path;

use sonde_redis_parser::{PENDING_MAX, QUERY_MAX, Resp};
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, ConnInfo, Direction, RequestRecord, Role};

/// A command as clients send it: an array of bulk strings.
fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn cmds(list: &[&[&str]]) -> Vec<u8> {
    list.iter().flat_map(|c| cmd(c)).collect()
}

fn attr<'a>(r: &'a RequestRecord, key: &str) -> Option<&'a str> {
    r.attr(key)
}

/// Operation, status and error of each record: the short form most tests compare.
fn summary(h: &Harness<Resp>) -> Vec<(String, u32, Option<String>)> {
    h.result
        .records
        .iter()
        .map(|r| (r.operation.clone(), r.status, r.error.clone()))
        .collect()
}

fn ok(op: &str) -> (String, u32, Option<String>) {
    (op.into(), 0, None)
}

fn failed(op: &str, error: &str) -> (String, u32, Option<String>) {
    (
        op.into(),
        u32::from(!matches!(error, "truncated" | "no-response")),
        Some(error.into()),
    )
}

fn fixture(name: &str) -> Harness<Resp> {
    let mut h = Harness::<Resp>::client();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    h.replay_file(&path).unwrap();
    h
}

#[test]
fn one_exchange_makes_one_record() {
    let mut h = Harness::<Resp>::client();
    let get = cmd(&["get", "user:1"]);
    h.request(100, &get).response(250, b"$5\r\nalice\r\n");
    assert_eq!(h.result.claims, [(1, Claim::Mine)]);
    let r = &h.result.records[0];
    assert_eq!(
        (
            r.conn,
            r.protocol.as_str(),
            r.operation.as_str(),
            r.status,
            r.error.as_deref()
        ),
        (1, "redis", "GET", 0, None)
    );
    assert_eq!(
        (
            r.request_ts_ns,
            r.response_ts_ns,
            r.request_bytes,
            r.response_bytes
        ),
        (100, 250, get.len() as u64, 11)
    );
    assert_eq!(attr(r, "db.system.name"), Some("redis"));
    assert_eq!(attr(r, "db.operation.name"), Some("GET"));
    assert_eq!(attr(r, "db.query.text"), Some("GET ?"));
    assert_eq!(attr(r, "db.response.status_code"), None);
}

#[test]
fn pipelined_commands_pair_in_order() {
    let mut h = Harness::<Resp>::client();
    // Three commands, the third split across two writes.
    let stream = cmds(&[&["SET", "k", "v"], &["GET", "k"], &["INCR", "n"]]);
    let (first, rest) = stream.split_at(stream.len() - 5);
    h.request(10, first).request(11, rest);
    h.response(20, b"+OK\r\n$1\r\nv\r\n")
        .response(30, b":7\r\n");
    assert_eq!(summary(&h), [ok("SET"), ok("GET"), ok("INCR")]);
    let ts: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| (r.request_ts_ns, r.response_ts_ns))
        .collect();
    assert_eq!(ts, [(10, 20), (10, 20), (10, 30)]);
    let sizes: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| (r.request_bytes, r.response_bytes))
        .collect();
    assert_eq!(sizes, [(27, 5), (20, 7), (21, 4)]);
}

/// Replies of every shape, one per command: the same records wherever the stream is cut, and
/// the response timestamp is the segment with each reply's last byte.
#[test]
fn replies_split_at_every_byte() {
    let commands = cmds(&[
        &["GET", "a"],
        &["GET", "missing"],
        &["LRANGE", "l", "0", "-1"],
        &["XRANGE", "s", "-", "+"],
        &["INCR", "a"],
        &["HELLO", "3"],
        &["GET", "b"],
    ]);
    let replies: &[&[u8]] = &[
        b"$5\r\nhello\r\n",
        b"$-1\r\n",
        b"*3\r\n$1\r\nx\r\n$0\r\n\r\n:5\r\n",
        b"*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        b"-WRONGTYPE Operation against a key\r\n",
        b"%1\r\n+proto\r\n:3\r\n",
        b"_\r\n",
    ];
    let stream = replies.concat();
    let ends: Vec<usize> = replies
        .iter()
        .scan(0, |end, r| {
            *end += r.len();
            Some(*end)
        })
        .collect();
    let expected = [
        ok("GET"),
        ok("GET"),
        ok("LRANGE"),
        ok("XRANGE"),
        failed("INCR", "WRONGTYPE"),
        ok("HELLO"),
        ok("GET"),
    ];
    for cut in 0..=stream.len() {
        let mut h = Harness::<Resp>::client();
        h.request(1, &commands)
            .response(10, &stream[..cut])
            .response(20, &stream[cut..]);
        assert_eq!(summary(&h), expected, "cut at {cut}");
        for (r, end) in h.result.records.iter().zip(&ends) {
            assert_eq!(
                r.response_ts_ns,
                if *end <= cut { 10 } else { 20 },
                "cut at {cut}"
            );
            assert_eq!(
                r.response_bytes,
                replies[ends.iter().position(|e| e == end).unwrap()].len() as u64
            );
        }
    }
    // One byte per segment, timestamped by its offset.
    let mut h = Harness::<Resp>::client();
    h.request(0, &commands);
    for (i, b) in stream.iter().enumerate() {
        h.response(i as u64, std::slice::from_ref(b));
    }
    assert_eq!(summary(&h), expected);
    let ts: Vec<u64> = h.result.records.iter().map(|r| r.response_ts_ns).collect();
    assert_eq!(ts, ends.iter().map(|e| *e as u64 - 1).collect::<Vec<_>>());
}

/// Commands cut anywhere after the first (detection claims on a whole one).
#[test]
fn commands_split_at_every_byte() {
    let first = cmd(&["PING"]);
    let rest = cmds(&[&["SET", "k", "v"], &["MGET", "a", "b", "c"]]);
    for cut in 0..=rest.len() {
        let mut h = Harness::<Resp>::client();
        h.request(1, &first)
            .request(2, &rest[..cut])
            .request(3, &rest[cut..]);
        h.response(9, b"+PONG\r\n+OK\r\n*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n");
        assert_eq!(
            summary(&h),
            [ok("PING"), ok("SET"), ok("MGET")],
            "cut at {cut}"
        );
        let ts: Vec<_> = h.result.records.iter().map(|r| r.request_ts_ns).collect();
        let set_ts = if cut == 0 { 3 } else { 2 };
        let mget_ts = if cut <= cmd(&["SET", "k", "v"]).len() {
            3
        } else {
            2
        };
        assert_eq!(ts, [1, set_ts, mget_ts], "cut at {cut}");
    }
}

#[test]
fn nested_arrays_and_resp3_types() {
    let mut h = Harness::<Resp>::client();
    h.request(
        1,
        &cmds(&[&["MULTI"], &["SMEMBERS", "s"], &["HGETALL", "h"], &["EXEC"]]),
    );
    // EXEC: an array of replies, one a set, one a map, one an error: the EXEC itself succeeded.
    h.response(2, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    h.response(
        3,
        b"*3\r\n~2\r\n$1\r\nx\r\n$1\r\ny\r\n%1\r\n$1\r\nf\r\n*2\r\n#t\r\n,1.5e3\r\n-ERR inner\r\n",
    );
    assert_eq!(
        summary(&h),
        [ok("MULTI"), ok("EXEC"), ok("SMEMBERS"), ok("HGETALL")]
    );
    // An attribute in front of a reply belongs to it; a push in between is nobody's reply.
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmds(&[&["GET", "k"], &["GET", "j"]]));
    h.response(
        2,
        b"|1\r\n+key-popularity\r\n%1\r\n$1\r\nk\r\n,0.19\r\n$2\r\nhi\r\n",
    );
    h.response(3, b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    h.response(4, b"(3492890328409238509324850943850943825024385\r\n");
    assert_eq!(summary(&h), [ok("GET"), ok("GET")]);
    assert_eq!(h.result.records[0].response_bytes, 47);
    assert_eq!(h.result.records[1].response_ts_ns, 4);
}

#[test]
fn transactions_report_queued_commands_when_exec_runs_them() {
    let mut h = Harness::<Resp>::client();
    h.request(
        10,
        &cmds(&[
            &["MULTI"],
            &["SET", "k", "v"],
            &["NOSUCH"],
            &["LPUSH", "k", "x"],
            &["INCR", "n"],
        ]),
    );
    // NOSUCH is refused while queueing (reported then, with its error); the others are queued.
    h.response(
        20,
        b"+OK\r\n+QUEUED\r\n-ERR unknown command 'NOSUCH'\r\n+QUEUED\r\n+QUEUED\r\n",
    );
    assert_eq!(summary(&h), [ok("MULTI"), failed("NOSUCH", "ERR")]);
    h.request(30, &cmd(&["EXEC"]));
    // EXEC runs three: SET ok, LPUSH on a string fails, INCR ok.
    h.response(
        40,
        b"*3\r\n+OK\r\n-WRONGTYPE Operation against a key\r\n:1\r\n",
    );
    assert_eq!(
        summary(&h)[2..],
        [
            ok("EXEC"),
            ok("SET"),
            failed("LPUSH", "WRONGTYPE"),
            ok("INCR")
        ]
    );
    // Timed as the EXEC that ran them.
    for r in &h.result.records[3..] {
        assert_eq!((r.request_ts_ns, r.response_ts_ns), (30, 40));
        assert_eq!(r.response_bytes, 0);
    }
    assert_eq!(
        attr(&h.result.records[4], "db.response.status_code"),
        Some("WRONGTYPE")
    );
    // Back outside: plain pairing.
    h.request(50, &cmd(&["GET", "k"]))
        .response(60, b"$1\r\nv\r\n");
    assert_eq!(summary(&h).last(), Some(&ok("GET")));

    // DISCARD, an aborted EXEC (EXECABORT) and a WATCH abort (null): queued commands never
    // ran, no records.
    for (end, reply) in [
        (&["DISCARD"][..], &b"+OK\r\n"[..]),
        (&["EXEC"][..], &b"-EXECABORT Transaction discarded\r\n"[..]),
        (&["EXEC"][..], &b"*-1\r\n"[..]),
        (&["EXEC"][..], &b"_\r\n"[..]),
    ] {
        let mut h = Harness::<Resp>::client();
        h.request(1, &cmds(&[&["MULTI"], &["SET", "k", "v"], end]));
        h.response(2, b"+OK\r\n+QUEUED\r\n");
        h.response(3, reply);
        h.request(4, &cmd(&["PING"])).response(5, b"+PONG\r\n");
        let ops: Vec<_> = summary(&h).into_iter().map(|s| s.0).collect();
        assert_eq!(ops, ["MULTI", end[0], "PING"], "{end:?}");
    }

    // A gap in the replies inside a transaction: the queued commands are truncated.
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmds(&[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]));
    h.response(2, b"+OK\r\n+QUEUED\r\n");
    h.gap(Direction::Ingress, 30);
    h.response(3, b"*1\r\n+OK\r\n");
    assert_eq!(
        summary(&h),
        [
            ok("MULTI"),
            failed("SET", "truncated"),
            failed("EXEC", "truncated")
        ]
    );
    // Closing inside a transaction: nothing ran.
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmds(&[&["MULTI"], &["SET", "k", "v"]]));
    h.response(2, b"+OK\r\n+QUEUED\r\n");
    h.close();
    assert_eq!(summary(&h), [ok("MULTI")]);
}

#[test]
fn nulls_are_replies() {
    let mut h = Harness::<Resp>::client();
    h.request(
        1,
        &cmds(&[&["GET", "a"], &["BLPOP", "q", "1"], &["GET", "b"]]),
    );
    h.response(2, b"$-1\r\n*-1\r\n_\r\n");
    assert_eq!(summary(&h), [ok("GET"), ok("BLPOP"), ok("GET")]);
    let sizes: Vec<_> = h.result.records.iter().map(|r| r.response_bytes).collect();
    assert_eq!(sizes, [5, 5, 3]);
}

#[test]
fn error_replies_have_status_1_and_their_code() {
    let mut h = Harness::<Resp>::client();
    h.request(
        1,
        &cmds(&[
            &["FOO"],
            &["LPUSH", "s", "x"],
            &["EVAL", "x", "0"],
            &["GET", "k"],
        ]),
    );
    h.response(
        2,
        b"-ERR unknown command 'FOO'\r\n-WRONGTYPE Operation against a key\r\n",
    );
    h.response(
        3,
        b"!21\r\nSYNTAX invalid syntax\r\n-Some lowercase error\r\n",
    );
    assert_eq!(
        summary(&h),
        [
            failed("FOO", "ERR"),
            failed("LPUSH", "WRONGTYPE"),
            failed("EVAL", "SYNTAX"),
            failed("GET", "ERR")
        ]
    );
    let codes: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| attr(r, "db.response.status_code"))
        .collect();
    assert_eq!(
        codes,
        [Some("ERR"), Some("WRONGTYPE"), Some("SYNTAX"), Some("ERR")]
    );
}

#[test]
fn big_bulk_across_many_segments() {
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmds(&[&["GET", "big"], &["PING"]]));
    const LEN: usize = 1 << 20;
    h.response(2, format!("${LEN}\r\n").as_bytes());
    let chunk = vec![b'z'; 1000];
    let mut sent = 0;
    let mut ts = 3;
    while sent < LEN {
        let n = chunk.len().min(LEN - sent);
        h.response(ts, &chunk[..n]);
        sent += n;
        ts += 1;
    }
    h.response(ts, b"\r\n+PONG\r\n");
    assert_eq!(summary(&h), [ok("GET"), ok("PING")]);
    let r = &h.result.records[0];
    assert_eq!(
        (r.response_bytes, r.response_ts_ns),
        ((LEN + 12) as u64, ts)
    );
}

#[test]
fn gap_inside_a_big_value_loses_nothing() {
    // The daemon copies the head of big writes only; a gap inside a value is just skipped.
    let set = cmd(&["SET", "blob", &"v".repeat(100_000)]);
    let mut h = Harness::<Resp>::client();
    h.request(1, &set[..4096])
        .gap(Direction::Egress, (set.len() - 4096 - 100) as u64)
        .request(2, &set[set.len() - 100..]);
    h.response(3, b"+OK\r\n");
    h.request(4, &cmd(&["GET", "blob"]));
    h.response(5, b"$100000\r\nvvvv")
        .gap(Direction::Ingress, 100_000 - 4)
        .response(6, b"\r\n");
    assert_eq!(summary(&h), [ok("SET"), ok("GET")]);
    assert_eq!(h.result.records[0].request_bytes, set.len() as u64);
    assert_eq!(
        (
            h.result.records[1].response_bytes,
            h.result.records[1].response_ts_ns
        ),
        (100_011, 6)
    );
}

#[test]
fn gap_in_replies_truncates_what_is_in_flight_and_resyncs() {
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmds(&[&["GET", "a"], &["GET", "b"], &["GET", "c"]]));
    h.response(2, b"*2\r\n$1\r\nx\r\n");
    // The gap eats the rest of the first reply and the start of the second.
    h.gap(Direction::Ingress, 9).response(3, b"lo\r\n:3\r\n");
    assert_eq!(
        summary(&h),
        [
            failed("GET", "truncated"),
            failed("GET", "truncated"),
            failed("GET", "truncated")
        ]
    );
    assert!(
        h.result
            .records
            .iter()
            .all(|r| r.response_ts_ns == 0 && r.response_bytes == 0)
    );
    // Whatever else of the old replies comes is stale; the next exchange pairs.
    h.request(10, &cmd(&["DEL", "a"])).response(11, b":1\r\n");
    assert_eq!(summary(&h)[3..], [ok("DEL")]);
    assert_eq!(h.result.records[3].response_ts_ns, 11);
}

#[test]
fn gap_in_commands_resyncs_at_the_next_array() {
    let mut h = Harness::<Resp>::client();
    let set = cmd(&["SET", "k", "v"]);
    // GET a is in flight when the SET is cut by a gap.
    h.request(1, &cmd(&["GET", "a"]));
    h.request(2, &set[..7]).gap(Direction::Egress, 5);
    // Resumes mid-command: skipped up to the next `*` at a line start.
    h.request(3, &[&set[12..], cmd(&["INCR", "n"]).as_slice()].concat());
    // GET a still gets its reply; the SET's reply started before INCR was sent: stale.
    h.response(2, b"$1\r\n1\r\n")
        .response(2, b"+OK\r\n")
        .response(4, b":1\r\n");
    assert_eq!(summary(&h), [ok("GET"), ok("INCR")]);
    let ts: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| (r.request_ts_ns, r.response_ts_ns))
        .collect();
    assert_eq!(ts, [(1, 2), (3, 4)]);
    // Back in step, pairing is by order again.
    h.request(10, &cmd(&["PING"])).response(9, b"+PONG\r\n");
    assert_eq!(summary(&h)[2..], [ok("PING")]);
}

#[test]
fn resp2_subscribe_finishes_the_connection() {
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmds(&[&["GET", "k"], &["SUBSCRIBE", "news"]]));
    h.response(
        2,
        b"$1\r\nv\r\n*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
    );
    assert_eq!(summary(&h), [ok("GET"), ok("SUBSCRIBE")]);
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::Finished)]);
    // Nothing more is parsed.
    h.response(3, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n")
        .request(4, &cmd(&["PING"]));
    assert_eq!(h.result.records.len(), 2);
}

#[test]
fn resp3_subscribe_is_confirmed_by_a_push() {
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmd(&["SSUBSCRIBE", "orders"]));
    h.response(2, b">3\r\n$10\r\nssubscribe\r\n$6\r\norders\r\n:1\r\n");
    assert_eq!(summary(&h), [ok("SSUBSCRIBE")]);
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::Finished)]);
    // A failed SUBSCRIBE changes nothing.
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmd(&["SUBSCRIBE"]))
        .response(2, b"-ERR wrong number of arguments\r\n");
    h.request(3, &cmd(&["PING"])).response(4, b"+PONG\r\n");
    assert_eq!(summary(&h), [failed("SUBSCRIBE", "ERR"), ok("PING")]);
    assert_eq!(h.result.claims, [(1, Claim::Mine)]);
}

#[test]
fn joining_a_subscribed_connection_finishes_it() {
    // The first bytes the daemon sees are a message: claimed (it is surely Redis) and done.
    let mut h = Harness::<Resp>::client();
    h.response(1, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::Finished)]);
    assert!(h.result.records.is_empty());
}

#[test]
fn monitor_finishes_the_connection() {
    let mut h = Harness::<Resp>::client();
    h.request(1, b"MONITOR\r\n")
        .response(2, b"+OK\r\n+1700000000.1 [0 1.2.3.4:5] \"GET\" \"k\"\r\n");
    assert_eq!(summary(&h), [ok("MONITOR")]);
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::Finished)]);
}

#[test]
fn replication_finishes_the_connection() {
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmd(&["PING"])).response(2, b"+PONG\r\n");
    h.request(3, &cmd(&["PSYNC", "?", "-1"])).response(
        4,
        b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5 0\r\n$5\r\nREDIS",
    );
    assert_eq!(summary(&h), [ok("PING"), ok("PSYNC")]);
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::Finished)]);
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmd(&["SYNC"]));
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::Finished)]);
}

#[test]
fn detection_negatives() {
    let not_redis: &[&[u8]] = &[
        b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n",
        b"POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"\x00\x00\x00\x0a\x00\x00\x00\x00\x01\x02",
        b"get user:1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"*2\r\n$3\r\n\x00\x01\x02\r\n",
        b"+OK POP3 server ready\r\n",
    ];
    for d in not_redis {
        let mut h = Harness::<Resp>::client();
        h.request(1, d);
        assert_eq!(
            h.result.claims,
            [(1, Claim::NotMine)],
            "{}",
            String::from_utf8_lossy(d)
        );
    }
    // Reply side: not RESP at all is decided at once; RESP-looking waits for the commands.
    let mut h = Harness::<Resp>::client();
    h.response(1, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(h.result.claims, [(1, Claim::NotMine)]);
    let mut h = Harness::<Resp>::client();
    h.response(1, b"+OK\r\n");
    assert!(h.result.claims.is_empty());
    // Claimed on a valid header, then not RESP: given back.
    let mut h = Harness::<Resp>::client();
    h.request(1, b"*2\r\n$4\r\nPING\r\n!!!!\r\n");
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::NotMine)]);
}

#[test]
fn inline_commands() {
    let mut h = Harness::<Resp>::client();
    h.request(1, b"PING\r\n").response(2, b"+PONG\r\n");
    h.request(3, b"\r\nselect 2\n").response(4, b"+OK\r\n");
    assert_eq!(summary(&h), [ok("PING"), ok("SELECT")]);
    assert_eq!(
        attr(&h.result.records[1], "db.query.text"),
        Some("SELECT ?")
    );
    // The blank line belongs to no command.
    assert_eq!(h.result.records[1].request_bytes, 9);
}

#[test]
fn server_side_and_unknown_role() {
    let mut h = Harness::<Resp>::server();
    h.request(1, &cmd(&["GET", "k"])).response(2, b"$-1\r\n");
    assert_eq!(summary(&h), [ok("GET")]);
    // Unknown role, commands read by the process: it is the server; found from the bytes.
    let mut h = Harness::<Resp>::new(ConnInfo {
        id: 7,
        role: Role::Unknown,
        ..Default::default()
    });
    h.segment(Direction::Ingress, 1, &cmd(&["GET", "k"]))
        .segment(Direction::Egress, 2, b"$1\r\nv\r\n");
    assert_eq!(summary(&h), [ok("GET")]);
    assert_eq!(h.result.records[0].conn, 7);
}

#[test]
fn operation_names_and_query_text() {
    let mut h = Harness::<Resp>::client();
    let many: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    let mut mset = vec!["mset"];
    mset.extend(many.iter().map(String::as_str));
    h.request(
        1,
        &cmds(&[
            &["client", "setname", "worker-1"],
            &["CONFIG", "GET", "maxmemory"],
            &mset,
            &["FT.SEARCH", "idx", "@t:{x}"],
        ]),
    );
    h.response(2, b"+OK\r\n*0\r\n+OK\r\n*1\r\n:0\r\n");
    let names: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| (r.operation.as_str(), attr(r, "db.query.text").unwrap()))
        .collect();
    assert_eq!(names[0], ("CLIENT SETNAME", "CLIENT SETNAME ?"));
    assert_eq!(names[1], ("CONFIG GET", "CONFIG GET ?"));
    assert_eq!(names[2].0, "MSET");
    assert!(
        names[2].1.len() <= QUERY_MAX && names[2].1.starts_with("MSET ? ? ?"),
        "{}",
        names[2].1
    );
    assert_eq!(names[3], ("FT.SEARCH", "FT.SEARCH ? ?"));
}

#[test]
fn too_many_in_flight_keeps_pairing_right() {
    let mut h = Harness::<Resp>::client();
    let n = PENDING_MAX + 72;
    let keys: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let stream: Vec<u8> = keys.iter().flat_map(|k| cmd(&["GET", k])).collect();
    h.request(1, &stream);
    // The oldest 72 are given up on at once.
    assert_eq!(h.result.records.len(), 72);
    assert!(
        h.result
            .records
            .iter()
            .all(|r| r.error.as_deref() == Some("no-response"))
    );
    // Each reply carries its key's length, so a mispairing would show in the sizes.
    for k in &keys {
        h.response(2, format!("${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    let answered = &h.result.records[72..];
    assert_eq!(answered.len(), PENDING_MAX);
    for (r, k) in answered.iter().zip(&keys[72..]) {
        assert_eq!(
            (r.error.as_deref(), r.response_bytes),
            (None, format!("${}\r\n{k}\r\n", k.len()).len() as u64)
        );
        assert_eq!(r.request_bytes, cmd(&["GET", k]).len() as u64);
    }
}

#[test]
fn replies_fed_before_their_commands_still_pair() {
    // Within a batch the daemon may hand over one direction before the other.
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmd(&["PING"])).response(3, b"+PONG\r\n");
    h.response(5, b"$1\r\nv\r\n:1\r\n")
        .request(4, &cmds(&[&["GET", "k"], &["INCR", "n"]]));
    assert_eq!(summary(&h), [ok("PING"), ok("GET"), ok("INCR")]);
    assert_eq!(
        (
            h.result.records[1].request_ts_ns,
            h.result.records[1].response_ts_ns
        ),
        (4, 5)
    );
}

#[test]
fn close_reports_unanswered_commands() {
    let mut h = Harness::<Resp>::client();
    h.request(1, &cmds(&[&["GET", "a"], &["BLPOP", "q", "0"]]))
        .response(2, b"$-1\r\n")
        .close();
    assert_eq!(summary(&h), [ok("GET"), failed("BLPOP", "no-response")]);
}

#[test]
fn garbage_never_panics() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"*$+-:_,#!=(%~>|0123456789\r\n\r\nGETSETabc ";
    for _ in 0..200 {
        let mut h = Harness::<Resp>::client();
        h.request(0, &cmd(&["PING"]));
        for ts in 1..200 {
            let len = (next() % 40) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let dir = if next() % 2 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            if next() % 50 == 0 {
                h.gap(dir, next() % 100);
            }
            h.segment(dir, ts, &data);
        }
        h.close();
    }
}

#[test]
fn fixture_pipeline() {
    let h = fixture("pipeline.rec");
    assert_eq!(
        summary(&h),
        [
            ok("SET"),
            ok("GET"),
            failed("INCR", "ERR"),
            failed("LPUSH", "WRONGTYPE"),
            ok("CLIENT SETNAME")
        ]
    );
    let ts: Vec<_> = h
        .result
        .records
        .iter()
        .map(|r| (r.request_ts_ns, r.response_ts_ns))
        .collect();
    assert_eq!(
        ts,
        [
            (1000, 2000),
            (1000, 2100),
            (1000, 2100),
            (3000, 3050),
            (4000, 4010)
        ]
    );
    assert_eq!(
        attr(&h.result.records[3], "db.response.status_code"),
        Some("WRONGTYPE")
    );
}

#[test]
fn fixture_pubsub() {
    let h = fixture("pubsub.rec");
    assert_eq!(summary(&h), [ok("AUTH"), ok("PING"), ok("SUBSCRIBE")]);
    assert_eq!(h.result.claims, [(1, Claim::Mine), (1, Claim::Finished)]);
}

#[test]
fn fixture_gap() {
    let h = fixture("gap.rec");
    assert_eq!(
        summary(&h),
        [
            ok("SET"),
            failed("GET", "truncated"),
            failed("GET", "truncated"),
            ok("DEL"),
            ok("GET"),
            ok("GET")
        ]
    );
    let set = &h.result.records[0];
    assert_eq!(
        (set.request_bytes, set.request_ts_ns, set.response_ts_ns),
        (20033, 1000, 1500)
    );
    let z = &h.result.records[5];
    assert_eq!((z.request_ts_ns, z.response_ts_ns), (4100, 4150));
}

#[test]
fn fixture_resp3() {
    let h = fixture("resp3.rec");
    assert_eq!(
        summary(&h),
        [
            ok("HELLO"),
            ok("GET"),
            ok("HGETALL"),
            ok("MULTI"),
            ok("EXEC"),
            ok("SMEMBERS"),
            // Its element of EXEC's reply is an error.
            failed("INCR", "WRONGTYPE"),
            ok("GET"),
            failed("EVAL", "SYNTAX")
        ]
    );
    assert_eq!(
        attr(&h.result.records[8], "db.response.status_code"),
        Some("SYNTAX")
    );
}
