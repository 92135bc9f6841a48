//! What the network map is made of: connections, edges, and the counters an edge carries.
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// One TCP connection, oriented: `client` opened it, `server` accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Which end of a connection a local socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl ConnKey {
    /// The connection of a socket (`local`, `remote`) that is the `side` end.
    pub fn of(side: Side, local: SocketAddr, remote: SocketAddr) -> ConnKey {
        match side {
            Side::Client => ConnKey {
                client: local,
                server: remote,
            },
            Side::Server => ConnKey {
                client: remote,
                server: local,
            },
        }
    }
}

/// An edge of the map: who calls (process name when known, and address) → which server
/// address and port. Client ports are not part of it: one edge gathers every connection
/// between the two. The client address may stand for several ([`EdgeKey::client_prefix`]):
/// clients that nothing names are gathered by /24 (IPv4) or /64 (IPv6), and a named client
/// with too many addresses by prefix, then by its name alone (see `NetMap`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// Process name of the client (`comm`), empty when the connect was not seen; the
    /// workload's name when the edge gathers a workload's addresses.
    pub client_name: String,
    /// The client address, or the network address of the prefix the edge gathers.
    pub client_ip: IpAddr,
    /// Prefix length of `client_ip` the edge gathers: 32 (IPv4) or 128 (IPv6) for one
    /// address, [`AGGREGATE_V4`] / [`AGGREGATE_V6`] for a subnet, 0 for any address.
    pub client_prefix: u8,
    pub server_ip: IpAddr,
    pub server_port: u16,
}

/// Prefix lengths unnamed clients are gathered by.
pub const AGGREGATE_V4: u8 = 24;
pub const AGGREGATE_V6: u8 = 64;

/// The prefix length of a single address of `ip`'s family.
pub fn full_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The aggregation prefix of `ip`'s family ([`AGGREGATE_V4`] / [`AGGREGATE_V6`]).
pub fn aggregate_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AGGREGATE_V4,
        IpAddr::V6(_) => AGGREGATE_V6,
    }
}

/// The network address of `ip`'s `/len` prefix.
pub fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    }
}

impl EdgeKey {
    /// Where connections go once the map holds `max_edges`: one edge for everything else.
    pub fn overflow() -> EdgeKey {
        EdgeKey {
            client_name: "(other)".into(),
            client_ip: IpAddr::from([0, 0, 0, 0]),
            client_prefix: 32,
            server_ip: IpAddr::from([0, 0, 0, 0]),
            server_port: 0,
        }
    }

    /// The client address as shown: the address, or `net/len` when the edge gathers a prefix.
    pub fn client_addr(&self) -> String {
        if self.client_prefix >= full_prefix(self.client_ip) {
            self.client_ip.to_string()
        } else {
            format!("{}/{}", self.client_ip, self.client_prefix)
        }
    }

    /// One client address (not a prefix): its labels name it.
    pub fn client_is_one_address(&self) -> bool {
        self.client_prefix >= full_prefix(self.client_ip)
    }

    /// The client node's id: `name@ip` (`name@net/len`), the bare address when no process is
    /// known, the bare name when the edge gathers any address of it.
    pub fn client_node(&self) -> String {
        if self.client_prefix == 0 && !self.client_name.is_empty() {
            return self.client_name.clone();
        }
        let addr = self.client_addr();
        if self.client_name.is_empty() {
            addr
        } else {
            format!("{}@{addr}", self.client_name)
        }
    }
}

/// A node id: `name@ip`, or the address when no process is known.
pub fn node_id(name: &str, ip: IpAddr) -> String {
    if name.is_empty() {
        ip.to_string()
    } else {
        format!("{name}@{ip}")
    }
}

/// Everything an edge counts. Cumulative since the edge appeared; a window is the difference
/// of two of these ([`Counters::since`]). Directions are client → server (`c2s`) and back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Connects that reached ESTABLISHED (seen on the client's socket).
    pub connects: u64,
    /// Connects that never did: refused (a reset answered the SYN), timed out (no answer for
    /// at least the first SYN retransmission), aborted (given up earlier by the client).
    pub connect_refused: u64,
    pub connect_timeouts: u64,
    pub connect_aborted: u64,
    /// Sum of connect latencies (SYN_SENT → ESTABLISHED), for the mean.
    pub connect_ns_sum: u64,
    /// Connections the server's socket saw established (the client may be remote).
    pub accepts: u64,
    pub closes: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Payload bytes delivered, per direction (the receiver's count, or what the sender got
    /// acknowledged when the receiver is not on this node; the larger of the two).
    pub bytes_c2s: u64,
    pub bytes_s2c: u64,
    /// TCP segments received by the server (c2s) and by the client (s2c), ACKs included; a
    /// direction whose receiver is not on this node counts 0.
    pub segments_c2s: u64,
    pub segments_s2c: u64,
    /// Segments retransmitted once established, by either end.
    pub retransmits: u64,
    /// SYNs retransmitted while connecting.
    pub syn_retransmits: u64,
    /// Packets of this edge's connections the kernel dropped (any reason), and their bytes.
    pub drops: u64,
    pub drop_bytes: u64,
    /// Smoothed-RTT samples (one per socket per read while it receives), for the mean.
    pub rtt_us_sum: u64,
    pub rtt_samples: u64,
    /// L7 requests on this edge as the server's parser saw them, and as the client's did.
    pub server_requests: u64,
    pub server_errors: u64,
    pub server_duration_ns: u64,
    pub client_requests: u64,
    pub client_errors: u64,
    pub client_duration_ns: u64,
}

