//! The network map: TCP connections folded into edges (client → server:port) that carry both
//! network health (connects and their failures, bytes, segments, retransmits, drops, RTT,
//! resets) and application health (the L7 records of the same connections), and a status per
//! edge and node.
//!
//! Inputs, all from the daemon loop:
//! - TCP state changes and resets from the ring buffer ([`NetMap::on_conn`]), in order: they
//!   give connect attempts and their outcome, connect latency, accepts, closes, and which end
//!   of a connection each local socket is;
//! - the kernel's per-socket, per-drop, per-device and softirq maps, read every
//!   `read_interval_ms` ([`NetMap::on_reading`]);
//! - parsed request records ([`NetMap::on_records`]).
//!
//! When both ends of a connection are on this node (loopback, pods of one node), its two
//! sockets are folded into one connection, so bytes and requests are not counted twice.
#![forbid(unsafe_code)]
pub mod export;
pub mod model;
pub mod status;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sonde_analysis::detect::{DetectorConfig, Direction, ResidualDetector};
use sonde_common::net::{DropKey, DropStats, FlowKey, FlowStats};

use sonde_capture::events::{ConnChange, ConnEventKind, Role as SockRole, TcpState};
use sonde_capture::net::NetReading;
use sonde_parse::TaggedRecord;
use sonde_sdk::protocol_parser::{Endpoint, Role, Transport};

use self::model::{ConnKey, Counters, EdgeKey, Histogram, Side};
use self::status::{Status, Thresholds, Verdict, judge};

const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u8 = 10;
/// A connect that lasted at least this long before failing without a reset timed out: the
/// first SYN retransmission comes after 1 s.
const TIMEOUT_MIN_NS: u64 = 1_000_000_000;
/// Bounds on the bookkeeping maps (past them, the oldest knowledge is dropped and counted).
const MAX_ATTEMPTS: usize = 65_536;
const MAX_NAMES: usize = 65_536;
/// A shrink that gave back at least this many entries' worth also returns the pages.
const RELEASE_AFTER_ENTRIES: usize = 4096;

/// Drop reasons that are the stack tidying up, not a packet lost on its way: a closing
/// socket's queues, duplicates of data already received, a reset after it was processed.
/// They count node-wide under their reason but not as an edge's drops.
pub const HOUSEKEEPING_DROP_REASONS: &[&str] = &[
    "QUEUE_PURGE",
    "SOCKET_CLOSE",
    "TCP_CLOSE",
    "TCP_RESET",
    "TCP_ABORT_ON_DATA",
    "TCP_OLD_DATA",
    "TCP_OLD_ACK",
    "TCP_TOO_OLD_ACK",
    "TCP_OLD_SEQUENCE",
    "TCP_OFOMERGE",
    "UNIX_DISCONNECT",
    "UNIX_SKIP_OOB",
];

/// `[network]`: the network map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSettings {
    /// How often the kernel's flow, drop, interface and softirq maps are read.
    pub read_interval_ms: u64,
    /// Statuses judge this much recent history.
    pub window_s: u64,
    /// Edges kept; connections of further edges go to one `(other)` edge (counted).
    pub max_edges: usize,
    /// Connections kept; beyond, new ones are not followed (counted).
    pub max_connections: usize,
    /// Addresses a named client (a process, or a workload/service the correlation labels
    /// name) keeps as edges of their own, per name; its further addresses are gathered by /24
    /// (IPv4) or /64 (IPv6), up to as many prefixes, then into one edge for the name.
    /// Clients nothing names are always gathered by prefix. 1 to 65536.
    pub max_addrs_per_client: usize,
    /// A closed connection stays this long, for late drops and records.
    pub conn_linger_s: u64,
    /// A connection not seen for this long (its close was lost) is forgotten.
    pub conn_idle_s: u64,
    /// An edge without connections and without traffic for this long is removed.
    pub edge_idle_s: u64,
    pub thresholds: Thresholds,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            read_interval_ms: 1000,
            window_s: 30,
            max_edges: 1000,
            max_connections: 262_144,
            max_addrs_per_client: 16,
            conn_linger_s: 10,
            conn_idle_s: 900,
            edge_idle_s: 3600,
            thresholds: Thresholds::default(),
        }
    }
}

impl NetworkSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.read_interval_ms >= 10,
            "network.read_interval_ms must be at least 10"
        );
        anyhow::ensure!(
            self.window_s * 1000 >= self.read_interval_ms,
            "network.window_s must cover at least one read interval"
        );
        anyhow::ensure!(self.max_edges >= 1, "network.max_edges must be at least 1");
        anyhow::ensure!(
            (1..=65_536).contains(&self.max_addrs_per_client),
            "network.max_addrs_per_client must be 1 to 65536"
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "network.max_connections must be at least 1 (got 0)"
        );
        Ok(())
    }
}

/// A connect in progress (CLOSE → SYN_SENT seen), by socket.
#[derive(Debug, Clone)]
struct Attempt {
    start_ns: u64,
    comm: String,
    client_ip: IpAddr,
    server: SocketAddr,
}

/// What one connection has already added to its edge (so each read adds only the growth).
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    bytes_c2s: u64,
    bytes_s2c: u64,
    segments_c2s: u64,
    segments_s2c: u64,
    retransmits: u64,
    syn_retransmits: u64,
}

