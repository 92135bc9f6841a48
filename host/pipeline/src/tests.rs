//! The pipeline around parsers, with small native parsers: routing by claims, verdicts,
//! failures poisoning connections, and a full queue dropping (and counting) jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sonde_sdk::protocol_parser::{ParserInfo, ProtocolParser, Segment as SdkSegment};

use super::dispatch::Dispatch;
use super::native::NativeParser;
use super::router::{Router, RouterConfig};
use super::slot::ParserSlot;
use sonde_capture::conntrack::{ConnTracker, StreamEvent, TrackerConfig};
use sonde_capture::events::Direction as CapDirection;
use sonde_capture::reassembly::{GapReason, Segment, SegmentBody};
use sonde_parse::*;
use sonde_parse::{FailureKind, Health};

/// Claims connections whose first byte is its letter; one record per `\n`-ended line each way
/// (request line egress, response line ingress).
macro_rules! letter_parser {
    ($name:ident, $letter:expr) => {
        struct $name;
        impl ProtocolParser for $name {
            type State = Vec<u64>;
            fn info() -> ParserInfo {
                ParserInfo {
                    name: stringify!($name).into(),
                    version: "0".into(),
                    protocols: vec![],
                }
            }
            fn detect(_: &ConnInfo, s: &SdkSegment<'_>) -> Claim {
                match s.data.first() {
                    None => Claim::Undecided,
                    Some(b) if *b == $letter => Claim::Mine,
                    Some(_) => Claim::NotMine,
                }
            }
            fn parse(
                st: &mut Vec<u64>,
                _: &ConnInfo,
                s: &SdkSegment<'_>,
                out: &mut Vec<RequestRecord>,
            ) -> Claim {
                if s.data == b"done\n" {
                    return Claim::Finished;
                }
                match s.direction {
                    Direction::Egress => st.push(s.ts_ns),
                    Direction::Ingress => {
                        if !st.is_empty() {
                            let t = st.remove(0);
                            out.push(RequestRecord {
                                protocol: stringify!($name).into(),
                                request_ts_ns: t,
                                response_ts_ns: s.ts_ns,
                                ..Default::default()
                            });
                        }
                    }
                }
                Claim::Mine
            }
        }
    };
}
letter_parser!(Apples, b'A');
letter_parser!(Bananas, b'B');

fn seg(conn: u64, dir: CapDirection, ts: u64, data: &'static [u8]) -> StreamEvent {
    StreamEvent::Segment {
        conn_id: conn,
        direction: dir,
        segment: Segment {
            pos: 0,
            ts_ns: ts,
            body: SegmentBody::Data(Bytes::from_static(data)),
        },
    }
}

fn router(backends: Vec<Box<dyn ParserBackend>>) -> Router {
    let slots = backends
        .into_iter()
        .enumerate()
        .map(|(i, b)| ParserSlot::new(i, b))
        .collect();
    Router::new(Dispatch::inline(slots), RouterConfig::default())
}

fn feed(r: &mut Router, events: &[StreamEvent]) {
    let tracker = ConnTracker::new(TrackerConfig::default());
    for e in events {
        r.on_stream_event(e, &tracker);
    }
    r.flush();
    r.collect();
}

