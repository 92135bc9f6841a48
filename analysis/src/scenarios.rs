//! Seeded incident bundles for tests, benchmarks and `sonde analyze --example`: a small shop
//! (gateway calling cart, product and config; product querying mysql) on three machines, with
//! one fault injected per scenario, plus a large random topology for the latency benchmark.
//!
//! Series are sampled every 10 s for 60 samples; the fault starts at sample 45. Every value
//! carries ±2% deterministic noise so the detector works on realistic, not flat, input.

use std::collections::BTreeMap;

use crate::replay::{
    Bundle, BundleSpec, CallSpec, ChangeSpec, IncidentSpec, NodeSpec, ServiceSpec,
};
use sonde_sdk::fault_rule::metric as m;

pub const T0: i64 = 1_700_000_000;
pub const STEP: i64 = 10;
pub const SAMPLES: usize = 60;
pub const FAULT_AT: usize = 45;

/// The scenarios [`scenario`] knows, with what a correct analysis says.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "network-edge",
        "packet loss on the gateway->cart call edge (retransmits), cart itself healthy",
    ),
    (
        "slow-database",
        "mysql slow, two calls below the gateway (gateway -> product -> mysql)",
    ),
    (
        "slow-database-busy-node",
        "mysql slow as in slow-database, while its machine n3 has a longer run queue but idle CPUs (no machine fault)",
    ),
    (
        "node-cpu",
        "machine n2 CPU-saturated; both services on it (cart, product) slow",
    ),
    (
        "endpoint-errors",
        "cart returns errors on /checkout only; no resource symptoms",
    ),
];

pub use crate::synth::Rng;

struct Builder {
    bundle: Bundle,
    rng: Rng,
}

impl Builder {
    fn new(seed: u64) -> Self {
        Self {
            bundle: Bundle::default(),
            rng: Rng::new(seed),
        }
    }

    /// A series at `base` before the fault and `faulty` from [`FAULT_AT`] on.
    fn series(&mut self, entity: &str, metric: &str, base: f64, faulty: f64) {
        let points = (0..SAMPLES)
            .map(|i| {
                let v = if i >= FAULT_AT { faulty } else { base };
                let noise = 1.0 + 0.04 * (self.rng.unit() - 0.5);
                (T0 + i as i64 * STEP, v * noise)
            })
            .collect();
        self.bundle
            .series
            .insert((entity.to_string(), metric.to_string()), points);
    }

    fn service(
        &mut self,
        name: &str,
        rate: f64,
        err: (f64, f64),
        lat: (f64, f64),
        cpu_throttle: (f64, f64),
    ) {
        let e = format!("service:{name}");
        self.series(&e, m::REQUEST_RATE, rate, rate);
        self.series(&e, m::ERROR_RATE, err.0, err.1);
        self.series(&e, m::LATENCY_MEAN_MS, lat.0, lat.1);
        self.series(&e, m::LATENCY_P99_MS, lat.0 * 3.0, lat.1 * 3.0);
        self.series(&e, m::CPU_USAGE_CORES, 0.3, 0.3);
        self.series(&e, m::CPU_THROTTLED_RATIO, cpu_throttle.0, cpu_throttle.1);
        self.series(&e, m::MEMORY_USAGE_RATIO, 0.4, 0.4);
    }

    #[allow(clippy::too_many_arguments)]
    fn edge(
        &mut self,
        caller: &str,
        callee: &str,
        caller_lat: (f64, f64),
        callee_lat: (f64, f64),
        errs: (f64, f64),
        retrans: (f64, f64),
    ) {
        let e = format!("edge:{caller}->{callee}");
        self.series(&e, m::CALLER_LATENCY_MS, caller_lat.0, caller_lat.1);
        self.series(&e, m::CALLEE_LATENCY_MS, callee_lat.0, callee_lat.1);
        self.series(&e, m::CALLER_ERROR_RATE, errs.0, errs.1);
        self.series(&e, m::CALLEE_ERROR_RATE, errs.0, errs.1);
        self.series(&e, m::RETRANSMIT_RATE, retrans.0, retrans.1);
        self.series(&e, m::RTT_MS, 0.1, 0.1);
    }

