//! `sonde incidents` and `sonde report`: a running daemon's incident list, and one report.
use std::net::SocketAddr;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct IncidentsArgs {
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: SocketAddr,
    /// Print the list as JSON (what /api/incidents serves).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Incident id (from `sonde incidents`), or `latest`.
    id: String,
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: SocketAddr,
    /// Print the report as JSON (what /api/incidents/<id> serves).
    #[arg(long)]
    json: bool,
}

pub fn run_list(args: IncidentsArgs) -> Result<()> {
    crate::incidents_view::run_list(args.endpoint, args.json)
}

pub fn run_report(args: ReportArgs) -> Result<()> {
    crate::incidents_view::run_report(args.endpoint, &args.id, args.json)
}
