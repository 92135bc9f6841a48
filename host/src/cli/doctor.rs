//! `sonde doctor`: what this kernel supports and whether every eBPF program loads.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::config::Config;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit status 1 when the core socket capture cannot run here (the doctor's verdict).
pub fn run(args: DoctorArgs, config: &Config) -> Result<ExitCode> {
    let code = sonde_capture::doctor::run(&config.capture, args.json)?;
    Ok(exit_code(code))
}

/// The doctor's status as the process's; a status outside 0..=255 is a failure.
fn exit_code(code: i32) -> ExitCode {
    u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from)
}
