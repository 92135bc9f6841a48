//! The live engine's values as Prometheus series: the contract between each node's daemon
//! (which writes them on `/metrics`) and the cluster hub (which reads them back from
//! Prometheus and feeds the same [`crate::Engine`]). ARCHITECTURE.md, "Series the hub reads",
//! lists them with their labels.
//!
//! Each is the last live step's value (a gauge that changes once per `step_ms`), labelled by
//! the node that measured it. They are bounded by the live history's caps: at most
//! `live.max_series` values and as many breakdown values (64 endpoints per service).

use sonde_metrics::Exposition;

use crate::board::LiveBoard;

/// `{node, service, metric}`: a service's golden metrics and resources (`service:S`).
pub const SERVICE_VALUE: &str = "sonde_live_service_value";
/// `{node, service, peer_service, metric}`: a call edge caller → callee (`edge:A->B`) as this
/// node saw it (the caller's node has the caller side, the callee's node the callee side).
pub const EDGE_VALUE: &str = "sonde_live_edge_value";
/// `{node, metric}`: the node's CPU, memory and run-queue delay (`node:N`).
pub const NODE_VALUE: &str = "sonde_live_node_value";
/// `{node, service, endpoint, measure}`: a service's per-endpoint breakdown.
pub const ENDPOINT_VALUE: &str = "sonde_live_endpoint_value";
/// `{node, service, namespace, pod, protocol, kind}` = 1: a service with processes on this
/// node, one series per pod of its latest processes (at most 8; `pod=""` outside Kubernetes).
pub const SERVICE_INFO: &str = "sonde_live_service_info";
/// `{node, service, side, address}` = 1: an address a service of this node is reached at
/// (`side="server"`, `ip:port`) or calls from (`side="client"`, `ip`), at most 8 per side; what
/// names another node's edges to an address.
pub const SERVICE_ADDRESS_INFO: &str = "sonde_live_service_address_info";
/// `{node}` = 1: the node this daemon is.
pub const NODE_INFO: &str = "sonde_node_info";

