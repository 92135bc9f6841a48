//! `sonde`: the per-node daemon and its command-line tools. The commands live in
//! `sonde::cli`, one module each; this parses, starts logging and dispatches.
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use sonde::cli::{self, Cli, Command};
use sonde::config::Config;

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    // Checking the file is `config check`'s job, with its own one-line verdict: before the
    // file is read here.
    let command = match cli.command {
        Command::Config(command) => return Ok(cli::config::run(command, cli.config.as_deref())),
        command => command,
    };
    // Every other command reads the file (a broken one fails them all, the same way).
    let config = Config::load(cli.config.as_deref())?;
    match command {
        Command::Run(args) => {
            // One line: what is wrong, or "already running (pid N)".
            if let Err(e) = cli::run::run(args, config) {
                eprintln!("sonde: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Trace(args) => cli::trace::run(args, config)?,
        Command::Doctor(args) => return cli::doctor::run(args, &config),
        Command::Analyze(args) => cli::analyze::run(args, &config)?,
        Command::Top(args) => cli::top::run(args)?,
        Command::Map(args) => cli::map::run(args)?,
        Command::Incidents(args) => cli::incidents::run_list(args)?,
        Command::Report(args) => cli::incidents::run_report(args)?,
        Command::Demo(args) => cli::demo::run(args)?,
        Command::Hub(args) => {
            if let Err(e) = cli::hub::run(args, config) {
                eprintln!("sonde hub: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Plugin(command) => cli::plugin::run(command, &config)?,
        Command::Rules(args) => {
            if let Err(e) = cli::rules::run(args, &config) {
                eprintln!("sonde rules: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Config(_) => unreachable!("handled before the file is read"),
    }
    Ok(ExitCode::SUCCESS)
}
