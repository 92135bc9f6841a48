//! `sonde run`: capture, track connections, reassemble streams, expose health metrics.
//! Later stages (Wasm parsers, correlation, diagnosis) consume the ordered stream segments.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::capture::reassembly::{GapReason, SegmentBody};
use crate::capture::{Capture, monotonic_now_ns};
use crate::config::Config;
use crate::conntrack::{ConnTracker, StreamEvent};
use crate::metrics::{self, Snapshot};

/// How often reorder holes and closed connections are aged and metrics refreshed.
const TICK: Duration = Duration::from_millis(100);

pub async fn run(config: Config) -> Result<()> {
    let mut capture = Capture::start(&config.capture)?;
    let mut tracker = ConnTracker::new(config.streams.tracker_config());
    let shared = Arc::new(Mutex::new(Snapshot::default()));
    let server = match config.metrics.listen {
        Some(addr) => Some(tokio::spawn(metrics::serve(
            metrics::bind(addr).await?,
            shared.clone(),
        ))),
        None => None,
    };
    tracing::info!("sonde running; Ctrl-C to stop");

    let mut batch = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut snap = Snapshot::default();
    let mut ticker = tokio::time::interval(TICK);
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = capture.next_batch(&mut batch, 4096) => {
                r?;
                for ev in batch.drain(..) {
                    tracker.on_event(&ev, &mut out);
                }
                account(&mut snap, &mut out);
            }
            _ = ticker.tick() => {
                tracker.tick(monotonic_now_ns(), &mut out);
                account(&mut snap, &mut out);
                let _ = tracker.take_finished();
                snap.capture = capture.stats()?;
                snap.tracker = tracker.stats().clone();
                snap.connections_open = tracker.len();
                if let Ok(mut s) = shared.lock() {
                    *s = snap.clone();
                }
            }
        }
    }
    if let Some(server) = server {
        server.abort();
    }
    drop(capture);
    // Flush what is still waiting in reorder buffers so it is accounted for.
    tracker.finish_all(&mut out);
    account(&mut snap, &mut out);
    tracing::info!("stopped; all programs detached");
    Ok(())
}

/// Stream events feed the metrics for now; the parser runtime will consume them next.
fn account(snap: &mut Snapshot, out: &mut Vec<StreamEvent>) {
    for ev in out.drain(..) {
        if let StreamEvent::Segment { segment, .. } = ev {
            match segment.body {
                SegmentBody::Data(b) => snap.stream_data_bytes += b.len() as u64,
                SegmentBody::Gap {
                    len,
                    reason: GapReason::Truncated,
                } => snap.stream_truncated_bytes += len,
                SegmentBody::Gap {
                    len,
                    reason: GapReason::Lost,
                } => snap.stream_lost_bytes += len,
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what a DaemonSet's kubelet sends).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