#[test]
fn first_claim_wins_and_unclaimed_connections_get_a_verdict() {
    let mut r = router(vec![
        Box::new(NativeParser::<Apples>::new()),
        Box::new(NativeParser::<Bananas>::new()),
    ]);
    use CapDirection::*;
    feed(
        &mut r,
        &[
            StreamEvent::Opened { conn_id: 1 },
            StreamEvent::Opened { conn_id: 2 },
            seg(1, Egress, 10, b"B req\n"),
            seg(2, Egress, 11, b"Z what\n"),
        ],
    );
    let mut v = Vec::new();
    r.take_verdicts(&mut v);
    assert_eq!(v, [2], "nobody wants conn 2; conn 1 is Bananas'");
    feed(
        &mut r,
        &[
            seg(1, Ingress, 20, b"resp\n"),
            seg(1, Egress, 30, b"B again\n"),
            seg(1, Ingress, 45, b"resp\n"),
        ],
    );
    let mut recs = Vec::new();
    r.take_records(&mut recs);
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter()
            .all(|t| t.record.protocol() == "Bananas" && t.conn.id == 1)
    );
    assert_eq!(
        (
            recs[1].record.request_ts_ns(),
            recs[1].record.response_ts_ns()
        ),
        (30, 45)
    );
    let stats = r.parser_stats();
    // Apples saw only the first segment of each connection: after conn 1 was claimed by
    // Bananas, Apples got nothing more of it.
    assert_eq!(
        (stats[0].counters.segments, stats[1].counters.segments),
        (2, 5)
    );
    // The owner finishing means the kernel can stop copying.
    feed(&mut r, &[seg(1, Egress, 50, b"done\n")]);
    r.take_verdicts(&mut v);
    assert_eq!(v, [2, 1]);
    assert_eq!(r.stats.verdicts_skip, 2);
    feed(
        &mut r,
        &[
            seg(1, Egress, 60, b"B more\n"),
            StreamEvent::Closed { conn_id: 1 },
            StreamEvent::Closed { conn_id: 2 },
        ],
    );
    assert!(r.is_empty());
    assert_eq!(r.stats.segments_unrouted, 1);
}

#[test]
fn gaps_reach_parsers_as_empty_segments() {
    struct Gaps;
    impl ProtocolParser for Gaps {
        type State = ();
        fn info() -> ParserInfo {
            ParserInfo {
                name: "gaps".into(),
                version: "0".into(),
                protocols: vec![],
            }
        }
        fn detect(_: &ConnInfo, _: &SdkSegment<'_>) -> Claim {
            Claim::Mine
        }
        fn parse(
            _: &mut (),
            _: &ConnInfo,
            s: &SdkSegment<'_>,
            out: &mut Vec<RequestRecord>,
        ) -> Claim {
            if s.gap_before > 0 {
                out.push(RequestRecord {
                    request_bytes: s.gap_before,
                    status: s.data.len() as u32,
                    ..Default::default()
                });
            }
            Claim::Mine
        }
    }
    let mut r = router(vec![Box::new(NativeParser::<Gaps>::new())]);
    feed(
        &mut r,
        &[
            seg(7, CapDirection::Egress, 1, b"x"),
            StreamEvent::Segment {
                conn_id: 7,
                direction: CapDirection::Egress,
                segment: Segment {
                    pos: 1,
                    ts_ns: 2,
                    body: SegmentBody::Gap {
                        len: 99,
                        reason: GapReason::Lost,
                    },
                },
            },
        ],
    );
    let mut recs = Vec::new();
    r.take_records(&mut recs);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].record.request_bytes(), recs[0].record.status()),
        (99, 0)
    );
}

/// Fails every call once `fail` is set, like a trapping Wasm instance.
struct Flaky {
    inner: NativeParser<Apples>,
    fail: Arc<AtomicBool>,
    health: Health,
}

impl ParserBackend for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn version(&self) -> &str {
        "0"
    }
    fn source(&self) -> &str {
        "test"
    }
    fn run(&mut self, job: &mut ParseJob) -> Result<ParseOutput, sonde_parse::Failure> {
        if self.fail.load(Ordering::Relaxed) {
            self.inner = NativeParser::new();
            self.health.traps += 1;
            return Err(sonde_parse::Failure {
                kind: FailureKind::Trap,
                message: "boom".into(),
            });
        }
        self.inner.run(job)
    }
    fn health(&self) -> Health {
        self.health.clone()
    }
}