    fn node(&mut self, name: &str, cpu: (f64, f64), runq: (f64, f64)) {
        let e = format!("node:{name}");
        self.series(&e, m::NODE_CPU_RATIO, cpu.0, cpu.1);
        self.series(&e, m::NODE_MEMORY_RATIO, 0.5, 0.5);
        self.series(&e, m::NODE_RUNQUEUE_DELAY_MS, runq.0, runq.1);
    }
}

fn shop_spec(id: &str, kpi: &str) -> BundleSpec {
    let svc = |name: &str, node: &str, labels: &[(&str, &str)]| ServiceSpec {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        nodes: vec![node.into()],
    };
    let call = |caller: &str, callee: &str, protocol: &str| CallSpec {
        caller: caller.into(),
        callee: callee.into(),
        labels: BTreeMap::from([("protocol".to_string(), protocol.to_string())]),
    };
    BundleSpec {
        incident: IncidentSpec {
            id: Some(id.into()),
            entry: "gateway".into(),
            kpi: kpi.into(),
            start: None,
            window: None,
            slo: None,
        },
        services: vec![
            svc("gateway", "n1", &[("protocol", "http")]),
            svc("config", "n1", &[("protocol", "http")]),
            svc("cart", "n2", &[("protocol", "http")]),
            svc("product", "n2", &[("protocol", "http")]),
            svc(
                "mysql",
                "n3",
                &[("protocol", "mysql"), ("kind", "database")],
            ),
        ],
        nodes: ["n1", "n2", "n3"]
            .iter()
            .map(|n| NodeSpec {
                name: n.to_string(),
                labels: BTreeMap::new(),
            })
            .collect(),
        calls: vec![
            call("gateway", "cart", "http"),
            call("gateway", "product", "http"),
            call("gateway", "config", "http"),
            call("product", "mysql", "mysql"),
        ],
        changes: Vec::new(),
    }
}

/// Endpoint × pod breakdown of cart's requests and errors; `checkout_errors` is the error
/// ratio on /checkout during the fault (all pods alike).
fn cart_breakdown(b: &mut Builder, checkout_errors: f64) {
    let endpoints = ["/cart", "/checkout", "/items", "/health"];
    let pods = ["cart-0", "cart-1", "cart-2"];
    for (ei, endpoint) in endpoints.iter().enumerate() {
        for pod in pods {
            let requests = 20.0 + 10.0 * ei as f64;
            let mut req = Vec::new();
            let mut err = Vec::new();
            let mut lat = Vec::new();
            for i in 0..SAMPLES {
                let ts = T0 + i as i64 * STEP;
                let r = requests * (1.0 + 0.04 * (b.rng.unit() - 0.5));
                let ratio = if i >= FAULT_AT && *endpoint == "/checkout" {
                    checkout_errors
                } else {
                    0.001
                };
                req.push((ts, r));
                err.push((ts, r * ratio));
                lat.push((ts, r * 6.0));
            }
            for (measure, points) in [("requests", req), ("errors", err), ("latency_sum_ms", lat)] {
                b.bundle.breakdowns.push(crate::replay::BreakdownSeries {
                    service: "cart".into(),
                    measure: measure.into(),
                    dimensions: vec!["endpoint".into(), "pod".into()],
                    values: vec![endpoint.to_string(), pod.to_string()],
                    points,
                });
            }
        }
    }
}

