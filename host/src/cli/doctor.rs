//! `sonde doctor`: what this kernel supports and whether every eBPF program loads.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::capture::CaptureArgs;
use crate::config::Config;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The capture flags, so the doctor verifies the programs as `run`/`trace` would load
    /// them (with a `--netns`/`--cgroup` scope, its checks are in the verified code).
    #[command(flatten)]
    capture: CaptureArgs,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit status 1 when the core socket capture cannot run here (the doctor's verdict).
pub fn run(args: DoctorArgs, config: &Config) -> Result<ExitCode> {
    let mut capture = config.capture.clone();
    args.capture.apply(&mut capture);
    let code = sonde_capture::doctor::run(&capture, args.json)?;
    Ok(exit_code(code))
}

/// The doctor's status as the process's; a status outside 0..=255 is a failure.
fn exit_code(code: i32) -> ExitCode {
    u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from)
}
