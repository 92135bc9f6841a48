//! `sonde map`: the network map of a running daemon, from its metrics address.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::map_view::MapOptions;

#[derive(Args, Debug)]
pub struct MapArgs {
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: SocketAddr,
    /// Read the cluster map from a `sonde hub` instead (`http://host:port`).
    #[arg(long)]
    hub: Option<String>,
    /// Refresh interval, seconds.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Edges shown.
    #[arg(long, default_value_t = 30)]
    limit: usize,
    /// Print once and exit.
    #[arg(long)]
    once: bool,
    /// With --once: print the topology as JSON (what /api/map serves).
    #[arg(long, requires = "once")]
    json: bool,
}

pub fn run(args: MapArgs) -> Result<()> {
    crate::map_view::run(&MapOptions {
        endpoint: super::api_address(args.endpoint, args.hub.as_deref())?,
        // At least 0.1 s: `from_secs_f64` panics on a negative value, and zero would poll
        // the daemon in a busy loop.
        interval: Duration::from_secs_f64(args.interval.max(0.1)),
        limit: args.limit,
        once: args.once,
        json: args.json,
    })
}
