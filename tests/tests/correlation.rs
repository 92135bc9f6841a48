//! Correlation acceptance: real processes in cgroups shaped like containerd, CRI-O and Docker
//! pods serve and call HTTP across network namespaces; their records and metrics must carry
//! the container ids and pod UIDs, container CPU must rise while a process spins, a
//! `traceparent` must show up on the record and as an OpenMetrics exemplar, and Kubernetes
//! labels (from a stand-in API server, see `kubernetes_labels_follow_pods`) must follow a pod
//! that is deleted and recreated with a new address.
use std::time::Duration;

use serde_json::json;
use sonde_pipeline::records::RecordView;
use sonde_tests::cgroups::{FakeContainer, Shape};
use sonde_tests::httplab::{Daemon, Scratch, http_body, http_get, parse_metrics, sum};
use sonde_tests::kubeapi::{self, FakeApiServer, Owner};
use sonde_tests::netlab::{Lab, LabNginx};
use sonde_tests::wait_until;

const SERVER: &str = "http_server_request_duration_seconds";
const CLIENT: &str = "http_client_request_duration_seconds";

/// curl from lab host `host`, inside `container`'s cgroups. Returns the HTTP status.
fn curl_in(lab: &Lab, host: usize, container: &FakeContainer, args: &[&str]) -> String {
    // Into the cgroups first: `ip netns exec` remounts /sys, without the cgroup mounts.
    let wrapper = container.wrapper();
    let mut cmd: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    cmd.extend(["ip", "netns", "exec", lab.host(host).ns()]);
    cmd.extend([
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ]);
    cmd.extend_from_slice(args);
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn records(d: &Daemon) -> Vec<RecordView> {
    http_body(d.port, "/api/records?limit=4096")
        .ok()
        .and_then(|body| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}

fn label<'a>(r: &'a RecordView, k: &str) -> &'a str {
    r.labels.get(k).map_or("", String::as_str)
}

/// The newest record matching `f`, polled (calling `poke` each time) until a deadline.
fn wait_record(
    d: &Daemon,
    what: &str,
    mut poke: impl FnMut(),
    f: impl Fn(&RecordView) -> bool,
) -> RecordView {
    wait_until(Duration::from_secs(30), what, || {
        poke();
        // The newest: labels are the latest the daemon knows.
        records(d).into_iter().rev().find(|r| f(r))
    })
    .unwrap_or_else(|e| {
        let seen: Vec<_> = records(d)
            .into_iter()
            .rev()
            .take(6)
            .map(|r| (r.side, r.comm, r.labels))
            .collect();
        panic!("{e:#}; latest records: {seen:#?}")
    })
}