/// An entity of the history, parsed from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity<'a> {
    Service(&'a str),
    Edge { caller: &'a str, callee: &'a str },
    Node(&'a str),
}

impl<'a> Entity<'a> {
    pub fn parse(key: &'a str) -> Option<Entity<'a>> {
        let (kind, rest) = key.split_once(':')?;
        match kind {
            "service" => Some(Entity::Service(rest)),
            "node" => Some(Entity::Node(rest)),
            "edge" => {
                let (caller, callee) = rest.split_once("->")?;
                Some(Entity::Edge { caller, callee })
            }
            _ => None,
        }
    }

    /// The history's key of the entity.
    pub fn key(&self) -> String {
        match self {
            Entity::Service(s) => format!("service:{s}"),
            Entity::Edge { caller, callee } => format!("edge:{caller}->{callee}"),
            Entity::Node(n) => format!("node:{n}"),
        }
    }
}

/// Write the board's last step as the series above (nothing before the first step).
pub fn render(board: &LiveBoard, ex: &mut Exposition) {
    let node = board.node.as_str();
    if node.is_empty() && board.latest.is_empty() {
        return;
    }
    ex.gauge(
        NODE_INFO,
        "The node this daemon runs on (the `node` label of its series).",
    )
    .sample([("node", node)], 1u64);
    {
        let mut g = ex.gauge(
            SERVICE_INFO,
            "A service with processes on this node: its protocol as a server and kind.",
        );
        for (name, facts) in &board.services {
            if !facts.nodes.contains(node) {
                continue;
            }
            let no_pod = [String::new()];
            let pods: Vec<&String> = if facts.pods.is_empty() {
                no_pod.iter().collect()
            } else {
                facts.pods.iter().collect()
            };
            for pod in pods {
                g.sample(
                    [
                        ("node", node),
                        ("service", name.as_str()),
                        ("namespace", facts.namespace.as_str()),
                        ("pod", pod.as_str()),
                        ("protocol", facts.protocol.as_str()),
                        ("kind", facts.kind.as_str()),
                    ],
                    1u64,
                );
            }
        }
    }
    {
        let mut g = ex.gauge(
            SERVICE_ADDRESS_INFO,
            "An address a service of this node is reached at (server, ip:port) or calls from (client, ip).",
        );
        for (service, set) in &board.addresses {
            for (side, address) in set {
                g.sample(
                    [
                        ("node", node),
                        ("service", service.as_str()),
                        ("side", side.as_str()),
                        ("address", address.as_str()),
                    ],
                    1u64,
                );
            }
        }
    }
    ex.gauge(
        "sonde_live_service_addresses_left_out",
        "Addresses the per-service cap (8 per side) left out of sonde_live_service_address_info in the last step.",
    )
    .sample([("node", node)], board.addresses_left_out);
    let mut services = Vec::new();
    let mut edges = Vec::new();
    let mut nodes = Vec::new();
    for (entity, metric, v) in &board.latest {
        match Entity::parse(entity) {
            Some(Entity::Service(s)) => services.push((s, metric.as_str(), *v)),
            Some(Entity::Edge { caller, callee }) => {
                edges.push((caller, callee, metric.as_str(), *v))
            }
            Some(Entity::Node(n)) => nodes.push((n, metric.as_str(), *v)),
            None => {}
        }
    }
    {
        let mut g = ex.gauge(
            SERVICE_VALUE,
            "A service's value in the last live step (golden metrics, resources).",
        );
        for (s, metric, v) in services {
            g.sample([("node", node), ("service", s), ("metric", metric)], v);
        }
    }
    {
        let mut g = ex.gauge(
            EDGE_VALUE,
            "A call edge's value in the last live step, as this node saw it.",
        );
        for (caller, callee, metric, v) in edges {
            g.sample(
                [
                    ("node", node),
                    ("service", caller),
                    ("peer_service", callee),
                    ("metric", metric),
                ],
                v,
            );
        }
    }
    {
        let mut g = ex.gauge(NODE_VALUE, "The node's value in the last live step.");
        for (n, metric, v) in nodes {
            g.sample([("node", n), ("metric", metric)], v);
        }
    }
    let mut g = ex.gauge(
        ENDPOINT_VALUE,
        "A service's per-endpoint breakdown in the last live step (per second).",
    );
    for ((service, measure, dims, values), v) in &board.leaves {
        let endpoint = dims
            .iter()
            .position(|d| d == "endpoint")
            .and_then(|i| values.get(i));
        if let Some(endpoint) = endpoint {
            g.sample(
                [
                    ("node", node),
                    ("service", service.as_str()),
                    ("endpoint", endpoint.as_str()),
                    ("measure", measure.as_str()),
                ],
                *v,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::board::ServiceFacts;
    use sonde_metrics::Format;

    /// The contract as a hub reads it: names, labels, one series per pod, only this node's
    /// services, nothing before the first step.
    #[test]
    fn the_last_step_is_written_node_labelled() {
        let mut ex = Exposition::new(Format::Prometheus);
        render(&LiveBoard::default(), &mut ex);
        assert_eq!(ex.finish(), "");

        let facts = |nodes: &[&str], pods: &[&str]| ServiceFacts {
            protocol: "http".into(),
            kind: String::new(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            namespace: "shop".into(),
            pods: pods.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>(),
        };
        let board = LiveBoard {
            node: "n1".into(),
            services: BTreeMap::from([
                ("cart".to_string(), facts(&["n1"], &["cart-1", "cart-2"])),
                ("remote".to_string(), facts(&[], &[])),
            ]),
            latest: vec![
                ("service:cart".into(), "latency_mean_ms".into(), 12.5),
                ("edge:gateway->cart".into(), "rtt_ms".into(), 0.25),
                ("node:n1".into(), "node_cpu_ratio".into(), 0.5),
            ],
            leaves: vec![(
                (
                    "cart".into(),
                    "requests".into(),
                    vec!["endpoint".into()],
                    vec!["GET /items".into()],
                ),
                4.0,
            )],
            addresses: BTreeMap::from([(
                "cart".to_string(),
                BTreeSet::from([
                    ("client".to_string(), "10.0.0.2".to_string()),
                    ("server".to_string(), "10.0.0.2:8080".to_string()),
                ]),
            )]),
            ..Default::default()
        };
        let mut ex = Exposition::new(Format::Prometheus);
        render(&board, &mut ex);
        let text = ex.finish();
        for line in [
            "sonde_node_info{node=\"n1\"} 1\n",
            "sonde_live_service_info{node=\"n1\",service=\"cart\",namespace=\"shop\",pod=\"cart-1\",protocol=\"http\",kind=\"\"} 1\n",
            "sonde_live_service_info{node=\"n1\",service=\"cart\",namespace=\"shop\",pod=\"cart-2\",protocol=\"http\",kind=\"\"} 1\n",
            "sonde_live_service_value{node=\"n1\",service=\"cart\",metric=\"latency_mean_ms\"} 12.5\n",
            "sonde_live_edge_value{node=\"n1\",service=\"gateway\",peer_service=\"cart\",metric=\"rtt_ms\"} 0.25\n",
            "sonde_live_node_value{node=\"n1\",metric=\"node_cpu_ratio\"} 0.5\n",
            "sonde_live_endpoint_value{node=\"n1\",service=\"cart\",endpoint=\"GET /items\",measure=\"requests\"} 4\n",
            "sonde_live_service_address_info{node=\"n1\",service=\"cart\",side=\"client\",address=\"10.0.0.2\"} 1\n",
            "sonde_live_service_address_info{node=\"n1\",service=\"cart\",side=\"server\",address=\"10.0.0.2:8080\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // A service seen only as a peer is another node's to declare.
        assert!(!text.contains("service=\"remote\""), "{text}");
    }

    #[test]
    fn entities_round_trip() {
        for key in ["service:cart", "edge:gateway->cart", "node:b"] {
            assert_eq!(Entity::parse(key).unwrap().key(), key);
        }
        assert_eq!(
            Entity::parse("edge:a->b->c"),
            Some(Entity::Edge {
                caller: "a",
                callee: "b->c"
            })
        );
        assert_eq!(Entity::parse("pod:x"), None);
    }
}