#[test]
fn a_failure_poisons_the_connections_it_held_and_new_ones_still_parse() {
    let fail = Arc::new(AtomicBool::new(false));
    let flaky = Flaky {
        inner: NativeParser::new(),
        fail: fail.clone(),
        health: Health::default(),
    };
    let mut r = router(vec![
        Box::new(flaky),
        Box::new(NativeParser::<Bananas>::new()),
    ]);
    use CapDirection::*;
    feed(
        &mut r,
        &[seg(1, Egress, 1, b"A one\n"), seg(2, Egress, 2, b"B two\n")],
    );
    fail.store(true, Ordering::Relaxed);
    feed(
        &mut r,
        &[seg(1, Ingress, 3, b"r\n"), seg(2, Ingress, 4, b"r\n")],
    );
    fail.store(false, Ordering::Relaxed);
    let mut v = Vec::new();
    r.take_verdicts(&mut v);
    assert_eq!(v, [1], "conn 1 lost its parser: stop copying it");
    // Conn 1 is never fed to the flaky parser again; a new connection is.
    feed(
        &mut r,
        &[
            seg(1, Egress, 5, b"A more\n"),
            seg(3, Egress, 6, b"A new\n"),
            seg(3, Ingress, 7, b"r\n"),
        ],
    );
    let mut recs = Vec::new();
    r.take_records(&mut recs);
    let by_conn: Vec<u64> = recs.iter().map(|t| t.conn.id).collect();
    assert_eq!(
        by_conn,
        [2, 3],
        "Bananas' conn 2 unaffected, new conn 3 parsed"
    );
    let stats = r.parser_stats();
    assert_eq!(stats[0].counters.abandoned, 1);
    assert_eq!(stats[0].health.traps, 1);
}

/// Blocks each call until released: a parser that is behind.
struct Stuck(Arc<AtomicBool>, Health);

impl ParserBackend for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    fn version(&self) -> &str {
        "0"
    }
    fn source(&self) -> &str {
        "test"
    }
    fn run(&mut self, job: &mut ParseJob) -> Result<ParseOutput, sonde_parse::Failure> {
        while !self.0.load(Ordering::Relaxed) {
            std::thread::park_timeout(Duration::from_millis(1));
        }
        Ok(ParseOutput {
            records: vec![],
            claims: job.conns().into_iter().map(|c| (c, Claim::Mine)).collect(),
        })
    }
    fn health(&self) -> Health {
        self.1.clone()
    }
}

/// A parser whose single-slot queue is full: job 1 runs (blocked), job 2 waits in the queue,
/// and what follows is refused. `batch_bytes` sets how much a refused job may grow while held.
fn stuck_router(batch_bytes: usize) -> (Router, Arc<AtomicBool>) {
    let release = Arc::new(AtomicBool::new(false));
    let slots = vec![ParserSlot::new(
        0,
        Box::new(Stuck(release.clone(), Health::default())) as Box<dyn ParserBackend>,
    )];
    let cfg = RouterConfig {
        batch_bytes,
        ..RouterConfig::default()
    };
    (
        Router::new(Dispatch::threaded(slots, 1).unwrap(), cfg),
        release,
    )
}

#[test]
fn a_short_stall_loses_nothing_the_refused_jobs_are_held_and_offered_again() {
    let (mut r, release) = stuck_router(RouterConfig::default().batch_bytes);
    let tracker = ConnTracker::new(TrackerConfig::default());
    for conn in 1..=5u64 {
        r.on_stream_event(&seg(conn, CapDirection::Egress, conn, b"x"), &tracker);
        r.flush();
    }
    release.store(true, Ordering::Relaxed);
    assert!(
        r.settle(Duration::from_secs(10)),
        "the released parser finishes its queue and the held job"
    );
    let c = &r.parser_stats()[0].counters;
    // Jobs 3..5 were refused and held (grown into one), then offered again: none dropped.
    assert!(c.jobs_held >= 3, "{c:?}");
    assert_eq!((c.jobs_dropped, c.abandoned), (0, 0), "{c:?}");
    assert_eq!(c.segments, 5, "{c:?}");
    assert_eq!(
        r.stats.connections_claimed, 5,
        "every connection reached its parser"
    );
}

#[test]
fn a_parser_that_stays_behind_drops_the_held_job_at_its_bound_counts_it_and_abandons_its_connections()
 {
    // One byte per batch: a held job of 4 segments reaches the bound (4 batches) and is dropped.
    let (mut r, release) = stuck_router(1);
    let tracker = ConnTracker::new(TrackerConfig::default());
    for conn in 1..=12u64 {
        r.on_stream_event(&seg(conn, CapDirection::Egress, conn, b"x"), &tracker);
        r.flush();
    }
    release.store(true, Ordering::Relaxed);
    assert!(
        r.settle(Duration::from_secs(10)),
        "the released parser finishes its queue"
    );
    let stats = r.parser_stats();
    let c = &stats[0].counters;
    assert!(c.jobs_held >= 3, "{stats:?}");
    assert!(c.jobs_dropped >= 1, "{stats:?}");
    assert!(c.abandoned >= 4, "{stats:?}");
    assert_eq!(
        c.abandoned + r.stats.connections_claimed,
        12,
        "each connection is parsed or abandoned"
    );
    let mut v = Vec::new();
    r.take_verdicts(&mut v);
    assert_eq!(
        v.len() as u64,
        c.abandoned,
        "abandoned connections get verdicts"
    );
}

