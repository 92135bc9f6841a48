//! `/metrics` at the default caps: time and size of the page when every series source that
//! grows with traffic is full.
//!
//! The sources are filled through the calls the daemon makes, with the default settings:
//! - RED (`[metrics]`): every family (HTTP server, HTTP client, DNS, database client, other
//!   protocols, unanswered) driven past `max_series` by five services each, so the latency
//!   families together hold `max_series_total` series (the first ones filled take it) plus
//!   their overflow series; Kubernetes identity labels (pod,
//!   uid, container id, deployment, ...) on every connection, and a trace exemplar on every
//!   tenth record, as on a traced cluster;
//! - the network map (`[network]`): `max_edges` + 100 distinct client → server pairs through
//!   the connect/accept/state events and a flow-map reading with every counter non-zero.
//!
//! Not filled: container usage (9 series per container, `correlation.max_containers`), which
//! needs a `/proc` and cgroup tree; its share is estimated from the per-sample cost in
//! BENCHMARKS.md.
//!
//! Measured (median of rounds): the map's render on each read (both formats, as the daemon
//! does), the page's render per scrape in each format, and the gzip the API applies when asked.
//!
//! `cargo bench -p sonde --bench exposition [-- --quick]`

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sonde::metrics::{NetworkView, State, render_format};
use sonde_capture::events::{ConnChange, ConnEventKind, Role as SockRole, TcpState};
use sonde_capture::net::NetReading;
use sonde_common::net::{FlowKey, FlowStats};
use sonde_metrics::Format;
use sonde_netmap::{NetMap, NetworkSettings};
use sonde_parse::Record;
use sonde_pipeline::red::{Red, RedSettings};
use sonde_sdk::attributes as attr;
use sonde_sdk::protocol_parser::{ConnInfo, Endpoint, RequestRecord, Role, Transport};

const S: u64 = 1_000_000_000;
/// Services per RED family: five × `max_series_per_service` (500) > `max_series` (2000).
const SERVICES: usize = 5;

/// A connection of service `s` with the identity a pod on a cluster gets.
fn conn(s: usize, role: Role) -> Arc<ConnInfo> {
    let service = format!("checkout-service-{s}");
    let labels = [
        ("service_name", service.clone()),
        ("k8s_namespace_name", "shop-production".to_string()),
        ("k8s_pod_name", format!("{service}-7d9f8b6c5d-x2k4q")),
        (
            "k8s_pod_uid",
            format!("5f1c9e2a-3b4d-4e6f-8a7b-9c0d1e2f3a{s:02}"),
        ),
        (
            "k8s_node_name",
            "ip-10-0-12-34.eu-west-1.compute.internal".into(),
        ),
        ("k8s_container_name", service.clone()),
        (
            "container_id",
            format!("{:064x}", 0x9e37_79b9_7f4a_7c15u64 * (s as u64 + 1)),
        ),
        ("k8s_deployment_name", service.clone()),
    ];
    Arc::new(ConnInfo {
        id: s as u64,
        pid: 1000 + s as u32,
        comm: "java".into(),
        local: Some(Endpoint {
            ip: format!("10.42.{s}.17"),
            port: 8080,
        }),
        remote: Some(Endpoint {
            ip: "10.43.0.10".into(),
            port: 5432,
        }),
        role,
        transport: Transport::Tcp,
        labels: labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    })
}

fn record(protocol: &str, op: String, status: u32, i: usize, attrs: &[(&str, String)]) -> Record {
    let mut attributes: Vec<(String, String)> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    if i.is_multiple_of(10) {
        attributes.push((
            "traceparent".into(),
            format!("00-{:032x}-{:016x}-01", i as u128 * 7919 + 1, i as u64 + 1),
        ));
    }
    let ms = 1 + (i as u64 * 37) % 900;
    Record::Owned(RequestRecord {
        conn: 1,
        protocol: protocol.into(),
        operation: op,
        status,
        request_ts_ns: S,
        response_ts_ns: S + ms * 1_000_000,
        attributes,
        ..Default::default()
    })
}

