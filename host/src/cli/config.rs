//! `sonde config check`: read and validate a configuration file as `sonde run` would, without
//! root and without touching the system; what a deployment's ConfigMap is checked with
//! (tests/tests/deploy.rs) before it reaches a node.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use crate::config::Config;

// The variants' doc comments are the subcommands' help texts.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Read a configuration file and check every value as `sonde run` does before it starts.
    /// Exit status 0 and `config FILE: ok`, or 1 and one line saying what is wrong.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The file (default: the global --config / $SONDE_CONFIG; without either, the defaults).
    file: Option<PathBuf>,
    /// Print the effective configuration (every key, defaults filled in) as JSON instead.
    #[arg(long)]
    json: bool,
}

/// Runs before `main` reads the file itself, so a broken file gives this command's one line.
pub fn run(command: ConfigCommand, global: Option<&Path>) -> ExitCode {
    let ConfigCommand::Check(args) = command;
    let path = args.file.as_deref().or(global);
    let name = path.map_or("(defaults)".into(), |p| p.display().to_string());
    match check(path) {
        Ok(config) if args.json => match serde_json::to_string_pretty(&config) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sonde: config {name}: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(_) => {
            println!("config {name}: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // `{:#}` chains the causes on one line; TOML's messages span lines (a caret
            // under the bad spot), which are joined too.
            let line = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("sonde: {line}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: Option<&Path>) -> Result<Config> {
    let config = Config::load(path)?;
    let name = path.map_or("(defaults)".into(), |p| p.display().to_string());
    config
        .validate()
        .with_context(|| format!("config file {name}"))?;
    Ok(config)
}
