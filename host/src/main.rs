//! `sonde`: the per-node daemon and its command-line tools.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use sonde::config::Config;
use sonde::trace::{Filter, TraceOptions};

#[derive(Parser, Debug)]
#[command(
    name = "sonde",
    version,
    about = "Per-node eBPF observability: capture, parse, correlate, explain"
)]
struct Cli {
    /// Configuration file (TOML, see docs/sonde.example.toml). Flags override it.
    #[arg(long, short, global = true, env = "SONDE_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), e.g. `info`, `sonde=debug`.
    #[arg(long, global = true, env = "SONDE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon on this node (capture, stream reassembly, /metrics).
    Run(RunArgs),
    /// Live view of socket connections and data chunks, one line per event.
    Trace(TraceArgs),
}

/// Capture flags shared by `run` and `trace`.
#[derive(Args, Debug, Default)]
struct CaptureArgs {
    /// Payload bytes copied per syscall (max 32768).
    #[arg(long)]
    capture_bytes: Option<u32>,
    /// Ring buffer size in bytes (power of two).
    #[arg(long)]
    ring_bytes: Option<u32>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Address for /metrics (default 127.0.0.1:9464); `none` disables it.
    #[arg(long)]
    metrics_listen: Option<String>,
}

#[derive(Args, Debug)]
struct TraceArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Only these processes (tgid); repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Only connections with this local or peer port; repeatable.
    #[arg(long)]
    port: Vec<u16>,
    /// Only processes with this command name; repeatable.
    #[arg(long)]
    comm: Vec<String>,
    /// Also show TCP state changes (they have no process context).
    #[arg(long)]
    states: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Payload bytes shown per data line.
    #[arg(long, default_value_t = 48)]
    payload_bytes: usize,
}

fn apply(config: &mut Config, args: &CaptureArgs) {
    if let Some(v) = args.capture_bytes {
        config.capture.capture_bytes = v;
    }
    if let Some(v) = args.ring_bytes {
        config.capture.ring_bytes = v;
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::load(cli.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => {
            apply(&mut config, &args.capture);
            if let Some(listen) = args.metrics_listen {
                config.metrics.listen = match listen.as_str() {
                    "none" | "" => None,
                    a => Some(
                        a.parse()
                            .map_err(|e| anyhow::anyhow!("--metrics-listen {a}: {e}"))?,
                    ),
                };
            }
            rt.block_on(sonde::daemon::run(config))
        }
        Command::Trace(args) => {
            apply(&mut config, &args.capture);
            let opts = TraceOptions {
                filter: Filter {
                    pids: args.pid,
                    ports: args.port,
                    comms: args.comm,
                    states: args.states,
                },
                json: args.json,
                payload_bytes: args.payload_bytes,
            };
            rt.block_on(sonde::trace::run(&config.capture, opts))
        }
    }
}
