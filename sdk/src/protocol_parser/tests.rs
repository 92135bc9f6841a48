use super::harness::Harness;
use super::*;

/// A line protocol: `GET key\n` → `VALUE v\n` or `ERR msg\n`.
struct Lines;

#[derive(Default)]
struct LinesState {
    pending: Vec<(String, u64, u64)>,
    buf: [Vec<u8>; 2],
}

impl ProtocolParser for Lines {
    type State = LinesState;
    fn info() -> ParserInfo {
        ParserInfo {
            name: "lines".into(),
            version: "0".into(),
            protocols: vec!["lines".into()],
        }
    }
    fn detect(_conn: &ConnInfo, s: &Segment<'_>) -> Claim {
        if s.data.starts_with(b"GET ") {
            Claim::Mine
        } else if s.data.len() >= 4 {
            Claim::NotMine
        } else {
            Claim::Undecided
        }
    }
    fn parse(
        st: &mut LinesState,
        conn: &ConnInfo,
        s: &Segment<'_>,
        out: &mut Vec<RequestRecord>,
    ) -> Claim {
        let d = s.direction.index();
        st.buf[d].extend_from_slice(s.data);
        while let Some(nl) = st.buf[d].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = st.buf[d].drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line).trim().to_string();
            if s.direction == conn.request_direction() {
                st.pending.push((
                    text.trim_start_matches("GET ").to_string(),
                    s.ts_ns,
                    line.len() as u64,
                ));
            } else if !st.pending.is_empty() {
                let (key, ts, len) = st.pending.remove(0);
                let err = text.starts_with("ERR");
                out.push(RequestRecord {
                    protocol: "lines".into(),
                    operation: "GET".into(),
                    status: u32::from(err),
                    error: err.then(|| "error".into()),
                    request_ts_ns: ts,
                    response_ts_ns: s.ts_ns,
                    request_bytes: len,
                    response_bytes: line.len() as u64,
                    attributes: vec![("key".into(), key)],
                    ..Default::default()
                });
            }
        }
        Claim::Mine
    }
    fn close(st: &mut LinesState, _c: &ConnInfo, out: &mut Vec<RequestRecord>) {
        for (key, ts, len) in st.pending.drain(..) {
            out.push(RequestRecord {
                protocol: "lines".into(),
                operation: "GET".into(),
                error: Some("no-response".into()),
                request_ts_ns: ts,
                request_bytes: len,
                attributes: vec![("key".into(), key)],
                ..Default::default()
            });
        }
    }
}

#[test]
fn pipelined_requests_split_across_segments() {
    let mut h = Harness::<Lines>::client();
    h.request(10, b"GET a\nGE")
        .request(11, b"T b\n")
        .response(20, b"VALUE 1\nERR no")
        .response(21, b"pe\n");
    let r = &h.result.records;
    assert_eq!(r.len(), 2);
    assert_eq!(
        (
            r[0].attributes[0].1.as_str(),
            r[0].status,
            r[0].request_ts_ns,
            r[0].response_ts_ns
        ),
        ("a", 0, 10, 20)
    );
    assert_eq!(
        (
            r[1].attributes[0].1.as_str(),
            r[1].status,
            r[1].error.as_deref()
        ),
        ("b", 1, Some("error"))
    );
    assert!(r.iter().all(|x| x.conn == 1));
    assert_eq!(h.result.claims, [(1, Claim::Mine)]);
}

#[test]
fn detection_sees_the_whole_prefix_and_parse_gets_every_byte() {
    // "G", "E" alone are undecided; the parser must still see the request from its first
    // byte, with the first piece's timestamp.
    let mut h = Harness::<Lines>::client();
    h.request(10, b"G")
        .request(11, b"E")
        .request(12, b"T a\n")
        .response(20, b"VALUE 1\n");
    let r = &h.result.records;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (
            r[0].attributes[0].1.as_str(),
            r[0].request_ts_ns,
            r[0].response_ts_ns
        ),
        ("a", 10, 20)
    );
    assert_eq!(h.result.claims, [(1, Claim::Mine)]);
    // A gap while undecided drops the bytes before it.
    let mut h = Harness::<Lines>::client();
    h.request(1, b"GE")
        .gap(Direction::Egress, 5)
        .request(2, b"GET b\n")
        .response(3, b"VALUE 2\n");
    assert_eq!(h.result.records.len(), 1);
    assert_eq!(h.result.records[0].request_ts_ns, 2);
}

