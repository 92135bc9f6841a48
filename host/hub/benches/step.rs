//! One hub step and one cluster report against a real Prometheus holding synthetic series
//! for N nodes × S services: the series contract of `sonde_live::series` written as
//! OpenMetrics, imported with `promtool tsdb create-blocks-from openmetrics` (Debian's
//! `prometheus` package), served by `prometheus` on loopback; the hub reads it over HTTP.
//!
//! `cargo bench -p sonde-hub --bench step` (env: `NODES` 100, `SERVICES` 1000, `CALLS` 2000,
//! `ENDPOINTS` 3 per service, `STEPS` 40 of 5 s). One service's latency (and its caller's)
//! rises for the last quarter of the steps, so the engine opens an incident and reports it.
//! Prints: the import, the backfill (one range query per family over all steps, the engine
//! stepping through them, the report included), then the median of 5 live steps (5 instant
//! queries each).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sonde_analysis::rules::NativeRules;
use sonde_hub::Hub;
use sonde_hub::promql::{Client, Endpoint};
use sonde_live::LiveSettings;
use sonde_live::series;

const STEP_S: u64 = 5;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic jitter in [-1, 1).
fn jitter(seed: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 2000) as f64 / 1000.0 - 1.0
}

struct Shape {
    nodes: usize,
    services: usize,
    calls: usize,
    endpoints: usize,
    steps: usize,
}