#[test]
fn a_swap_leaves_old_connections_to_the_old_version_and_new_ones_to_the_new() {
    use CapDirection::*;
    let mut r = router(vec![Box::new(NativeParser::<Apples>::new())]);
    // Connection 1 starts on version 1: a request is in flight at the swap.
    feed(
        &mut r,
        &[
            StreamEvent::Opened { conn_id: 1 },
            seg(1, Egress, 10, b"A req\n"),
        ],
    );
    let new = r
        .replace_parser(0, Box::new(NativeParser::<Apples>::new()))
        .unwrap();
    assert_eq!(new, 1);
    // Its response after the swap still reaches version 1 (which holds the request); a
    // connection opened after the swap goes to version 2 only.
    feed(
        &mut r,
        &[
            seg(1, Ingress, 20, b"resp\n"),
            StreamEvent::Opened { conn_id: 2 },
            seg(2, Egress, 30, b"A req\n"),
            seg(2, Ingress, 40, b"resp\n"),
        ],
    );
    let mut recs = Vec::new();
    r.take_records(&mut recs);
    assert_eq!(recs.len(), 2, "one record each, none lost, none twice");
    let slots = r.slots();
    assert_eq!(slots[0].state, "draining");
    assert_eq!((slots[0].connections, slots[1].connections), (1, 1));
    assert_eq!((slots[0].records, slots[1].records), (1, 1));
    // Version 1 retires when its last connection closes.
    assert!(r.retire_drained(Duration::from_secs(60)).is_empty());
    feed(&mut r, &[StreamEvent::Closed { conn_id: 1 }]);
    assert_eq!(r.retire_drained(Duration::from_secs(60)), [0]);
    assert_eq!(r.slots()[0].state, "retired");
    // Counters of one name go on across versions.
    let stats = r.parser_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].counters.records, 2);
}

#[test]
fn a_drain_timeout_hands_connections_to_the_replacement() {
    use CapDirection::*;
    let mut r = router(vec![Box::new(NativeParser::<Apples>::new())]);
    feed(
        &mut r,
        &[
            StreamEvent::Opened { conn_id: 1 },
            seg(1, Egress, 10, b"A req\n"),
            seg(1, Ingress, 20, b"resp\n"),
        ],
    );
    r.replace_parser(0, Box::new(NativeParser::<Apples>::new()))
        .unwrap();
    assert_eq!(r.retire_drained(Duration::ZERO), [0]);
    assert_eq!(r.stats.handed_over, 1);
    // The keep-alive connection's next exchange is parsed by the new version.
    feed(
        &mut r,
        &[
            seg(1, Egress, 30, b"A again\n"),
            seg(1, Ingress, 40, b"resp\n"),
        ],
    );
    let mut recs = Vec::new();
    r.take_records(&mut recs);
    assert_eq!(recs.len(), 2);
    assert_eq!(r.slots()[1].records, 1);
}

#[test]
fn a_connection_known_but_not_yet_fed_at_the_swap_goes_to_the_new_version() {
    use CapDirection::*;
    let mut r = router(vec![Box::new(NativeParser::<Apples>::new())]);
    feed(&mut r, &[StreamEvent::Opened { conn_id: 7 }]);
    r.replace_parser(0, Box::new(NativeParser::<Apples>::new()))
        .unwrap();
    feed(
        &mut r,
        &[
            seg(7, Egress, 10, b"A req\n"),
            seg(7, Ingress, 20, b"resp\n"),
        ],
    );
    let mut recs = Vec::new();
    r.take_records(&mut recs);
    assert_eq!(recs.len(), 1, "not lost between the versions");
    assert_eq!((r.slots()[0].records, r.slots()[1].records), (0, 1));
}
