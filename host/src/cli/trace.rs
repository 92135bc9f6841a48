//! `sonde trace`: live socket connections and data chunks, one line per event.
use anyhow::Result;
use clap::Args;
use sonde_capture::CaptureOptions;

use super::capture::CaptureArgs;
use crate::config::Config;
use crate::trace::{Filter, TraceOptions};

#[derive(Args, Debug)]
pub struct TraceArgs {
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
    /// Also show what processes write to stdout/stderr (filtered by --pid and --comm).
    #[arg(long)]
    logs: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Payload bytes shown per data line.
    #[arg(long, default_value_t = 48)]
    payload_bytes: usize,
}

impl TraceArgs {
    /// The capture flags override the file's `[capture]` (the only section a trace reads).
    pub fn apply(&self, capture: &mut CaptureOptions) {
        self.capture.apply(capture);
    }

    fn options(self) -> TraceOptions {
        TraceOptions {
            filter: Filter {
                pids: self.pid,
                ports: self.port,
                comms: self.comm,
                states: self.states,
                logs: self.logs,
            },
            json: self.json,
            payload_bytes: self.payload_bytes,
        }
    }
}

/// Until SIGINT/SIGTERM. One thread is enough: the trace reads one ring buffer and prints.
pub fn run(args: TraceArgs, mut config: Config) -> Result<()> {
    args.apply(&mut config.capture);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::trace::run(&config.capture, args.options()))
}
