//! `sonde analyze`: the root-cause engine on an incident bundle (docs/analyze.md), with the
//! fault-tree rules running as sandboxed components exactly as in the daemon.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use sonde_analysis::replay::{self, Bundle};
use sonde_analysis::report::AnalysisConfig;
use sonde_analysis::scenarios;

use sonde_sandbox::PluginsConfig;
use sonde_sandbox::fault_rules::WasmRuleEngine;

/// What to analyse and how to print it.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// A bundle directory.
    pub dir: Option<PathBuf>,
    /// A built-in scenario instead of a directory.
    pub example: Option<String>,
    /// Write the scenario as a bundle here before analysing it.
    pub save: Option<PathBuf>,
    pub json: bool,
}

/// The names and descriptions of the built-in scenarios.
pub fn examples() -> String {
    scenarios::SCENARIOS
        .iter()
        .map(|(name, what)| format!("{name:<16} {what}\n"))
        .collect()
}

fn load(opts: &AnalyzeOptions) -> Result<Bundle> {
    match (&opts.dir, &opts.example) {
        (Some(_), Some(_)) => bail!("give a bundle directory or --example, not both"),
        (None, None) => bail!("give a bundle directory (see docs/analyze.md) or --example <name>"),
        (Some(dir), None) => {
            Bundle::load(dir).with_context(|| format!("reading incident bundle {}", dir.display()))
        }
        (None, Some(name)) => {
            let bundle = scenarios::scenario(name).with_context(|| {
                format!("no built-in scenario {name:?}; there are:\n{}", examples())
            })?;
            if let Some(dir) = &opts.save {
                bundle
                    .write(dir)
                    .with_context(|| format!("writing the bundle to {}", dir.display()))?;
                tracing::info!(dir = %dir.display(), "bundle written");
            }
            Ok(bundle)
        }
    }
}

/// Analyse and print the report on stdout.
pub fn run(opts: &AnalyzeOptions, plugins: &PluginsConfig) -> Result<()> {
    let bundle = load(opts)?;
    let mut rules =
        WasmRuleEngine::load(plugins).context("loading the fault-tree rule components")?;
    let report = replay::analyze_bundle(&bundle, &mut rules, &AnalysisConfig::default())?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}