#[test]
fn record_batches_round_trip_and_reject_bad_spans() {
    let r = |conn: u64, op: &str, err: Option<&str>, attrs: &[(&str, &str)]| RequestRecord {
        conn,
        protocol: "http".into(),
        operation: op.into(),
        status: 200,
        error: err.map(str::to_string),
        request_ts_ns: 1,
        response_ts_ns: 2,
        request_bytes: 3,
        response_bytes: 4,
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let records = vec![
        r(
            1,
            "GET /a",
            None,
            &[("traceparent", "00-ab"), ("url.path", "/a")],
        ),
        r(
            2,
            "GET /é",
            Some("server-error"),
            &[("traceparent", "00-cd")],
        ),
        r(3, "", None, &[]),
    ];
    let b = RecordBatch::encode(&records);
    assert_eq!(b.decode().unwrap(), records);
    b.validate().unwrap();
    let views: Vec<RequestRecord> = (0..b.heads.len()).map(|i| b.get(i).to_owned()).collect();
    assert_eq!(views, records);
    assert_eq!(b.get(0).attr("url.path"), Some("/a"));
    assert_eq!(b.get(1).error(), Some("server-error"));
    // Keys and the protocol name are written once per batch.
    assert_eq!(b.text.matches("traceparent").count(), 1);
    assert_eq!(b.text.matches("http").count(), 1);
    let mut bad = b.clone();
    bad.heads[0].operation = Span {
        start: 0,
        len: 10_000,
    };
    assert!(bad.decode().unwrap_err().contains("outside"));
    let mut bad = b.clone();
    let e = b.text.find('é').unwrap() as u32;
    bad.heads[1].operation = Span {
        start: e + 1,
        len: 1,
    };
    assert!(bad.decode().is_err(), "a span inside a character");
    let mut bad = b;
    bad.heads[2].attrs_start = 99;
    bad.heads[2].attrs_len = 1;
    assert!(bad.decode().unwrap_err().contains("attribute range"));
    assert!(bad.validate().unwrap_err().contains("attribute range"));
}

#[test]
fn datagrams_are_never_joined_while_detecting() {
    // Over UDP "GE" and "GET b\n" are two messages: joined they would read "GEGET b" and
    // fail detection; apart, the second one is a request.
    let conn = ConnInfo {
        id: 1,
        role: Role::Client,
        transport: Transport::Udp,
        ..Default::default()
    };
    let mut h = Harness::<Lines>::new(conn);
    h.request(1, b"GE")
        .request(3, b"GET b\n")
        .response(4, b"VALUE 1\n");
    assert_eq!(h.result.records.len(), 1);
    assert_eq!(h.result.records[0].attributes[0].1, "b");
}

#[test]
fn server_side_and_close_flushes() {
    let mut h = Harness::<Lines>::server();
    h.request(5, b"GET k\n").close();
    assert_eq!(h.result.records.len(), 1);
    assert_eq!(h.result.records[0].error.as_deref(), Some("no-response"));
}

#[test]
fn not_mine_and_detect_budget() {
    let mut h = Harness::<Lines>::client();
    h.request(1, b"HELO there\n");
    assert_eq!(h.result.claims, [(1, Claim::NotMine)]);
    // A parser that never decides is cut off after the budget in both directions.
    struct Never;
    impl ProtocolParser for Never {
        type State = ();
        fn info() -> ParserInfo {
            ParserInfo {
                name: "never".into(),
                version: "0".into(),
                protocols: vec![],
            }
        }
        fn detect(_: &ConnInfo, _: &Segment<'_>) -> Claim {
            Claim::Undecided
        }
        fn parse(_: &mut (), _: &ConnInfo, _: &Segment<'_>, _: &mut Vec<RequestRecord>) -> Claim {
            Claim::Mine
        }
    }
    let mut h = Harness::<Never>::client();
    let big = vec![b'x'; DETECT_BUDGET as usize];
    h.request(1, &big);
    assert!(h.result.claims.is_empty(), "one direction is not enough");
    h.response(2, &big);
    assert_eq!(h.result.claims, [(1, Claim::NotMine)]);
}

#[test]
fn recordings_written_by_code_replay_the_same() {
    use super::harness::Recording;
    let mut rec = Recording::default();
    rec.comment("a recorded exchange")
        .egress(100, b"GET a\n")
        .ingress(200, b"VALUE 1\n")
        .gap(Direction::Egress, 3)
        .egress(300, b"GET b\n");
    assert_eq!(rec.0, b"# a recorded exchange\n> 100 6\nGET a\n\n< 200 8\nVALUE 1\n\n! egress 3\n> 300 6\nGET b\n\n");
    let mut h = Harness::<Lines>::client();
    h.replay(&rec.0).unwrap();
    assert_eq!(h.ops(), [super::harness::op("GET", 0, None)]);
    assert_eq!(h.briefs()[0].response_ts, 200);
    assert_eq!(h.claims(), [Claim::Mine]);
    assert_eq!(h.result.records[0].attr("key"), Some("a"));
    // Arbitrary bytes: direction from bit 0, a gap from bit 4, partial last chunk.
    let mut f = Harness::<Lines>::client();
    f.feed_arbitrary(&[
        0, 6, b'G', b'E', b'T', b' ', b'x', b'\n', 1, 8, b'V', b'A', b'L', b'U', b'E', b' ', b'1',
        b'\n', 0x30, 200, b'G',
    ]);
    assert_eq!(f.ops(), [super::harness::op("GET", 0, None)]);
}

#[test]
fn recordings_replay_with_gaps() {
    let rec = b"# a recorded exchange\n> 100 6\nGET a\n\n< 200 8\nVALUE 1\n\n! egress 3\n> 300 6\nGET b\n\n";
    let mut h = Harness::<Lines>::client();
    h.replay(rec).unwrap();
    assert_eq!(h.result.records.len(), 1);
    assert_eq!(h.result.records[0].response_ts_ns, 200);
    assert!(h.replay(b"> 1 99\nshort").is_err());
    let err = h
        .replay(b"? what\n")
        .err()
        .expect("an unknown line kind is an error");
    assert!(err.contains("unknown line kind"), "{err}");
}
