//! Connection tracking: one record per kernel `conn_id`, with its identity (process, fd,
//! socket, role, addresses), lifecycle, per-direction byte totals and the two stream
//! reassemblers that turn its data chunks into ordered [`Segment`]s.
//!
//! A connection is first seen by its Open event (connect/accept) or, for connections that
//! were open before capture started (or whose Open was lost), by its first data chunk or its
//! Close. It is finalised — its streams flushed, [`StreamEvent::Closed`] emitted and the
//! record handed to [`ConnTracker::take_finished`] — when:
//! - it was closed and both directions reached the Close totals (no waiting needed);
//! - it was closed (or its fd was taken by a new connection) and `close_linger_ns` passed:
//!   chunks still missing become lost gaps up to the Close totals;
//! - it saw no event for `idle_timeout_ns`, or it was evicted to make room: if it comes back,
//!   its streams resume where they stopped;
//! - its process exited ([`ConnTracker::end_process`]): the kernel closes an exiting
//!   process's descriptors without a close() syscall, so no Close event ever comes. A socket
//!   the process had passed on (fork, SCM_RIGHTS) resumes like an idle one.
//!
//! Time is the kernel's monotonic clock: event timestamps, and `now` passed to
//! [`ConnTracker::tick`]. Nothing here reads a clock, so behaviour is deterministic.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::events::{ConnChange, ConnEventKind, DataChunk, Direction, Event, Role, Task};
use crate::reassembly::{
    Chunk, GapReason, Pushed, ReorderLimits, Segment, SegmentBody, StreamReassembler,
};
use crate::tables::IdMap;

/// Finalised connections kept for [`ConnTracker::take_finished`]; beyond, the oldest are
/// dropped (counted in [`TrackerStats::finished_dropped`]) so a caller that never takes them
/// cannot grow memory.
pub const FINISHED_BACKLOG: usize = 16_384;

/// Finalised conn_ids remembered so late events are not mistaken for new connections.
pub const RECENT_IDS: usize = 65_536;

/// Bounds and timeouts of the tracker (the daemon's `[streams]` settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Reorder buffer bound per stream (see [`ReorderLimits::max_pending_bytes`]).
    pub max_pending_bytes: usize,
    /// How long a hole waits for its chunk before it is declared lost.
    pub reorder_window_ns: u64,
    /// How long after a Close (or fd takeover) late chunks are waited for.
    pub close_linger_ns: u64,
    /// A connection with no event for this long is finalised.
    pub idle_timeout_ns: u64,
    /// Connections tracked at once; a new one beyond evicts the least recently active.
    pub max_connections: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_pending_bytes: 4 << 20,
            reorder_window_ns: 500_000_000,
            close_linger_ns: 1_000_000_000,
            idle_timeout_ns: 600_000_000_000,
            max_connections: 65_536,
        }
    }
}

impl TrackerConfig {
    fn limits(&self) -> ReorderLimits {
        ReorderLimits {
            max_pending_bytes: self.max_pending_bytes,
            reorder_window_ns: self.reorder_window_ns,
        }
    }
}

/// Why a connection was finalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The process closed it.
    Closed,
    /// Its fd started naming another connection without a Close seen for this one.
    Replaced,
    /// No event for `idle_timeout_ns` (it may still be open).
    Idle,
    /// Removed to make room under `max_connections` (it may still be open).
    Evicted,
    /// The tracker was flushed ([`ConnTracker::finish_all`]).
    Shutdown,
    /// Its process exited with it open ([`ConnTracker::end_process`]).
    Exited,
}

/// What is known about one connection. Byte arrays are indexed by [`Direction::index`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Kernel id, unique per connection (a reused fd gets a new one).
    pub conn_id: u64,
    /// The process (and thread of the first event seen, or of connect/accept).
    pub task: Task,
    /// The fd in `task`'s process that names the connection.
    pub fd: i32,
    /// Kernel `struct sock *` (0 until a data chunk or Close names it).
    pub sock: u64,
    /// The process's cgroup v2 id from its connect/accept/close (0: not seen).
    pub cgroup_id: u64,
    /// Client (connect) or server (accept), from the Open or the kernel's socket state.
    pub role: Role,
    /// Address of the traced process's end, once known.
    pub local: Option<SocketAddr>,
    /// Address of the other end, once known (for unconnected UDP: the first one seen).
    pub peer: Option<SocketAddr>,
    /// A datagram (UDP) socket: its chunks are messages.
    pub datagram: bool,
    /// TLS: its socket bytes are TLS records (never parsed); its streams are the plaintext
    /// from the libssl uprobes when those see it (positions in the plaintext streams).
    pub tls: bool,
    /// First event seen for the connection.
    pub opened_ns: u64,
    /// Latest event seen for the connection.
    pub last_ns: u64,
    /// When it was closed (Close event or fd takeover).
    pub closed_ns: Option<u64>,
    /// Bytes moved by the chunks seen, each byte once (duplicates never count twice).
    pub bytes: [u64; 2],
    /// Bytes emitted as data segments.
    pub captured: [u64; 2],
    /// Bytes emitted as truncation gaps (moved, not copied).
    pub truncated: [u64; 2],
    /// Bytes emitted as lost gaps (their chunks never arrived).
    pub lost: [u64; 2],
    /// Stream lengths from the Close event (everything moved, captured or not).
    pub totals: Option<[u64; 2]>,
    /// Set once the connection is finalised (or, for `Closed`/`Replaced`, once that happened).
    pub end: Option<EndReason>,
}

impl Connection {
    /// A connection first seen at `ts`, nothing known yet but its process and fd.
    pub fn new(conn_id: u64, task: &Task, fd: i32, ts: u64) -> Self {
        Connection {
            conn_id,
            task: task.clone(),
            fd,
            sock: 0,
            cgroup_id: 0,
            role: Role::Unknown,
            local: None,
            peer: None,
            datagram: false,
            tls: false,
            opened_ns: ts,
            last_ns: ts,
            closed_ns: None,
            bytes: [0; 2],
            captured: [0; 2],
            truncated: [0; 2],
            lost: [0; 2],
            totals: None,
            end: None,
        }
    }

    fn touch(&mut self, ts: u64) {
        self.opened_ns = self.opened_ns.min(ts);
        self.last_ns = self.last_ns.max(ts);
    }

    /// Fills what the event knows; unknown values never erase known ones.
    fn learn(
        &mut self,
        sock: u64,
        role: Role,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) {
        if sock != 0 {
            self.sock = sock;
        }
        if role != Role::Unknown {
            self.role = role;
        }
        if local.is_some() {
            self.local = local;
        }
        if peer.is_some() {
            self.peer = peer;
        }
    }

    fn learn_data(&mut self, d: &DataChunk) {
        self.touch(d.ts_exit_ns);
        // The thread that moves the bytes, when it has a name of its own (an accept in the
        // main thread, the I/O in a named worker): only lifecycle events carry no thread.
        if self.task.thread.is_empty() && !d.task.thread.is_empty() {
            self.task.thread = d.task.thread.clone();
        }
        // A peer from sendto/recvfrom arguments varies per datagram: keep the first one.
        let peer = if d.peer_from_args && self.peer.is_some() {
            None
        } else {
            d.peer
        };
        // The role of an Open (connect/accept) is authoritative; chunks only fill it in. A
        // datagram socket nobody connected or accepted (a DNS server's, a resolver's) has no
        // kernel role: the side that sent the first datagram is the client, the side that
        // received it the server — request/response protocols over UDP start with a request.
        let role = if self.role != Role::Unknown {
            Role::Unknown
        } else if d.role == Role::Unknown && d.datagram {
            match d.direction {
                Direction::Egress => Role::Client,
                Direction::Ingress => Role::Server,
            }
        } else {
            d.role
        };
        self.learn(d.sock, role, d.local, peer);
        self.datagram |= d.datagram;
    }

    fn learn_open(&mut self, c: &ConnChange) {
        self.touch(c.ts_ns);
        self.task = c.task.clone();
        self.fd = c.fd;
        if c.cgroup_id != 0 {
            self.cgroup_id = c.cgroup_id;
        }
        self.learn(c.sock, c.role, c.local, c.peer);
    }