/// One connection the map follows.
#[derive(Debug)]
struct Conn {
    edge: Arc<EdgeKey>,
    /// Last counters read for the client's / server's socket, when it is on this node.
    client: Option<FlowStats>,
    server: Option<FlowStats>,
    counted: Counted,
    /// A local socket of this connection is open.
    client_open: bool,
    server_open: bool,
    /// When the last open local socket closed.
    closed_ns: Option<u64>,
    last_ns: u64,
}

/// One edge's state.
#[derive(Debug, Default)]
pub(crate) struct Edge {
    pub counters: Counters,
    pub connect_hist: Histogram,
    pub rtt_hist: Histogram,
    /// Drop reason → packets.
    pub drop_reasons: BTreeMap<u32, u64>,
    /// (time, counters) at each read over the last window (oldest first).
    history: VecDeque<(u64, Counters)>,
    pub last_active_ns: u64,
    /// Connections of this edge the map follows now.
    pub conns: u64,
    /// Anomaly detectors on the edge's per-read KPIs, and what they flag now.
    detectors: Option<Box<EdgeDetectors>>,
    /// The named client and level (prefix length) this edge counts against, in
    /// `NetMap::client_edges`.
    client_group: Option<(String, u8)>,
    anomalies: Vec<String>,
}

/// The analysis engine's streaming detector on each KPI of an edge, fed once per read: what
/// is unusual for this edge, even below the fixed thresholds (an RTT of 20 ms on an edge that
/// always had 0.1 ms).
#[derive(Debug)]
struct EdgeDetectors {
    rtt_ms: ResidualDetector,
    retransmit_ratio: ResidualDetector,
    error_ratio: ResidualDetector,
    latency_ms: ResidualDetector,
}

/// Anomalous this many reads in a row before it is reported (one odd read is noise).
const ANOMALY_RUN: u32 = 2;

fn detector_config(absolute_floor: f64) -> DetectorConfig {
    DetectorConfig {
        absolute_floor,
        ..DetectorConfig::default()
    }
}

impl Edge {
    /// Feeds one read interval's counts to the detectors.
    fn detect(&mut self, d: &Counters, t: &Thresholds) {
        let det = self.detectors.get_or_insert_with(|| {
            Box::new(EdgeDetectors {
                rtt_ms: ResidualDetector::new(Direction::Up),
                retransmit_ratio: ResidualDetector::new(Direction::Up),
                error_ratio: ResidualDetector::new(Direction::Up),
                latency_ms: ResidualDetector::new(Direction::Up),
            })
        });
        self.anomalies.clear();
        let mut check =
            |d: &mut ResidualDetector, value: f64, floor: f64, what: &str, unit: &str| {
                let v = d.update(value, &detector_config(floor));
                if v.anomalous && v.run >= ANOMALY_RUN {
                    self.anomalies.push(format!(
                        "{what} {:.3}{unit}, usually {:.3}{unit} (anomaly)",
                        v.value, v.expected
                    ));
                }
            };
        // Floors: below 1 ms of RTT or latency, or half a percent of a ratio, a change is
        // never unusual on its own (loopback RTTs jitter by multiples of themselves).
        if let Some(rtt) = d.rtt_mean_s() {
            check(&mut det.rtt_ms, rtt * 1e3, 1.0, "RTT", " ms");
        }
        if d.segments() >= t.min_segments {
            let r = d.retransmits as f64 / d.segments() as f64;
            check(&mut det.retransmit_ratio, r, 0.005, "retransmit ratio", "");
        }
        let (requests, errors, ns) = d.requests();
        if requests >= t.min_requests {
            let r = errors as f64 / requests as f64;
            check(&mut det.error_ratio, r, 0.005, "error ratio", "");
            let ms = ns as f64 / requests as f64 / 1e6;
            check(&mut det.latency_ms, ms, 1.0, "request latency", " ms");
        }
    }

    /// Status over the window: thresholds, then what the detectors flag (a warning).
    pub(crate) fn verdict(&self, t: &Thresholds) -> Verdict {
        let mut v = judge(&self.window(), t);
        for a in &self.anomalies {
            v.raise(Status::Warning, 1.5, a.clone());
        }
        v
    }

    /// Counts over the window: now minus the oldest sample kept.
    pub(crate) fn window(&self) -> Counters {
        match self.history.front() {
            Some((_, old)) => self.counters.since(old),
            None => self.counters,
        }
    }
}

/// A drop map entry as last read.
#[derive(Debug, Clone, Copy)]
struct DropSeen {
    stats: DropStats,
    changed_ns: u64,
}

/// The map's own counters (every loss of information has one).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct NetMapStats {
    pub reads: u64,
    /// Entries a map read skipped (deleted while being read).
    pub read_errors: u64,
    /// Connections folded into the `(other)` edge because `max_edges` was reached.
    pub edges_overflow: u64,
    /// Connections not followed because `max_connections` was reached.
    pub conns_overflow: u64,
    /// Connections whose client address was gathered into a /24 (/64) or per-name edge
    /// instead of one of its own (unnamed, or past `max_addrs_per_client`).
    #[serde(default)]
    pub clients_aggregated: u64,
    /// Connections whose client/server sides were guessed (established before Sonde started,
    /// or their state change was lost): listening ports first, then the lower port.
    pub conns_inferred: u64,
    /// Connect attempts forgotten because too many were in progress.
    pub attempts_dropped: u64,
    /// Drops whose packet belongs to no followed connection (other protocols included).
    pub drops_unattributed: u64,
    /// Records whose connection the map could not place.
    pub records_unplaced: u64,
}

