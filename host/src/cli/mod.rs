//! The `sonde` command line: one module per command, each with its own flags (a clap `Args`
//! struct) and a `run` that does the command. `src/main.rs` parses, starts logging and
//! dispatches here. Flags that override the configuration file are applied onto `Config` by
//! the command that has them (`RunArgs::apply`, `TraceArgs::apply`, …), section by section.
//!
//! Only the daemon needs a multi-thread runtime; `trace` runs on a current-thread one, and
//! the other commands are synchronous (no runtime at all).
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod analyze;
pub mod capture;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod hub;
pub mod incidents;
pub mod map;
pub mod plugin;
pub mod rules;
pub mod run;
pub mod top;
pub mod trace;

/// The API address a view reads: `--hub URL` when given (a hub serves the same API as a
/// daemon), else the daemon's `--endpoint`.
pub(crate) fn api_address(
    endpoint: std::net::SocketAddr,
    hub: Option<&str>,
) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let Some(url) = hub else {
        return Ok(endpoint);
    };
    let e = sonde_hub::promql::Endpoint::parse(url)?;
    anyhow::ensure!(
        e.prefix.is_empty(),
        "--hub {url}: give the hub's address, without a path"
    );
    (e.host.as_str(), e.port)
        .to_socket_addrs()
        .map_err(|err| anyhow::anyhow!("--hub {url}: {err}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--hub {url}: no address"))
}

// No doc comment here: clap would take it for the long help text.
#[derive(Parser, Debug)]
#[command(
    name = "sonde",
    version,
    about = "Per-node eBPF observability: capture, parse, correlate, explain"
)]
pub struct Cli {
    /// Configuration file (TOML, see docs/sonde.example.toml). Flags override it.
    #[arg(long, short, global = true, env = "SONDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), e.g. `info`, `sonde=debug`.
    #[arg(long, global = true, env = "SONDE_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

// The variants' doc comments are the commands' help texts.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon on this node (capture, reassembly, Wasm parsers, RED metrics at /metrics).
    Run(run::RunArgs),
    /// Live view of socket connections and data chunks, one line per event.
    Trace(trace::TraceArgs),
    /// What this kernel supports and whether every eBPF program loads here, with its
    /// verifier cost (stack, processed instructions, time) against Sonde's budget. Loads and
    /// attaches every program, then drops them. Exit status 1 when the core socket capture cannot run.
    Doctor(doctor::DoctorArgs),
    /// Run the root-cause engine on an incident bundle (docs/analyze.md) and print the report.
    Analyze(analyze::AnalyzeArgs),
    /// Live table of the busiest endpoints (rate, error %, p50/p99) from a running daemon.
    Top(top::TopArgs),
    /// The network map from a running daemon: edges (client -> server:port) worst first, with
    /// connects, failures, retransmits, drops, RTT and request errors.
    Map(map::MapArgs),
    /// The exception event list of a running daemon: incidents, newest first, with the first
    /// root cause of each.
    Incidents(incidents::IncidentsArgs),
    /// One incident's report: phenomenon, key metrics, ranked root causes, propagation path,
    /// evidence, slow SQL and error-log templates.
    Report(incidents::ReportArgs),
    /// The cluster hub: reads every node daemon's series from Prometheus (PromQL over its
    /// HTTP API), runs the live diagnosis over the whole cluster and serves /api/map,
    /// /api/incidents and /metrics (read them with `sonde map|incidents|report --hub URL`).
    Hub(hub::HubArgs),
    /// Build the fault lab (a small microservice system in network namespaces), start Sonde
    /// on it, inject one fault and print the report when it arrives. Tears everything down.
    Demo(demo::DemoArgs),
    /// Configuration files: `sonde config check FILE` validates one as `sonde run` would.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// The fault-tree rules this configuration loads, with every tunable parameter, its
    /// default, range and the value `[live.rules.<rule>]` sets.
    Rules(rules::RulesArgs),
    /// Plugin authoring tools.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}
