//! Prometheus text exposition of the daemon's own health: capture counters (every drop has
//! one), stream reassembly and connection tracking. Served by a small HTTP/1.1 responder:
//! one route, no keep-alive, nothing to configure beyond the listen address.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use sonde_common::stat;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::capture::CaptureStats;
use crate::conntrack::TrackerStats;

/// What `/metrics` shows; the daemon loop replaces it on every tick.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub capture: CaptureStats,
    pub tracker: TrackerStats,
    pub connections_open: usize,
    pub stream_data_bytes: u64,
    pub stream_truncated_bytes: u64,
    pub stream_lost_bytes: u64,
}

pub type Shared = Arc<Mutex<Snapshot>>;

pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(4096);
    let _ = writeln!(
        o,
        "# HELP sonde_build_info Sonde version.\n# TYPE sonde_build_info gauge"
    );
    let _ = writeln!(
        o,
        "sonde_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    counter_per_cpu(
        &mut o,
        "sonde_capture_events_lost_total",
        "Events the kernel could not put in the ring buffer (full), per CPU.",
        s,
        &[("data", stat::DATA_LOST), ("conn", stat::CONN_LOST)],
    );
    counter_per_cpu(
        &mut o,
        "sonde_capture_events_total",
        "Events written to the ring buffer, per CPU.",
        s,
        &[("data", stat::DATA_EVENTS), ("conn", stat::CONN_EVENTS)],
    );
    let totals: [(&str, &str, u64); 6] = [
        (
            "sonde_capture_bytes_truncated_total",
            "Bytes moved by captured syscalls beyond the per-syscall cap.",
            s.capture.total(stat::BYTES_TRUNCATED),
        ),
        (
            "sonde_capture_bytes_skipped_by_verdict_total",
            "Bytes not copied because the daemon told the kernel to stop.",
            s.capture.total(stat::BYTES_SKIPPED_BY_VERDICT),
        ),
        (
            "sonde_capture_inflight_full_total",
            "Syscalls not followed: in-flight table full.",
            s.capture.total(stat::INFLIGHT_FULL),
        ),
        (
            "sonde_capture_conn_table_full_total",
            "Connections not tracked: kernel connection table full.",
            s.capture.total(stat::CONN_TABLE_FULL),
        ),
        (
            "sonde_capture_read_failed_total",
            "Payload copies from user memory that failed.",
            s.capture.total(stat::READ_FAILED),
        ),
        (
            "sonde_capture_decode_errors_total",
            "Malformed ring-buffer records dropped by the daemon.",
            s.capture.decode_errors,
        ),
    ];
    for (name, help, v) in totals {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(
        o,
        "# HELP sonde_stream_bytes_total Reassembled stream bytes by outcome.\n# TYPE sonde_stream_bytes_total counter"
    );
    for (kind, v) in [
        ("data", s.stream_data_bytes),
        ("truncated", s.stream_truncated_bytes),
        ("lost", s.stream_lost_bytes),
    ] {
        let _ = writeln!(o, "sonde_stream_bytes_total{{kind=\"{kind}\"}} {v}");
    }
    let _ = writeln!(
        o,
        "# HELP sonde_connections_open Connections tracked now.\n# TYPE sonde_connections_open gauge\nsonde_connections_open {}",
        s.connections_open
    );
    let _ = writeln!(
        o,
        "# HELP sonde_connections_total Connections by lifecycle outcome.\n# TYPE sonde_connections_total counter"
    );
    for (kind, v) in s.tracker.lifecycle_counters() {
        let _ = writeln!(o, "sonde_connections_total{{event=\"{kind}\"}} {v}");
    }
    o
}

fn counter_per_cpu(o: &mut String, name: &str, help: &str, s: &Snapshot, kinds: &[(&str, u32)]) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
    for (cpu, slots) in s.capture.per_cpu.iter().enumerate() {
        for (kind, slot) in kinds {
            let _ = writeln!(
                o,
                "{name}{{cpu=\"{cpu}\",kind=\"{kind}\"}} {}",
                slots[*slot as usize]
            );
        }
    }
}

/// Bind the endpoint (so a taken port is a start-up error, not a silent background one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics endpoint {addr}"))?;
    tracing::info!(%addr, "serving /metrics");
    Ok(listener)
}

/// Serve `/metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Shared) -> Result<()> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            // One read is enough for a GET line; a slow or odd client just gets a 404/400.
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = &buf[..n];
            let (status, body) =
                if req.starts_with(b"GET /metrics ") || req.starts_with(b"GET /metrics?") {
                    let snap = shared.lock().map(|s| s.clone()).unwrap_or_default();
                    ("200 OK", render(&snap))
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
