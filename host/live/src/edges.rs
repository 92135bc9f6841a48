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
