//! `sonde hub`: the cluster view over Prometheus (see `sonde_hub`), served like a daemon's
//! API so `sonde map|incidents|report --hub URL` read it.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::config::Config;
use crate::hub::HubOptions;

#[derive(Args, Debug)]
pub struct HubArgs {
    /// Prometheus' HTTP API (or Thanos', Mimir's, VictoriaMetrics'): `http://host:port[/prefix]`.
    #[arg(long, env = "SONDE_PROMETHEUS")]
    pub prometheus: String,
    /// Address for the hub's API (/api/map, /api/incidents, /metrics).
    #[arg(long, default_value = "127.0.0.1:9470")]
    pub listen: SocketAddr,
    /// Seconds between steps (default: `[live] step_ms`); the daemons' step should match.
    #[arg(long)]
    pub step: Option<u64>,
    /// Steps of history read from Prometheus at start (range queries), so the detectors are
    /// warm at once; 0 reads none. Default: `[live] warmup_steps` + `window_steps`.
    #[arg(long)]
    pub backfill_steps: Option<u64>,
    /// How long one PromQL query may take, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub query_timeout: f64,
}

pub fn run(args: HubArgs, mut config: Config) -> Result<()> {
    if let Some(step) = args.step {
        config.live.step_ms = step.saturating_mul(1000);
    }
    config.live.validate()?;
    let prometheus = sonde_hub::promql::Endpoint::parse(&args.prometheus)?;
    anyhow::ensure!(
        args.query_timeout > 0.0 && args.query_timeout.is_finite(),
        "--query-timeout must be a positive number of seconds"
    );
    let options = HubOptions {
        prometheus,
        listen: args.listen,
        backfill_steps: args.backfill_steps.unwrap_or(u64::from(
            config.live.warmup_steps + config.live.window_steps,
        )),
        query_timeout: Duration::from_secs_f64(args.query_timeout),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(crate::hub::run(config, options))
}
