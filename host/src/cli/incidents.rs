//! `sonde incidents` and `sonde report`: a running daemon's incident list, and one report.
use std::net::SocketAddr;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct IncidentsArgs {
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: SocketAddr,
    /// Read the cluster's incidents from a `sonde hub` instead (`http://host:port`).
    #[arg(long)]
    hub: Option<String>,
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
    /// Read the report from a `sonde hub` instead (`http://host:port`).
    #[arg(long)]
    hub: Option<String>,
    /// Print the report as JSON (what /api/incidents/<id> serves).
    #[arg(long)]
    json: bool,
}

pub fn run_list(args: IncidentsArgs) -> Result<()> {
    crate::incidents_view::run_list(
        super::api_address(args.endpoint, args.hub.as_deref())?,
        args.json,
    )
}

pub fn run_report(args: ReportArgs) -> Result<()> {
    crate::incidents_view::run_report(
        super::api_address(args.endpoint, args.hub.as_deref())?,
        &args.id,
        args.json,
    )
}