/// What a read asks the daemon to delete from the kernel maps (already folded in).
#[derive(Debug, Default)]
pub struct Removals {
    pub flows: Vec<FlowKey>,
    pub drops: Vec<DropKey>,
}

/// Labels of whoever is at an address (the correlation layer: pod, service, node).
pub type IpLabeler = Box<dyn Fn(IpAddr) -> Vec<(String, String)> + Send>;

pub struct NetMap {
    settings: NetworkSettings,
    ip_labeler: Option<IpLabeler>,
    attempts: HashMap<u64, Attempt>,
    /// (client ip, server) → socket of a connect in progress: names the flow entry of a
    /// connect that retransmits its SYN before its outcome is known.
    attempt_dests: HashMap<(IpAddr, SocketAddr), u64>,
    /// Sockets that received a reset while connecting (consumed by their CLOSE).
    reset_while_connecting: HashSet<u64>,
    /// Local client address → process name, from connects.
    client_names: HashMap<SocketAddr, String>,
    /// Server address → process name, from accepts and listens; the wildcard table is by port
    /// for listeners on 0.0.0.0 / ::.
    servers: HashMap<SocketAddr, String>,
    wildcard_servers: HashMap<u16, String>,
    conns: HashMap<ConnKey, Conn>,
    /// Sockets (local, remote) that closed: their flow entry is read once more, then deleted.
    closing: HashMap<(SocketAddr, SocketAddr), u64>,
    edges: HashMap<Arc<EdgeKey>, Edge>,
    /// (client name, prefix length) → edges of that named client at that level (one address,
    /// or one /24 or /64), each bounded by `max_addrs_per_client`.
    client_edges: HashMap<(String, u8), usize>,
    drops_seen: HashMap<DropKey, DropSeen>,
    /// Node-wide drops by (reason, l4 protocol) → (packets, bytes), and the part of them no
    /// edge took.
    drop_totals: BTreeMap<(u32, u8), (u64, u64)>,
    drop_unattributed: BTreeMap<(u32, u8), (u64, u64)>,
    drop_reason_names: HashMap<u32, String>,
    /// Reason numbers of [`HOUSEKEEPING_DROP_REASONS`] on this kernel.
    housekeeping: HashSet<u32>,
    /// Record connection id → connection key (records come in bursts per connection).
    record_conns: HashMap<u64, ConnKey>,
    pub(crate) ifaces: Vec<(u64, sonde_common::net::IfaceStats)>,
    pub(crate) softirq: Vec<u64>,
    probes_missing: Vec<String>,
    stats: NetMapStats,
}

impl NetMap {
    pub fn new(settings: NetworkSettings, drop_reason_names: HashMap<u32, String>) -> NetMap {
        NetMap {
            settings,
            ip_labeler: None,
            attempts: HashMap::new(),
            attempt_dests: HashMap::new(),
            reset_while_connecting: HashSet::new(),
            client_names: HashMap::new(),
            servers: HashMap::new(),
            wildcard_servers: HashMap::new(),
            conns: HashMap::new(),
            closing: HashMap::new(),
            edges: HashMap::new(),
            client_edges: HashMap::new(),
            drops_seen: HashMap::new(),
            drop_totals: BTreeMap::new(),
            drop_unattributed: BTreeMap::new(),
            housekeeping: drop_reason_names
                .iter()
                .filter(|(_, n)| HOUSEKEEPING_DROP_REASONS.contains(&n.as_str()))
                .map(|(r, _)| *r)
                .collect(),
            drop_reason_names,
            record_conns: HashMap::new(),
            ifaces: Vec::new(),
            softirq: Vec::new(),
            probes_missing: Vec::new(),
            stats: NetMapStats::default(),
        }
    }

    /// Label the map's nodes and edges with `labeler` (pods, services, nodes by address).
    pub fn set_ip_labeler(&mut self, labeler: IpLabeler) {
        self.ip_labeler = Some(labeler);
    }

    /// The labels of an address (empty without a labeler, or when nobody is known there).
    pub(crate) fn ip_labels(&self, ip: IpAddr) -> std::collections::BTreeMap<String, String> {
        self.ip_labeler
            .as_ref()
            .map(|l| l(ip).into_iter().collect())
            .unwrap_or_default()
    }

    pub fn settings(&self) -> &NetworkSettings {
        &self.settings
    }

    pub fn stats(&self) -> NetMapStats {
        self.stats
    }

    /// Probes that are not running (shown in the API and metrics).
    pub fn set_probes_missing(&mut self, missing: Vec<String>) {
        self.probes_missing = missing;
    }

    /// A connection lifecycle event from the ring buffer.
    pub fn on_conn(&mut self, c: &ConnChange) {
        match c.kind {
            ConnEventKind::State => self.on_state(c),
            ConnEventKind::Reset => self.on_reset(c),
            ConnEventKind::Open => {
                // accept/connect returns name the processes behind addresses.
                if let (Some(local), Some(_)) = (c.local, c.peer) {
                    match c.role {
                        SockRole::Server => self.name_server(local, &c.task.comm),
                        SockRole::Client => self.name_client(local, &c.task.comm),
                        SockRole::Unknown => {}
                    }
                }
            }
            ConnEventKind::Close => {}
        }
    }

