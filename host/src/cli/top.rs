//! `sonde top`: the busiest endpoints of a running daemon, from its metrics address.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::top::TopOptions;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: SocketAddr,
    /// Refresh interval, seconds.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Rows shown.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print one table after one interval and exit.
    #[arg(long)]
    once: bool,
}

pub fn run(args: TopArgs) -> Result<()> {
    crate::top::run(&TopOptions {
        endpoint: args.endpoint,
        // At least 0.1 s: `from_secs_f64` panics on a negative value, and zero would poll
        // the daemon in a busy loop.
        interval: Duration::from_secs_f64(args.interval.max(0.1)),
        limit: args.limit,
        once: args.once,
    })
}
