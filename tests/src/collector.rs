//! Runs Sonde's capture in the test process (on its own thread and tokio runtime), feeds the
//! events through the real connection tracker and stream reassembler, and keeps what the
//! tests assert on. The test process itself is excluded from capture by the kernel side;
//! traffic comes from `sonde-testpeer` child processes.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use sonde_capture::conntrack::{ConnTracker, Connection, StreamEvent, TrackerConfig};
use sonde_capture::events::{Direction, Event};
use sonde_capture::reassembly::{GapReason, Segment, SegmentBody};
use sonde_capture::{Capture, CaptureOptions, CaptureStats, monotonic_now_ns};

/// Process name of the peers whose streams are kept (others are tracked, not stored).
pub const PEER_COMM: &str = "sonde-testpeer";

/// One connection as the tests see it: the tracker's record and the reassembled streams.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: Connection,
    /// Segments per direction ([`Direction::index`]), in stream order.
    pub streams: [Vec<Segment>; 2],
    /// The tracker finalised the connection (closed and drained, or idle).
    pub finished: bool,
}

impl Seen {
    /// Bytes covered by segments (data and gaps) in one direction.
    pub fn covered(&self, dir: Direction) -> u64 {
        self.streams[dir.index()].iter().map(seg_len).sum()
    }

    pub fn gap_bytes(&self, dir: Direction, reason: GapReason) -> u64 {
        self.streams[dir.index()]
            .iter()
            .filter_map(|s| match &s.body {
                SegmentBody::Gap { len, reason: r } if *r == reason => Some(*len),
                _ => None,
            })
            .sum()
    }

    /// Checks a direction's reassembled stream against the bytes really sent: every data
    /// segment equals `expected` at its position, segments are contiguous from 0, and they
    /// cover exactly `expected.len()` bytes.
    pub fn check_stream(&self, dir: Direction, expected: &[u8]) -> Result<()> {
        let mut pos = 0u64;
        for seg in &self.streams[dir.index()] {
            anyhow::ensure!(
                seg.pos == pos,
                "{dir:?}: segment at {} but stream is at {pos}",
                seg.pos
            );
            if let SegmentBody::Data(b) = &seg.body {
                let want = expected
                    .get(pos as usize..pos as usize + b.len())
                    .with_context(|| {
                        format!(
                            "{dir:?}: data at {pos}+{} beyond the {} bytes sent",
                            b.len(),
                            expected.len()
                        )
                    })?;
                anyhow::ensure!(
                    b.as_ref() == want,
                    "{dir:?}: bytes at {pos}..{} differ from what was sent",
                    pos + b.len() as u64
                );
            }
            pos += seg_len(seg);
        }
        anyhow::ensure!(
            pos == expected.len() as u64,
            "{dir:?}: stream covers {pos} bytes, {} were sent",
            expected.len()
        );
        Ok(())
    }
}

fn seg_len(s: &Segment) -> u64 {
    match &s.body {
        SegmentBody::Data(b) => b.len() as u64,
        SegmentBody::Gap { len, .. } => *len,
    }
}

/// Everything collected so far.
#[derive(Default)]
pub struct Collected {
    /// Connections of peer processes, by conn_id.
    pub conns: HashMap<u64, Seen>,
    /// Every decoded event of peer processes, in arrival order.
    pub events: Vec<Event>,
    /// tgids of every process that produced any event (peers or not).
    pub data_tgids: HashMap<u32, u64>,
    pub stats: CaptureStats,
    /// Every program's state as the capture started (attached, failed, off).
    pub probes: Vec<sonde_capture::programs::ProbeStatus>,
}

impl Collected {
    /// What was seen of one process: its connections and its events (for failure messages).
    pub fn describe(&self, tgid: u32) -> String {
        let mut out = format!(
            "seen of pid {tgid}: {} events in total\n",
            self.data_tgids.get(&tgid).unwrap_or(&0)
        );
        for s in self.conns_of(tgid) {
            out += &format!(
                "  conn {:#x} finished={} {:?}\n",
                s.conn.conn_id, s.finished, s.conn
            );
        }
        for e in &self.events {
            match e {
                Event::Data(d) if d.task.tgid == tgid => {
                    out += &format!(
                        "  data conn={:#x} {:?} pos={} len={}\n",
                        d.conn_id, d.direction, d.pos, d.len
                    )
                }
                Event::Conn(c) if c.task.tgid == tgid => {
                    out += &format!(
                        "  {:?} conn={:#x} fd={} tx={} rx={}\n",
                        c.kind, c.conn_id, c.fd, c.tx_bytes, c.rx_bytes
                    )
                }
                _ => {}
            }
        }
        out
    }

    pub fn conns_of(&self, tgid: u32) -> Vec<&Seen> {
        let mut v: Vec<&Seen> = self
            .conns
            .values()
            .filter(|s| s.conn.task.tgid == tgid)
            .collect();
        v.sort_by_key(|s| s.conn.conn_id);
        v
    }
}

