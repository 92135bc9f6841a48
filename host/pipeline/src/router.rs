//! The router: stream events in, one batched job per parser out; claims back in, kernel
//! verdicts out.
//!
//! Every parser sees a new connection until one claims it (`Mine`): from then on only the
//! owner does, and the others are told the connection is closed so they forget it. A
//! connection nobody wants (every parser said `NotMine`, gave up, or lost it to a failure), or
//! whose owner said `Finished`, gets a verdict: the kernel stops copying its payload but keeps
//! counting its bytes. No port numbers are involved: a parser decides from the bytes.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sonde_sdk::protocol_parser::{Endpoint, Role as SdkRole, Transport};

use crate::dispatch::{Dispatch, Refusal};
use crate::slot::{ParserSlot, SlotOutput};
use sonde_capture::conntrack::{ConnTracker, Connection, StreamEvent};
use sonde_capture::events::{Direction as CapDirection, Role};
use sonde_capture::reassembly::SegmentBody;
use sonde_capture::tables::IdMap;
use sonde_parse::{
    Claim, ConnInfo, Direction, ParseJob, ParserBackend, ParserStats, SegMeta, TaggedRecord,
};

/// Batching bounds (`[plugins] batch_bytes`, `batch_segments`): a parser's job is handed over
/// when either is reached, and at the end of every capture batch ([`Router::flush`]).
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    pub batch_bytes: usize,
    pub batch_segments: usize,
}

/// A job its parser's full queue refused is held and grown up to this many batches before it
/// is dropped. Four keeps one call's work (a few ms of Wasm per 256 KiB) far inside the
/// parser's call deadline.
const HOLD_BATCHES: usize = 4;
/// Emptied jobs kept for reuse (their buffers grown to a batch once, not per job).
const MAX_SPARE_JOBS: usize = 4;

impl RouterConfig {
    /// How large a refused job may grow while it waits for its parser.
    fn hold_bytes(&self) -> usize {
        self.batch_bytes.saturating_mul(HOLD_BATCHES)
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            batch_bytes: 256 << 10,
            batch_segments: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stance {
    /// Still looking (or never fed yet).
    Undecided,
    Mine,
    /// Not its protocol, finished, lost to a failure, or another parser owns it.
    Done,
}

struct Route {
    info: Option<Arc<ConnInfo>>,
    /// The labeler's generation when `info` was labelled.
    info_generation: u64,
    stance: Vec<Stance>,
    /// The parser was told about the connection (`opened`) and must hear `closed`.
    announced: Vec<bool>,
    owner: Option<usize>,
    /// A skip verdict was issued.
    skipped: bool,
}

impl Route {
    /// A connection seen now: parsers that are not active (draining or retired after a swap)
    /// never start on it.
    fn new(life: &[Life]) -> Self {
        Self {
            info: None,
            info_generation: 0,
            stance: life
                .iter()
                .map(|l| {
                    if *l == Life::Active {
                        Stance::Undecided
                    } else {
                        Stance::Done
                    }
                })
                .collect(),
            announced: vec![false; life.len()],
            owner: None,
            skipped: false,
        }
    }

    fn wants(&self, p: usize) -> bool {
        match self.stance[p] {
            Stance::Done => false,
            Stance::Mine => true,
            Stance::Undecided => self.owner.is_none(),
        }
    }
}

/// Where a parser is in its life. A hot swap adds the new version as a new parser and sets the
/// old one draining: **connections the old version has seen bytes of finish on it; every other
/// connection (new ones, and known ones it had not been fed yet) goes to the new version**, so
/// each connection is parsed by exactly one version and no record is lost or counted twice. A draining parser is retired when its last connection
/// closes, or at the drain timeout: then its remaining connections are closed for it (pending
/// requests flushed as unanswered) and detected afresh by its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Life {
    Active,
    Draining,
    Retired,
}

/// One parser slot as `sonde plugin list` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SlotInfo {
    pub index: usize,
    pub name: String,
    pub version: String,
    pub source: String,
    pub state: String,
    /// Connections it has been told about and not yet closed.
    pub connections: usize,
    pub records: u64,
}