    fn name_server(&mut self, addr: SocketAddr, comm: &str) {
        if comm.is_empty() {
            return;
        }
        if addr.ip().is_unspecified() {
            self.wildcard_servers.insert(addr.port(), comm.to_string());
        } else {
            if self.servers.len() >= MAX_NAMES {
                self.servers.clear();
            }
            self.servers.insert(addr, comm.to_string());
        }
    }

    fn name_client(&mut self, addr: SocketAddr, comm: &str) {
        if comm.is_empty() {
            return;
        }
        if self.client_names.len() >= MAX_NAMES {
            self.client_names.clear();
        }
        self.client_names.insert(addr, comm.to_string());
    }

    /// The server node of an edge: `name@ip`, or the address when no process is known.
    pub(crate) fn server_node(&self, k: &EdgeKey) -> String {
        model::node_id(self.server_name(k.server_ip, k.server_port), k.server_ip)
    }

    /// The process serving `addr`, if known ("" otherwise).
    pub(crate) fn server_name(&self, ip: IpAddr, port: u16) -> &str {
        self.servers
            .get(&SocketAddr::new(ip, port))
            .or_else(|| self.wildcard_servers.get(&port))
            .map_or("", String::as_str)
    }

    fn on_state(&mut self, c: &ConnChange) {
        if c.protocol != IPPROTO_TCP {
            return;
        }
        let (Some(local), Some(peer)) = (c.local, c.peer) else {
            return;
        };
        let (old, new) = (c.old_state.0, c.new_state.0);
        let ts = c.ts_ns;
        match (old, new) {
            (TcpState::CLOSE, TcpState::SYN_SENT) => {
                // Process context (connect): the comm is the caller. The local port is not
                // chosen yet, so the attempt is keyed by socket.
                if self.attempts.len() >= MAX_ATTEMPTS {
                    self.stats.attempts_dropped += self.attempts.len() as u64;
                    self.attempts.clear();
                    self.attempt_dests.clear();
                }
                self.attempts.insert(
                    c.sock,
                    Attempt {
                        start_ns: ts,
                        comm: c.task.comm.to_string(),
                        client_ip: local.ip(),
                        server: peer,
                    },
                );
                self.attempt_dests.insert((local.ip(), peer), c.sock);
            }
            (TcpState::SYN_SENT, TcpState::ESTABLISHED) => {
                let attempt = self.take_attempt(c.sock);
                self.reset_while_connecting.remove(&c.sock);
                if let Some(a) = &attempt {
                    self.name_client(local, &a.comm);
                }
                let Some(conn) = self.fresh_conn(ConnKey::of(Side::Client, local, peer), ts) else {
                    return;
                };
                conn.client_open = true;
                let edge_key = conn.edge.clone();
                let edge = self.edges.entry(edge_key).or_default();
                edge.counters.connects += 1;
                edge.last_active_ns = ts;
                if let Some(a) = attempt {
                    let ns = ts.saturating_sub(a.start_ns);
                    edge.counters.connect_ns_sum += ns;
                    edge.connect_hist.observe(ns as f64 / 1e9);
                }
            }
            (TcpState::SYN_SENT, TcpState::CLOSE) => {
                let attempt = self.take_attempt(c.sock);
                let refused = self.reset_while_connecting.remove(&c.sock);
                // The local address may be unset if the connect failed before routing: then
                // the one the attempt started with.
                let client_ip = match &attempt {
                    Some(a) if local.ip().is_unspecified() => a.client_ip,
                    _ => local.ip(),
                };
                let name = attempt
                    .as_ref()
                    .map_or_else(String::new, |a| a.comm.clone());
                let key = self.client_edge(name, client_ip, peer);
                // Its flow entry (SYN retransmits) is read once more under the same name.
                if let Some(a) = &attempt
                    && local.port() != 0
                {
                    self.name_client(local, &a.comm);
                }
                self.on_socket_closed(local, peer, ts, false);
                let lasted = attempt.map_or(0, |a| ts.saturating_sub(a.start_ns));
                let edge = self.edges.entry(key).or_default();
                if refused {
                    edge.counters.connect_refused += 1;
                } else if lasted >= TIMEOUT_MIN_NS {
                    edge.counters.connect_timeouts += 1;
                } else {
                    edge.counters.connect_aborted += 1;
                }
                edge.last_active_ns = ts;
            }
            (TcpState::SYN_RECV, TcpState::ESTABLISHED) => {
                let key = ConnKey::of(Side::Server, local, peer);
                // The client's side, when local, came first (it is established before it
                // acknowledges the server's SYN-ACK): keep its entry.
                let existing = self
                    .conns
                    .get(&key)
                    .is_some_and(|c| c.closed_ns.is_none() && !c.server_open);
                let conn = if existing {
                    self.conns.get_mut(&key)
                } else {
                    self.fresh_conn(key, ts)
                };
                let Some(conn) = conn else { return };
                conn.server_open = true;
                let edge_key = conn.edge.clone();
                let edge = self.edges.entry(edge_key).or_default();
                edge.counters.accepts += 1;
                edge.last_active_ns = ts;
            }
            (TcpState::CLOSE, TCP_LISTEN) => self.name_server(local, &c.task.comm),
            (_, TcpState::CLOSE) => self.on_socket_closed(local, peer, ts, true),
            _ => {}
        }
    }

    /// Ends a connect attempt, with its destination index.
    fn take_attempt(&mut self, sock: u64) -> Option<Attempt> {
        let a = self.attempts.remove(&sock)?;
        if self.attempt_dests.get(&(a.client_ip, a.server)) == Some(&sock) {
            self.attempt_dests.remove(&(a.client_ip, a.server));
        }
        Some(a)
    }