/// One of [`SCENARIOS`] by name.
pub fn scenario(name: &str) -> Option<Bundle> {
    let mut b = Builder::new(0x5eed ^ name.len() as u64);
    let ok = (0.001, 0.001);
    let no_throttle = (0.0, 0.0);
    // Healthy baselines: gateway 25 ms = 5 own + cart 6 + product 10 + config 3 (+ network).
    let (kpi, spec) = match name {
        "network-edge" => {
            b.service("gateway", 100.0, ok, (25.0, 225.0), no_throttle);
            b.service("cart", 100.0, ok, (6.0, 6.0), no_throttle);
            b.service("product", 100.0, ok, (10.0, 10.0), no_throttle);
            b.service("config", 100.0, ok, (3.0, 3.0), no_throttle);
            b.service("mysql", 150.0, ok, (2.0, 2.0), no_throttle);
            b.edge("gateway", "cart", (6.3, 206.0), (6.0, 6.0), ok, (0.2, 30.0));
            b.edge(
                "gateway",
                "product",
                (10.3, 10.3),
                (10.0, 10.0),
                ok,
                (0.2, 0.2),
            );
            b.edge("gateway", "config", (3.2, 3.2), (3.0, 3.0), ok, (0.2, 0.2));
            b.edge("product", "mysql", (2.2, 2.2), (2.0, 2.0), ok, (0.2, 0.2));
            ("latency_mean_ms", shop_spec(name, "latency_mean_ms"))
        }
        "slow-database" | "slow-database-busy-node" => {
            b.service("gateway", 100.0, ok, (25.0, 143.0), no_throttle);
            b.service("cart", 100.0, ok, (6.0, 6.0), no_throttle);
            b.service("product", 100.0, ok, (10.0, 128.0), no_throttle);
            b.service("config", 100.0, ok, (3.0, 3.0), no_throttle);
            b.service("mysql", 150.0, ok, (2.0, 120.0), no_throttle);
            b.series("service:product", m::DB_QUERY_LATENCY_MS, 2.2, 120.2);
            b.edge("gateway", "cart", (6.3, 6.3), (6.0, 6.0), ok, (0.2, 0.2));
            b.edge(
                "gateway",
                "product",
                (10.3, 128.3),
                (10.0, 128.0),
                ok,
                (0.2, 0.2),
            );
            b.edge("gateway", "config", (3.2, 3.2), (3.0, 3.0), ok, (0.2, 0.2));
            b.edge(
                "product",
                "mysql",
                (2.2, 120.2),
                (2.0, 120.0),
                ok,
                (0.2, 0.2),
            );
            ("latency_mean_ms", shop_spec(name, "latency_mean_ms"))
        }
        "node-cpu" => {
            b.service("gateway", 100.0, ok, (25.0, 99.0), no_throttle);
            b.service("cart", 100.0, ok, (6.0, 40.0), no_throttle);
            b.service("product", 100.0, ok, (10.0, 50.0), no_throttle);
            b.service("config", 100.0, ok, (3.0, 3.0), no_throttle);
            b.service("mysql", 150.0, ok, (2.0, 2.0), no_throttle);
            b.edge("gateway", "cart", (6.3, 40.3), (6.0, 40.0), ok, (0.2, 0.2));
            b.edge(
                "gateway",
                "product",
                (10.3, 50.3),
                (10.0, 50.0),
                ok,
                (0.2, 0.2),
            );
            b.edge("gateway", "config", (3.2, 3.2), (3.0, 3.0), ok, (0.2, 0.2));
            b.edge("product", "mysql", (2.2, 2.2), (2.0, 2.0), ok, (0.2, 0.2));
            ("latency_mean_ms", shop_spec(name, "latency_mean_ms"))
        }
        "endpoint-errors" => {
            // /checkout is 30 of 100 cart requests a second per pod group; 20% of them fail.
            b.service("gateway", 100.0, (0.001, 0.06), (25.0, 25.0), no_throttle);
            b.service("cart", 100.0, (0.001, 0.06), (6.0, 6.0), no_throttle);
            b.service("product", 100.0, ok, (10.0, 10.0), no_throttle);
            b.service("config", 100.0, ok, (3.0, 3.0), no_throttle);
            b.service("mysql", 150.0, ok, (2.0, 2.0), no_throttle);
            b.edge(
                "gateway",
                "cart",
                (6.3, 6.3),
                (6.0, 6.0),
                (0.001, 0.06),
                (0.2, 0.2),
            );
            b.edge(
                "gateway",
                "product",
                (10.3, 10.3),
                (10.0, 10.0),
                ok,
                (0.2, 0.2),
            );
            b.edge("gateway", "config", (3.2, 3.2), (3.0, 3.0), ok, (0.2, 0.2));
            b.edge("product", "mysql", (2.2, 2.2), (2.0, 2.0), ok, (0.2, 0.2));
            cart_breakdown(&mut b, 0.2);
            ("error_rate", shop_spec(name, "error_rate"))
        }
        _ => return None,
    };
    let _ = kpi;
    match name {
        "node-cpu" => {
            b.node("n1", (0.3, 0.3), (0.2, 0.2));
            b.node("n2", (0.45, 0.99), (0.2, 15.0));
            b.node("n3", (0.3, 0.3), (0.2, 0.2));
        }
        "slow-database-busy-node" => {
            for n in ["n1", "n2"] {
                b.node(n, (0.4, 0.4), (0.2, 0.2));
            }
            b.node("n3", (0.3, 0.32), (20.0, 80.0));
        }
        _ => {
            for n in ["n1", "n2", "n3"] {
                b.node(n, (0.4, 0.4), (0.2, 0.2));
            }
        }
    }
    b.bundle.spec = spec;
    // A deploy of an unrelated service an hour earlier: the recent-change rule must not fire.
    b.bundle.spec.changes.push(ChangeSpec {
        at: T0 - 3600,
        subject: "config".into(),
        description: "deploy config v41".into(),
    });
    Some(b.bundle)
}