/// Every RED family past its cap: `per_service` distinct label sets for each of
/// [`SERVICES`] services.
fn fill_red(red: &mut Red, per_service: usize) {
    for s in 0..SERVICES {
        let server = conn(s, Role::Server);
        let client = conn(s, Role::Client);
        for i in 0..per_service {
            let n = s * per_service + i;
            red.record(
                &server,
                &record(
                    "http",
                    format!("GET /api/v1/catalog/items{i}/{{id}}"),
                    200,
                    n,
                    &[],
                ),
            );
            red.record(
                &client,
                &record(
                    "http",
                    format!("POST /internal/inventory/reserve{i}"),
                    201,
                    n,
                    &[],
                ),
            );
            red.record(
                &client,
                &record(
                    "dns",
                    format!("A inventory-{i}.shop-production.svc.cluster.local"),
                    0,
                    n,
                    &[(attr::DNS_RESPONSE_CODE, "NOERROR".into())],
                ),
            );
            red.record(
                &client,
                &record(
                    "postgresql",
                    format!("SELECT order_lines_{i}"),
                    0,
                    n,
                    &[(attr::DB_SYSTEM_NAME, "postgresql".into())],
                ),
            );
            red.record(
                &server,
                &record("redis", format!("HGETALL session:{i}"), 0, n, &[]),
            );
            let mut unanswered = record("http", format!("GET /api/v1/cart{i}"), 0, n, &[]);
            if let Record::Owned(r) = &mut unanswered {
                r.response_ts_ns = 0;
                r.error = Some("no-response".into());
            }
            red.record(&server, &unanswered);
        }
    }
}

fn addr(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((a, port))
}

fn state(sock: u64, ts: u64, old: u8, new: u8, local: SocketAddr, peer: SocketAddr) -> ConnChange {
    let mut c = ConnChange::synthetic(ConnEventKind::State, sock, ts, local, peer);
    c.old_state = TcpState(old);
    c.new_state = TcpState(new);
    c
}

fn flow_key(local: SocketAddr, remote: SocketAddr) -> FlowKey {
    let v4 = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            b
        }
        std::net::IpAddr::V6(_) => unreachable!("IPv4 only here"),
    };
    FlowKey {
        family: libc::AF_INET as u16,
        sport: local.port(),
        dport: remote.port(),
        _pad: 0,
        saddr: v4(local),
        daddr: v4(remote),
    }
}

/// `pairs` local connections, each between its own client and server process, then one flow
/// reading with every counter set. Returns the map's edge count.
fn fill_netmap(map: &mut NetMap, pairs: usize) -> usize {
    let mut flows = Vec::with_capacity(2 * pairs);
    for i in 0..pairs {
        let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 1);
        let server = addr([10, 42, hi, lo], 8080);
        let client = addr([10, 43, hi, lo], 40_000);
        let (cs, ss) = (2 * i as u64 + 1, 2 * i as u64 + 2);
        let mut connect = state(
            cs,
            S,
            TcpState::CLOSE,
            TcpState::SYN_SENT,
            addr([10, 43, hi, lo], 0),
            server,
        );
        connect.task.comm = format!("frontend-{i}").into();
        map.on_conn(&connect);
        let mut accept = ConnChange::synthetic(ConnEventKind::Open, 0, S, server, client);
        accept.role = SockRole::Server;
        accept.task.comm = format!("backend-{i}").into();
        map.on_conn(&accept);
        map.on_conn(&state(
            cs,
            S + 2_000_000,
            TcpState::SYN_SENT,
            TcpState::ESTABLISHED,
            client,
            server,
        ));
        map.on_conn(&state(
            ss,
            S + 3_000_000,
            TcpState::SYN_RECV,
            TcpState::ESTABLISHED,
            server,
            client,
        ));
        let stats = FlowStats {
            first_ns: S,
            retransmits: 3,
            syn_retransmits: 1,
            rx_segments: 40,
            rx_bytes: 50_000,
            tx_acked_bytes: 4_000,
            srtt_us: 250,
            snd_cwnd: 10,
            ..Default::default()
        };
        flows.push((flow_key(client, server), stats));
        flows.push((flow_key(server, client), stats));
    }
    map.on_reading(
        &NetReading {
            flows,
            ..Default::default()
        },
        2 * S,
    );
    map.topology().edges.len()
}