    /// A local socket closed: its flow entry gets one last read, the connection lingers.
    /// `count`: a close of an established connection (not a failed connect).
    fn on_socket_closed(&mut self, local: SocketAddr, peer: SocketAddr, ts: u64, count: bool) {
        self.closing.insert((local, peer), ts);
        let (key, side) = match self.find_conn(local, peer) {
            Some(found) => found,
            None => return,
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let was_open = conn.client_open || conn.server_open;
        match side {
            Side::Client => conn.client_open = false,
            Side::Server => conn.server_open = false,
        }
        if was_open && !conn.client_open && !conn.server_open {
            conn.closed_ns = Some(ts);
            if count && let Some(edge) = self.edges.get_mut(&conn.edge) {
                edge.counters.closes += 1;
                edge.last_active_ns = ts;
            }
        }
    }

    fn on_reset(&mut self, c: &ConnChange) {
        let received = c.syscall == "rst_received";
        // A reset on a connecting socket is a refusal; remembered until its CLOSE.
        if received && self.attempts.contains_key(&c.sock) {
            self.reset_while_connecting.insert(c.sock);
        }
        let (Some(local), Some(peer)) = (c.local, c.peer) else {
            return;
        };
        if let Some((key, _)) = self.find_conn(local, peer)
            && let Some(conn) = self.conns.get(&key)
            && let Some(edge) = self.edges.get_mut(&conn.edge)
        {
            if received {
                edge.counters.resets_received += 1;
            } else {
                edge.counters.resets_sent += 1;
            }
            edge.last_active_ns = c.ts_ns;
        }
    }

    /// The connection a local socket (local, remote) belongs to, and which end it is.
    fn find_conn(&self, local: SocketAddr, remote: SocketAddr) -> Option<(ConnKey, Side)> {
        [Side::Client, Side::Server]
            .into_iter()
            .map(|side| (ConnKey::of(side, local, remote), side))
            .find(|(key, _)| self.conns.contains_key(key))
    }

    /// Guesses which end a socket of an unknown connection is: a known server address first,
    /// then the lower port (ephemeral ports are high).
    fn infer_side(&self, local: SocketAddr, remote: SocketAddr) -> Side {
        let serves = |a: SocketAddr| {
            self.servers.contains_key(&a) || self.wildcard_servers.contains_key(&a.port())
        };
        if serves(local) && !serves(remote) {
            Side::Server
        } else if serves(remote) && !serves(local) {
            Side::Client
        } else if local.port() < remote.port() {
            Side::Server
        } else {
            Side::Client
        }
    }

    /// The edge of connections from `client_ip` (process `name`, empty when unknown) to
    /// `server`. Cardinality is bounded by who the client is:
    /// - named (its process, else a service/workload/pod the correlation labels give): its own
    ///   address while the name has fewer than `max_addrs_per_client` such edges; then its
    ///   /24 (/64), while it has fewer than as many prefix edges; then one edge for the name;
    /// - named by nothing: its /24 (/64) at once.
    ///
    /// Past `max_edges`, everything new goes to the `(other)` edge.
    fn client_edge(&mut self, name: String, client_ip: IpAddr, server: SocketAddr) -> Arc<EdgeKey> {
        let key = |name: String, len: u8| EdgeKey {
            client_name: name,
            client_ip: model::network(client_ip, len),
            client_prefix: len,
            server_ip: server.ip(),
            server_port: server.port(),
        };
        let (full, prefix) = (
            model::full_prefix(client_ip),
            model::aggregate_prefix(client_ip),
        );
        let exact = key(name.clone(), full);
        if let Some((k, _)) = self.edges.get_key_value(&exact) {
            return k.clone();
        }
        let group = if name.is_empty() {
            let labels = self.ip_labels(client_ip);
            [sonde_correlate::SERVICE_NAME, sonde_correlate::POD]
                .into_iter()
                .find_map(|k| labels.get(k).filter(|v| !v.is_empty()).cloned())
        } else {
            Some(name.clone())
        };
        let Some(group) = group else {
            self.stats.clients_aggregated += 1;
            return self.edge_key(key(name, prefix), None);
        };
        let cap = self.settings.max_addrs_per_client;
        let used = |m: &HashMap<(String, u8), usize>, len: u8| {
            m.get(&(group.clone(), len)).copied().unwrap_or(0)
        };
        if used(&self.client_edges, full) < cap {
            return self.edge_key(exact, Some((group, full)));
        }
        self.stats.clients_aggregated += 1;
        let subnet = key(name, prefix);
        if self.edges.contains_key(&subnet) || used(&self.client_edges, prefix) < cap {
            return self.edge_key(subnet, Some((group, prefix)));
        }
        self.edge_key(key(group, 0), None)
    }

    /// The interned key for `k`, or the overflow edge when the map is full. A new edge
    /// counts against its named client's `group`.
    fn edge_key(&mut self, k: EdgeKey, group: Option<(String, u8)>) -> Arc<EdgeKey> {
        if let Some((key, _)) = self.edges.get_key_value(&k) {
            return key.clone();
        }
        let (k, group) = if self.edges.len() >= self.settings.max_edges {
            self.stats.edges_overflow += 1;
            (EdgeKey::overflow(), None)
        } else {
            (k, group)
        };
        if let Some((key, _)) = self.edges.get_key_value(&k) {
            return key.clone();
        }
        if let Some(g) = &group {
            *self.client_edges.entry(g.clone()).or_default() += 1;
        }
        let key = Arc::new(k);
        self.edges.insert(
            key.clone(),
            Edge {
                client_group: group,
                ..Edge::default()
            },
        );
        key
    }

    /// A new connection entry (replacing a closed one with the same addresses: a reused
    /// port starts its counters from zero).
    fn fresh_conn(&mut self, key: ConnKey, ts: u64) -> Option<&mut Conn> {
        if let Some(old) = self.conns.remove(&key)
            && let Some(edge) = self.edges.get_mut(&old.edge)
        {
            edge.conns = edge.conns.saturating_sub(1);
        }
        if self.conns.len() >= self.settings.max_connections {
            self.stats.conns_overflow += 1;
            return None;
        }
        let name = self
            .client_names
            .get(&key.client)
            .cloned()
            .unwrap_or_default();
        let edge = self.client_edge(name, key.client.ip(), key.server);
        if let Some(e) = self.edges.get_mut(&edge) {
            e.conns += 1;
        }
        self.conns.insert(
            key,
            Conn {
                edge,
                client: None,
                server: None,
                counted: Counted::default(),
                client_open: false,
                server_open: false,
                closed_ns: None,
                last_ns: ts,
            },
        );
        self.conns.get_mut(&key)
    }

    /// Parsed requests: each counts on its connection's edge, from the side that parsed it.
    pub fn on_records(&mut self, records: &[TaggedRecord], now_ns: u64) {
        for r in records {
            let conn = &r.conn;
            if conn.transport != Transport::Tcp {
                continue;
            }
            let key = match self.record_conns.get(&conn.id) {
                Some(k) => *k,
                None => {
                    let ends = |e: &Option<Endpoint>| {
                        e.as_ref()
                            .and_then(|e| e.ip.parse::<IpAddr>().ok().map(|ip| (ip, e.port)))
                    };
                    let (Some(l), Some(rm)) = (ends(&conn.local), ends(&conn.remote)) else {
                        self.stats.records_unplaced += 1;
                        continue;
                    };
                    let local = SocketAddr::new(l.0, l.1);
                    let remote = SocketAddr::new(rm.0, rm.1);
                    // Records name the processes on both ends of what they parsed.
                    match conn.role {
                        Role::Server => self.name_server(local, &conn.comm),
                        Role::Client => self.name_client(local, &conn.comm),
                        Role::Unknown => {}
                    }
                    let key = match conn.role {
                        Role::Server => ConnKey::of(Side::Server, local, remote),
                        Role::Client => ConnKey::of(Side::Client, local, remote),
                        Role::Unknown => match self.find_conn(local, remote) {
                            Some((k, _)) => k,
                            None => {
                                self.stats.records_unplaced += 1;
                                continue;
                            }
                        },
                    };
                    if self.record_conns.len() >= MAX_NAMES {
                        self.record_conns.clear();
                    }
                    self.record_conns.insert(conn.id, key);
                    key
                }
            };
            if !self.conns.contains_key(&key) {
                // Established before Sonde started: follow it from here on.
                self.stats.conns_inferred += 1;
                if self.fresh_conn(key, now_ns).is_none() {
                    continue;
                }
            }
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.last_ns = now_ns;
            let Some(edge) = self.edges.get_mut(&c.edge) else {
                continue;
            };
            let rec = &r.record;
            let server = conn.role == Role::Server;
            let error = rec.is_error(server);
            let ns = if rec.response_ts_ns() >= rec.request_ts_ns() && rec.request_ts_ns() > 0 {
                rec.response_ts_ns() - rec.request_ts_ns()
            } else {
                0
            };
            let k = &mut edge.counters;
            if server {
                k.server_requests += 1;
                k.server_errors += u64::from(error);
                k.server_duration_ns += ns;
            } else {
                k.client_requests += 1;
                k.client_errors += u64::from(error);
                k.client_duration_ns += ns;
            }
            edge.last_active_ns = now_ns;
        }
    }

    /// One read of the kernel maps: fold per-socket counters into connections and edges,
    /// attribute drops, keep interface and softirq totals, age everything. Returns the map
    /// entries the daemon should delete (read for the last time).
    pub fn on_reading(&mut self, r: &NetReading, now_ns: u64) -> Removals {
        let mut removals = Removals::default();
        self.stats.reads += 1;
        self.stats.read_errors = r.read_errors;
        for (fk, fs) in &r.flows {
            let Some((local, remote)) = flow_addrs(fk) else {
                continue;
            };
            let closed = self.closing.remove(&(local, remote)).is_some();
            self.fold_socket(local, remote, fs, now_ns, closed);
            if closed {
                removals.flows.push(*fk);
            }
        }
        self.fold_drops(&r.drops, now_ns, &mut removals);
        self.ifaces.clone_from(&r.ifaces);
        self.softirq.clone_from(&r.softirq);
        self.age(now_ns);
        removals
    }

    /// Folds one socket's counters into its connection and edge. `closed`: the socket is gone
    /// (this is its last read); a connection first seen now is not counted as open.
    fn fold_socket(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        fs: &FlowStats,
        now: u64,
        closed: bool,
    ) {
        let (key, side) = match self.find_conn(local, remote) {
            Some(found) => found,
            None => {
                let side = self.infer_side(local, remote);
                let key = ConnKey::of(side, local, remote);
                self.stats.conns_inferred += 1;
                // A connect still in progress (SYN retransmits): its process is known.
                if let Some(a) = self
                    .attempt_dests
                    .get(&(key.client.ip(), key.server))
                    .and_then(|s| self.attempts.get(s))
                {
                    let comm = a.comm.clone();
                    self.name_client(key.client, &comm);
                }
                let Some(conn) = self.fresh_conn(key, now) else {
                    return;
                };
                if closed {
                    conn.closed_ns = Some(now);
                } else {
                    match side {
                        Side::Client => conn.client_open = true,
                        Side::Server => conn.server_open = true,
                    }
                }
                (key, side)
            }
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let slot = match side {
            Side::Client => &mut conn.client,
            Side::Server => &mut conn.server,
        };
        let previous = slot.replace(*fs);
        let got_segments = previous.is_none_or(|p| fs.rx_segments > p.rx_segments);
        let (c, s) = (
            conn.client.unwrap_or_default(),
            conn.server.unwrap_or_default(),
        );
        let now_counted = Counted {
            bytes_c2s: s.rx_bytes.max(c.tx_acked_bytes),
            bytes_s2c: c.rx_bytes.max(s.tx_acked_bytes),
            segments_c2s: s.rx_segments,
            segments_s2c: c.rx_segments,
            retransmits: c.retransmits + s.retransmits,
            syn_retransmits: c.syn_retransmits + s.syn_retransmits,
        };
        let before = std::mem::replace(&mut conn.counted, now_counted);
        conn.last_ns = now;
        let Some(edge) = self.edges.get_mut(&conn.edge) else {
            return;
        };
        let k = &mut edge.counters;
        k.bytes_c2s += now_counted.bytes_c2s.saturating_sub(before.bytes_c2s);
        k.bytes_s2c += now_counted.bytes_s2c.saturating_sub(before.bytes_s2c);
        k.segments_c2s += now_counted.segments_c2s.saturating_sub(before.segments_c2s);
        k.segments_s2c += now_counted.segments_s2c.saturating_sub(before.segments_s2c);
        k.retransmits += now_counted.retransmits.saturating_sub(before.retransmits);
        k.syn_retransmits += now_counted
            .syn_retransmits
            .saturating_sub(before.syn_retransmits);
        if got_segments && fs.srtt_us > 0 {
            k.rtt_us_sum += u64::from(fs.srtt_us);
            k.rtt_samples += 1;
            edge.rtt_hist.observe(f64::from(fs.srtt_us) / 1e6);
        }
        if now_counted.segments_c2s + now_counted.segments_s2c
            > before.segments_c2s + before.segments_s2c
            || now_counted.retransmits > before.retransmits
        {
            edge.last_active_ns = now;
        }
    }

    fn fold_drops(&mut self, drops: &[(DropKey, DropStats)], now: u64, out: &mut Removals) {
        let idle_ns = 2 * self.settings.read_interval_ms * 1_000_000;
        let mut present = HashSet::with_capacity(drops.len());
        for (dk, ds) in drops {
            present.insert(*dk);
            let prev = self.drops_seen.get(dk).map(|s| s.stats);
            // A smaller count means the entry was deleted and made again: all of it is new.
            let (packets, bytes) = match prev {
                Some(p) if ds.packets >= p.packets => {
                    (ds.packets - p.packets, ds.bytes.saturating_sub(p.bytes))
                }
                _ => (ds.packets, ds.bytes),
            };
            let changed_ns = if packets > 0 {
                now
            } else {
                self.drops_seen.get(dk).map_or(now, |s| s.changed_ns)
            };
            self.drops_seen.insert(
                *dk,
                DropSeen {
                    stats: *ds,
                    changed_ns,
                },
            );
            if packets > 0 {
                self.account_drop(dk, packets, bytes, now);
            } else if now.saturating_sub(changed_ns) >= idle_ns {
                // Quiet for two reads: delete it so per-flow keys do not fill the map. A drop
                // racing with the delete is lost; that is the price of a bounded map.
                out.drops.push(*dk);
                self.drops_seen.remove(dk);
            }
        }
        self.drops_seen.retain(|k, _| present.contains(k));
    }

    fn account_drop(&mut self, dk: &DropKey, packets: u64, bytes: u64, now: u64) {
        let t = self
            .drop_totals
            .entry((dk.reason, dk.l4_proto))
            .or_default();
        t.0 += packets;
        t.1 += bytes;
        if self.housekeeping.contains(&dk.reason) {
            return;
        }
        let edge = if dk.l4_proto == IPPROTO_TCP {
            flow_addrs(&dk.flow).and_then(|(src, dst)| {
                // The packet went client → server or server → client.
                self.find_conn(src, dst)
                    .and_then(|(k, _)| self.conns.get(&k))
                    .map(|c| c.edge.clone())
            })
        } else {
            None
        };
        match edge.and_then(|e| self.edges.get_mut(&e)) {
            Some(edge) => {
                edge.counters.drops += packets;
                edge.counters.drop_bytes += bytes;
                *edge.drop_reasons.entry(dk.reason).or_default() += packets;
                edge.last_active_ns = now;
            }
            None => {
                self.stats.drops_unattributed += packets;
                let u = self
                    .drop_unattributed
                    .entry((dk.reason, dk.l4_proto))
                    .or_default();
                u.0 += packets;
                u.1 += bytes;
            }
        }
    }

    /// Window history, lingering connections, idle edges and stale bookkeeping.
    fn age(&mut self, now: u64) {
        let window_ns = self.settings.window_s * 1_000_000_000;
        let thresholds = &self.settings.thresholds;
        for edge in self.edges.values_mut() {
            if edge.history.is_empty() {
                // A new edge: everything it counted so far is in its first window.
                edge.history.push_back((now, Counters::default()));
            }
            let previous = edge
                .history
                .back()
                .map_or_else(Counters::default, |(_, c)| *c);
            let interval = edge.counters.since(&previous);
            edge.detect(&interval, thresholds);
            edge.history.push_back((now, edge.counters));
            // Keep the newest sample at or before the window's start as the base.
            while edge.history.len() >= 2 && edge.history[1].0 + window_ns <= now {
                edge.history.pop_front();
            }
        }
        let linger = self.settings.conn_linger_s * 1_000_000_000;
        let idle = self.settings.conn_idle_s * 1_000_000_000;
        let edges = &mut self.edges;
        let client_names = &mut self.client_names;
        let record_conns_stale = self.conns.len();
        self.conns.retain(|key, c| {
            let keep = match c.closed_ns {
                Some(t) => now.saturating_sub(t) < linger,
                None => now.saturating_sub(c.last_ns) < idle,
            };
            if !keep {
                if let Some(e) = edges.get_mut(&c.edge) {
                    e.conns = e.conns.saturating_sub(1);
                }
                client_names.remove(&key.client);
            }
            keep
        });
        if self.conns.len() < record_conns_stale {
            let conns = &self.conns;
            self.record_conns.retain(|_, k| conns.contains_key(k));
        }
        let edge_idle = self.settings.edge_idle_s * 1_000_000_000;
        let client_edges = &mut self.client_edges;
        self.edges.retain(|_, e| {
            let keep = e.conns > 0 || now.saturating_sub(e.last_active_ns) < edge_idle;
            if !keep
                && let Some(g) = &e.client_group
                && let Some(n) = client_edges.get_mut(g)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    client_edges.remove(g);
                }
            }
            keep
        });
        // A closed socket with no flow entry (it never received a segment) is not read again.
        let stale = 2 * self.settings.read_interval_ms * 1_000_000 + linger;
        self.closing.retain(|_, t| now.saturating_sub(*t) < stale);
        self.attempts
            .retain(|_, a| now.saturating_sub(a.start_ns) < idle.max(300_000_000_000));
        let attempts = &self.attempts;
        self.reset_while_connecting
            .retain(|s| attempts.contains_key(s));
        self.attempt_dests.retain(|_, s| attempts.contains_key(s));
        self.shrink();
    }