/// A random call tree of `services` services (fan-out 1–4, a database leaf every few calls)
/// spread over `services / 4` machines, with one slow leaf database somewhere deep and the
/// latency propagated up to the root. Every service has an endpoint × pod × version breakdown
/// (`leaves_per_service` leaves). For the report-latency benchmark.
pub fn large(services: usize, leaves_per_service: usize, seed: u64) -> (Bundle, String) {
    let mut b = Builder::new(seed);
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i:03}")).collect();
    let machines = (services / 4).max(1);
    let mut parent = vec![usize::MAX; services];
    for (i, p) in parent.iter_mut().enumerate().skip(1) {
        // Attach to an earlier service: a tree rooted at svc-000.
        *p = (b.rng.next_u64() as usize) % i;
    }
    let faulty = services - 1;
    // Services on the path root..=faulty see the slowdown.
    let mut on_path = vec![false; services];
    let mut p = faulty;
    while p != usize::MAX {
        on_path[p] = true;
        p = parent[p];
    }
    let mut spec = BundleSpec {
        incident: IncidentSpec {
            id: Some("large".into()),
            entry: names[0].clone(),
            kpi: "latency_mean_ms".into(),
            start: None,
            window: None,
            slo: None,
        },
        ..Default::default()
    };
    for (i, name) in names.iter().enumerate() {
        let node = format!("node-{:02}", i % machines);
        let slow = if on_path[i] { 100.0 } else { 0.0 };
        b.service(name, 50.0, (0.001, 0.001), (10.0, 10.0 + slow), (0.0, 0.0));
        if i == faulty {
            b.series(
                &format!("service:{name}"),
                m::CPU_THROTTLED_RATIO,
                0.01,
                0.6,
            );
        }
        spec.services.push(ServiceSpec {
            name: name.clone(),
            labels: BTreeMap::new(),
            nodes: vec![node],
        });
        if parent[i] != usize::MAX {
            let caller = &names[parent[i]];
            b.edge(
                caller,
                name,
                (10.2, 10.2 + slow),
                (10.0, 10.0 + slow),
                (0.001, 0.001),
                (0.2, 0.2),
            );
            spec.calls.push(CallSpec {
                caller: caller.clone(),
                callee: name.clone(),
                labels: BTreeMap::new(),
            });
        }
        // Breakdown leaves: endpoint × pod × version.
        let endpoints = (leaves_per_service / 10).max(1);
        for leaf in 0..leaves_per_service {
            let values = vec![
                format!("/e{}", leaf % endpoints),
                format!("pod-{}", (leaf / endpoints) % 5),
                format!("v{}", leaf / (5 * endpoints)),
            ];
            let base = 1.0 + b.rng.unit() * 10.0;
            let points: Vec<(i64, f64)> =
                (0..SAMPLES).map(|s| (T0 + s as i64 * STEP, base)).collect();
            let lat: Vec<(i64, f64)> = (0..SAMPLES)
                .map(|s| {
                    (
                        T0 + s as i64 * STEP,
                        base * if s >= FAULT_AT && leaf % endpoints == 0 {
                            10.0 + slow
                        } else {
                            10.0
                        },
                    )
                })
                .collect();
            for (measure, pts) in [("requests", points), ("latency_sum_ms", lat)] {
                b.bundle.breakdowns.push(crate::replay::BreakdownSeries {
                    service: name.clone(),
                    measure: measure.into(),
                    dimensions: vec!["endpoint".into(), "pod".into(), "version".into()],
                    values: values.clone(),
                    points: pts,
                });
            }
        }
    }
    for n in 0..machines {
        spec.nodes.push(NodeSpec {
            name: format!("node-{n:02}"),
            labels: BTreeMap::new(),
        });
        b.node(&format!("node-{n:02}"), (0.4, 0.4), (0.2, 0.2));
    }
    b.bundle.spec = spec;
    (b.bundle, names[faulty].clone())
}