/// Router counters (cumulative), for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouterStats {
    /// Segments handed to at least one parser.
    pub segments_routed: u64,
    /// Segments no parser wanted (their connection was decided).
    pub segments_unrouted: u64,
    /// Connections given a skip-payload verdict.
    pub verdicts_skip: u64,
    /// Connections claimed by a parser.
    pub connections_claimed: u64,
    /// Records received from parsers.
    pub records: u64,
    /// Connections labelled again because their metadata arrived after them.
    pub relabeled: u64,
    /// Connections a draining parser still had at its drain timeout, handed to its
    /// replacement.
    pub handed_over: u64,
}

/// Labels for connections (the correlation layer: container, pod, workload, peer).
pub trait Labeler: Send {
    fn labels(&self, c: &Connection) -> Vec<(String, String)>;
    /// Changes when the metadata labels are made of changed. A connection labelled under an
    /// older generation whose labels are `incomplete` is labelled again on its next segment
    /// (a pod whose metadata arrived after its first connection).
    fn generation(&self) -> u64 {
        0
    }
    fn incomplete(&self, _labels: &[(String, String)]) -> bool {
        false
    }
}

pub struct Router {
    dispatch: Dispatch,
    cfg: RouterConfig,
    labeler: Option<Box<dyn Labeler>>,
    routes: IdMap<Route>,
    /// The job being built for each parser.
    jobs: Vec<ParseJob>,
    /// Per parser: jobs refused by a full queue and held for the next try, jobs dropped
    /// (held past `hold_bytes`, or their parser gone), and connections abandoned because of it.
    jobs_held: Vec<u64>,
    jobs_dropped: Vec<u64>,
    abandoned_by_drop: Vec<u64>,
    verdicts: Vec<u64>,
    records: Vec<TaggedRecord>,
    outputs: Vec<SlotOutput>,
    /// Parsed jobs, emptied, to be filled again (see `keep_spare`).
    spare_jobs: Vec<ParseJob>,
    /// Per parser: its life, when it started draining, and what replaced it.
    life: Vec<Life>,
    draining_since: Vec<Option<std::time::Instant>>,
    replaced_by: Vec<Option<usize>>,
    pub stats: RouterStats,
}

impl Router {
    pub fn new(dispatch: Dispatch, cfg: RouterConfig) -> Self {
        let n = dispatch.len();
        Self {
            dispatch,
            cfg,
            labeler: None,
            routes: IdMap::default(),
            jobs: (0..n).map(|_| ParseJob::default()).collect(),
            jobs_held: vec![0; n],
            jobs_dropped: vec![0; n],
            abandoned_by_drop: vec![0; n],
            verdicts: Vec::new(),
            records: Vec::new(),
            outputs: Vec::new(),
            spare_jobs: Vec::new(),
            life: vec![Life::Active; n],
            draining_since: vec![None; n],
            replaced_by: vec![None; n],
            stats: RouterStats::default(),
        }
    }

    /// Add a parser (hot load). Connections already routed never go to it.
    pub fn add_parser(&mut self, backend: Box<dyn ParserBackend>) -> anyhow::Result<usize> {
        let p = self
            .dispatch
            .add(ParserSlot::new(self.jobs.len(), backend))?;
        debug_assert_eq!(p, self.jobs.len());
        self.jobs.push(ParseJob::default());
        self.jobs_held.push(0);
        self.jobs_dropped.push(0);
        self.abandoned_by_drop.push(0);
        self.life.push(Life::Active);
        self.draining_since.push(None);
        self.replaced_by.push(None);
        for route in self.routes.values_mut() {
            route.stance.push(Stance::Done);
            route.announced.push(false);
        }
        Ok(p)
    }

    /// Swap parser `old` for `slot` (see [`Life`]): the new version takes every connection
    /// from now on, the old one finishes its own. Returns the new parser's index.
    pub fn replace_parser(
        &mut self,
        old: usize,
        backend: Box<dyn ParserBackend>,
    ) -> anyhow::Result<usize> {
        anyhow::ensure!(
            self.life.get(old) == Some(&Life::Active),
            "parser {old} is not active"
        );
        let new = self.add_parser(backend)?;
        // Connections the old version has not seen a byte of are the new one's.
        for route in self.routes.values_mut() {
            if !route.announced[old] && route.stance[old] != Stance::Done {
                route.stance[new] = Stance::Undecided;
            }
        }
        self.drain(old, Some(new));
        Ok(new)
    }