fn openmetrics(port: u16) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parse the whole exposition with the Prometheus client library's (strict) OpenMetrics
/// parser: one malformed line and Prometheus would reject the scrape.
fn validate_openmetrics(text: &str) {
    use std::io::Write as _;
    // Debian's python3 (where the package installs), not whatever is first on PATH.
    let mut p = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nn = sum(1 for _ in p(sys.stdin.read()))\nprint(n)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/bootstrap installs it)");
    // A parser that fails early closes its stdin: the error is in its output.
    let _ = p.stdin.take().unwrap().write_all(text.as_bytes());
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OpenMetrics parser rejected /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn containers_from_cgroups_label_records_metrics_and_usage() {
    let lab = Lab::new(2).expect("lab");
    // Server: a containerd pod (systemd driver); client: a CRI-O pod; a spinner in a pod of
    // the cgroupfs driver.
    let web = FakeContainer::create(Shape::ContainerdSystemd, "web").expect("cgroups");
    let client = FakeContainer::create(Shape::CrioSystemd, "client").expect("cgroups");
    let spin = FakeContainer::create(Shape::DockerCgroupfs, "spin").expect("cgroups");
    let d = Daemon::start_with(
        "record_log = 4096",
        "",
        "[kubernetes]\nmode = \"off\"\n[correlation]\nscan_interval_ms = 200\n",
    );
    let nginx = LabNginx::start_wrapped(&lab, 1, 8080, &web.wrapper()).expect("nginx");
    assert!(
        !web.pids().is_empty(),
        "nginx runs in the web container's cgroup"
    );
    let url = nginx.url("/small");

    let server = wait_record(
        &d,
        "a server record from the web container",
        || assert_eq!(curl_in(&lab, 0, &client, &[&url]), "200"),
        |r| r.side == "server" && label(r, "container_id") == web.id,
    );
    assert_eq!(label(&server, "k8s_pod_uid"), web.pod_uid, "{server:?}");
    assert_eq!(server.protocol, "http");
    let caller = wait_record(
        &d,
        "a client record from the client container",
        || {},
        |r| r.side == "client" && label(r, "container_id") == client.id,
    );
    assert_eq!(label(&caller, "k8s_pod_uid"), client.pod_uid, "{caller:?}");
    assert_eq!(caller.comm, "curl");

    // The same labels on the RED metrics.
    let samples = parse_metrics(&http_get(d.port, "/metrics").unwrap());
    assert!(
        sum(
            &samples,
            &format!("{SERVER}_count"),
            &[("container_id", &web.id), ("k8s_pod_uid", &web.pod_uid)]
        ) >= 1.0
    );
    assert!(
        sum(
            &samples,
            &format!("{CLIENT}_count"),
            &[
                ("container_id", &client.id),
                ("k8s_pod_uid", &client.pod_uid)
            ]
        ) >= 1.0
    );

    // Trace context: W3C on one request, B3 on another; the trace id is on the record and,
    // in OpenMetrics, an exemplar of the server's latency histogram.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traced = wait_record(
        &d,
        "a record with the traceparent's trace id",
        || {
            curl_in(
                &lab,
                0,
                &client,
                &["-H", &format!("traceparent: 00-{trace}-{parent}-01"), &url],
            );
        },
        |r| {
            r.side == "server"
                && r.attributes
                    .iter()
                    .any(|(k, v)| k == "trace_id" && v == trace)
        },
    );
    assert!(
        traced
            .attributes
            .iter()
            .any(|(k, v)| k == "span_id" && v == parent),
        "{traced:?}"
    );
    assert_eq!(label(&traced, "container_id"), web.id);
    let om = openmetrics(d.port);
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    validate_openmetrics(&om);
    let exemplar = om.lines().find(|l| {
        l.starts_with(&format!("{SERVER}_bucket{{"))
            && l.contains(&web.id)
            && l.contains(&format!("# {{trace_id=\"{trace}\",span_id=\"{parent}\"}}"))
    });
    assert!(exemplar.is_some(), "an exemplar with the trace id:\n{om}");
    // The Prometheus text format has no exemplars.
    assert!(!http_get(d.port, "/metrics").unwrap().contains(trace));
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    wait_record(
        &d,
        "a record with the b3 header's trace id",
        || {
            curl_in(
                &lab,
                0,
                &client,
                &["-H", &format!("b3: {b3_trace}-e457b5a2e4d86bd1-1"), &url],
            );
        },
        |r| {
            r.side == "server"
                && r.attributes
                    .iter()
                    .any(|(k, v)| k == "trace_id" && v == b3_trace)
        },
    );

    // Container CPU: the spinner's usage rises; when it exits, its container goes away.
    let wrapper = spin.wrapper();
    let mut spin_cmd: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    spin_cmd.extend(["sh", "-c", "while :; do :; done"]);
    let mut spinner = std::process::Command::new(spin_cmd[0])
        .args(&spin_cmd[1..])
        .spawn()
        .expect("spinner");
    let cpu = |d: &Daemon| {
        let s = parse_metrics(&http_get(d.port, "/metrics").unwrap_or_default());
        let v = sum(
            &s,
            "container_cpu_usage_seconds_total",
            &[("container_id", &spin.id)],
        );
        (v > 0.0 || s.iter().any(|x| x.label("container_id") == spin.id)).then_some(v)
    };
    let first = wait_until(
        Duration::from_secs(20),
        "the spinner's container usage",
        || cpu(&d),
    )
    .expect("usage series");
    let later = wait_until(
        Duration::from_secs(30),
        "the spinner's CPU to rise by 0.5 s",
        || cpu(&d).filter(|v| *v >= first + 0.5),
    )
    .expect("CPU rises");
    assert!(later > first);
    let samples = parse_metrics(&http_get(d.port, "/metrics").unwrap());
    let s = samples
        .iter()
        .find(|s| {
            s.name == "container_cpu_usage_seconds_total" && s.label("container_id") == spin.id
        })
        .expect("spinner series");
    assert_eq!(s.label("k8s_pod_uid"), spin.pod_uid);
    // The web container (idle nginx) is listed too, with its runtime.
    let web_cpu = samples
        .iter()
        .find(|s| {
            s.name == "container_cpu_usage_seconds_total" && s.label("container_id") == web.id
        })
        .expect("web container series");
    assert_eq!(web_cpu.label("container_runtime"), "containerd");
    let _ = spinner.kill();
    let _ = spinner.wait();
    wait_until(
        Duration::from_secs(20),
        "the exited spinner's container to go",
        || {
            let body = http_body(d.port, "/api/containers").ok()?;
            (!body.contains(&spin.id) && body.contains(&web.id)).then_some(())
        },
    )
    .expect("container dropped on exit");
    drop(nginx);
}

