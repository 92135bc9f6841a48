//! The cluster model of one step, from what Prometheus answered for each family of the
//! series contract (`sonde_live::series`): the engine's [`StepInput`] (the same types the
//! daemon's live diagnosis feeds it) and the `/api/map` topology.
//!
//! One entity measured on several nodes is merged (see [`merge`]): a service with replicas on
//! two nodes, or a call edge whose caller side one node sees and whose callee side another does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sonde_live::series::Entity;
use sonde_live::{ServiceFacts, StepInput};
use sonde_netmap::export::{EdgeView, NodeView, Topology};
use sonde_sdk::fault_rule::metric::{self as m, Unit, unit};

use crate::promql::Series;

/// One query's answer per family of the contract.
#[derive(Debug, Default, Clone)]
pub struct Families {
    pub service_info: Vec<Series>,
    pub service_values: Vec<Series>,
    pub edge_values: Vec<Series>,
    pub node_values: Vec<Series>,
    pub endpoint_values: Vec<Series>,
    pub service_addresses: Vec<Series>,
}

/// Where each node's services are reached and call from, at one step: what turns another
/// node's edge to `10.79.90.3:8080`, or from `10.79.90.0/24`, into one to or from a service.
#[derive(Debug, Default)]
struct AddressBook {
    /// `ip:port` → the services reached there (a name only when exactly one).
    server: BTreeMap<String, BTreeSet<String>>,
    /// (ip, service) a service calls from.
    client: Vec<(IpAddr, String)>,
}

impl AddressBook {
    /// The one service at a server address.
    fn callee(&self, address: &str) -> Option<&str> {
        match self.server.get(address) {
            Some(set) if set.len() == 1 => set.first().map(String::as_str),
            _ => None,
        }
    }

    /// The services calling from inside `caller` (an address or a `net/len` prefix).
    fn callers_within(&self, caller: &str) -> Option<BTreeSet<&str>> {
        let (ip, len) = match caller.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u32>().ok()?),
            None => {
                let ip = caller.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        Some(
            self.client
                .iter()
                .filter(|(a, _)| within(*a, ip, len))
                .map(|(_, s)| s.as_str())
                .collect(),
        )
    }
}

/// Whether `a` is in `net/len`.
fn within(a: IpAddr, net: IpAddr, len: u32) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether a caller or callee name is an address the daemon could not name (`ip`,
/// `net/len`, `ip:port`), rather than a service.
fn is_address(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
        || name.parse::<std::net::SocketAddr>().is_ok()
        || name
            .split_once('/')
            .is_some_and(|(ip, len)| ip.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok())
}

/// (caller, callee) as a daemon said → as the hub names them.
type Renames = BTreeMap<(String, String), (String, String)>;

/// Name both ends of the edges seen at one step: a callee address another node's service
/// is reached at becomes that service; a caller address (or prefix, as the callee's node sees
/// its clients) becomes the one service calling from inside it that also calls that callee
/// by name (the caller's node saw the same call). Ambiguous addresses stay addresses.
fn name_edges(edges: &[(String, String)], book: &AddressBook) -> Renames {
    let callee_of = |callee: &str| book.callee(callee).unwrap_or(callee).to_string();
    let named: BTreeSet<(String, String)> = edges
        .iter()
        .filter(|(caller, _)| !is_address(caller))
        .map(|(caller, callee)| (caller.clone(), callee_of(callee)))
        .collect();
    edges
        .iter()
        .map(|(caller, callee)| {
            let to = callee_of(callee);
            let from = if is_address(caller) {
                let candidates: Vec<&str> = book
                    .callers_within(caller)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| named.contains(&(s.to_string(), to.clone())))
                    .collect();
                match candidates[..] {
                    [one] => one.to_string(),
                    _ => caller.clone(),
                }
            } else {
                caller.clone()
            };
            ((caller.clone(), callee.clone()), (from, to))
        })
        .collect()
}

/// How two nodes' values of one (entity, metric) combine. A service's per-second rates and
/// cores add up over its replicas, its ratios and latencies take the worst replica; an edge's
/// request rate is the same requests counted at both ends (the larger), its network counters
/// are each end's own sockets (they add up), the rest the worse end.
pub fn merge(entity: &Entity<'_>, metric: &str, a: f64, b: f64) -> f64 {
    let sum = match (entity, unit(metric)) {
        (Entity::Edge { .. }, _) if metric == m::REQUEST_RATE => false,
        (Entity::Service(_) | Entity::Edge { .. }, Unit::PerSecond | Unit::Cores) => true,
        _ => false,
    };
    if sum { a + b } else { a.max(b) }
}