/// Median wall time of `rounds` runs of `f`, and its last result.
fn median<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let t = Instant::now();
        last = Some(std::hint::black_box(f()));
        times.push(t.elapsed());
    }
    times.sort();
    (times[rounds / 2], last.expect("at least one round"))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // As the API does (host/src/http/page.rs): level 1.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn samples(page: &str) -> usize {
    page.lines().filter(|l| !l.starts_with('#')).count()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// `VmRSS` or `VmHWM` (peak) of this process, MiB.
fn memory_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets `VmHWM` to the current resident size (proc(5), `clear_refs` value 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rss_empty = memory_mib("VmRSS:");
    let rounds = if quick { 3 } else { 11 };
    let red_settings = RedSettings::default();
    let net_settings = NetworkSettings::default();
    let per_service = red_settings.max_series_per_service;

    let mut red = Red::new(&red_settings);
    fill_red(&mut red, per_service);
    let red_series = red.series_count();
    let mut map = NetMap::new(net_settings.clone(), Default::default());
    let edges = fill_netmap(&mut map, net_settings.max_edges + 100);

    let rss_full = memory_mib("VmRSS:");
    let (map_time, network) = median(rounds, || NetworkView::of(&map));
    let net_text = network.series(Format::Prometheus).clone().finish();
    let net_samples = samples(&net_text);
    let net_bytes = net_text.len() + network.series(Format::OpenMetrics).clone().finish().len();
    drop(net_text);
    let state = State {
        red: Mutex::new(red),
        network: Mutex::new(network),
        ..Default::default()
    };

    println!(
        "filled: RED {red_series} series ({SERVICES} services x {per_service} label sets per \
         family, max_series {}, max_series_total {}), network map {edges} edges (max_edges {}), \
         {net_samples} map samples",
        red_settings.max_series, red_settings.max_series_total, net_settings.max_edges
    );
    println!(
        "map render on each read (both formats): {} ms, {:.1} MB held (both formats)",
        ms(map_time),
        net_bytes as f64 / 1e6
    );
    println!(
        "resident: {rss_empty:.1} MiB empty, {rss_full:.1} MiB with RED and the map full \
         (+{:.1} MiB)",
        rss_full - rss_empty
    );
    println!(
        "| format | render (ms) | size (MB) | samples | gzip (ms) | gzip size (MB) | render's peak memory (MiB) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, format) in [
        ("Prometheus text", Format::Prometheus),
        ("OpenMetrics", Format::OpenMetrics),
    ] {
        let (render_time, page) = median(rounds, || render_format(&state, format));
        let (gzip_time, zipped) = median(rounds, || gzip(page.as_bytes()));
        // Memory one render takes beyond what is held, as the daemon sees it (the page's size
        // reserved from the previous render): the peak from here, less the resident now.
        let page_len = page.len();
        drop(page);
        reset_peak();
        let before = memory_mib("VmRSS:");
        let page = std::hint::black_box(render_format(&state, format));
        let render_peak = memory_mib("VmHWM:") - before;
        println!(
            "| {name} | {} | {:.2} | {} | {} | {:.2} | {render_peak:.0} |",
            ms(render_time),
            page_len as f64 / 1e6,
            samples(&page),
            ms(gzip_time),
            zipped.len() as f64 / 1e6,
        );
        if format == Format::Prometheus {
            let longest = page.lines().max_by_key(|l| l.len()).unwrap_or_default();
            let per = |prefix: &str| {
                let (n, b) = page
                    .lines()
                    .filter(|l| l.starts_with(prefix))
                    .fold((0, 0), |(n, b), l| (n + 1, b + l.len() + 1));
                format!(
                    "{prefix}*: {n} lines, {:.1} MB, {} B/line",
                    b as f64 / 1e6,
                    b / n.max(1)
                )
            };
            eprintln!("{}", per("http_server_request_duration_seconds"));
            eprintln!("{}", per("sonde_netmap_"));
            eprintln!("longest line ({} B): {longest}", longest.len());
        }
    }
    println!(
        "peak resident (VmHWM) through the renders: {:.1} MiB",
        memory_mib("VmHWM:")
    );
}