/// The Kubernetes side. No API server can run on this machine, so the test serves the
/// API's list and watch responses itself ([`FakeApiServer`]: real JSON shapes,
/// resourceVersions, ADDED/MODIFIED/DELETED events, and a 410 Gone that forces a relist);
/// the daemon's kube-rs client reaches it through a kubeconfig, as it would a real one.
#[test]
fn kubernetes_labels_follow_pods() {
    let lab = Lab::new(3).expect("lab");
    let (client_ip, web1_ip, web2_ip) = (
        lab.host(0).addr().to_string(),
        lab.host(1).addr().to_string(),
        lab.host(2).addr().to_string(),
    );
    let web1 = FakeContainer::create(Shape::ContainerdSystemd, "kweb1").expect("cgroups");
    let web2 = FakeContainer::create(Shape::ContainerdSystemd, "kweb2").expect("cgroups");
    let loadgen = FakeContainer::create(Shape::ContainerdSystemd, "kload").expect("cgroups");
    let api = FakeApiServer::start().expect("fake API server");
    let dir = Scratch::new("kube");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    let node = "node-a";
    let cid = |c: &FakeContainer| format!("containerd://{}", c.id);
    let web_pod = |name: &str, c: &FakeContainer, ip: &str| {
        kubeapi::pod(
            "shop",
            name,
            &c.pod_uid,
            node,
            ip,
            Some(&Owner::replica_set("web-5d8f7b9c4", "rs-web-1")),
            &[("app", cid(c).as_str())],
        )
    };
    let slice = |ip: &str, pod: &str| {
        kubeapi::endpoint_slice(
            "shop",
            "web-x7k2p",
            "web",
            &[(ip, Some(("shop", pod)), Some(node))],
            &[("http", 8080, "TCP")],
        )
    };
    api.apply(kubeapi::node(node, "192.0.2.10"));
    api.apply(kubeapi::replica_set(
        "shop",
        "web-5d8f7b9c4",
        "rs-web-1",
        Some(("web", "dep-web")),
    ));
    api.apply(web_pod("web-5d8f7b9c4-aaaaa", &web1, &web1_ip));
    api.apply(kubeapi::pod(
        "load",
        "loadgen-0",
        &loadgen.pod_uid,
        node,
        &client_ip,
        Some(&Owner::stateful_set("loadgen", "sts-loadgen")),
        &[("gen", cid(&loadgen).as_str())],
    ));
    api.apply(kubeapi::service(
        "shop",
        "web",
        "10.96.0.10",
        &[("http", 8080, "TCP")],
        &[("app", "web")],
    ));
    api.apply(slice(&web1_ip, "web-5d8f7b9c4-aaaaa"));

    let d = Daemon::start_with(
        "record_log = 4096",
        "",
        &format!(
            "[kubernetes]\nmode = \"kubeconfig\"\nkubeconfig = \"{}\"\nnode_name = \"{node}\"\n[correlation]\nscan_interval_ms = 200\n",
            kubeconfig.display()
        ),
    );
    let nginx1 = LabNginx::start_wrapped(&lab, 1, 8080, &web1.wrapper()).expect("nginx 1");
    let url1 = nginx1.url("/small");
    let served = wait_record(
        &d,
        "a server record labelled with the web pod",
        || {
            curl_in(&lab, 0, &loadgen, &[&url1]);
        },
        // From the load generator (nginx's readiness probe calls itself).
        |r| {
            r.side == "server"
                && label(r, "k8s_pod_name") == "web-5d8f7b9c4-aaaaa"
                && r.remote
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&format!("{client_ip}:")))
        },
    );
    for (k, v) in [
        ("k8s_namespace_name", "shop"),
        ("k8s_deployment_name", "web"),
        ("service_name", "web"),
        ("k8s_container_name", "app"),
        ("k8s_node_name", node),
        ("container_id", web1.id.as_str()),
        ("peer_k8s_pod_name", "loadgen-0"),
        ("peer_k8s_statefulset_name", "loadgen"),
        ("peer_k8s_namespace_name", "load"),
    ] {
        assert_eq!(label(&served, k), v, "{k} on {served:#?}");
    }
    let called = wait_record(
        &d,
        "a client record with the web pod as its peer",
        || {
            curl_in(&lab, 0, &loadgen, &[&url1]);
        },
        |r| {
            r.side == "client"
                && label(r, "container_id") == loadgen.id
                && label(r, "peer_k8s_pod_name") == "web-5d8f7b9c4-aaaaa"
        },
    );
    assert_eq!(label(&called, "k8s_statefulset_name"), "loadgen");
    assert_eq!(label(&called, "peer_service_name"), "web");
    let samples = parse_metrics(&http_get(d.port, "/metrics").unwrap());
    assert!(
        sum(
            &samples,
            &format!("{SERVER}_count"),
            &[
                ("k8s_deployment_name", "web"),
                ("k8s_namespace_name", "shop"),
                ("service_name", "web"),
                ("peer_service_name", "loadgen"),
            ]
        ) >= 1.0,
        "server metrics carry the pod's labels"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a")
                || r.contains("fieldSelector=spec.nodeName=node-a"))
    );

    // The pod is deleted, and recreated by its ReplicaSet with a new name, UID and address.
    // Its server starts, and a client holds one keep-alive connection to it, before the API
    // says anything of the new pod. The watch history is then compacted (410 Gone) and the
    // new pod is only visible to a relist: labels that follow it prove the daemon relisted,
    // and the same connection's later records prove it relabelled the connection.
    let lists_before = api.lists("Pod");
    api.delete("Pod", Some("shop"), "web-5d8f7b9c4-aaaaa");
    drop(nginx1);
    let nginx2 = LabNginx::start_wrapped(&lab, 2, 8080, &web2.wrapper()).expect("nginx 2");
    let url2 = nginx2.url("/small");
    let wrapper = loadgen.wrapper();
    let mut long: Vec<String> = wrapper.clone();
    long.extend(["ip", "netns", "exec", lab.host(0).ns()].map(String::from));
    long.extend(["curl", "-s", "-o", "/dev/null", "--rate", "5/s"].map(String::from));
    long.extend(std::iter::repeat_n(url2.clone(), 100));
    let mut keepalive = std::process::Command::new(&long[0])
        .args(&long[1..])
        .spawn()
        .expect("a keep-alive curl");
    let early = wait_record(
        &d,
        "a record of the keep-alive connection before the pod is known",
        || {},
        |r| {
            r.side == "server"
                && label(r, "container_id") == web2.id
                && r.remote
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&format!("{client_ip}:")))
        },
    );
    assert_eq!(
        label(&early, "k8s_pod_name"),
        "",
        "the new pod is not known yet"
    );
    assert_eq!(
        label(&early, "k8s_pod_uid"),
        web2.pod_uid,
        "its cgroup names it"
    );
    api.expire("Pod");
    api.apply_silently(web_pod("web-5d8f7b9c4-bbbbb", &web2, &web2_ip));
    api.apply(slice(&web2_ip, "web-5d8f7b9c4-bbbbb"));
    let relabeled = wait_record(
        &d,
        "the same connection's records to carry the new pod",
        || {},
        |r| r.side == "server" && r.remote == early.remote && !label(r, "k8s_pod_name").is_empty(),
    );
    assert_eq!(label(&relabeled, "k8s_pod_name"), "web-5d8f7b9c4-bbbbb");
    let _ = keepalive.kill();
    let _ = keepalive.wait();
    let served = wait_record(
        &d,
        "a server record labelled with the recreated pod",
        || {
            curl_in(&lab, 0, &loadgen, &[&url2]);
        },
        |r| {
            r.side == "server"
                && label(r, "k8s_pod_name") == "web-5d8f7b9c4-bbbbb"
                && r.remote
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&format!("{client_ip}:")))
        },
    );
    assert_eq!(label(&served, "container_id"), web2.id);
    assert_eq!(label(&served, "k8s_pod_uid"), web2.pod_uid);
    assert_eq!(label(&served, "k8s_deployment_name"), "web");
    let called = wait_record(
        &d,
        "a client record with the recreated pod as its peer",
        || {
            curl_in(&lab, 0, &loadgen, &[&url2]);
        },
        |r| {
            r.side == "client"
                && label(r, "container_id") == loadgen.id
                && r.remote.as_deref() == Some(&format!("{web2_ip}:8080"))
                && label(r, "peer_k8s_pod_name") == "web-5d8f7b9c4-bbbbb"
        },
    );
    assert_eq!(label(&called, "peer_k8s_pod_name"), "web-5d8f7b9c4-bbbbb");
    assert_eq!(label(&called, "peer_service_name"), "web");
    assert!(api.lists("Pod") > lists_before, "the 410 forced a relist");
    let samples = parse_metrics(&http_get(d.port, "/metrics").unwrap());
    assert!(sum(&samples, "sonde_kube_relists_total", &[]) >= 7.0);
    assert!(sum(&samples, "sonde_parse_connections_relabeled_total", &[]) >= 1.0);
    assert_eq!(
        sum(&samples, "sonde_kube_objects", &[("resource", "pods")]),
        2.0
    );
    // The network map's edges carry the same labels: the new address names the new pod,
    // the old one nobody any more.
    let server_labels = |ip: &str| -> Option<serde_json::Value> {
        let map: serde_json::Value =
            serde_json::from_str(&http_body(d.port, "/api/map").ok()?).ok()?;
        map["edges"]
            .as_array()?
            .iter()
            .find(|e| e["server_ip"] == json!(ip) && e["client_ip"] == json!(client_ip))
            .map(|e| e["server_labels"].clone())
    };
    wait_until(
        Duration::from_secs(20),
        "edge labels to follow the pod",
        || {
            let new = server_labels(&web2_ip)?;
            let old = server_labels(&web1_ip)?;
            (new["k8s_pod_name"] == json!("web-5d8f7b9c4-bbbbb") && old["k8s_pod_name"].is_null())
                .then_some(())
        },
    )
    .expect("edges relabelled");
    drop(nginx2);
}