fn label<'a>(s: &'a Series, name: &str) -> &'a str {
    s.labels.get(name).map(String::as_str).unwrap_or("")
}

/// The node that measured a series: the daemon's own `node` label. A scrape configuration
/// that sets a `node` target label too (common with Kubernetes service discovery) makes
/// Prometheus keep the daemon's as `exported_node` (without `honor_labels`): that one wins.
fn node_of(s: &Series) -> &str {
    s.labels
        .get("exported_node")
        .filter(|n| !n.is_empty())
        .or_else(|| s.labels.get("node"))
        .map(String::as_str)
        .unwrap_or("")
}

/// Time key of a point: milliseconds (a range query's points of all families share them).
fn at(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

/// The step inputs by time (unix ms): one for an instant query's answers, one per step of a
/// range query's.
pub fn assemble(f: &Families) -> BTreeMap<i64, StepInput> {
    let mut steps: BTreeMap<i64, StepInput> = BTreeMap::new();
    for s in &f.service_info {
        let (node, service) = (node_of(s), label(s, "service"));
        if service.is_empty() {
            continue;
        }
        for (t, _) in &s.points {
            let step = steps.entry(at(*t)).or_default();
            let facts = step.services.entry(service.to_string()).or_default();
            let protocol = label(s, "protocol");
            if !protocol.is_empty() {
                facts.protocol = protocol.to_string();
                facts.kind = label(s, "kind").to_string();
            }
            let (namespace, pod) = (label(s, "namespace"), label(s, "pod"));
            if !namespace.is_empty() {
                facts.namespace = namespace.to_string();
            }
            if !pod.is_empty() {
                facts.pods.insert(pod.to_string());
            }
            if !node.is_empty() {
                facts.nodes.insert(node.to_string());
                step.nodes.insert(node.to_string());
            }
        }
    }
    let mut books: BTreeMap<i64, AddressBook> = BTreeMap::new();
    for s in &f.service_addresses {
        let (service, address) = (label(s, "service"), label(s, "address"));
        if service.is_empty() || address.is_empty() {
            continue;
        }
        for (t, _) in &s.points {
            let book = books.entry(at(*t)).or_default();
            match label(s, "side") {
                "server" => {
                    book.server
                        .entry(address.to_string())
                        .or_default()
                        .insert(service.to_string());
                }
                "client" => {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        book.client.push((ip, service.to_string()));
                    }
                }
                _ => {}
            }
        }
    }
    let mut seen: BTreeMap<i64, BTreeSet<(String, String)>> = BTreeMap::new();
    for s in &f.edge_values {
        let (caller, callee) = (label(s, "service"), label(s, "peer_service"));
        for (t, _) in &s.points {
            seen.entry(at(*t))
                .or_default()
                .insert((caller.to_string(), callee.to_string()));
        }
    }
    let empty = AddressBook::default();
    let names: BTreeMap<i64, Renames> = seen
        .into_iter()
        .map(|(t, edges)| {
            let edges: Vec<_> = edges.into_iter().collect();
            (t, name_edges(&edges, books.get(&t).unwrap_or(&empty)))
        })
        .collect();
    let put = |steps: &mut BTreeMap<i64, StepInput>,
               s: &Series,
               points: &[(f64, f64)],
               entity: Entity<'_>| {
        let metric = label(s, "metric");
        let node = node_of(s);
        if metric.is_empty() {
            return;
        }
        let key = (entity.key(), metric.to_string());
        for (t, v) in points {
            if !v.is_finite() {
                continue;
            }
            let step = steps.entry(at(*t)).or_default();
            if !node.is_empty() {
                step.nodes.insert(node.to_string());
            }
            step.series
                .entry(key.clone())
                .and_modify(|old| *old = merge(&entity, metric, *old, *v))
                .or_insert(*v);
            if let Entity::Edge { caller, callee } = &entity {
                let call = (caller.to_string(), callee.to_string());
                if !step.calls.contains(&call) {
                    step.calls.push(call);
                }
            }
        }
    };
    for s in &f.service_values {
        let service = label(s, "service");
        if !service.is_empty() {
            put(&mut steps, s, &s.points, Entity::Service(service));
        }
    }
    for s in &f.edge_values {
        let (caller, callee) = (label(s, "service"), label(s, "peer_service"));
        if caller.is_empty() || callee.is_empty() {
            continue;
        }
        // Each point under the names its step gives the edge (one call seen from both nodes
        // becomes one edge, its values merged).
        for &(t, v) in &s.points {
            let key = (caller.to_string(), callee.to_string());
            let (from, to) = names.get(&at(t)).and_then(|n| n.get(&key)).unwrap_or(&key);
            if from == to {
                continue;
            }
            put(
                &mut steps,
                s,
                &[(t, v)],
                Entity::Edge {
                    caller: from,
                    callee: to,
                },
            );
        }
    }
    for s in &f.node_values {
        let node = node_of(s);
        if !node.is_empty() {
            put(&mut steps, s, &s.points, Entity::Node(node));
        }
    }
    for s in &f.endpoint_values {
        let (service, endpoint, measure) = (
            label(s, "service"),
            label(s, "endpoint"),
            label(s, "measure"),
        );
        if service.is_empty() || measure.is_empty() {
            continue;
        }
        for (t, v) in &s.points {
            if !v.is_finite() {
                continue;
            }
            let key = (
                service.to_string(),
                measure.to_string(),
                vec!["endpoint".to_string()],
                vec![endpoint.to_string()],
            );
            let leaves = &mut steps.entry(at(*t)).or_default().leaves;
            // Replicas on several nodes: their per-second breakdowns add up.
            match leaves.iter_mut().find(|(k, _)| *k == key) {
                Some((_, old)) => *old += v,
                None => leaves.push((key, *v)),
            }
        }
    }
    steps
}

