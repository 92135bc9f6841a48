//! The hub's wiring: the rules, [`sonde_hub::Hub`] stepping on a timer, and the daemon's HTTP
//! API ([`crate::http`]) serving what it publishes — `/api/map`, `/api/incidents`,
//! `/api/incidents/<id>` and the hub's own `/metrics` — until Ctrl-C or SIGTERM.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use sonde_sandbox::fault_rules::WasmRuleEngine;

use crate::config::Config;
use crate::metrics::State;

/// What the hub runs with, checked.
pub struct HubOptions {
    pub prometheus: sonde_hub::promql::Endpoint,
    pub listen: SocketAddr,
    pub backfill_steps: u64,
    pub query_timeout: Duration,
}

pub async fn run(config: Config, options: HubOptions) -> Result<()> {
    let rules = WasmRuleEngine::load_configured(&config.plugins, &config.live.rules)
        .context("loading the fault-tree rule components")?;
    let loaded = rules.stats();
    let access = crate::http::Access::load(config.api.token_file.as_deref())?;
    let listener = crate::http::bind(options.listen).await?;
    let shared = Arc::new(State {
        rules: loaded,
        hub: Some(Mutex::new(sonde_hub::HubStats::default())),
        ..Default::default()
    });
    let server = {
        let shared = shared.clone();
        let settings = config.api.clone();
        tokio::spawn(async move { crate::http::serve(listener, shared, access, &settings).await })
    };
    let client = sonde_hub::promql::Client::new(options.prometheus.clone(), options.query_timeout);
    let step = Duration::from_millis(config.live.step_ms);
    let mut hub = sonde_hub::Hub::new(client, config.live.clone(), Box::new(rules));
    tracing::info!(
        prometheus = ?options.prometheus,
        step_s = step.as_secs(),
        queries_per_step = sonde_hub::FAMILIES.len(),
        "hub: reading the cluster from Prometheus"
    );
    if options.backfill_steps > 0 {
        match hub
            .backfill(sonde_capture::unix_now_ms(), options.backfill_steps)
            .await
        {
            Ok(()) => tracing::info!(
                steps = hub.stats().backfilled_steps,
                "hub: history filled from Prometheus"
            ),
            Err(e) => tracing::warn!("hub: no backfill: {e:#}"),
        }
    }
    let mut ticker = tokio::time::interval(step);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let changed = hub.step(sonde_capture::unix_now_ms()).await;
                publish(&shared, &hub, changed);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    server.abort();
    tracing::info!("hub stopped");
    Ok(())
}

/// What the API serves, after a step.
fn publish(shared: &State, hub: &sonde_hub::Hub, changed: bool) {
    if let Ok(mut board) = shared.live.lock() {
        if changed || board.stats.steps == 0 {
            *board = hub.board();
        } else {
            board.stats = hub.engine().stats().clone();
            board.latest = hub.engine().latest();
        }
    }
    if let Ok(mut net) = shared.network.lock() {
        net.topology = hub.topology().clone();
    }
    if let Some(stats) = &shared.hub
        && let Ok(mut s) = stats.lock()
    {
        *s = hub.stats().clone();
    }
}
