//! Service call edges from the network map: its edges are per client process and server
//! address, with both ends' request counters and the network counters of their connections.
//! Here they are summed per (caller service, callee service) and turned into per-step rates
//! from the difference of cumulative totals between two steps.

use std::collections::{BTreeMap, HashMap};

use sonde_sdk::fault_rule::metric as m;

use sonde_netmap::export::{EdgeView, Topology};
use sonde_netmap::model::Counters;

use super::board::Addresses;
use super::sample::ratio;

/// The caller and callee service of a map edge: the correlation layer's service names when it
/// knows them, else the process names, else the server's address.
pub(crate) fn services_of(e: &EdgeView) -> (String, String) {
    let named = |labels: &BTreeMap<String, String>, name: &str| {
        labels
            .get("service_name")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| name.to_string())
    };
    let mut caller = named(&e.client_labels, &e.client_name);
    if caller.is_empty() {
        caller = e.client_ip.clone();
    }
    let mut callee = named(&e.server_labels, &e.server_name);
    if callee.is_empty() {
        callee = format!("{}:{}", e.server_ip, e.server_port);
    }
    (caller, callee)
}

/// The addresses a service of this node is reached at (`server`: `ip:port` it accepted
/// calls on) and calls from (`client`: its own ip), per service, at most this many per side.
pub(crate) const ADDRESSES_PER_SIDE: usize = 8;

/// Whether another node could reach this address: not loopback, unspecified, or a prefix.
fn routable(ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>()
        .is_ok_and(|a| !a.is_loopback() && !a.is_unspecified())
}

/// Where this node's services are reached and call from, from the map's edges whose end is
/// named (a local process): what a hub needs to name another node's edges to an address.
/// Bounded: [`ADDRESSES_PER_SIDE`] per service and side (lowest first); returns the number of
/// addresses left out.
pub(crate) fn addresses_of(topology: &Topology) -> (BTreeMap<String, Addresses>, u64) {
    let mut all: BTreeMap<String, Addresses> = BTreeMap::new();
    let named = |labels: &BTreeMap<String, String>, name: &str| {
        !name.is_empty() || labels.get("service_name").is_some_and(|s| !s.is_empty())
    };
    for e in &topology.edges {
        let (caller, callee) = services_of(e);
        if named(&e.server_labels, &e.server_name) && routable(&e.server_ip) {
            all.entry(callee).or_default().insert((
                "server".into(),
                format!("{}:{}", e.server_ip, e.server_port),
            ));
        }
        if named(&e.client_labels, &e.client_name) && routable(&e.client_ip) {
            all.entry(caller)
                .or_default()
                .insert(("client".into(), e.client_ip.clone()));
        }
    }
    let mut dropped = 0;
    for set in all.values_mut() {
        let mut kept = Addresses::new();
        for side in ["client", "server"] {
            let of_side = set.iter().filter(|(s, _)| s == side);
            dropped += of_side.clone().skip(ADDRESSES_PER_SIDE).count() as u64;
            kept.extend(of_side.take(ADDRESSES_PER_SIDE).cloned());
        }
        *set = kept;
    }
    (all, dropped)
}

/// ((entity, metric), value) of one step.
pub(crate) type SeriesValues = Vec<((String, String), f64)>;

/// Differences of the map's cumulative counters between steps.
#[derive(Debug, Default)]
pub(crate) struct EdgeRates {
    previous: HashMap<String, Counters>,
}

impl EdgeRates {
    /// Per-step values of every service edge, as `edge:caller->callee` series.
    pub(crate) fn step(
        &mut self,
        topology: &Topology,
        step_s: f64,
    ) -> (SeriesValues, Vec<(String, String)>) {
        let mut sums: BTreeMap<(String, String), Counters> = BTreeMap::new();
        let mut seen = HashMap::with_capacity(topology.edges.len());
        for e in &topology.edges {
            let (caller, callee) = services_of(e);
            let delta = match self.previous.get(&e.id) {
                Some(prev) => e.total.since(prev),
                // First sight: its totals so far belong to earlier steps, unknown which.
                None => Counters::default(),
            };
            seen.insert(e.id.clone(), e.total);
            if caller == callee {
                continue;
            }
            sums.entry((caller, callee)).or_default().add(&delta);
        }
        self.previous = seen;
        let mut out = Vec::new();
        let mut calls = Vec::new();
        for ((caller, callee), c) in sums {
            let entity = format!("edge:{caller}->{callee}");
            calls.push((caller, callee));
            let mut put =
                |metric: &str, v: f64| out.push(((entity.clone(), metric.to_string()), v));
            put(
                m::REQUEST_RATE,
                c.client_requests.max(c.server_requests) as f64 / step_s,
            );
            put(
                m::CALLER_ERROR_RATE,
                ratio(c.client_errors, c.client_requests),
            );
            put(
                m::CALLER_LATENCY_MS,
                ratio(c.client_duration_ns, c.client_requests) / 1e6,
            );
            put(
                m::CALLEE_ERROR_RATE,
                ratio(c.server_errors, c.server_requests),
            );
            put(
                m::CALLEE_LATENCY_MS,
                ratio(c.server_duration_ns, c.server_requests) / 1e6,
            );
            put(
                m::RETRANSMIT_RATE,
                (c.retransmits + c.syn_retransmits) as f64 / step_s,
            );
            put(m::DROP_RATE, c.drops as f64 / step_s);
            put(
                m::RESET_RATE,
                (c.resets_sent + c.resets_received) as f64 / step_s,
            );
            put(m::CONNECT_FAIL_RATE, c.connect_failures() as f64 / step_s);
            put(m::RTT_MS, ratio(c.rtt_us_sum, c.rtt_samples) / 1e3);
        }
        (out, calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(client: (&str, &str), server: (&str, &str, u16)) -> EdgeView {
        EdgeView {
            client_name: client.0.into(),
            client_ip: client.1.into(),
            server_name: server.0.into(),
            server_ip: server.1.into(),
            server_port: server.2,
            ..Default::default()
        }
    }

    /// A named end's address is exported, an unnamed (another node's) or loopback one is not,
    /// and the per-service cap counts what it leaves out.
    #[test]
    fn named_ends_say_where_their_services_are() {
        let mut edges = vec![
            // gateway (here) calls product (another node: unnamed).
            edge(("gateway", "10.0.0.1"), ("", "10.0.0.3", 8080)),
            // Another node's clients (a prefix) call cart (here).
            edge(("", "10.0.0.0/24"), ("cart", "10.0.0.2", 8080)),
            // Loopback is no address another node can use.
            edge(("gateway", "127.0.0.1"), ("cart", "127.0.0.1", 9000)),
        ];
        for port in 0..(ADDRESSES_PER_SIDE as u16 + 2) {
            edges.push(edge(("", "10.0.0.9"), ("config", "10.0.0.4", 7000 + port)));
        }
        let topology = Topology {
            edges,
            ..Default::default()
        };
        let (all, left_out) = addresses_of(&topology);
        let pairs = |s: &str| -> Vec<(String, String)> {
            all.get(s)
                .map(|a| a.iter().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(
            pairs("gateway"),
            [("client".to_string(), "10.0.0.1".to_string())]
        );
        assert_eq!(
            pairs("cart"),
            [("server".to_string(), "10.0.0.2:8080".to_string())]
        );
        assert!(!all.contains_key("10.0.0.3:8080") && !all.contains_key("10.0.0.0/24"));
        assert_eq!(pairs("config").len(), ADDRESSES_PER_SIDE);
        assert_eq!(left_out, 2);
    }
}
