//! `sonde hub` end to end on one node: `sonde run` captures real traffic (a Python client →
//! nginx → a Python backend), a real Prometheus (Debian's) scrapes the daemon every second,
//! and `sonde hub` reads only Prometheus' HTTP API. The hub's map must hold the services and
//! edges with the daemon's node; a quiet period opens no incident; a slow backend opens one
//! at the front whose report names the backend as a slow service.
//!
//! The pieces (Prometheus with a target list, the hub, the services) are in
//! `sonde_tests::promlab`, for the three-node test to reuse.

use std::collections::BTreeSet;
use std::time::Duration;

use sonde_tests::httplab::{Daemon, Nginx};
use sonde_tests::promlab::{Backend, Client, Hub, Prometheus, get, poll};
use sonde_tests::require_root;

const NODE: &str = "node-a";

/// One-second steps, a short warm-up: the test's clock. The daemon and the hub run the same.
const LIVE: &str = "step_ms = 1000\nwarmup_steps = 15\nwindow_steps = 4\nclose_after = 3";

fn edges_of(map: &serde_json::Value) -> BTreeSet<(String, String, String, String)> {
    map["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let node = |k: &str| e[k]["node"].as_str().unwrap_or_default().to_string();
            (
                s("client_name"),
                node("client_labels"),
                s("server_name"),
                node("server_labels"),
            )
        })
        .collect()
}

#[test]
fn hub_reads_the_cluster_from_prometheus_and_names_the_slow_backend() {
    require_root();
    let daemon = Daemon::start_when_free(
        "",
        "",
        &format!("[live]\n{LIVE}\n\n[kubernetes]\nmode = \"off\"\nnode_name = \"{NODE}\"\n"),
        Duration::from_secs(120),
    );
    let backend = Backend::start("backend").unwrap();
    let nginx = Nginx::start(backend.port).unwrap();
    let _client = Client::start("shopper", nginx.port, "/api/item", 10.0, 4).unwrap();
    let prometheus = Prometheus::start(&[format!("127.0.0.1:{}", daemon.port)]).unwrap();
    prometheus
        .wait_targets_up(1, Duration::from_secs(30))
        .unwrap();
    // The daemon's series reach Prometheus with the node label.
    poll(
        Duration::from_secs(60),
        "the daemon's live series in Prometheus",
        || {
            let r = prometheus
                .query("sonde_live_edge_value{metric=\"request_rate\",peer_service=\"backend\"}")
                .ok()?;
            r.iter().any(|s| s["metric"]["node"] == NODE).then_some(())
        },
    )
    .unwrap();

    let hub = Hub::start(&prometheus.url(), LIVE, 1).unwrap();
    // The map: both services, both calls, each end on its node.
    let map = poll(
        Duration::from_secs(60),
        "the hub's map with both calls",
        || {
            let map = hub.get_json("/api/map").ok()?;
            let edges = edges_of(&map);
            let want = [("shopper", "nginx"), ("nginx", "backend")];
            want.iter()
                .all(|(c, s)| {
                    edges
                        .iter()
                        .any(|e| e.0 == *c && e.2 == *s && e.1 == NODE && e.3 == NODE)
                })
                .then_some(map)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: map {:?}, hub log:\n{}",
            hub.get_json("/api/map").ok().map(|m| edges_of(&m)),
            hub.log()
        )
    });
    let services: BTreeSet<&str> = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert!(
        services.contains("nginx") && services.contains("backend"),
        "{services:?}"
    );

    // The hub's own series: one query per family per step, none failed.
    let metrics = hub.metrics().unwrap();
    assert!(metrics.contains("sonde_hub_step_queries 6\n"), "{metrics}");
    assert!(
        !metrics.contains("sonde_hub_query_errors_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("sonde_hub_steps_total "), "{metrics}");

    // Quiet: past the warm-up (backfilled from Prometheus, then live) and 10 more steps, no
    // incident at any point.
    let steps = |hub: &Hub| -> Option<f64> {
        hub.metrics()
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("sonde_live_steps_total "))?
            .parse()
            .ok()
    };
    poll(
        Duration::from_secs(60),
        "the hub's detectors to warm up",
        || (steps(&hub)? >= 20.0).then_some(()),
    )
    .unwrap();
    let quiet_from = steps(&hub).unwrap();
    poll(Duration::from_secs(60), "10 quiet hub steps", || {
        let incidents = hub.incidents().ok()?;
        assert!(
            incidents.is_empty(),
            "a quiet period opened incidents: {incidents:?}\n{}",
            hub.log()
        );
        (steps(&hub)? >= quiet_from + 10.0).then_some(())
    })
    .unwrap();

    // The fault: every backend answer 80 ms late.
    backend.set_delay(Duration::from_millis(80)).unwrap();
    let report = poll(
        Duration::from_secs(90),
        "a hub report on the slow backend",
        || {
            let incidents = hub.incidents().ok()?;
            let i = incidents.iter().find(|i| i["top_cause"].is_object())?;
            let id = i["id"].as_str()?.to_string();
            Some((
                i.clone(),
                hub.get_json(&format!("/api/incidents/{id}")).ok()?,
            ))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", hub.incidents(), hub.log()));
    let (summary, detail) = report;
    assert_eq!(summary["entry"], "nginx", "{summary}");
    let cause = &summary["top_cause"];
    assert_eq!(cause["element"]["kind"], "service", "{detail}");
    assert_eq!(cause["element"]["name"], "backend", "{detail}");
    assert_eq!(cause["category"], "service-slow", "{detail}");
    // It names the node the cause is on, in the list and the report.
    assert_eq!(cause["node"], NODE, "{summary}");
    assert_eq!(detail["report"]["root_causes"][0]["node"], NODE, "{detail}");
    // The report as `sonde report --hub` prints it.
    let text = std::process::Command::new(sonde_tests::sonde_bin_path())
        .args(["report", "latest", "--hub", &hub.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("service backend on {NODE}")),
        "{text}"
    );
    // The node's own daemon, running the same engine on its own values, agrees.
    let local = poll(Duration::from_secs(60), "the daemon's own report", || {
        let list: serde_json::Value =
            serde_json::from_str(&get(daemon.port, "/api/incidents").ok()?).ok()?;
        list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["top_cause"].is_object())
            .cloned()
    })
    .unwrap();
    assert_eq!(local["entry"], summary["entry"], "{local}");
    assert_eq!(local["top_cause"]["element"], cause["element"], "{local}");
    drop(hub);
    drop(prometheus);
    drop(daemon);
}

/// A hub whose Prometheus does not answer (a closed port, then a server that is not
/// Prometheus) skips its steps and counts every failed query; it opens nothing.
#[test]
fn hub_counts_failed_queries_and_skips_the_step() {
    let closed = sonde_tests::httplab::free_port();
    let hub = Hub::start(&format!("http://127.0.0.1:{closed}"), LIVE, 1).unwrap();
    let metrics = poll(Duration::from_secs(30), "failed hub steps", || {
        let m = hub.metrics().ok()?;
        let failed: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("sonde_hub_steps_failed_total "))?
            .parse()
            .ok()?;
        (failed >= 3.0).then_some(m)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", hub.log()));
    // The first family fails and ends the step: one error per step, none of the others tried.
    assert!(
        metrics.contains("sonde_hub_query_errors_total{family=\"service_info\",kind=\"instant\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("sonde_hub_steps_total 0\n"), "{metrics}");
    assert!(hub.incidents().unwrap().is_empty());
    // The reason, in one line of the log.
    let log = hub.log();
    let line = log
        .lines()
        .find(|l| l.contains("hub step skipped"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("Connection refused"), "{line}");
}