/// The cluster map of one step, in `/api/map`'s shape (so `sonde map` shows it): one node
/// entry per service (labelled with its nodes), one edge per call with its request and
/// network figures over the step.
pub fn topology(
    input: &StepInput,
    services: &BTreeMap<String, ServiceFacts>,
    step_s: u64,
) -> Topology {
    let value = |entity: &str, metric: &str| {
        input
            .series
            .get(&(entity.to_string(), metric.to_string()))
            .copied()
    };
    let nodes_of = |s: &str| -> String {
        services
            .get(s)
            .map(|f| f.nodes.iter().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    let labels_of = |s: &str| {
        let mut l = BTreeMap::from([("service_name".to_string(), s.to_string())]);
        let node = nodes_of(s);
        if !node.is_empty() {
            l.insert("node".to_string(), node);
        }
        if let Some(ns) = services
            .get(s)
            .map(|f| &f.namespace)
            .filter(|n| !n.is_empty())
        {
            l.insert("namespace".to_string(), ns.clone());
        }
        l
    };
    let mut named: BTreeSet<String> = services.keys().cloned().collect();
    let mut edges = Vec::new();
    for (caller, callee) in &input.calls {
        named.insert(caller.clone());
        named.insert(callee.clone());
        let e = Entity::Edge { caller, callee }.key();
        let per_step = |metric: &str| {
            value(&e, metric)
                .map(|v| (v * step_s as f64).round() as u64)
                .unwrap_or(0)
        };
        let requests = per_step(m::REQUEST_RATE);
        let mut edge = EdgeView {
            id: format!("{caller} -> {callee}"),
            client: caller.clone(),
            server: callee.clone(),
            client_name: caller.clone(),
            server_name: callee.clone(),
            client_labels: labels_of(caller),
            server_labels: labels_of(callee),
            rtt_ms: value(&e, m::RTT_MS),
            ..Default::default()
        };
        let w = &mut edge.window;
        w.client_requests = requests;
        w.server_requests = requests;
        let errors = |metric: &str| {
            value(&e, metric)
                .map(|r| (r * requests as f64).round() as u64)
                .unwrap_or(0)
        };
        w.client_errors = errors(m::CALLER_ERROR_RATE);
        w.server_errors = errors(m::CALLEE_ERROR_RATE);
        w.retransmits = per_step(m::RETRANSMIT_RATE);
        w.drops = per_step(m::DROP_RATE);
        w.resets_sent = per_step(m::RESET_RATE);
        w.connect_refused = per_step(m::CONNECT_FAIL_RATE);
        edge.total = edge.window;
        edges.push(edge);
    }
    let nodes = named
        .into_iter()
        .map(|s| NodeView {
            id: s.clone(),
            name: s.clone(),
            labels: labels_of(&s),
            ..Default::default()
        })
        .collect();
    Topology {
        window_s: step_s,
        nodes,
        edges,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], t: f64, v: f64) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: vec![(t, v)],
        }
    }

    #[test]
    fn one_edge_seen_from_two_nodes_is_one_call() {
        let f = Families {
            service_info: vec![
                series(
                    &[("node", "a"), ("service", "gateway"), ("protocol", "http")],
                    10.0,
                    1.0,
                ),
                series(
                    &[
                        ("node", "b"),
                        ("service", "cart"),
                        ("namespace", "shop"),
                        ("pod", "cart-1"),
                        ("protocol", "http"),
                    ],
                    10.0,
                    1.0,
                ),
            ],
            edge_values: vec![
                // The caller's node and the callee's node both count the requests and their
                // own sockets' retransmits.
                series(
                    &[
                        ("node", "a"),
                        ("service", "gateway"),
                        ("peer_service", "cart"),
                        ("metric", "request_rate"),
                    ],
                    10.0,
                    10.0,
                ),
                series(
                    &[
                        ("node", "b"),
                        ("service", "gateway"),
                        ("peer_service", "cart"),
                        ("metric", "request_rate"),
                    ],
                    10.0,
                    9.0,
                ),
                series(
                    &[
                        ("node", "a"),
                        ("service", "gateway"),
                        ("peer_service", "cart"),
                        ("metric", "retransmit_rate"),
                    ],
                    10.0,
                    1.0,
                ),
                series(
                    &[
                        ("node", "b"),
                        ("service", "gateway"),
                        ("peer_service", "cart"),
                        ("metric", "retransmit_rate"),
                    ],
                    10.0,
                    2.0,
                ),
            ],
            service_values: vec![
                series(
                    &[
                        ("node", "b"),
                        ("service", "cart"),
                        ("metric", "request_rate"),
                    ],
                    10.0,
                    4.0,
                ),
                series(
                    &[
                        ("node", "c"),
                        ("service", "cart"),
                        ("metric", "request_rate"),
                    ],
                    10.0,
                    5.0,
                ),
                series(
                    &[
                        ("node", "b"),
                        ("service", "cart"),
                        ("metric", "latency_mean_ms"),
                    ],
                    10.0,
                    4.0,
                ),
                series(
                    &[
                        ("node", "c"),
                        ("service", "cart"),
                        ("metric", "latency_mean_ms"),
                    ],
                    10.0,
                    50.0,
                ),
            ],
            // Scraped with a `node` target label of its own: the daemon's is `exported_node`.
            node_values: vec![series(
                &[
                    ("node", "ip-10-0-0-2"),
                    ("exported_node", "b"),
                    ("metric", "node_cpu_ratio"),
                ],
                10.0,
                0.9,
            )],
            endpoint_values: vec![],
            service_addresses: vec![],
        };
        let steps = assemble(&f);
        assert_eq!(steps.len(), 1);
        let s = &steps[&10_000];
        let v = |e: &str, m: &str| s.series[&(e.to_string(), m.to_string())];
        assert_eq!(v("edge:gateway->cart", "request_rate"), 10.0);
        assert_eq!(v("edge:gateway->cart", "retransmit_rate"), 3.0);
        assert_eq!(v("service:cart", "request_rate"), 9.0);
        assert_eq!(v("service:cart", "latency_mean_ms"), 50.0);
        assert_eq!(v("node:b", "node_cpu_ratio"), 0.9);
        assert_eq!(s.calls, vec![("gateway".to_string(), "cart".to_string())]);
        assert_eq!(s.services["cart"].namespace, "shop");
        assert_eq!(
            s.services["cart"].pods,
            BTreeSet::from(["cart-1".to_string()])
        );
        assert_eq!(
            s.services["gateway"].nodes,
            BTreeSet::from(["a".to_string()])
        );
        assert_eq!(
            s.nodes,
            BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
        );
        let t = topology(s, &s.services, 5);
        assert_eq!(t.edges.len(), 1);
        assert_eq!(t.edges[0].client_labels["node"], "a");
        assert_eq!(t.edges[0].server_labels["node"], "b");
        assert_eq!(t.edges[0].window.client_requests, 50);
    }

    /// A call across nodes, seen by the caller's node as an edge to the callee's address and
    /// by the callee's node as one from its clients' prefix, is one edge between the two
    /// services once each node says where its services are; an address nobody claims, or a
    /// prefix more than one caller of that service is in, stays as it is.
    #[test]
    fn edges_to_and_from_addresses_are_named_by_the_other_nodes() {
        let edge = |node: &str, caller: &str, callee: &str, metric: &str, v: f64| {
            series(
                &[
                    ("node", node),
                    ("service", caller),
                    ("peer_service", callee),
                    ("metric", metric),
                ],
                10.0,
                v,
            )
        };
        let address = |node: &str, service: &str, side: &str, address: &str| {
            series(
                &[
                    ("node", node),
                    ("service", service),
                    ("side", side),
                    ("address", address),
                ],
                10.0,
                1.0,
            )
        };
        let f = Families {
            edge_values: vec![
                // node-a: gateway calls product's and cart's addresses.
                edge("a", "gateway", "10.79.90.3:8080", "request_rate", 10.0),
                edge("a", "gateway", "10.79.90.3:8080", "retransmit_rate", 1.0),
                edge("a", "gateway", "10.79.90.2:8080", "request_rate", 4.0),
                // node-b: product's and cart's clients are a prefix.
                edge("b", "10.79.90.0/24", "product", "request_rate", 9.0),
                edge("b", "10.79.90.0/24", "product", "retransmit_rate", 2.0),
                edge("b", "10.79.90.0/24", "cart", "callee_latency_ms", 7.0),
                // Two services in the prefix call db by name: which one is unknown.
                edge("b", "product", "10.79.90.5:3306", "request_rate", 3.0),
                edge("b", "cart", "10.79.90.5:3306", "request_rate", 2.0),
                edge("c", "10.79.90.0/24", "db", "request_rate", 5.0),
                // Nobody is reached there.
                edge("a", "gateway", "10.1.1.1:443", "request_rate", 1.0),
            ],
            service_addresses: vec![
                address("a", "gateway", "client", "10.79.90.1"),
                address("b", "product", "server", "10.79.90.3:8080"),
                address("b", "product", "client", "10.79.90.3"),
                address("b", "cart", "server", "10.79.90.2:8080"),
                address("b", "cart", "client", "10.79.90.2"),
                address("c", "db", "server", "10.79.90.5:3306"),
            ],
            ..Families::default()
        };
        let steps = assemble(&f);
        let s = &steps[&10_000];
        let v = |e: &str, m: &str| s.series.get(&(e.to_string(), m.to_string())).copied();
        assert_eq!(v("edge:gateway->product", "request_rate"), Some(10.0));
        assert_eq!(v("edge:gateway->product", "retransmit_rate"), Some(3.0));
        assert_eq!(v("edge:gateway->cart", "request_rate"), Some(4.0));
        assert_eq!(v("edge:gateway->cart", "callee_latency_ms"), Some(7.0));
        assert_eq!(v("edge:product->db", "request_rate"), Some(3.0));
        assert_eq!(v("edge:cart->db", "request_rate"), Some(2.0));
        assert_eq!(v("edge:10.79.90.0/24->db", "request_rate"), Some(5.0));
        let calls: BTreeSet<String> = s.calls.iter().map(|(a, b)| format!("{a}->{b}")).collect();
        assert_eq!(
            calls,
            BTreeSet::from(
                [
                    "gateway->product",
                    "gateway->cart",
                    "product->db",
                    "cart->db",
                    "10.79.90.0/24->db",
                    "gateway->10.1.1.1:443",
                ]
                .map(String::from)
            )
        );
    }

    #[test]
    fn prefixes_contain_their_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(within(ip("10.79.90.3"), ip("10.79.90.0"), 24));
        assert!(!within(ip("10.79.91.3"), ip("10.79.90.0"), 24));
        assert!(within(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(within(ip("fd00::5"), ip("fd00::"), 64));
        assert!(!within(ip("fd00::5"), ip("10.0.0.0"), 8));
        assert!(is_address("10.0.0.0/8") && is_address("10.0.0.1:80") && is_address("::1"));
        assert!(!is_address("product") && !is_address("gateway-7f/2"));
    }
}