    fn learn_close(&mut self, c: &ConnChange) {
        self.touch(c.ts_ns);
        if self.cgroup_id == 0 {
            self.cgroup_id = c.cgroup_id;
        }
        let role = if self.role == Role::Unknown {
            c.role
        } else {
            Role::Unknown
        };
        self.learn(c.sock, role, c.local, c.peer);
        self.closed_ns = Some(c.ts_ns);
        self.totals = Some([c.tx_bytes, c.rx_bytes]);
        self.end = Some(EndReason::Closed);
    }

    /// Counts an emitted segment into the per-direction totals.
    fn account(&mut self, dir: usize, seg: &Segment) {
        match &seg.body {
            SegmentBody::Data(b) => self.captured[dir] += b.len() as u64,
            SegmentBody::Gap {
                len,
                reason: GapReason::Truncated,
            } => self.truncated[dir] += len,
            SegmentBody::Gap {
                len,
                reason: GapReason::Lost,
            } => self.lost[dir] += len,
        }
    }
}

/// What the tracker tells its consumers (protocol parsers next), in order per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A connection is tracked from now on ([`ConnTracker::get`] has it).
    Opened { conn_id: u64 },
    /// The next piece of one direction's stream.
    Segment {
        conn_id: u64,
        direction: Direction,
        segment: Segment,
    },
    /// The connection is finalised: no more segments follow.
    Closed { conn_id: u64 },
}

/// Tracker health counters (cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Connections that started being tracked (including resumed ones).
    pub connections_opened: u64,
    /// Finalised after a Close.
    pub connections_closed: u64,
    /// Finalised because their fd was taken by a new connection.
    pub connections_replaced: u64,
    /// Finalised after `idle_timeout_ns` without events.
    pub connections_idle: u64,
    /// Finalised to stay under `max_connections`.
    pub connections_evicted: u64,
    /// Finalised by [`ConnTracker::finish_all`].
    pub connections_shutdown: u64,
    /// Finalised because their process exited with them open.
    pub connections_exited: u64,
    /// Idle or evicted connections that had more events and were tracked again.
    pub connections_resumed: u64,
    /// Events for connections already finalised after a Close (ignored).
    pub late_events: u64,
    /// Events with no conn_id (a failed connect, a kernel id allocation failure): ignored.
    pub events_without_conn: u64,
    /// Finalised records dropped because nobody took them (see [`FINISHED_BACKLOG`]).
    pub finished_dropped: u64,
    /// Stream bytes emitted as data segments.
    pub bytes_data: u64,
    /// Stream bytes emitted as truncation gaps.
    pub bytes_truncated: u64,
    /// Stream bytes emitted as lost gaps.
    pub bytes_lost: u64,
    /// Chunks that arrived ahead of a hole and waited.
    pub chunks_reordered: u64,
    /// Chunks dropped or trimmed because they repeated bytes already seen.
    pub chunks_overlap: u64,
    /// Bytes discarded from those chunks.
    pub bytes_overlap: u64,
    /// Socket bytes of TLS connections (records, ciphertext): dropped, never parsed.
    pub bytes_tls_ciphertext: u64,
    /// TLS plaintext chunks (libssl uprobes) placed in their connection's streams.
    pub chunks_tls_plaintext: u64,
}

impl TrackerStats {
    /// Connection lifecycle counters by name, for the `/metrics` endpoint.
    pub fn lifecycle_counters(&self) -> [(&'static str, u64); 8] {
        [
            ("opened", self.connections_opened),
            ("closed", self.connections_closed),
            ("replaced", self.connections_replaced),
            ("idle", self.connections_idle),
            ("evicted", self.connections_evicted),
            ("shutdown", self.connections_shutdown),
            ("exited", self.connections_exited),
            ("resumed", self.connections_resumed),
        ]
    }

    fn count_push(&mut self, p: &Pushed) {
        self.chunks_reordered += u64::from(p.reordered);
        self.chunks_overlap += u64::from(p.overlap_bytes > 0);
        self.bytes_overlap += p.overlap_bytes;
    }

    fn count_end(&mut self, reason: EndReason) {
        let c = match reason {
            EndReason::Closed => &mut self.connections_closed,
            EndReason::Replaced => &mut self.connections_replaced,
            EndReason::Idle => &mut self.connections_idle,
            EndReason::Evicted => &mut self.connections_evicted,
            EndReason::Shutdown => &mut self.connections_shutdown,
            EndReason::Exited => &mut self.connections_exited,
        };
        *c += 1;
    }

    fn count_segment(&mut self, seg: &Segment) {
        match &seg.body {
            SegmentBody::Data(b) => self.bytes_data += b.len() as u64,
            SegmentBody::Gap {
                len,
                reason: GapReason::Truncated,
            } => self.bytes_truncated += len,
            SegmentBody::Gap {
                len,
                reason: GapReason::Lost,
            } => self.bytes_lost += len,
        }
    }
}

/// A live connection: its record and its two streams.
struct Tracked {
    conn: Connection,
    streams: [StreamReassembler; 2],
    /// TLS plaintext has been placed in this direction's stream.
    tls_plain: [bool; 2],
    /// Where the first plaintext of a direction went: (its own position, the stream's). The
    /// plaintext's own positions start at 0, after whatever cleartext the protocol sent
    /// before TLS began (MySQL's greeting, PostgreSQL's SSLRequest).
    tls_base: [(u64, u64); 2],
}

/// The first socket bytes of a direction are a TLS record header: content type 20–23
/// (change_cipher_spec, alert, handshake, application_data), version 3.x (SSL 3 to TLS 1.3's
/// legacy 3.3). A ClientHello starts `16 03 01`. nginx first peeks at one byte
/// (`recv(MSG_PEEK)`) to tell TLS from plain HTTP on an `ssl` port: a lone handshake byte
/// (or two) at the start of the stream is taken as TLS too. Later in the stream only a
/// ClientHello or ServerHello counts ([`starts_tls_handshake`]).
fn looks_like_tls_record(d: &DataChunk) -> bool {
    if d.datagram {
        return false;
    }
    match (d.pos, d.payload.as_ref()) {
        (0, [22] | [22, 3]) => true,
        (0, p) => matches!(p.get(..3), Some(&[20..=23, 3, 0..=4])),
        (_, p) => starts_tls_handshake(p),
    }
}

/// A TLS handshake starting after a protocol's own cleartext opening (MySQL's and
/// PostgreSQL's SSLRequest, SMTP's STARTTLS): a chunk that begins with a handshake record
/// holding a ClientHello or ServerHello whose legacy version is TLS 1.0–1.3. Eleven fixed
/// bytes: a cleartext write that happens to start so is not a concern.
fn starts_tls_handshake(p: &[u8]) -> bool {
    // OpenSSL without read-ahead reads a record's 5-byte header alone, then its body: a
    // lone handshake record header of a hello's plausible size counts too.
    if let &[22, 3, 1..=4, hi, lo] = p {
        return (42..=(1 << 14) + 2048).contains(&u16::from_be_bytes([hi, lo]));
    }
    let Some(h) = p.get(..11) else {
        return false;
    };
    let record_len = u16::from_be_bytes([h[3], h[4]]) as usize;
    let hello_len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
    h[0] == 22
        && h[1] == 3
        && (1..=4).contains(&h[2])
        && (1..=2).contains(&h[5])
        && (4..=(1 << 14) + 2048).contains(&record_len)
        // A hello is at least 38 bytes (version, random, session id length…); it may span
        // records, so it is not held to this one's length.
        && (38..1 << 16).contains(&hello_len)
        && h[9] == 3
        && h[10] <= 4
}

impl Tracked {
    /// Closed, and both directions emitted up to the Close totals.
    fn drained(&self) -> bool {
        // A TLS connection's Close totals count the records, not the plaintext its streams
        // hold; its plaintext events precede its Close in the ring (same thread, earlier).
        self.conn.totals.is_some_and(|t| {
            self.conn.tls
                || (self.streams[0].is_complete(t[0]) && self.streams[1].is_complete(t[1]))
        })
    }