    /// After a wave: tables at most a quarter full are rehashed smaller (amortised), and a
    /// large shrink hands the pages back to the kernel. The bookkeeping tables cleared whole
    /// at their bound (names, record connections) shrink here too.
    fn shrink(&mut self) {
        use sonde_capture::tables::{release_freed, shrink_map, shrink_set};
        let given = shrink_map(&mut self.conns)
            + shrink_map(&mut self.edges)
            + shrink_map(&mut self.client_edges)
            + shrink_map(&mut self.client_names)
            + shrink_map(&mut self.servers)
            + shrink_map(&mut self.closing)
            + shrink_map(&mut self.record_conns)
            + shrink_map(&mut self.attempts)
            + shrink_map(&mut self.attempt_dests)
            + shrink_set(&mut self.reset_while_connecting)
            + shrink_map(&mut self.drops_seen);
        if given >= RELEASE_AFTER_ENTRIES {
            release_freed();
        }
    }

    /// Capacity (entries) of the connection tables (connections, names, closing sockets,
    /// record connections), to check that it follows the load.
    pub fn table_capacity(&self) -> usize {
        self.conns.capacity()
            + self.client_names.capacity()
            + self.closing.capacity()
            + self.record_conns.capacity()
    }

    pub(crate) fn edges(&self) -> impl Iterator<Item = (&Arc<EdgeKey>, &Edge)> {
        self.edges.iter()
    }