/// The OpenMetrics text of every family, `steps` points each from `t0`.
fn synthesize(s: &Shape, t0: u64, out: &mut impl std::io::Write) -> std::io::Result<usize> {
    let mut series = 0;
    let fault_from = s.steps * 3 / 4;
    let node_of = |svc: usize| svc % s.nodes;
    // svc-0 calls svc-1 (the slow one); the other calls are spread around.
    let call = |i: usize| -> (usize, usize) {
        if i == 0 {
            (0, 1)
        } else {
            (
                i % s.services,
                (i % s.services + 1 + i / s.services * 7) % s.services,
            )
        }
    };
    let mut line = String::new();
    let mut write_series =
        |out: &mut dyn std::io::Write, labels: &str, name: &str, value: &dyn Fn(usize) -> f64| {
            for k in 0..s.steps {
                line.clear();
                let _ = writeln!(
                    line,
                    "{name}{{{labels}}} {:.4} {}",
                    value(k),
                    t0 + k as u64 * STEP_S
                );
                out.write_all(line.as_bytes())?;
            }
            std::io::Result::Ok(())
        };
    writeln!(out, "# TYPE {} gauge", series::SERVICE_INFO)?;
    for svc in 0..s.services {
        let labels = format!(
            "node=\"node-{}\",service=\"svc-{svc}\",protocol=\"http\",kind=\"\"",
            node_of(svc)
        );
        write_series(out, &labels, series::SERVICE_INFO, &|_| 1.0)?;
        series += 1;
    }
    writeln!(out, "# TYPE {} gauge", series::SERVICE_VALUE)?;
    for svc in 0..s.services {
        let slow = |k: usize| (svc <= 1 && k >= fault_from) as u8 as f64 * 200.0;
        let metrics: [(&str, &dyn Fn(usize) -> f64); 4] = [
            ("request_rate", &|k| 20.0 + jitter((svc * 1000 + k) as u64)),
            ("error_rate", &|k| {
                0.001 * (1.0 + jitter((svc * 2000 + k) as u64))
            }),
            ("latency_mean_ms", &|k| {
                10.0 + jitter((svc * 3000 + k) as u64) + slow(k)
            }),
            ("cpu_usage_cores", &|k| {
                0.2 + 0.01 * jitter((svc * 4000 + k) as u64)
            }),
        ];
        for (metric, value) in metrics {
            let labels = format!(
                "node=\"node-{}\",service=\"svc-{svc}\",metric=\"{metric}\"",
                node_of(svc)
            );
            write_series(out, &labels, series::SERVICE_VALUE, value)?;
            series += 1;
        }
    }
    writeln!(out, "# TYPE {} gauge", series::EDGE_VALUE)?;
    let mut seen = std::collections::HashSet::new();
    for i in 0..s.calls {
        let (a, b) = call(i);
        // A series twice would be out of order for the import.
        if a == b || !seen.insert((a, b)) {
            continue;
        }
        let slow = |k: usize| (i == 0 && k >= fault_from) as u8 as f64 * 200.0;
        let metrics: [(&str, &dyn Fn(usize) -> f64); 5] = [
            ("request_rate", &|k| 10.0 + jitter((i * 5000 + k) as u64)),
            ("caller_latency_ms", &|k| {
                11.0 + jitter((i * 6000 + k) as u64) + slow(k)
            }),
            ("callee_latency_ms", &|k| {
                10.0 + jitter((i * 7000 + k) as u64) + slow(k)
            }),
            ("retransmit_rate", &|_| 0.0),
            ("rtt_ms", &|k| 0.2 + 0.01 * jitter((i * 8000 + k) as u64)),
        ];
        // Seen by the caller's node (the callee's node sees the same edge in a real cluster;
        // one side keeps the file small).
        for (metric, value) in metrics {
            let labels = format!(
                "node=\"node-{}\",service=\"svc-{a}\",peer_service=\"svc-{b}\",metric=\"{metric}\"",
                node_of(a)
            );
            write_series(out, &labels, series::EDGE_VALUE, value)?;
            series += 1;
        }
    }
    writeln!(out, "# TYPE {} gauge", series::NODE_VALUE)?;
    for n in 0..s.nodes {
        for metric in [
            "node_cpu_ratio",
            "node_memory_ratio",
            "node_runqueue_delay_ms",
        ] {
            let labels = format!("node=\"node-{n}\",metric=\"{metric}\"");
            write_series(out, &labels, series::NODE_VALUE, &|k| {
                0.3 + 0.01 * jitter((n * 9000 + k) as u64)
            })?;
            series += 1;
        }
    }
    writeln!(out, "# TYPE {} gauge", series::ENDPOINT_VALUE)?;
    for svc in 0..s.services {
        for e in 0..s.endpoints {
            for measure in ["requests", "errors", "latency_sum_ms"] {
                let labels = format!(
                    "node=\"node-{}\",service=\"svc-{svc}\",endpoint=\"GET /e{e}\",measure=\"{measure}\"",
                    node_of(svc)
                );
                write_series(out, &labels, series::ENDPOINT_VALUE, &|k| {
                    5.0 + jitter((svc * 10_000 + e * 100 + k) as u64)
                })?;
                series += 1;
            }
        }
    }
    writeln!(out, "# EOF")?;
    Ok(series)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ready(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
    let mut a = String::new();
    let _ = s.read_to_string(&mut a);
    a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(dir: &Path) {
    let shape = Shape {
        nodes: env("NODES", 100),
        services: env("SERVICES", 1000),
        calls: env("CALLS", 2000),
        endpoints: env("ENDPOINTS", 3),
        steps: env("STEPS", 40),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Two hours back, on the step grid: blocks of the past, nothing in Prometheus' head.
    let t0 = (now - 7200) / STEP_S * STEP_S;
    let text = dir.join("series.om");
    let started = Instant::now();
    let series = {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&text).unwrap());
        let n = synthesize(&shape, t0, &mut f).unwrap();
        f.flush().unwrap();
        n
    };
    let data = dir.join("data");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&text)
        .arg(&data)
        .stdout(Stdio::null())
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&text);
    println!(
        "{} nodes, {} services, {} calls, {} endpoints each: {series} series × {} steps, generated and imported in {:.1} s",
        shape.nodes,
        shape.services,
        shape.calls,
        shape.endpoints,
        shape.steps,
        started.elapsed().as_secs_f64()
    );
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=30d")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(port) {
        assert!(Instant::now() < deadline, "prometheus not ready in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(
        Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        Duration::from_secs(60),
    );
    let settings = LiveSettings {
        step_ms: STEP_S * 1000,
        warmup_steps: 10,
        window_steps: 3,
        max_series: 200_000,
        ..Default::default()
    };
    let rules = Box::new(NativeRules::new().with("default", sonde_fta_rules::evaluate));
    let mut hub = Hub::new(client, settings, rules);
    let end_ms = (t0 + shape.steps as u64 * STEP_S) * 1000;
    let started = Instant::now();
    rt.block_on(hub.backfill(end_ms, shape.steps as u64))
        .expect("backfill");
    let backfill = started.elapsed().as_secs_f64();
    let board = hub.board();
    let stats = hub.engine().stats();
    println!(
        "backfill: {} steps from 5 range queries and the engine in {backfill:.2} s; {} incidents, {} reports, last report {:.0} ms, last engine step {:.0} ms",
        hub.stats().backfilled_steps,
        board.incidents.len(),
        stats.reports,
        stats.last_analysis_ms,
        stats.last_step_ms,
    );
    if let Some(first) = board.incidents.iter().find(|d| d.incident.entry == "svc-0") {
        println!(
            "  the injected fault: entry {}, first cause {:?}",
            first.incident.entry,
            first
                .incident
                .top_cause
                .as_ref()
                .map(|c| (c.element.id(), c.category.clone()))
        );
    }
    let mut times = Vec::new();
    let mut engine_ms = Vec::new();
    for i in 0..5u64 {
        // Live steps at the last instants of the data (instant queries at a past time).
        let at = end_ms - (5 - i) * STEP_S * 1000;
        let started = Instant::now();
        rt.block_on(hub.step(at));
        times.push(started.elapsed().as_secs_f64() * 1e3);
        engine_ms.push(hub.engine().stats().last_step_ms);
    }
    let s = hub.stats();
    println!(
        "live step: median {:.0} ms (engine {:.0} ms), {} queries, {} series read, {} failed",
        median(times),
        median(engine_ms),
        s.last_step_queries,
        s.last_step_series,
        s.steps_failed
    );
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` of benches passes nothing: skip the
    // minutes of import there, saying so.
    if !std::env::args().any(|a| a == "--bench") {
        println!("step bench: run with `cargo bench -p sonde-hub --bench step`");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sonde-hub-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
