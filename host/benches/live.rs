//! Cost and memory of the live diagnosis (`host/live/`), on synthetic records and map
//! edges shaped like a busy node: S services in a call chain, each with E endpoints, R records
//! per service per step.
//!
//! 1. `on_records`: the per-record accounting on the daemon loop (ns per record).
//! 2. `step`: closing one step (aggregation, history, detectors) once the history is full.
//! 3. The analysis of one incident (bundle from the whole history + attribution + demarcation
//!    + the default fault tree, natively compiled here; the daemon runs it as a component).
//! 4. The history's size: series, points, and bytes per the documented bound.
//!
//! `cargo bench -p sonde --bench live [-- --quick]`

use std::sync::Arc;
use std::time::Instant;

use sonde_analysis::rules::NativeRules;
use sonde_live::{Live, LiveSettings};
use sonde_netmap::export::{EdgeView, Topology};
use sonde_netmap::model::Counters;
use sonde_parse::{Record, TaggedRecord};
use sonde_sdk::protocol_parser::{ConnInfo, Endpoint, RequestRecord, Role, Transport};

fn conn(comm: &str) -> Arc<ConnInfo> {
    Arc::new(ConnInfo {
        id: 1,
        pid: 0,
        comm: comm.into(),
        local: Some(Endpoint {
            ip: "10.0.0.1".into(),
            port: 8080,
        }),
        remote: Some(Endpoint {
            ip: "10.0.0.2".into(),
            port: 40000,
        }),
        role: Role::Server,
        transport: Transport::Tcp,
        labels: Vec::new(),
    })
}

fn record(op: &str, ms: f64) -> Record {
    Record::Owned(RequestRecord {
        protocol: "http".into(),
        operation: op.into(),
        status: 200,
        request_ts_ns: 1_000_000,
        response_ts_ns: 1_000_000 + (ms * 1e6) as u64,
        ..Default::default()
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (services, endpoints, per_step, steps) = if quick {
        (20, 5, 200, 200)
    } else {
        (100, 10, 1000, 720)
    };
    let settings = LiveSettings {
        step_ms: 5000,
        retention_steps: 720,
        max_series: 20_000,
        ..Default::default()
    };
    let rules = NativeRules::new().with("default", sonde_fta_rules::evaluate);
    let mut live = Live::new(settings, "node-1".into(), Box::new(rules), 500);
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i:03}")).collect();
    let conns: Vec<Arc<ConnInfo>> = names.iter().map(|n| conn(n)).collect();
    let ops: Vec<String> = (0..endpoints).map(|e| format!("GET /api/e{e}")).collect();
    let mut totals = vec![Counters::default(); services];
    let mut record_ns = Vec::new();
    let mut step_ms = Vec::new();
    let t0 = 1_800_000_000_000u64;
    for step in 0..steps as u64 {
        // The last service turns slow for the last 6 steps: an incident at the first.
        let slow = step + 6 >= steps as u64;
        let mut batch = Vec::with_capacity(services * per_step);
        for (i, c) in conns.iter().enumerate() {
            let base = 2.0 + (services - i) as f64 + (step % 5) as f64 * 0.2;
            let ms = if slow && i == services - 1 {
                base + 300.0
            } else {
                base
            };
            for k in 0..per_step {
                batch.push(TaggedRecord {
                    conn: c.clone(),
                    record: record(&ops[k % endpoints], ms),
                });
            }
        }
        let t = Instant::now();
        live.on_records(&batch, t0 + step * 5000);
        record_ns.push(t.elapsed().as_secs_f64() * 1e9 / batch.len() as f64);
        let mut edges = Vec::new();
        for i in 0..services.saturating_sub(1) {
            let tot = &mut totals[i];
            tot.client_requests += per_step as u64;
            tot.server_requests += per_step as u64;
            tot.client_duration_ns += per_step as u64 * 2_000_000;
            tot.server_duration_ns += per_step as u64 * 1_500_000;
            tot.rtt_us_sum += 100;
            tot.rtt_samples += 1;
            edges.push(EdgeView {
                id: format!("{} -> {}", names[i], names[i + 1]),
                client_name: names[i].clone(),
                server_name: names[i + 1].clone(),
                total: *tot,
                ..Default::default()
            });
        }
        let topology = Topology {
            edges,
            ..Default::default()
        };
        let t = Instant::now();
        live.step(t0 + step * 5000, &topology);
        if step as usize >= steps / 2 {
            step_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let stats = live.stats().clone();
    record_ns.sort_by(f64::total_cmp);
    step_ms.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "services {services}, endpoints/service {endpoints}, records/service/step {per_step}, steps {steps}"
    );
    println!("on_records: median {:.0} ns/record", median(&record_ns));
    println!(
        "step (history full, no analysis): median {:.2} ms, max {:.2} ms",
        median(&step_ms),
        step_ms[step_ms.len() - 1]
    );
    println!(
        "history: {} series, {} points = {:.1} MiB of values",
        stats.series,
        stats.points,
        stats.points as f64 * 8.0 / (1 << 20) as f64
    );
    println!(
        "incidents {}, reports {}, last analysis {:.1} ms (bundle of the whole history + engine)",
        stats.incidents_opened, stats.reports, stats.last_analysis_ms
    );
    let board = live.board();
    if let Some(d) = board.incidents.first() {
        let cause = d
            .incident
            .top_cause
            .as_ref()
            .map(|c| (c.element.id(), c.category.clone()));
        println!(
            "incident {} entry {}: first cause {:?}",
            d.incident.id, d.incident.entry, cause
        );
    }
}