pub struct Collector {
    state: Arc<Mutex<Collected>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Collector {
    /// Loads and attaches the capture; returns once it is attached.
    pub fn start(opts: CaptureOptions) -> Result<Collector> {
        let state = Arc::new(Mutex::new(Collected::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(collect(opts, state, stop, ready_tx))
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(Collector {
                state,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e.context("starting capture")),
            Err(_) => {
                let r = thread.join();
                anyhow::bail!("capture thread did not start: {r:?}")
            }
        }
    }

    /// Polls `f` over the collected state until it returns `Some` or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Collected) -> Option<T>,
    ) -> Result<T> {
        crate::wait_until(timeout, what, || {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                return None;
            }
            f(&self.state.lock().expect("collector lock"))
        })
        .with_context(|| {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                "the capture thread died"
            } else {
                ""
            }
        })
    }

    /// Waits until the tracker finalised every connection of `tgid` and at least `n` exist.
    /// On timeout the error shows what was seen of `tgid`, for diagnosis.
    pub fn finished_conns(&self, tgid: u32, n: usize, timeout: Duration) -> Result<Vec<Seen>> {
        self.wait_for(
            timeout,
            &format!("{n} finished connections of pid {tgid}"),
            |c| {
                let v = c.conns_of(tgid);
                (v.len() >= n && v.iter().all(|s| s.finished))
                    .then(|| v.into_iter().cloned().collect())
            },
        )
        .with_context(|| self.with(|c| c.describe(tgid)))
    }

    pub fn with<T>(&self, f: impl FnOnce(&Collected) -> T) -> T {
        f(&self.state.lock().expect("collector lock"))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn collect(
    opts: CaptureOptions,
    state: Arc<Mutex<Collected>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> Result<()> {
    let mut capture = match Capture::start(&opts) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = ready.send(Err(e));
            anyhow::bail!(msg);
        }
    };
    state.lock().expect("collector lock").probes = capture.probes().to_vec();
    let _ = ready.send(Ok(()));
    // Short windows: tests close connections and want them finalised promptly.
    let mut tracker = ConnTracker::new(TrackerConfig {
        reorder_window_ns: 200_000_000,
        close_linger_ns: 300_000_000,
        ..TrackerConfig::default()
    });
    let mut batch = Vec::new();
    let mut out = Vec::new();
    let mut peers = PeerStreams::default();
    while !stop.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(
            Duration::from_millis(50),
            capture.next_batch(&mut batch, 4096),
        )
        .await;
        let mut st = state.lock().expect("collector lock");
        for ev in batch.drain(..) {
            let (tgid, comm, conn_id) = match &ev {
                Event::Data(d) => (d.task.tgid, d.task.comm.as_str(), d.conn_id),
                Event::Conn(c) => (c.task.tgid, c.task.comm.as_str(), c.conn_id),
                // stdout/stderr chunks (the peers' JSON lines among them): not connections.
                Event::Log(_) => continue,
            };
            *st.data_tgids.entry(tgid).or_default() += 1;
            if comm == PEER_COMM {
                peers.ids.insert(conn_id);
            }
            tracker.on_event(&ev, &mut out);
            if comm == PEER_COMM {
                st.events.push(ev);
            }
        }
        tracker.tick(monotonic_now_ns(), &mut out);
        peers.apply(&mut st, &tracker, &mut out);
        for done in tracker.take_finished() {
            peers.finish(&mut st, done);
        }
        st.stats = capture.stats()?;
    }
    Ok(())
}

/// Segments of peer connections. A connection can be opened, fed and finalised within one
/// batch, before its record could be read from the tracker, so segments are keyed by
/// conn_id first and joined with the record when it is available (live or finished).
#[derive(Default)]
struct PeerStreams {
    /// conn_ids that had an event from a peer process.
    ids: std::collections::HashSet<u64>,
}

impl PeerStreams {
    fn apply(&self, st: &mut Collected, tracker: &ConnTracker, out: &mut Vec<StreamEvent>) {
        for ev in out.drain(..) {
            let (conn_id, seg) = match ev {
                StreamEvent::Opened { conn_id } | StreamEvent::Closed { conn_id } => {
                    (conn_id, None)
                }
                StreamEvent::Segment {
                    conn_id,
                    direction,
                    segment,
                } => (conn_id, Some((direction, segment))),
            };
            if !self.ids.contains(&conn_id) {
                continue;
            }
            let seen = st.conns.entry(conn_id).or_insert_with(|| Seen {
                conn: tracker
                    .get(conn_id)
                    .cloned()
                    .unwrap_or_else(|| placeholder(conn_id)),
                streams: [Vec::new(), Vec::new()],
                finished: false,
            });
            if let Some(c) = tracker.get(conn_id) {
                seen.conn = c.clone();
            }
            if let Some((direction, segment)) = seg {
                seen.streams[direction.index()].push(segment);
            }
        }
    }

    fn finish(&self, st: &mut Collected, done: Connection) {
        if !self.ids.contains(&done.conn_id) {
            return;
        }
        let seen = st.conns.entry(done.conn_id).or_insert_with(|| Seen {
            conn: done.clone(),
            streams: [Vec::new(), Vec::new()],
            finished: false,
        });
        seen.conn = done;
        seen.finished = true;
    }
}

/// A record for a connection whose tracker record is not readable yet (replaced as soon as
/// it is).
fn placeholder(conn_id: u64) -> Connection {
    let task = sonde_capture::events::Task {
        tgid: 0,
        tid: 0,
        comm: Default::default(),
        thread: Default::default(),
    };
    Connection::new(conn_id, &task, -1, 0)
}