    /// Why the connection should be finalised at `now`, if it should.
    fn due(&self, now: u64, cfg: &TrackerConfig) -> Option<EndReason> {
        let closed = self.conn.end.unwrap_or(EndReason::Closed);
        if self.drained() {
            return Some(closed);
        }
        if self
            .conn
            .closed_ns
            .is_some_and(|c| now.saturating_sub(c) >= cfg.close_linger_ns)
        {
            return Some(closed);
        }
        (now.saturating_sub(self.conn.last_ns) >= cfg.idle_timeout_ns).then_some(EndReason::Idle)
    }
}

/// What a finalised conn_id means for events that still arrive for it.
#[derive(Clone, Copy, Debug)]
enum Afterlife {
    /// It is over (closed or replaced): ignore them.
    Ended,
    /// It may still be open (idle, evicted): track it again from these stream positions.
    Resumable([u64; 2]),
}

/// What [`ConnTracker::ensure`] found for an event's conn_id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    /// Ignore the event (no conn_id, or a connection already over).
    Ignored,
    /// Tracked already.
    Known,
    /// Tracked from now on.
    New,
}

/// Connections newly found to be TLS kept for [`ConnTracker::take_tls_marked`].
const MAX_TLS_MARKED: usize = 4096;

/// A shrink that gave back at least this many entries' worth also returns the pages.
const RELEASE_AFTER_ENTRIES: usize = 4096;

/// The connection table. Feed it every event ([`Self::on_event`]) and call [`Self::tick`]
/// periodically; consume the [`StreamEvent`]s it appends.
pub struct ConnTracker {
    cfg: TrackerConfig,
    /// Connections found to be TLS since [`Self::take_tls_marked`] (bounded).
    tls_marked: Vec<u64>,
    conns: IdMap<Tracked>,
    /// (tgid, fd) → the conn_id that fd names now, to notice fd reuse.
    by_fd: HashMap<(u32, i32), u64>,
    finished: VecDeque<Connection>,
    recent: IdMap<Afterlife>,
    recent_order: VecDeque<u64>,
    /// Latest time seen (events and ticks).
    now_ns: u64,
    stats: TrackerStats,
    /// Scratch buffer for reassembler output.
    segs: Vec<Segment>,
}

impl ConnTracker {
    /// An empty table with these bounds.
    pub fn new(cfg: TrackerConfig) -> Self {
        ConnTracker {
            cfg,
            tls_marked: Vec::new(),
            conns: IdMap::default(),
            by_fd: HashMap::new(),
            finished: VecDeque::new(),
            recent: IdMap::default(),
            recent_order: VecDeque::new(),
            now_ns: 0,
            stats: TrackerStats::default(),
            segs: Vec::new(),
        }
    }

