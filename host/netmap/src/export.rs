//! The map as the outside sees it: the topology JSON served at `/api/map` (and read by
//! `sonde map`), and the Prometheus series.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sonde_common::net::softirq;

use super::model::{Counters, Histogram, LATENCY_BOUNDS_S};
use super::status::{Status, Verdict};
use super::{NetMap, NetMapStats};
use sonde_metrics::{Exposition, LabelText};

/// `/api/map`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Topology {
    /// Seconds of history the `window` counters and the statuses cover.
    pub window_s: u64,
    pub nodes: Vec<NodeView>,
    /// Worst first (by status, then badness).
    pub edges: Vec<EdgeView>,
    /// Node-wide drops by reason and protocol.
    pub drops: Vec<DropView>,
    pub interfaces: Vec<IfaceView>,
    pub softirq: Vec<SoftirqView>,
    pub stats: NetMapStats,
    /// Network probes that are not running on this node (`category:tracepoint`).
    pub probes_missing: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeView {
    /// `name@ip`, or the bare address when no process is known.
    pub id: String,
    pub name: String,
    pub ip: String,
    /// Who is at `ip` (pod, workload, service, node), when the correlation layer knows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub status: Status,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EdgeView {
    /// `client -> server:port`.
    pub id: String,
    /// Node ids.
    pub client: String,
    pub server: String,
    pub client_name: String,
    /// The client address, or `net/len` when the edge gathers a prefix of addresses.
    pub client_ip: String,
    pub server_name: String,
    pub server_ip: String,
    pub server_port: u16,
    /// Who the client and the server are (pod, workload, service, node), when known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_labels: BTreeMap<String, String>,
    pub protocol: String,
    pub status: Status,
    pub reasons: Vec<String>,
    pub badness: f64,
    /// Since the edge appeared.
    pub total: Counters,
    /// Over the last `window_s`.
    pub window: Counters,
    /// Mean smoothed RTT and connect time over the window, in ms.
    pub rtt_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    /// Dropped packets of this edge by reason (since it appeared).
    pub drop_reasons: BTreeMap<String, u64>,
    /// Connections followed now.
    pub connections: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DropView {
    pub reason: String,
    pub protocol: String,
    pub packets: u64,
    pub bytes: u64,
    /// Of these, the packets no edge took.
    pub unattributed_packets: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IfaceView {
    pub name: String,
    /// Network namespace inode (as in `ls -l /proc/PID/ns/net`).
    pub netns: u32,
    pub ifindex: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SoftirqView {
    /// `net_rx` or `net_tx`.
    pub vec: String,
    /// Raise → handler start.
    pub delay_count: u64,
    pub delay_mean_us: f64,
    /// Handler run time.
    pub run_count: u64,
    pub run_mean_us: f64,
}

fn proto_name(p: u8) -> String {
    match p {
        0 => "other".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

fn iface_name(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Softirq row → (vector name, delay row, run row).
const SOFTIRQ_ROWS: [(&str, u32, u32); 2] = [
    ("net_rx", softirq::ROW_DELAY_RX, softirq::ROW_RUN_RX),
    ("net_tx", softirq::ROW_DELAY_TX, softirq::ROW_RUN_TX),
];

impl NetMap {
    /// The map now, statuses judged on the window.
    pub fn topology(&self) -> Topology {
        let t = &self.settings().thresholds;
        let mut edges: Vec<EdgeView> = self
            .edges()
            .map(|(k, e)| {
                let window = e.window();
                let Verdict {
                    status,
                    reasons,
                    badness,
                } = e.verdict(t);
                let server_name = self.server_name(k.server_ip, k.server_port).to_string();
                let client = k.client_node();
                let server = self.server_node(k);
                EdgeView {
                    id: format!("{client} -> {server}:{}", k.server_port),
                    client,
                    server,
                    client_name: k.client_name.clone(),
                    client_ip: k.client_addr(),
                    server_name,
                    server_ip: k.server_ip.to_string(),
                    server_port: k.server_port,
                    client_labels: if k.client_is_one_address() {
                        self.ip_labels(k.client_ip)
                    } else {
                        Default::default()
                    },
                    server_labels: self.ip_labels(k.server_ip),
                    protocol: "tcp".into(),
                    status,
                    reasons,
                    badness,
                    total: e.counters,
                    window,
                    rtt_ms: window.rtt_mean_s().map(|s| s * 1e3),
                    connect_ms: window.connect_mean_s().map(|s| s * 1e3),
                    drop_reasons: e
                        .drop_reasons
                        .iter()
                        .map(|(r, n)| (self.drop_reason_name(*r), *n))
                        .collect(),
                    connections: e.conns,
                }
            })
            .collect();
        edges.sort_by(|a, b| {
            b.badness
                .total_cmp(&a.badness)
                .then_with(|| a.id.cmp(&b.id))
        });
        let nodes = nodes_of(&edges);
        let drops = self
            .drop_totals()
            .iter()
            .map(|(&(reason, proto), &(packets, bytes))| DropView {
                reason: self.drop_reason_name(reason),
                protocol: proto_name(proto),
                packets,
                bytes,
                unattributed_packets: self
                    .drop_unattributed()
                    .get(&(reason, proto))
                    .map_or(0, |u| u.0),
            })
            .collect();
        let interfaces = self
            .ifaces
            .iter()
            .map(|(_, s)| IfaceView {
                name: iface_name(&s.name),
                netns: s.netns,
                ifindex: s.ifindex,
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
            })
            .collect();
        let softirq = if self.softirq.len() == softirq::HIST_ENTRIES as usize {
            SOFTIRQ_ROWS
                .iter()
                .map(|&(vec, delay, run)| {
                    let (dc, dm) = row_count_mean(&self.softirq, delay);
                    let (rc, rm) = row_count_mean(&self.softirq, run);
                    SoftirqView {
                        vec: vec.into(),
                        delay_count: dc,
                        delay_mean_us: dm,
                        run_count: rc,
                        run_mean_us: rm,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Topology {
            window_s: self.settings().window_s,
            nodes,
            edges,
            drops,
            interfaces,
            softirq,
            stats: self.stats(),
            probes_missing: self.probes_missing().to_vec(),
        }
    }

    /// The series of the map (edge labels: `client`, `server`, `server_port`).
    pub fn render(&self, ex: &mut Exposition) {
        let t = &self.settings().thresholds;
        let mut rows: Vec<(LabelText, &super::Edge)> = self
            .edges()
            .map(|(k, e)| {
                let mut labels = LabelText::new();
                labels
                    .push("client", &k.client_node())
                    .push("server", &self.server_node(k))
                    .push_display("server_port", k.server_port);
                // Who the ends are, bounded: service and namespace, not pods.
                for (side, ip) in [("client", k.client_ip), ("server", k.server_ip)] {
                    if side == "client" && !k.client_is_one_address() {
                        continue;
                    }
                    let l = self.ip_labels(ip);
                    for key in [sonde_correlate::SERVICE_NAME, sonde_correlate::NAMESPACE] {
                        if let Some(v) = l.get(key) {
                            labels.push(&format!("{side}_{key}"), v);
                        }
                    }
                }
                (labels, e)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        type Get = fn(&Counters) -> u64;
        let simple: [(&str, &str, Get); 5] = [
            (
                "sonde_tcp_connects_total",
                "TCP connects that reached ESTABLISHED, seen from the client's socket.",
                |c| c.connects,
            ),
            (
                "sonde_tcp_accepts_total",
                "TCP connections established on the server's socket.",
                |c| c.accepts,
            ),
            ("sonde_tcp_closes_total", "TCP connections closed.", |c| {
                c.closes
            }),
            (
                "sonde_tcp_retransmits_total",
                "TCP segments retransmitted once established, by either end.",
                |c| c.retransmits,
            ),
            (
                "sonde_tcp_syn_retransmits_total",
                "SYNs retransmitted while connecting.",
                |c| c.syn_retransmits,
            ),
        ];
        for (name, help, get) in simple {
            let mut c = ex.counter(name, help);
            for (l, e) in &rows {
                c.sample(l, get(&e.counters));
            }
        }
        // Counters split by one label: (metric, label, help, [(label value, getter)]).
        type Split<const N: usize> = (
            &'static str,
            &'static str,
            &'static str,
            [(&'static str, Get); N],
        );
        let failures: Split<3> = (
            "sonde_tcp_connect_failures_total",
            "reason",
            "TCP connects that failed: refused (reset), timeout (no answer), aborted (given up).",
            [
                ("refused", |c| c.connect_refused),
                ("timeout", |c| c.connect_timeouts),
                ("aborted", |c| c.connect_aborted),
            ],
        );
        let directed: [Split<2>; 3] = [
            (
                "sonde_tcp_bytes_total",
                "flow",
                "TCP payload bytes delivered per direction.",
                [
                    ("client_to_server", |c| c.bytes_c2s),
                    ("server_to_client", |c| c.bytes_s2c),
                ],
            ),
            (
                "sonde_tcp_segments_total",
                "flow",
                "TCP segments received per direction (by a receiver on this node).",
                [
                    ("client_to_server", |c| c.segments_c2s),
                    ("server_to_client", |c| c.segments_s2c),
                ],
            ),
            (
                "sonde_tcp_resets_total",
                "direction",
                "TCP resets sent or received by a socket of the edge on this node.",
                [
                    ("sent", |c| c.resets_sent),
                    ("received", |c| c.resets_received),
                ],
            ),
        ];
        let mut split = |(name, label, help, kinds): (&str, &str, &str, &[(&str, Get)])| {
            let mut c = ex.counter(name, help);
            for (l, e) in &rows {
                for (kind, get) in kinds {
                    c.sample((l, [(label, *kind)]), get(&e.counters));
                }
            }
        };
        split((failures.0, failures.1, failures.2, &failures.3));
        for (name, label, help, kinds) in &directed {
            split((name, label, help, kinds));
        }
        let mut h = ex.histogram(
            "sonde_tcp_rtt_seconds",
            "Smoothed RTT of the edge's sockets, sampled once per read while they receive.",
        );
        for (l, e) in &rows {
            histogram(&mut h, l, &e.rtt_hist);
        }
        let mut h = ex.histogram(
            "sonde_tcp_connect_duration_seconds",
            "Time from SYN_SENT to ESTABLISHED.",
        );
        for (l, e) in &rows {
            histogram(&mut h, l, &e.connect_hist);
        }
        let mut g = ex.gauge(
            "sonde_tcp_edge_status",
            "Edge status over the window: 0 ok, 1 warning, 2 critical.",
        );
        for (l, e) in &rows {
            g.sample(l, e.verdict(t).status as u8);
        }
        // Drops: per edge and reason, then the unattributed rest with empty edge labels, so
        // the sum over all series is every drop on the node.
        let mut c = ex.counter(
            "sonde_packet_drops_total",
            "Packets the kernel dropped (skb:kfree_skb), by drop reason; edge labels where the packet belongs to a followed TCP connection.",
        );
        for (l, e) in &rows {
            for (reason, n) in &e.drop_reasons {
                let reason = self.drop_reason_name(*reason);
                c.sample((l, [("reason", reason.as_str()), ("protocol", "tcp")]), *n);
            }
        }
        for (&(reason, proto), &(packets, _)) in self.drop_unattributed() {
            let reason = self.drop_reason_name(reason);
            let proto = proto_name(proto);
            c.sample(
                [
                    ("client", ""),
                    ("server", ""),
                    ("server_port", ""),
                    ("reason", &reason),
                    ("protocol", &proto),
                ],
                packets,
            );
        }
        self.render_interfaces(ex);
        self.render_softirq(ex);
        let s = self.stats();
        ex.gauge("sonde_netmap_edges", "Edges of the network map.")
            .sample((), rows.len());
        ex.gauge(
            "sonde_netmap_connections",
            "Connections the network map follows.",
        )
        .sample((), self.connections());
        ex.gauge(
            "sonde_netmap_table_capacity",
            "Entries the network map's connection tables have room for (they shrink after a wave).",
        )
        .sample((), self.table_capacity());
        let mut c = ex.counter(
            "sonde_netmap_lost_total",
            "What the network map could not keep or place, by kind.",
        );
        for (kind, v) in [
            ("edges_overflow", s.edges_overflow),
            ("connections_overflow", s.conns_overflow),
            ("clients_aggregated", s.clients_aggregated),
            ("attempts_dropped", s.attempts_dropped),
            ("records_unplaced", s.records_unplaced),
            ("map_read_errors", s.read_errors),
        ] {
            c.sample([("kind", kind)], v);
        }
        let mut g = ex.gauge(
            "sonde_net_probe_missing",
            "Network probes not running on this node (1 per missing tracepoint).",
        );
        for p in self.probes_missing() {
            g.sample([("probe", p.as_str())], 1u64);
        }
    }

    fn render_interfaces(&self, ex: &mut Exposition) {
        // Devices are keyed by pointer in the kernel: sum rows with the same (netns, name).
        let mut by_dev: BTreeMap<(u32, String), [u64; 4]> = BTreeMap::new();
        for (_, s) in &self.ifaces {
            let v = by_dev.entry((s.netns, iface_name(&s.name))).or_default();
            v[0] += s.rx_packets;
            v[1] += s.rx_bytes;
            v[2] += s.tx_packets;
            v[3] += s.tx_bytes;
        }
        let mut labels = LabelText::new();
        for (name, help, rx, tx) in [
            (
                "sonde_net_interface_packets_total",
                "Packets per network device and direction (netif_receive_skb / net_dev_queue).",
                0,
                2,
            ),
            (
                "sonde_net_interface_bytes_total",
                "Bytes per network device and direction.",
                1,
                3,
            ),
        ] {
            let mut c = ex.counter(name, help);
            for ((netns, dev), v) in &by_dev {
                for (dir, i) in [("rx", rx), ("tx", tx)] {
                    labels.clear();
                    labels
                        .push("interface", dev)
                        .push_display("netns", netns)
                        .push("direction", dir);
                    c.sample(&labels, v[i]);
                }
            }
        }
    }

    fn render_softirq(&self, ex: &mut Exposition) {
        if self.softirq.len() != softirq::HIST_ENTRIES as usize {
            return;
        }
        for (name, help, delay) in [
            (
                "sonde_softirq_delay_seconds",
                "Time from raising a network softirq to its handler starting (scheduling delay).",
                true,
            ),
            (
                "sonde_softirq_run_seconds",
                "Run time of network softirq handlers.",
                false,
            ),
        ] {
            let mut h = ex.histogram(name, help);
            for (vec, delay_row, run_row) in SOFTIRQ_ROWS {
                let row = if delay { delay_row } else { run_row };
                let base = (row * softirq::BUCKETS) as usize;
                let mut lines = h.series([("vec", vec)]);
                let mut cum = 0u64;
                for b in 0..softirq::BUCKETS as usize {
                    cum += self.softirq[base + b];
                    // Bucket b holds [2^b, 2^(b+1)) ns; the last one everything above.
                    if b + 1 < softirq::BUCKETS as usize {
                        lines.bucket((1u64 << (b + 1)) as f64 / 1e9, cum, None);
                    }
                }
                lines.inf(cum, None);
                lines.sum(self.softirq[softirq::sum_index(row) as usize] as f64 / 1e9);
                lines.count(cum);
            }
        }
    }
}

fn row_count_mean(hist: &[u64], row: u32) -> (u64, f64) {
    let base = (row * softirq::BUCKETS) as usize;
    let count: u64 = hist[base..base + softirq::BUCKETS as usize].iter().sum();
    let sum = hist[softirq::sum_index(row) as usize];
    let mean_us = if count > 0 {
        sum as f64 / count as f64 / 1e3
    } else {
        0.0
    };
    (count, mean_us)
}

fn histogram(h: &mut sonde_metrics::Histogram, labels: &LabelText, hist: &Histogram) {
    let mut lines = h.series(labels);
    let mut cum = 0;
    for (i, b) in LATENCY_BOUNDS_S.iter().enumerate() {
        cum += hist.buckets[i];
        lines.bucket(*b, cum, None);
    }
    cum += hist.buckets[LATENCY_BOUNDS_S.len()];
    lines.inf(cum, None);
    lines.sum(hist.sum_s);
    lines.count(hist.count);
}

/// Nodes from the edges: a node's status is the worst of the edges it serves, or (a pure
/// client) of the edges it calls.
fn nodes_of(edges: &[EdgeView]) -> Vec<NodeView> {
    let mut nodes: HashMap<String, (NodeView, bool)> = HashMap::new();
    let mut add = |id: &str, name: &str, ip: &str, labels: &BTreeMap<String, String>| {
        nodes.entry(id.to_string()).or_insert_with(|| {
            (
                NodeView {
                    id: id.to_string(),
                    name: name.to_string(),
                    ip: ip.to_string(),
                    labels: labels.clone(),
                    ..Default::default()
                },
                false,
            )
        });
    };
    for e in edges {
        add(&e.client, &e.client_name, &e.client_ip, &e.client_labels);
        add(&e.server, &e.server_name, &e.server_ip, &e.server_labels);
    }
    // Served edges first: they decide a server's status.
    for e in edges {
        let (node, serves) = nodes.get_mut(&e.server).expect("added above");
        if !*serves {
            *serves = true;
            node.status = Status::Ok;
            node.reasons.clear();
        }
        worsen(node, e);
    }
    for e in edges {
        let (node, serves) = nodes.get_mut(&e.client).expect("added above");
        if !*serves {
            worsen(node, e);
        }
    }
    let mut out: Vec<NodeView> = nodes.into_values().map(|(n, _)| n).collect();
    out.sort_by(|a, b| b.status.cmp(&a.status).then_with(|| a.id.cmp(&b.id)));
    out
}

fn worsen(node: &mut NodeView, e: &EdgeView) {
    if e.status > node.status {
        node.status = e.status;
    }
    if e.status != Status::Ok {
        node.reasons
            .extend(e.reasons.iter().map(|r| format!("{}: {r}", e.id)));
    }
}