/// Calls `$m!(…)` with every [`Counters`] field, so the arithmetic on them names each once.
macro_rules! counter_fields {
    ($m:ident) => {
        $m!(
            connects,
            connect_refused,
            connect_timeouts,
            connect_aborted,
            connect_ns_sum,
            accepts,
            closes,
            resets_sent,
            resets_received,
            bytes_c2s,
            bytes_s2c,
            segments_c2s,
            segments_s2c,
            retransmits,
            syn_retransmits,
            drops,
            drop_bytes,
            rtt_us_sum,
            rtt_samples,
            server_requests,
            server_errors,
            server_duration_ns,
            client_requests,
            client_errors,
            client_duration_ns
        )
    };
}

impl Counters {
    /// The counts between `earlier` and `self` (saturating: counters only grow).
    pub fn since(&self, earlier: &Counters) -> Counters {
        macro_rules! diff {
            ($($f:ident),*) => { Counters { $($f: self.$f.saturating_sub(earlier.$f)),* } };
        }
        counter_fields!(diff)
    }

    /// Adds `other`'s counts (several edges summed into one).
    pub fn add(&mut self, other: &Counters) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += other.$f; )* };
        }
        counter_fields!(sum);
    }

    pub fn connect_failures(&self) -> u64 {
        self.connect_refused + self.connect_timeouts + self.connect_aborted
    }

    /// L7 requests: the server's view when the server is on this node, else the client's.
    pub fn requests(&self) -> (u64, u64, u64) {
        if self.server_requests > 0 {
            (
                self.server_requests,
                self.server_errors,
                self.server_duration_ns,
            )
        } else {
            (
                self.client_requests,
                self.client_errors,
                self.client_duration_ns,
            )
        }
    }

    /// Mean smoothed RTT in seconds over the samples, if any.
    pub fn rtt_mean_s(&self) -> Option<f64> {
        (self.rtt_samples > 0).then(|| self.rtt_us_sum as f64 / self.rtt_samples as f64 / 1e6)
    }

    /// Mean connect latency in seconds, if any connect succeeded.
    pub fn connect_mean_s(&self) -> Option<f64> {
        (self.connects > 0).then(|| self.connect_ns_sum as f64 / self.connects as f64 / 1e9)
    }

    pub fn segments(&self) -> u64 {
        self.segments_c2s + self.segments_s2c
    }
}

/// Upper bounds (seconds) of the map's latency histograms: connect time, RTT.
pub const LATENCY_BOUNDS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A cumulative-count histogram over [`LATENCY_BOUNDS_S`] (plus +Inf), Prometheus-shaped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is +Inf.
    pub buckets: [u64; LATENCY_BOUNDS_S.len() + 1],
    pub sum_s: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BOUNDS_S
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BOUNDS_S.len());
        self.buckets[i] += 1;
        self.sum_s += seconds;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_node_names_of_gathered_clients() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(network(ip, 24).to_string(), "10.1.2.0");
        assert_eq!(network(ip, 0).to_string(), "0.0.0.0");
        assert_eq!(network(ip, 32), ip);
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(network(v6, 64).to_string(), "2001:db8:1:2::");
        assert_eq!((aggregate_prefix(ip), aggregate_prefix(v6)), (24, 64));
        let mut k = EdgeKey {
            client_name: "curl".into(),
            client_ip: ip,
            client_prefix: 32,
            server_ip: ip,
            server_port: 80,
        };
        assert_eq!(k.client_node(), "curl@10.1.2.3");
        assert!(k.client_is_one_address());
        (k.client_ip, k.client_prefix) = (network(ip, 24), 24);
        assert_eq!(k.client_node(), "curl@10.1.2.0/24");
        assert!(!k.client_is_one_address());
        k.client_name.clear();
        assert_eq!(k.client_addr(), "10.1.2.0/24");
        assert_eq!(k.client_node(), "10.1.2.0/24");
        (k.client_name, k.client_ip, k.client_prefix) = ("web".into(), network(ip, 0), 0);
        assert_eq!(k.client_node(), "web");
        assert_eq!(EdgeKey::overflow().client_node(), "(other)@0.0.0.0");
    }

    #[test]
    fn counters_subtract_field_by_field() {
        let a = Counters {
            connects: 5,
            retransmits: 9,
            bytes_c2s: 100,
            ..Default::default()
        };
        let b = Counters {
            connects: 7,
            retransmits: 9,
            bytes_c2s: 150,
            client_requests: 3,
            ..Default::default()
        };
        let d = b.since(&a);
        assert_eq!(d.connects, 2);
        assert_eq!(d.retransmits, 0);
        assert_eq!(d.bytes_c2s, 50);
        assert_eq!(d.client_requests, 3);
        assert_eq!(a.since(&b).connects, 0, "saturates");
    }

    #[test]
    fn requests_prefer_the_server_view() {
        let c = Counters {
            server_requests: 4,
            server_errors: 1,
            client_requests: 4,
            client_errors: 2,
            ..Default::default()
        };
        assert_eq!(c.requests().1, 1);
        let client_only = Counters {
            client_requests: 3,
            client_errors: 2,
            ..Default::default()
        };
        assert_eq!(client_only.requests(), (3, 2, 0));
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::default();
        h.observe(0.0001);
        h.observe(0.3);
        h.observe(100.0);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[11], 1, "0.3 s ≤ 0.5 s");
        assert_eq!(h.buckets[16], 1, "+Inf");
        assert_eq!(h.count, 3);
    }
}