    /// Stop giving parser `p` new connections; it is retired once its own are done.
    pub fn unload_parser(&mut self, p: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.life.get(p) == Some(&Life::Active),
            "parser {p} is not active"
        );
        self.drain(p, None);
        Ok(())
    }

    fn drain(&mut self, p: usize, replacement: Option<usize>) {
        self.life[p] = Life::Draining;
        self.draining_since[p] = Some(std::time::Instant::now());
        self.replaced_by[p] = replacement;
        // Connections it never started on are no longer its to decide.
        for (conn, route) in self.routes.iter_mut() {
            if !route.announced[p] && route.stance[p] != Stance::Done {
                route.stance[p] = Stance::Done;
                Self::maybe_skip(*conn, route, &mut self.verdicts, &mut self.stats);
            }
        }
    }

    /// Retire draining parsers whose connections are done, or that drained for longer than
    /// `timeout` (their connections are handed to the replacement). Returns those retired.
    pub fn retire_drained(&mut self, timeout: Duration) -> Vec<usize> {
        let mut retired = Vec::new();
        for p in 0..self.life.len() {
            if self.life[p] != Life::Draining {
                continue;
            }
            let busy = self.routes.values().any(|r| r.announced[p]);
            let expired = self.draining_since[p].is_some_and(|t| t.elapsed() >= timeout);
            if busy && !expired {
                continue;
            }
            if busy {
                let replacement = self.replaced_by[p];
                for (conn, route) in self.routes.iter_mut() {
                    if !route.announced[p] {
                        continue;
                    }
                    route.announced[p] = false;
                    route.stance[p] = Stance::Done;
                    self.jobs[p].closed.push(*conn);
                    if route.owner == Some(p) {
                        route.owner = None;
                    }
                    if let Some(q) = replacement
                        && self.life[q] == Life::Active
                    {
                        route.stance[q] = Stance::Undecided;
                    }
                    self.stats.handed_over += 1;
                }
            }
            if !self.jobs[p].is_empty() {
                self.submit(p);
            }
            self.dispatch.retire(p);
            self.life[p] = Life::Retired;
            retired.push(p);
        }
        retired
    }

    /// Every parser slot, retired ones included.
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.dispatch
            .stats()
            .into_iter()
            .enumerate()
            .map(|(p, s)| SlotInfo {
                index: p,
                name: s.name,
                version: s.version,
                source: s.source,
                state: match self.life[p] {
                    Life::Active => "active",
                    Life::Draining => "draining",
                    Life::Retired => "retired",
                }
                .into(),
                connections: self.routes.values().filter(|r| r.announced[p]).count(),
                records: s.counters.records,
            })
            .collect()
    }

    /// The active parser named `name`.
    pub fn active_parser(&self, name: &str) -> Option<usize> {
        let stats = self.dispatch.stats();
        (0..self.life.len()).find(|&p| self.life[p] == Life::Active && stats[p].name == name)
    }

    /// Label every connection with `labeler` when its first segment is routed.
    pub fn set_labeler(&mut self, labeler: Box<dyn Labeler>) {
        self.labeler = Some(labeler);
    }

    pub fn parsers(&self) -> usize {
        self.jobs.len()
    }

    /// Connections being routed.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Route one stream event (`tracker` is the tracker that produced it, for connection info).
    pub fn on_stream_event(&mut self, ev: &StreamEvent, tracker: &ConnTracker) {
        let n = self.jobs.len();
        match ev {
            StreamEvent::Opened { conn_id } => {
                let life = &self.life;
                self.routes
                    .entry(*conn_id)
                    .or_insert_with(|| Route::new(life));
            }
            StreamEvent::Segment {
                conn_id,
                direction,
                segment,
            } => {
                let life = &self.life;
                let route = self
                    .routes
                    .entry(*conn_id)
                    .or_insert_with(|| Route::new(life));
                if route.skipped {
                    self.stats.segments_unrouted += 1;
                    return;
                }
                if n == 0 {
                    route.skipped = true;
                    self.stats.verdicts_skip += 1;
                    self.verdicts.push(*conn_id);
                    return;
                }
                // Connection info as of its first segment: by then the data chunks have filled
                // in role and addresses for connections whose connect/accept was not seen.
                let labeler = self.labeler.as_deref();
                let generation = labeler.map_or(0, |l| l.generation());
                let label = |c: &Connection| {
                    let mut info = conn_info(c);
                    if let Some(l) = labeler {
                        info.labels = l.labels(c);
                    }
                    // The thread that moved the first bytes, when it named itself: shown on
                    // records, never an identity (RED keys series on identity labels only).
                    if !c.task.thread.is_empty() {
                        info.labels
                            .push((THREAD_NAME.to_string(), c.task.thread.to_string()));
                    }
                    // Parsed from TLS plaintext (uprobes): on records, and the HTTP RED
                    // series' `tls` label ("true"/"false") comes from it.
                    if c.tls {
                        info.labels.push((TLS.to_string(), "true".to_string()));
                    }
                    info
                };
                let mut relabeled = None;
                if let (Some(old), Some(l)) = (&route.info, labeler)
                    && route.info_generation != generation
                {
                    route.info_generation = generation;
                    if l.incomplete(&old.labels)
                        && let Some(c) = tracker.lookup(*conn_id)
                    {
                        let info = Arc::new(label(c));
                        if info.labels != old.labels {
                            self.stats.relabeled += 1;
                            route.info = Some(info.clone());
                            relabeled = Some(info);
                        }
                    }
                }
                let info = route
                    .info
                    .get_or_insert_with(|| {
                        route.info_generation = generation;
                        Arc::new(tracker.lookup(*conn_id).map_or_else(
                            || ConnInfo {
                                id: *conn_id,
                                ..Default::default()
                            },
                            label,
                        ))
                    })
                    .clone();
                let (data, gap): (&[u8], u64) = match &segment.body {
                    SegmentBody::Data(b) => (b, 0),
                    SegmentBody::Gap { len, .. } => (&[], *len),
                };
                let meta = SegMeta {
                    conn: *conn_id,
                    direction: match direction {
                        CapDirection::Egress => Direction::Egress,
                        CapDirection::Ingress => Direction::Ingress,
                    },
                    ts_ns: segment.ts_ns,
                    gap_before: gap,
                };
                let mut routed = false;
                // Parsers whose batch is full (no allocation unless one is).
                let mut full: Vec<usize> = Vec::new();
                for p in 0..n {
                    // Not active (swapped out): only the connections it already has.
                    if !route.wants(p) || (!route.announced[p] && self.life[p] != Life::Active) {
                        continue;
                    }
                    routed = true;
                    let job = &mut self.jobs[p];
                    if !route.announced[p] {
                        route.announced[p] = true;
                        job.opened.push(info.clone());
                    } else if let Some(r) = &relabeled {
                        job.relabeled.push(r.clone());
                    }
                    job.push_segment(meta, data);
                    if job.data.len() >= self.cfg.batch_bytes
                        || job.meta.len() >= self.cfg.batch_segments
                    {
                        full.push(p);
                    }
                }
                for p in full {
                    self.submit(p);
                }
                if routed {
                    self.stats.segments_routed += 1;
                } else {
                    self.stats.segments_unrouted += 1;
                }
            }
            StreamEvent::Closed { conn_id } => {
                if let Some(route) = self.routes.remove(conn_id) {
                    for p in 0..n {
                        if route.announced[p] {
                            self.jobs[p].closed.push(*conn_id);
                        }
                    }
                }
            }
        }
    }

    /// Hand every parser its pending job (the end of a capture batch). The route table gives
    /// its memory back once a wave of connections has closed (amortised, see
    /// `sonde_capture::tables`).
    pub fn flush(&mut self) {
        for p in 0..self.jobs.len() {
            if !self.jobs[p].is_empty() {
                self.submit(p);
            }
        }
        sonde_capture::tables::shrink_map(&mut self.routes);
    }

    fn submit(&mut self, p: usize) {
        let next = self.spare_jobs.pop().unwrap_or_default();
        let job = std::mem::replace(&mut self.jobs[p], next);
        if let Err((job, why)) = self.dispatch.submit(p, job) {
            // A parser that is only behind (its thread starved for a moment, a burst) keeps
            // the refused job as the start of its next one: later segments are appended and
            // the whole is offered again at the next flush or tick, as one bigger batch. Only
            // past `hold_bytes` is the job dropped, so a short stall loses nothing and a
            // parser that cannot keep up still costs bounded memory.
            if why == Refusal::Full && job.data.len() < self.cfg.hold_bytes() {
                self.jobs_held[p] += 1;
                let next = std::mem::replace(&mut self.jobs[p], job);
                self.keep_spare(next);
                return;
            }
            // The parser is behind: its connections in this job lose continuity. Stop feeding
            // them to it, and have it forget them (and the closes it missed) next time.
            self.jobs_dropped[p] += 1;
            let next = &mut self.jobs[p];
            next.closed.extend(job.closed.iter().copied());
            for c in job.conns() {
                if let Some(route) = self.routes.get_mut(&c) {
                    if route.stance[p] != Stance::Done {
                        route.stance[p] = Stance::Done;
                        self.abandoned_by_drop[p] += 1;
                    }
                    if route.announced[p] {
                        route.announced[p] = false;
                        next.closed.push(c);
                    }
                    if route.owner == Some(p) {
                        route.owner = None;
                    }
                    Self::maybe_skip(c, route, &mut self.verdicts, &mut self.stats);
                } else if !job.closed.contains(&c) {
                    next.closed.push(c);
                }
            }
        }
    }

    /// Take in what the parsers returned: records, claims, abandoned connections.
    pub fn collect(&mut self) {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.dispatch.poll(&mut outputs);
        self.apply(&mut outputs);
        self.outputs = outputs;
    }

    /// Flush, then wait up to `timeout` for every parser to finish what it was given (shutdown,
    /// tests, benchmarks). Returns whether all finished.
    pub fn settle(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut outputs = std::mem::take(&mut self.outputs);
        let all = loop {
            self.flush();
            // A job a full queue refused is still held: offer it again once the queue drained.
            let held = self.jobs.iter().any(|j| !j.is_empty());
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let all = self.dispatch.settle(left, &mut outputs);
            if !held || !all {
                break all;
            }
        };
        self.apply(&mut outputs);
        self.outputs = outputs;
        // Claims may have queued `closed` notices for the losers: deliver them too.
        self.flush();
        all
    }

    /// Keeps an emptied job for reuse, unless enough are kept or it grew past a normal
    /// batch (a held job's buffers are given back).
    fn keep_spare(&mut self, job: ParseJob) {
        let normal = job.data.capacity() <= 2 * self.cfg.batch_bytes;
        if normal && self.spare_jobs.len() < MAX_SPARE_JOBS {
            self.spare_jobs.push(job);
        }
    }

    fn apply(&mut self, outputs: &mut Vec<SlotOutput>) {
        for mut out in outputs.drain(..) {
            self.keep_spare(std::mem::take(&mut out.spent));
            let p = out.parser;
            if let Some(f) = &out.failure {
                // Quarantine skips repeat on every batch: the failures that caused them were
                // logged already.
                if f.kind == sonde_parse::FailureKind::Quarantined {
                    tracing::debug!(
                        parser = p,
                        abandoned = out.abandoned.len(),
                        "parser quarantined"
                    );
                } else {
                    tracing::warn!(parser = p, kind = ?f.kind, abandoned = out.abandoned.len(), "parser call failed: {f}");
                }
            }
            self.stats.records += out.records.len() as u64;
            self.records.extend(out.records);
            for (conn, claim) in out.claims {
                let Some(route) = self.routes.get_mut(&conn) else {
                    continue;
                };
                match claim {
                    Claim::Undecided => {}
                    Claim::Mine => {
                        if route.owner.is_none() && route.stance[p] != Stance::Done {
                            route.owner = Some(p);
                            route.stance[p] = Stance::Mine;
                            self.stats.connections_claimed += 1;
                            for q in 0..route.stance.len() {
                                if q != p && route.stance[q] != Stance::Done {
                                    route.stance[q] = Stance::Done;
                                    if route.announced[q] {
                                        route.announced[q] = false;
                                        self.jobs[q].closed.push(conn);
                                    }
                                }
                            }
                        } else if route.owner != Some(p) {
                            // Claimed too late: another parser owns it. Let this one forget.
                            route.stance[p] = Stance::Done;
                            if route.announced[p] {
                                route.announced[p] = false;
                                self.jobs[p].closed.push(conn);
                            }
                        }
                    }
                    Claim::NotMine | Claim::Finished => route.stance[p] = Stance::Done,
                }
                Self::maybe_skip(conn, route, &mut self.verdicts, &mut self.stats);
            }
            for conn in out.abandoned {
                if let Some(route) = self.routes.get_mut(&conn) {
                    route.stance[p] = Stance::Done;
                    if route.owner == Some(p) {
                        route.owner = None;
                    }
                    Self::maybe_skip(conn, route, &mut self.verdicts, &mut self.stats);
                }
            }
        }
    }

    fn maybe_skip(conn: u64, route: &mut Route, verdicts: &mut Vec<u64>, stats: &mut RouterStats) {
        if !route.skipped && route.stance.iter().all(|s| *s == Stance::Done) {
            route.skipped = true;
            stats.verdicts_skip += 1;
            verdicts.push(conn);
        }
    }

    /// Records parsed since the last call.
    pub fn take_records(&mut self, out: &mut Vec<TaggedRecord>) {
        out.append(&mut self.records);
    }

    /// Connections whose payload the kernel may stop copying, since the last call.
    pub fn take_verdicts(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.verdicts);
    }

    /// Jobs submitted and not returned.
    pub fn pending(&self) -> usize {
        self.dispatch.pending()
    }

    /// Every parser's stats, with the router's drop counters folded in.
    /// One entry per parser name: the versions a name had (hot swaps) are summed, so its
    /// counters go on across swaps; version and source are the active one's.
    pub fn parser_stats(&self) -> Vec<ParserStats> {
        let mut stats = self.dispatch.stats();
        for (p, s) in stats.iter_mut().enumerate() {
            s.counters.jobs_held = self.jobs_held[p];
            s.counters.jobs_dropped = self.jobs_dropped[p];
            s.counters.abandoned += self.abandoned_by_drop[p];
        }
        let mut merged: Vec<ParserStats> = Vec::new();
        for (p, s) in stats.into_iter().enumerate() {
            match merged.iter_mut().find(|m| m.name == s.name) {
                Some(m) => {
                    let active = self.life[p] == Life::Active;
                    m.merge(s, active);
                }
                None => merged.push(s),
            }
        }
        merged
    }
}

fn endpoint(a: Option<std::net::SocketAddr>) -> Option<Endpoint> {
    a.map(|a| Endpoint {
        ip: a.ip().to_string(),
        port: a.port(),
    })
}

/// Label of a record whose connection's first bytes were moved by a thread with a name of
/// its own (`isc-net-0000`, a server's named worker).
pub const THREAD_NAME: &str = "thread_name";
/// Label on the records of a connection parsed from TLS plaintext (`"true"`).
pub const TLS: &str = "tls";

/// What a parser is told about a tracked connection.
pub fn conn_info(c: &Connection) -> ConnInfo {
    ConnInfo {
        id: c.conn_id,
        pid: c.task.tgid,
        comm: c.task.comm.to_string(),
        local: endpoint(c.local),
        remote: endpoint(c.peer),
        role: match c.role {
            Role::Unknown => SdkRole::Unknown,
            Role::Client => SdkRole::Client,
            Role::Server => SdkRole::Server,
        },
        transport: if c.datagram {
            Transport::Udp
        } else {
            Transport::Tcp
        },
        labels: Vec::new(),
    }
}