    pub(crate) fn drop_reason_name(&self, reason: u32) -> String {
        self.drop_reason_names
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| reason.to_string())
    }

    pub(crate) fn drop_totals(&self) -> &BTreeMap<(u32, u8), (u64, u64)> {
        &self.drop_totals
    }

    pub(crate) fn drop_unattributed(&self) -> &BTreeMap<(u32, u8), (u64, u64)> {
        &self.drop_unattributed
    }

    pub(crate) fn probes_missing(&self) -> &[String] {
        &self.probes_missing
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

/// A flow key's (source/local, destination/remote) addresses; v4-mapped IPv6 shown as IPv4,
/// like the rest of the daemon.
pub fn flow_addrs(k: &FlowKey) -> Option<(SocketAddr, SocketAddr)> {
    let ip = |a: &[u8; 16]| -> Option<IpAddr> {
        match k.family as i32 {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            libc::AF_INET6 => {
                let v6 = Ipv6Addr::from(*a);
                Some(
                    v6.to_ipv4_mapped()
                        .map(IpAddr::V4)
                        .unwrap_or(IpAddr::V6(v6)),
                )
            }
            _ => None,
        }
    };
    Some((
        SocketAddr::new(ip(&k.saddr)?, k.sport),
        SocketAddr::new(ip(&k.daddr)?, k.dport),
    ))
}

#[cfg(test)]
mod tests;