    /// Connections found to be TLS since the last call: the daemon tells the kernel to stop
    /// copying their socket bytes ([`sonde_common::verdict::SKIP_CIPHERTEXT`]). Bounded: a
    /// caller that never asks (`sonde trace`) loses nothing but the verdicts.
    pub fn take_tls_marked(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.tls_marked)
    }

    /// Applies one capture event, appending what it produced to `out`.
    pub fn on_event(&mut self, ev: &Event, out: &mut Vec<StreamEvent>) {
        match ev {
            Event::Data(d) => self.on_data(d, out),
            Event::Conn(c) => match c.kind {
                ConnEventKind::Open => self.on_open(c, out),
                ConnEventKind::Close => self.on_close(c, out),
                // TCP state changes and resets carry no conn_id; the kernel side already uses
                // state changes for roles, which data chunks bring. The network map
                // ([`sonde_netmap`]) is where both are used.
                ConnEventKind::State | ConnEventKind::Reset => {}
            },
            // stdout/stderr chunks are not connection traffic (see `sonde_logs`).
            Event::Log(_) => {}
        }
    }

    /// Ages the table at `now_ns`: reorder holes past the window become lost gaps; closed
    /// connections that are drained or whose linger passed, and idle ones, are finalised.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<StreamEvent>) {
        self.advance(now_ns);
        let now = self.now_ns;
        let mut due = Vec::new();
        for (&id, t) in &mut self.conns {
            for dir in [Direction::Egress, Direction::Ingress] {
                t.streams[dir.index()].expire(now, &mut self.segs);
                emit_segments(&mut t.conn, dir, &mut self.segs, &mut self.stats, out);
            }
            if let Some(reason) = t.due(now, &self.cfg) {
                due.push((id, reason));
            }
        }
        due.sort_unstable_by_key(|&(id, _)| id);
        for (id, reason) in due {
            self.finalise(id, reason, out);
        }
        self.shrink();
    }

    /// After a wave: tables at most a quarter full are rehashed smaller (amortised, see
    /// [`crate::tables`]), and a large shrink hands the pages back to the kernel.
    fn shrink(&mut self) {
        use crate::tables::{release_freed, shrink_deque, shrink_map};
        let given = shrink_map(&mut self.conns)
            + shrink_map(&mut self.by_fd)
            + shrink_map(&mut self.recent)
            + shrink_deque(&mut self.recent_order)
            + shrink_deque(&mut self.finished);
        if given >= RELEASE_AFTER_ENTRIES {
            release_freed();
        }
    }

    /// Capacity (entries) of the live-connection tables, to check that it follows the load.
    /// The finalised-id memory is not in it: it is a fixed ring of [`RECENT_IDS`].
    pub fn capacity(&self) -> usize {
        self.conns.capacity() + self.by_fd.capacity()
    }

    /// Finalises every connection (daemon shutdown, end of a test).
    pub fn finish_all(&mut self, out: &mut Vec<StreamEvent>) {
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.finalise(id, EndReason::Shutdown, out);
        }
    }

    /// A live connection.
    pub fn get(&self, conn_id: u64) -> Option<&Connection> {
        self.conns.get(&conn_id).map(|t| &t.conn)
    }

    /// A live connection, or one finalised recently and not yet taken by
    /// [`Self::take_finished`] (its last segments and `Closed` event may still be in flight to
    /// consumers).
    pub fn lookup(&self, conn_id: u64) -> Option<&Connection> {
        self.get(conn_id)
            .or_else(|| self.finished.iter().rev().find(|c| c.conn_id == conn_id))
    }

    /// Every live connection, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.conns.values().map(|t| &t.conn)
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// No live connection.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections finalised since the last call, oldest first.
    pub fn take_finished(&mut self) -> Vec<Connection> {
        self.finished.drain(..).collect()
    }

    /// Cumulative health counters (for `/metrics`).
    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    fn advance(&mut self, ts: u64) {
        self.now_ns = self.now_ns.max(ts);
    }

    fn on_data(&mut self, d: &DataChunk, out: &mut Vec<StreamEvent>) {
        self.advance(d.ts_exit_ns);
        match self.ensure(d.conn_id, &d.task, d.fd, d.ts_exit_ns, out) {
            Lookup::Ignored => return,
            Lookup::New => self.take_fd(d.task.tgid, d.fd, d.conn_id, d.ts_exit_ns),
            Lookup::Known => {}
        }
        let Some(t) = self.conns.get_mut(&d.conn_id) else {
            return;
        };
        t.conn.learn_data(d);
        let dir = d.direction.index();
        let was_tls = t.conn.tls;
        if d.tls {
            self.stats.chunks_tls_plaintext += 1;
            t.conn.tls = true;
            // The first plaintext of a direction goes on where the stream's cleartext ended
            // (nothing, or a protocol's opening before its TLS began). Socket bytes still
            // waiting for a hole are given up: the records replaced them.
            if !t.tls_plain[dir] {
                let at = t.streams[dir].position();
                if t.streams[dir].pending_chunks() > 0 {
                    t.streams[dir] = StreamReassembler::starting_at(at, self.cfg.limits());
                }
                t.tls_base[dir] = (d.pos, at);
            }
            t.tls_plain[dir] = true;
        } else if t.conn.tls || looks_like_tls_record(d) {
            t.conn.tls = true;
            self.stats.bytes_tls_ciphertext += d.len;
            if !was_tls && self.tls_marked.len() < MAX_TLS_MARKED {
                self.tls_marked.push(d.conn_id);
            }
            return;
        }
        if !was_tls && t.conn.tls && self.tls_marked.len() < MAX_TLS_MARKED {
            self.tls_marked.push(d.conn_id);
        }
        let pos = if d.tls {
            // Plaintext earlier than the first one placed lands below that point: seen
            // already, dropped by the reassembler like any duplicate.
            let (plain, stream) = t.tls_base[dir];
            match d.pos.checked_sub(plain) {
                Some(ahead) => stream + ahead,
                None => stream.saturating_sub(plain - d.pos),
            }
        } else {
            d.pos
        };
        let chunk = Chunk {
            pos,
            len: d.len,
            payload: d.payload.clone(),
            ts_ns: d.ts_exit_ns,
        };
        let pushed = t.streams[dir].push(chunk, &mut self.segs);
        t.conn.bytes[dir] += pushed.new_bytes;
        self.stats.count_push(&pushed);
        t.streams[dir].expire(self.now_ns, &mut self.segs);
        emit_segments(
            &mut t.conn,
            d.direction,
            &mut self.segs,
            &mut self.stats,
            out,
        );
        if t.drained() {
            self.finalise(d.conn_id, EndReason::Closed, out);
        }
    }

    fn on_open(&mut self, c: &ConnChange, out: &mut Vec<StreamEvent>) {
        self.advance(c.ts_ns);
        match self.ensure(c.conn_id, &c.task, c.fd, c.ts_ns, out) {
            Lookup::Ignored => return,
            Lookup::New => self.take_fd(c.task.tgid, c.fd, c.conn_id, c.ts_ns),
            Lookup::Known => {}
        }
        if let Some(t) = self.conns.get_mut(&c.conn_id) {
            t.conn.learn_open(c);
        }
    }

    fn on_close(&mut self, c: &ConnChange, out: &mut Vec<StreamEvent>) {
        self.advance(c.ts_ns);
        // A Close does not claim its fd: the fd may already name a newer connection.
        if self.ensure(c.conn_id, &c.task, c.fd, c.ts_ns, out) == Lookup::Ignored {
            return;
        }
        let Some(t) = self.conns.get_mut(&c.conn_id) else {
            return;
        };
        t.conn.learn_close(c);
        if t.drained() {
            self.finalise(c.conn_id, EndReason::Closed, out);
        }
    }

    /// Makes sure `conn_id` is tracked, creating it (and emitting Opened) if needed.
    fn ensure(
        &mut self,
        conn_id: u64,
        task: &Task,
        fd: i32,
        ts: u64,
        out: &mut Vec<StreamEvent>,
    ) -> Lookup {
        if conn_id == 0 {
            self.stats.events_without_conn += 1;
            return Lookup::Ignored;
        }
        if self.conns.contains_key(&conn_id) {
            return Lookup::Known;
        }
        let start = match self.recent.get(&conn_id) {
            Some(Afterlife::Ended) => {
                self.stats.late_events += 1;
                return Lookup::Ignored;
            }
            Some(Afterlife::Resumable(pos)) => {
                self.stats.connections_resumed += 1;
                *pos
            }
            None => [0; 2],
        };
        self.make_room(out);
        let limits = self.cfg.limits();
        let streams = start.map(|pos| StreamReassembler::starting_at(pos, limits));
        self.conns.insert(
            conn_id,
            Tracked {
                conn: Connection::new(conn_id, task, fd, ts),
                streams,
                tls_plain: [false; 2],
                tls_base: [(0, 0); 2],
            },
        );
        self.stats.connections_opened += 1;
        out.push(StreamEvent::Opened { conn_id });
        Lookup::New
    }

    /// Records that (tgid, fd) names the new connection `conn_id` since `ts`; the connection
    /// it named before is over (unless that one was active after `ts`: events out of order).
    fn take_fd(&mut self, tgid: u32, fd: i32, conn_id: u64, ts: u64) {
        let Some(old) = self.by_fd.insert((tgid, fd), conn_id) else {
            return;
        };
        let open_before = |t: &&mut Tracked| t.conn.closed_ns.is_none() && t.conn.last_ns <= ts;
        if let Some(t) = self.conns.get_mut(&old).filter(open_before) {
            t.conn.closed_ns = Some(ts);
            t.conn.end = Some(EndReason::Replaced);
        }
    }

    /// At `max_connections`, evicts the least recently active connection. A linear scan, paid
    /// only when the table is full.
    fn make_room(&mut self, out: &mut Vec<StreamEvent>) {
        if self.conns.len() < self.cfg.max_connections.max(1) {
            return;
        }
        let victim = self
            .conns
            .values()
            .map(|t| (t.conn.last_ns, t.conn.conn_id))
            .min();
        if let Some((_, id)) = victim {
            self.finalise(id, EndReason::Evicted, out);
        }
    }

    /// Flushes a connection's streams (lost gaps up to the Close totals when known), emits
    /// Closed and moves the record to the finished list.
    fn finalise(&mut self, conn_id: u64, reason: EndReason, out: &mut Vec<StreamEvent>) {
        let Some(mut t) = self.conns.remove(&conn_id) else {
            return;
        };
        for dir in [Direction::Egress, Direction::Ingress] {
            // A TLS connection's totals count its records, not its plaintext.
            let total = t
                .conn
                .totals
                .filter(|_| !t.conn.tls)
                .map(|x| x[dir.index()]);
            t.streams[dir.index()].finish(total, &mut self.segs);
            emit_segments(&mut t.conn, dir, &mut self.segs, &mut self.stats, out);
        }
        t.conn.end = Some(reason);
        self.stats.count_end(reason);
        let key = (t.conn.task.tgid, t.conn.fd);
        if self.by_fd.get(&key) == Some(&conn_id) {
            self.by_fd.remove(&key);
        }
        let afterlife = match reason {
            EndReason::Idle | EndReason::Evicted | EndReason::Exited => {
                Afterlife::Resumable(t.streams.each_ref().map(|s| s.position()))
            }
            EndReason::Closed | EndReason::Replaced | EndReason::Shutdown => Afterlife::Ended,
        };
        self.remember(conn_id, afterlife);
        out.push(StreamEvent::Closed { conn_id });
        self.finished.push_back(t.conn);
        if self.finished.len() > FINISHED_BACKLOG {
            self.finished.pop_front();
            self.stats.finished_dropped += 1;
        }
    }

    /// The processes (tgids) that hold tracked connections, each once.
    pub fn processes(&self) -> Vec<u32> {
        let mut tgids: Vec<u32> = self.conns.values().map(|t| t.conn.task.tgid).collect();
        tgids.sort_unstable();
        tgids.dedup();
        tgids
    }

    /// Finalises every connection of process `tgid`, which exited: its streams are flushed
    /// (what is missing becomes lost up to the Close totals, if any). Returns how many.
    pub fn end_process(&mut self, tgid: u32, out: &mut Vec<StreamEvent>) -> usize {
        let mut ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, t)| t.conn.task.tgid == tgid)
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        for &id in &ids {
            self.finalise(id, EndReason::Exited, out);
        }
        self.shrink();
        ids.len()
    }

    fn remember(&mut self, conn_id: u64, afterlife: Afterlife) {
        self.recent.insert(conn_id, afterlife);
        self.recent_order.push_back(conn_id);
        if self.recent_order.len() > RECENT_IDS
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
    }
}

/// Moves reassembler output into stream events, counting it on the way.
fn emit_segments(
    conn: &mut Connection,
    direction: Direction,
    segs: &mut Vec<Segment>,
    stats: &mut TrackerStats,
    out: &mut Vec<StreamEvent>,
) {
    for segment in segs.drain(..) {
        conn.account(direction.index(), &segment);
        stats.count_segment(&segment);
        out.push(StreamEvent::Segment {
            conn_id: conn.conn_id,
            direction,
            segment,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{TcpState, decode, encode_data};
    use crate::reassembly::tests::pieces;
    use sonde_common::{self as abi, DataEvent, EventKind};

    const MS: u64 = 1_000_000;
    const TGID: u32 = 100;
    const CAP: usize = 16 * 1024;
    const EG: Direction = Direction::Egress;
    const IN: Direction = Direction::Ingress;

    fn cfg() -> TrackerConfig {
        TrackerConfig {
            reorder_window_ns: 100 * MS,
            close_linger_ns: 300 * MS,
            idle_timeout_ns: 10_000 * MS,
            ..TrackerConfig::default()
        }
    }

    fn pattern(seed: u8, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    fn v4(ip: [u8; 4], port: u16) -> abi::Addr {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&ip);
        abi::Addr {
            family: libc::AF_INET as u16,
            port,
            addr,
        }
    }

    /// A data chunk the way the kernel writes it, through the real decoder: `stream[pos..pos+len]`
    /// moved, the first `cap` bytes of it captured.
    struct D<'a> {
        conn_id: u64,
        fd: i32,
        dir: Direction,
        stream: &'a [u8],
        pos: usize,
        len: usize,
        cap: usize,
        ts: u64,
    }

    impl D<'_> {
        fn event(&self) -> Event {
            let captured = self.len.min(self.cap);
            let ev = DataEvent {
                kind: EventKind::Data as u32,
                tgid: TGID,
                tid: TGID + 1,
                fd: self.fd,
                conn_id: self.conn_id,
                sock: 0xdead_0000 + self.conn_id,
                ts_enter_ns: self.ts.saturating_sub(1),
                ts_exit_ns: self.ts,
                pos: self.pos as u64,
                len: self.len as u64,
                captured: captured as u32,
                direction: match self.dir {
                    Direction::Egress => abi::direction::EGRESS,
                    Direction::Ingress => abi::direction::INGRESS,
                },
                role: abi::role::CLIENT,
                syscall: abi::syscall::READ,
                flags: 0,
                local: v4([10, 0, 0, 1], 40_000),
                peer: v4([10, 0, 0, 2], 80),
                comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
                thread: [0; abi::TASK_COMM_LEN],
            };
            decode(&encode_data(
                &ev,
                &self.stream[self.pos..self.pos + captured],
            ))
            .expect("decodes")
        }
    }

    /// A fully captured chunk (up to [`CAP`]) on fd 5.
    fn data(conn_id: u64, dir: Direction, stream: &[u8], pos: usize, len: usize, ts: u64) -> Event {
        D {
            conn_id,
            fd: 5,
            dir,
            stream,
            pos,
            len,
            cap: CAP,
            ts,
        }
        .event()
    }

    /// Egress chunk on fd `3 + conn_id`, for tests with several connections at once.
    fn data_own_fd(conn_id: u64, stream: &[u8], pos: usize, len: usize, ts: u64) -> Event {
        D {
            conn_id,
            fd: 3 + conn_id as i32,
            dir: EG,
            stream,
            pos,
            len,
            cap: CAP,
            ts,
        }
        .event()
    }

    fn conn_event(kind: ConnEventKind, conn_id: u64, fd: i32, ts: u64) -> ConnChange {
        ConnChange {
            kind,
            task: Task {
                tgid: TGID,
                tid: TGID,
                comm: "app".into(),
                thread: Default::default(),
            },
            fd,
            conn_id,
            sock: 0,
            ts_ns: ts,
            tx_bytes: 0,
            rx_bytes: 0,
            ret: 0,
            cgroup_id: 0,
            role: Role::Unknown,
            syscall: "close",
            old_state: TcpState(0),
            new_state: TcpState(0),
            protocol: 6,
            local: None,
            peer: None,
        }
    }

    fn open(conn_id: u64, fd: i32, ts: u64) -> Event {
        let mut c = conn_event(ConnEventKind::Open, conn_id, fd, ts);
        c.syscall = "connect";
        c.role = Role::Client;
        c.peer = Some("10.0.0.2:80".parse().unwrap());
        Event::Conn(c)
    }

    fn close(conn_id: u64, fd: i32, ts: u64, tx: u64, rx: u64) -> Event {
        let mut c = conn_event(ConnEventKind::Close, conn_id, fd, ts);
        (c.tx_bytes, c.rx_bytes) = (tx, rx);
        Event::Conn(c)
    }

    /// Runs the tracker and keeps its output by connection and direction.
    #[derive(Default)]
    struct Run {
        events: Vec<StreamEvent>,
    }

    impl Run {
        fn feed(&mut self, t: &mut ConnTracker, evs: &[Event]) {
            for ev in evs {
                t.on_event(ev, &mut self.events);
            }
        }

        fn tick(&mut self, t: &mut ConnTracker, now: u64) {
            t.tick(now, &mut self.events);
        }

        fn segments(&self, conn_id: u64, dir: Direction) -> Vec<&Segment> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    StreamEvent::Segment {
                        conn_id: c,
                        direction,
                        segment,
                    } if *c == conn_id && *direction == dir => Some(segment),
                    _ => None,
                })
                .collect()
        }

        /// Data bytes of a direction, asserting segments are contiguous from 0; and the end.
        fn stream(&self, conn_id: u64, dir: Direction) -> (Vec<u8>, u64) {
            let mut pos = 0;
            let mut data = Vec::new();
            for s in self.segments(conn_id, dir) {
                assert_eq!(s.pos, pos, "conn {conn_id} {dir:?} not contiguous");
                if let SegmentBody::Data(b) = &s.body {
                    data.extend_from_slice(b);
                }
                pos = s.end();
            }
            (data, pos)
        }

        fn gaps(&self, conn_id: u64, dir: Direction, reason: GapReason) -> Vec<(u64, u64)> {
            self.segments(conn_id, dir)
                .into_iter()
                .filter_map(|s| match s.body {
                    SegmentBody::Gap { len, reason: r } if r == reason => Some((s.pos, len)),
                    _ => None,
                })
                .collect()
        }

        fn lifecycle(&self, conn_id: u64) -> Vec<&'static str> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    StreamEvent::Opened { conn_id: c } if *c == conn_id => Some("opened"),
                    StreamEvent::Closed { conn_id: c } if *c == conn_id => Some("closed"),
                    _ => None,
                })
                .collect()
        }
    }

    fn finished_one(t: &mut ConnTracker, conn_id: u64) -> Connection {
        let f = t.take_finished();
        let found: Vec<_> = f.into_iter().filter(|c| c.conn_id == conn_id).collect();
        assert_eq!(found.len(), 1, "conn {conn_id} finished once");
        found.into_iter().next().unwrap()
    }

    /// A TLS connection: the handshake records (nginx's one-byte peek, a ClientHello) and the
    /// application records after them are never in the streams; the plaintext
    /// chunks are, from position 0 of their own streams, and the Close drains the connection
    /// without lost gaps up to the record totals.
    #[test]
    fn tls_connections_parse_the_plaintext_and_drop_the_records() {
        let mut t = ConnTracker::new(cfg());
        let mut run = Run::default();
        let hello = [&[22u8, 3, 1, 0, 200][..], &pattern(3, 200)].concat();
        let peek = [22u8];
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        let records = pattern(5, 300);
        let plain = |mut ev: Event| {
            if let Event::Data(d) = &mut ev {
                d.tls = true;
            }
            ev
        };
        run.feed(
            &mut t,
            &[
                data(1, IN, &peek, 0, 1, 10),
                data(1, IN, &hello, 1, 204, 11),
                data(1, IN, &records, 0, 100, 12),
                plain(data(1, IN, &req, 0, req.len(), 13)),
                data(1, EG, &records, 0, 150, 14),
                plain(data(1, EG, &resp, 0, resp.len(), 15)),
                close(1, 5, 16, 150, 305),
            ],
        );
        assert_eq!(run.stream(1, IN), (req.clone(), req.len() as u64));
        assert_eq!(run.stream(1, EG), (resp.clone(), resp.len() as u64));
        assert!(run.gaps(1, IN, GapReason::Lost).is_empty());
        assert_eq!(run.lifecycle(1), ["opened", "closed"]);
        assert_eq!(t.stats().bytes_tls_ciphertext, 1 + 204 + 100 + 150);
        assert_eq!(t.stats().chunks_tls_plaintext, 2);
        assert!(finished_one(&mut t, 1).tls);
        assert_eq!(t.take_tls_marked(), [1]);
        assert!(t.take_tls_marked().is_empty());
    }

    /// STARTTLS-style (MySQL's and PostgreSQL's SSLRequest): a cleartext opening, then a TLS
    /// handshake later in the stream — here the server reads the ClientHello's 5-byte record
    /// header alone, as OpenSSL does. The records are dropped, and the plaintext continues
    /// each direction's stream after its cleartext opening.
    #[test]
    fn tls_started_inside_a_protocol_continues_the_stream_with_the_plaintext() {
        let mut t = ConnTracker::new(cfg());
        let mut run = Run::default();
        let greeting = b"greeting-in-clear".to_vec();
        let ssl_request = b"ssl-request".to_vec();
        let hello_head = [22u8, 3, 1, 2, 0];
        let hello_body = [&[1u8, 0, 1, 252, 3, 3][..], &pattern(7, 506)].concat();
        let server_hello = [
            &[22u8, 3, 3, 0, 122, 2, 0, 0, 118, 3, 3][..],
            &pattern(9, 116),
        ]
        .concat();
        let login = b"login-in-tls".to_vec();
        let ok = b"ok-in-tls".to_vec();
        let plain = |mut ev: Event| {
            if let Event::Data(d) = &mut ev {
                d.tls = true;
            }
            ev
        };
        let (g, r) = (greeting.len(), ssl_request.len());
        // The socket streams: cleartext opening, then the records.
        let sock_in = [&ssl_request[..], &hello_head, &hello_body].concat();
        let sock_eg = [&greeting[..], &server_hello].concat();
        run.feed(
            &mut t,
            &[
                data(1, EG, &sock_eg, 0, g, 10),
                data(1, IN, &sock_in, 0, r, 11),
                data(1, IN, &sock_in, r, 5, 12),
                data(1, IN, &sock_in, r + 5, hello_body.len(), 13),
                data(1, EG, &sock_eg, g, server_hello.len(), 14),
                plain(data(1, IN, &login, 0, login.len(), 15)),
                plain(data(1, EG, &ok, 0, ok.len(), 16)),
            ],
        );
        let joined = |a: &[u8], b: &[u8]| [a, b].concat();
        assert_eq!(run.stream(1, IN).0, joined(&ssl_request, &login));
        assert_eq!(run.stream(1, EG).0, joined(&greeting, &ok));
        assert_eq!(
            t.stats().bytes_tls_ciphertext,
            (5 + hello_body.len() + server_hello.len()) as u64
        );
        assert_eq!(t.take_tls_marked(), [1]);
    }

    /// Mid-stream, only a hello counts: a record header too small for one, or bytes that only
    /// start like a record, stay cleartext.
    #[test]
    fn mid_stream_bytes_that_start_like_a_record_stay_cleartext() {
        let mut t = ConnTracker::new(cfg());
        let mut run = Run::default();
        let first = b"cleartext".to_vec();
        let small = [22u8, 3, 1, 0, 10];
        let not_hello = [22u8, 3, 1, 0, 200, 20, 0, 0, 100, 3, 3, 0];
        let stream = [&first[..], &small, &not_hello].concat();
        let n = first.len();
        run.feed(
            &mut t,
            &[
                data(1, IN, &stream, 0, n, 10),
                data(1, IN, &stream, n, 5, 11),
                data(1, IN, &stream, n + 5, not_hello.len(), 12),
            ],
        );
        assert_eq!(run.stream(1, IN).0, stream);
        assert_eq!(t.stats().bytes_tls_ciphertext, 0);
        assert!(t.take_tls_marked().is_empty());
    }

    /// An unconnected datagram socket: the kernel knows no role; the first datagram's
    /// direction decides (a query received makes the socket a server's).
    #[test]
    fn datagram_sockets_get_their_role_from_the_first_datagram() {
        let q = pattern(9, 40);
        for (dir, role) in [(IN, Role::Server), (EG, Role::Client)] {
            let mut ev = data(1, dir, &q, 0, 40, 10);
            if let Event::Data(d) = &mut ev {
                d.role = Role::Unknown;
                d.datagram = true;
            }
            let mut t = ConnTracker::new(cfg());
            let mut out = Vec::new();
            t.on_event(&ev, &mut out);
            assert_eq!(t.get(1).unwrap().role, role);
        }
    }

    #[test]
    fn open_data_close_in_order_yields_streams_and_a_finished_record() {
        let req = pattern(1, 300);
        let resp = pattern(2, 700);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(&mut t, &[open(7, 5, 10)]);
        assert_eq!(r.events, vec![StreamEvent::Opened { conn_id: 7 }]);
        assert_eq!(
            t.get(7).map(|c| (c.role, c.fd, c.task.comm.as_str())),
            Some((Role::Client, 5, "app"))
        );
        r.feed(
            &mut t,
            &[
                data(7, EG, &req, 0, 300, 20),
                data(7, IN, &resp, 0, 700, 30),
            ],
        );
        assert_eq!(t.iter().count(), 1);
        r.feed(&mut t, &[close(7, 5, 40, 300, 700)]);
        assert_eq!(
            r.lifecycle(7),
            ["opened", "closed"],
            "drained at close: no linger wait"
        );
        assert!(matches!(
            r.events.last(),
            Some(StreamEvent::Closed { conn_id: 7 })
        ));
        assert_eq!(r.stream(7, EG), (req.clone(), 300));
        assert_eq!(r.stream(7, IN), (resp.clone(), 700));
        assert!(t.get(7).is_none());
        let c = finished_one(&mut t, 7);
        assert_eq!(
            (c.bytes, c.captured, c.truncated, c.lost),
            ([300, 700], [300, 700], [0, 0], [0, 0])
        );
        assert_eq!((c.opened_ns, c.last_ns, c.closed_ns), (10, 40, Some(40)));
        assert_eq!(c.totals, Some([300, 700]));
        assert_eq!(c.end, Some(EndReason::Closed));
        assert_eq!(c.local, Some("10.0.0.1:40000".parse().unwrap()));
        assert_eq!(c.peer, Some("10.0.0.2:80".parse().unwrap()));
        assert_eq!(c.sock, 0xdead_0007);
        assert_eq!(
            (t.stats().connections_opened, t.stats().connections_closed),
            (1, 1)
        );
        assert!(t.take_finished().is_empty(), "taken once");
    }

    #[test]
    fn chunks_completed_out_of_order_by_threads_reassemble() {
        let up = pattern(3, 40_000);
        let down = pattern(4, 25_000);
        let mut evs = Vec::new();
        for (pos, len) in pieces(up.len(), &[4096, 17, 9000, 1]) {
            evs.push(data(9, EG, &up, pos, len, pos as u64));
        }
        for (pos, len) in pieces(down.len(), &[1448, 333, 7]) {
            evs.push(data(9, IN, &down, pos, len, pos as u64));
        }
        // Deterministic shuffle: threads finishing in another order than their positions.
        let mut x = 0x1234_5678_9abc_def1u64;
        for i in (1..evs.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            evs.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(&mut t, &evs);
        r.feed(
            &mut t,
            &[close(9, 5, 50_000, up.len() as u64, down.len() as u64)],
        );
        assert_eq!(r.lifecycle(9), ["opened", "closed"]);
        assert_eq!(r.stream(9, EG).0, up);
        assert_eq!(r.stream(9, IN).0, down);
        let c = finished_one(&mut t, 9);
        assert_eq!(c.bytes, [40_000, 25_000]);
        assert_eq!(c.lost, [0, 0]);
        assert!(t.stats().chunks_reordered > 0);
        assert_eq!(t.stats().bytes_lost, 0);
    }

    #[test]
    fn truncated_chunks_count_every_moved_byte() {
        let big = pattern(5, 100 * 1024);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        // A 100 KiB write in three syscalls: 64 KiB, 30 KiB, 6 KiB; 16 KiB captured each.
        let evs = [
            data(3, EG, &big, 0, 65_536, 1),
            data(3, EG, &big, 65_536, 30_720, 2),
            data(3, EG, &big, 96_256, 6_144, 3),
            close(3, 5, 4, big.len() as u64, 0),
        ];
        r.feed(&mut t, &evs);
        let c = finished_one(&mut t, 3);
        assert_eq!(c.bytes[EG.index()], 100 * 1024);
        assert_eq!(c.captured[EG.index()], 16_384 * 2 + 6_144);
        assert_eq!(
            c.truncated[EG.index()],
            (65_536 - 16_384) + (30_720 - 16_384)
        );
        assert_eq!(c.lost[EG.index()], 0);
        assert_eq!(
            r.gaps(3, EG, GapReason::Truncated),
            vec![
                (16_384, 65_536 - 16_384),
                (65_536 + 16_384, 30_720 - 16_384)
            ]
        );
        let (bytes, end) = r.stream(3, EG);
        assert_eq!(end, big.len() as u64);
        assert_eq!(bytes[..16_384], big[..16_384]);
        assert_eq!(bytes[bytes.len() - 6_144..], big[96_256..]);
        assert_eq!(t.stats().bytes_truncated, c.truncated[EG.index()]);
    }

    #[test]
    fn lost_chunk_becomes_a_gap_after_the_reorder_window() {
        let s = pattern(6, 300);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(
            &mut t,
            &[
                data(4, EG, &s, 0, 100, 0),
                data(4, EG, &s, 200, 100, 10 * MS),
            ],
        );
        r.tick(&mut t, 100 * MS);
        assert!(
            r.gaps(4, EG, GapReason::Lost).is_empty(),
            "still inside the window"
        );
        r.tick(&mut t, 111 * MS);
        assert_eq!(r.gaps(4, EG, GapReason::Lost), vec![(100, 100)]);
        assert_eq!(r.stream(4, EG), ([&s[..100], &s[200..]].concat(), 300));
        let c = t.get(4).expect("still open");
        assert_eq!((c.bytes[0], c.captured[0], c.lost[0]), (200, 200, 100));
        // The window is also applied as events advance time, without ticks.
        let s2 = pattern(7, 1500);
        r.feed(
            &mut t,
            &[
                data(4, IN, &s2, 500, 500, 120 * MS),
                data(4, IN, &s2, 1000, 500, 300 * MS),
            ],
        );
        assert_eq!(r.gaps(4, IN, GapReason::Lost), vec![(0, 500)]);
        assert_eq!(r.stream(4, IN), (s2[500..].to_vec(), 1500));
    }

    #[test]
    fn lost_last_chunk_is_a_gap_up_to_the_close_totals_after_linger() {
        let s = pattern(8, 1000);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(
            &mut t,
            &[
                data(5, EG, &s, 0, 400, 1),
                data(5, IN, &s, 0, 50, 2),
                close(5, 5, 1000, 1000, 50),
            ],
        );
        assert_eq!(
            r.lifecycle(5),
            ["opened"],
            "egress 400..1000 may still come"
        );
        r.tick(&mut t, 1000 + 299 * MS);
        assert_eq!(r.lifecycle(5), ["opened"]);
        r.tick(&mut t, 1000 + 300 * MS);
        assert_eq!(r.lifecycle(5), ["opened", "closed"]);
        assert_eq!(r.gaps(5, EG, GapReason::Lost), vec![(400, 600)]);
        assert_eq!(r.stream(5, EG).1, 1000);
        let c = finished_one(&mut t, 5);
        assert_eq!(
            (c.bytes, c.lost, c.totals),
            ([400, 50], [600, 0], Some([1000, 50]))
        );
        assert_eq!(t.stats().bytes_lost, 600);
        // A chunk arriving after that is late: ignored and counted, no resurrection.
        r.feed(&mut t, &[data(5, EG, &s, 400, 600, 2000 * MS)]);
        assert!(t.get(5).is_none());
        assert_eq!(t.stats().late_events, 1);
        assert_eq!(r.lifecycle(5), ["opened", "closed"]);
    }

    #[test]
    fn fd_reuse_gives_a_new_connection_and_finishes_the_old_one() {
        let a = pattern(9, 100);
        let b = pattern(10, 200);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        // conn 1 on fd 5; its Close was lost; conn 2 takes fd 5.
        r.feed(&mut t, &[open(1, 5, 1), data(1, EG, &a, 0, 60, 2)]);
        r.feed(
            &mut t,
            &[open(2, 5, 3 * MS), data(2, EG, &b, 0, 200, 4 * MS)],
        );
        assert_eq!(t.get(1).and_then(|c| c.end), Some(EndReason::Replaced));
        assert_eq!(t.get(1).and_then(|c| c.closed_ns), Some(3 * MS));
        // A late chunk of the old connection still lands in the old stream during linger.
        r.feed(&mut t, &[data(1, EG, &a, 60, 40, 5 * MS)]);
        r.tick(&mut t, 3 * MS + 300 * MS);
        assert_eq!(r.lifecycle(1), ["opened", "closed"]);
        assert_eq!(r.lifecycle(2), ["opened"]);
        assert_eq!(r.stream(1, EG), (a.clone(), 100));
        assert_eq!(r.stream(2, EG), (b.clone(), 200));
        let old = finished_one(&mut t, 1);
        assert_eq!((old.end, old.bytes), (Some(EndReason::Replaced), [100, 0]));
        assert_eq!(t.get(2).map(|c| c.bytes), Some([200, 0]));
        assert_eq!(t.stats().connections_replaced, 1);
        // The usual case: a Close, then the fd is reused; both are separate and complete.
        r.feed(
            &mut t,
            &[
                close(2, 5, 400 * MS, 200, 0),
                open(3, 5, 401 * MS),
                data(3, IN, &a, 0, 100, 402 * MS),
            ],
        );
        assert_eq!(finished_one(&mut t, 2).end, Some(EndReason::Closed));
        assert_eq!(r.stream(3, IN), (a.clone(), 100));
        assert_eq!(t.get(3).map(|c| c.end), Some(None));
        // The Close of an earlier, never seen connection on fd 5 arriving late (another CPU)
        // does not take the fd from conn 3.
        r.feed(&mut t, &[close(99, 5, 399 * MS, 0, 0)]);
        assert_eq!(t.get(3).map(|c| (c.end, c.closed_ns)), Some((None, None)));
    }

    #[test]
    fn partial_reads_of_odd_sizes_reassemble_a_5k_message() {
        let msg = pattern(11, 5 * 1024);
        let reads = pieces(msg.len(), &[1, 1447, 3, 777, 2048, 5]);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        let mut evs: Vec<Event> = reads
            .iter()
            .map(|&(pos, len)| data(6, IN, &msg, pos, len, 100 + pos as u64))
            .collect();
        evs.swap(1, 2);
        evs.swap(4, 6);
        r.feed(&mut t, &evs);
        assert_eq!(r.stream(6, IN), (msg.clone(), msg.len() as u64));
        assert_eq!(t.get(6).map(|c| c.bytes[IN.index()]), Some(5 * 1024));
    }

    #[test]
    fn duplicate_chunk_is_not_double_counted() {
        let s = pattern(12, 500);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        let evs = [
            data(8, EG, &s, 0, 200, 1),
            data(8, EG, &s, 0, 200, 2),   // duplicate of emitted bytes
            data(8, EG, &s, 300, 200, 3), // ahead of a hole
            data(8, EG, &s, 300, 200, 4), // duplicate of a pending chunk
            data(8, EG, &s, 100, 300, 5), // overlaps both sides of the hole
            close(8, 5, 6, 500, 0),
        ];
        r.feed(&mut t, &evs);
        assert_eq!(r.stream(8, EG), (s.clone(), 500));
        let c = finished_one(&mut t, 8);
        assert_eq!((c.bytes[0], c.captured[0]), (500, 500));
        assert_eq!(t.stats().chunks_overlap, 3);
        assert_eq!(t.stats().bytes_overlap, 200 + 200 + 200);
    }

    #[test]
    fn close_before_its_last_data_chunks_still_yields_all_bytes() {
        let s = pattern(13, 3000);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(
            &mut t,
            &[
                open(2, 5, 1),
                data(2, EG, &s, 0, 1000, 2),
                close(2, 5, 5, 3000, 1000),
            ],
        );
        assert_eq!(r.lifecycle(2), ["opened"]);
        r.feed(
            &mut t,
            &[data(2, EG, &s, 2000, 1000, 4), data(2, IN, &s, 0, 1000, 3)],
        );
        assert_eq!(r.lifecycle(2), ["opened"], "egress 1000..2000 missing");
        r.feed(&mut t, &[data(2, EG, &s, 1000, 1000, 3)]);
        assert_eq!(
            r.lifecycle(2),
            ["opened", "closed"],
            "drained: finalised without linger"
        );
        assert_eq!(r.stream(2, EG), (s.clone(), 3000));
        assert_eq!(r.stream(2, IN), (s[..1000].to_vec(), 1000));
        let c = finished_one(&mut t, 2);
        assert_eq!((c.bytes, c.lost), ([3000, 1000], [0, 0]));
    }

    #[test]
    fn close_of_a_connection_never_seen_reports_its_bytes_as_lost() {
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(&mut t, &[close(12, 7, 10, 50, 60)]);
        assert_eq!(r.lifecycle(12), ["opened"], "its chunks may still come");
        r.tick(&mut t, 10 + 300 * MS);
        assert_eq!(r.lifecycle(12), ["opened", "closed"]);
        assert_eq!(r.gaps(12, EG, GapReason::Lost), vec![(0, 50)]);
        assert_eq!(r.gaps(12, IN, GapReason::Lost), vec![(0, 60)]);
        assert_eq!(finished_one(&mut t, 12).bytes, [0, 0]);
    }

    #[test]
    fn max_connections_evicts_the_least_recently_active_and_counts_it() {
        let s = pattern(14, 100);
        let mut t = ConnTracker::new(TrackerConfig {
            max_connections: 2,
            ..cfg()
        });
        let mut r = Run::default();
        r.feed(
            &mut t,
            &[
                data_own_fd(1, &s, 0, 10, 1),
                data_own_fd(2, &s, 0, 10, 2),
                data_own_fd(1, &s, 10, 10, 3),
            ],
        );
        // The third connection evicts conn 2 (last active at 2), not conn 1 (at 3).
        r.feed(&mut t, &[open(3, 9, 4)]);
        assert_eq!(t.len(), 2);
        assert!(t.get(2).is_none() && t.get(1).is_some() && t.get(3).is_some());
        assert_eq!(t.stats().connections_evicted, 1);
        let ev = finished_one(&mut t, 2);
        assert_eq!((ev.end, ev.bytes), (Some(EndReason::Evicted), [10, 0]));
        assert_eq!(r.lifecycle(2), ["opened", "closed"]);
        // An evicted connection that is still alive resumes where it stopped.
        r.feed(&mut t, &[data_own_fd(2, &s, 10, 90, 5)]);
        assert_eq!(t.stats().connections_resumed, 1);
        assert_eq!(
            t.stats().connections_evicted,
            2,
            "conn 1 made room this time"
        );
        assert_eq!(r.stream(2, EG), (s.clone(), 100));
        assert!(r.gaps(2, EG, GapReason::Lost).is_empty());
    }

    #[test]
    fn a_process_exit_ends_its_connections_and_only_its_own() {
        let s = pattern(15, 100);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(
            &mut t,
            &[data_own_fd(1, &s, 0, 10, 1), data_own_fd(2, &s, 0, 20, 2)],
        );
        // A connection of another process, which stays.
        let mut other = conn_event(ConnEventKind::Open, 3, 7, 3);
        other.task.tgid = TGID + 50;
        r.feed(&mut t, &[Event::Conn(other)]);
        assert_eq!(t.processes(), [TGID, TGID + 50]);

        // No Close comes for an exiting process's sockets: the exit ends them.
        assert_eq!(t.end_process(TGID, &mut r.events), 2);
        assert_eq!(t.len(), 1);
        assert!(t.get(3).is_some());
        assert_eq!(t.processes(), [TGID + 50]);
        assert_eq!(t.stats().connections_exited, 2);
        let ev = finished_one(&mut t, 2);
        assert_eq!((ev.end, ev.bytes), (Some(EndReason::Exited), [20, 0]));
        assert_eq!(r.lifecycle(1), ["opened", "closed"]);
        assert_eq!(r.stream(2, EG), (s[..20].to_vec(), 20));
        // A socket passed on to a child before the exit resumes where it stopped.
        r.feed(&mut t, &[data_own_fd(2, &s, 20, 80, 5)]);
        assert_eq!(t.stats().connections_resumed, 1);
        assert_eq!(r.stream(2, EG), (s.clone(), 100));
        assert_eq!(
            t.end_process(TGID + 99, &mut r.events),
            0,
            "no such process"
        );
    }

    #[test]
    fn the_table_gives_its_memory_back_after_a_wave() {
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        let opens: Vec<Event> = (1..=5_000u64)
            .map(|id| open(id, 100 + id as i32, id))
            .collect();
        let closes: Vec<Event> = (1..=5_000u64)
            .map(|id| close(id, 100 + id as i32, 5_000 + id, 0, 0))
            .collect();
        r.feed(&mut t, &[open(9_999, 3, 0)]);
        r.feed(&mut t, &opens);
        assert_eq!(t.len(), 5_001);
        let peak = t.capacity();
        assert!(peak >= 10_000, "{peak}");
        r.feed(&mut t, &closes);
        r.feed(&mut t, &[close(9_999, 3, 6_000, 0, 0)]);
        // The linger passes, every connection is finalised, the tables shrink.
        r.tick(&mut t, 10 * 1000 * MS);
        assert_eq!(t.len(), 0);
        let _ = t.take_finished();
        r.tick(&mut t, 11 * 1000 * MS);
        assert!(
            t.capacity() < peak / 8,
            "capacity {} after a wave that peaked at {peak}",
            t.capacity()
        );
    }

    #[test]
    fn idle_connection_is_finalised_and_resumes_at_its_position() {
        let s = pattern(15, 200);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(&mut t, &[data(4, IN, &s, 0, 100, 1000 * MS)]);
        r.tick(&mut t, 10_999 * MS);
        assert!(t.get(4).is_some());
        r.tick(&mut t, 11_000 * MS);
        assert!(t.get(4).is_none());
        assert_eq!(finished_one(&mut t, 4).end, Some(EndReason::Idle));
        r.feed(
            &mut t,
            &[
                data(4, IN, &s, 100, 100, 12_000 * MS),
                close(4, 5, 12_001 * MS, 0, 200),
            ],
        );
        assert_eq!(r.lifecycle(4), ["opened", "closed", "opened", "closed"]);
        assert_eq!(r.stream(4, IN), (s.clone(), 200));
        let c = finished_one(&mut t, 4);
        assert_eq!((c.end, c.bytes), (Some(EndReason::Closed), [0, 100]));
        assert_eq!(
            (t.stats().connections_idle, t.stats().connections_resumed),
            (1, 1)
        );
    }

    #[test]
    fn addresses_and_role_fill_in_and_are_never_erased() {
        let s = pattern(16, 10);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        // First seen by data (connection open before capture), then its Open arrives late.
        let mut d = D {
            conn_id: 11,
            fd: 5,
            dir: EG,
            stream: &s,
            pos: 0,
            len: 10,
            cap: CAP,
            ts: 5,
        }
        .event();
        if let Event::Data(chunk) = &mut d {
            chunk.role = Role::Unknown;
            chunk.peer = None;
        }
        r.feed(&mut t, &[d]);
        let c = t.get(11).expect("tracked from its first chunk");
        assert_eq!(
            (c.role, c.peer, c.local),
            (Role::Unknown, None, Some("10.0.0.1:40000".parse().unwrap()))
        );
        let mut o = conn_event(ConnEventKind::Open, 11, 5, 4);
        o.role = Role::Server;
        o.peer = Some("10.9.9.9:1234".parse().unwrap());
        r.feed(&mut t, &[Event::Conn(o)]);
        let c = t.get(11).expect("tracked");
        assert_eq!(c.role, Role::Server);
        assert_eq!(c.peer, Some("10.9.9.9:1234".parse().unwrap()));
        assert_eq!(
            c.local,
            Some("10.0.0.1:40000".parse().unwrap()),
            "the Open has no local address"
        );
        assert_eq!(c.opened_ns, 4);
        // Data claiming client does not override the Open's role; data and a Close without
        // a peer erase nothing.
        let mut d = data(11, EG, &s, 0, 10, 6);
        if let Event::Data(chunk) = &mut d {
            chunk.peer = None;
        }
        r.feed(&mut t, &[d, close(11, 5, 7, 10, 0)]);
        let c = finished_one(&mut t, 11);
        assert_eq!(
            (c.role, c.peer),
            (Role::Server, Some("10.9.9.9:1234".parse().unwrap()))
        );
        assert_eq!(r.lifecycle(11), ["opened", "closed"]);
    }

    #[test]
    fn events_without_a_connection_are_ignored() {
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        // A refused connect: Open with conn_id 0. A TCP state change: no conn_id either.
        let mut refused = conn_event(ConnEventKind::Open, 0, 5, 1);
        refused.ret = -111;
        r.feed(
            &mut t,
            &[
                Event::Conn(refused),
                Event::Conn(conn_event(ConnEventKind::State, 0, -1, 2)),
            ],
        );
        assert!(r.events.is_empty());
        assert!(t.is_empty());
        assert_eq!(t.stats().events_without_conn, 1);
    }

    #[test]
    fn finish_all_flushes_everything() {
        let s = pattern(17, 100);
        let mut t = ConnTracker::new(cfg());
        let mut r = Run::default();
        r.feed(
            &mut t,
            &[data_own_fd(1, &s, 50, 50, 1), data_own_fd(2, &s, 0, 100, 2)],
        );
        t.finish_all(&mut r.events);
        assert!(t.is_empty());
        assert_eq!(r.gaps(1, EG, GapReason::Lost), vec![(0, 50)]);
        assert_eq!(t.take_finished().len(), 2);
        assert_eq!(t.stats().connections_shutdown, 2);
    }
}
