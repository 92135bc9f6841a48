//! `sonde analyze`: the root-cause engine on an incident bundle (docs/analyze.md), or on a
//! timeline in the import layout (`metrics.csv` + `cases.csv`, several incidents), with the
//! fault-tree rules running as sandboxed components exactly as in the daemon.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use sonde_analysis::import::Timeline;
use sonde_analysis::replay::{self, Bundle};
use sonde_analysis::report::AnalysisConfig;
use sonde_analysis::scenarios;

use sonde_sandbox::PluginsConfig;
use sonde_sandbox::fault_rules::WasmRuleEngine;
use sonde_sdk::fault_rule::params::Settings;

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

/// A directory in the import layout rather than a bundle: `metrics.csv`, no `topology.toml`.
fn is_timeline(opts: &AnalyzeOptions) -> bool {
    opts.dir
        .as_ref()
        .is_some_and(|d| d.join("metrics.csv").is_file() && !d.join("topology.toml").is_file())
}

/// Every incident of a timeline's `cases.csv`: from its injection time when given, else from
/// where the entry KPI's detector opens an incident inside its window.
fn run_timeline(
    dir: &std::path::Path,
    opts: &AnalyzeOptions,
    plugins: &PluginsConfig,
    rules_params: &Settings,
) -> Result<()> {
    let timeline = Timeline::load(dir)
        .with_context(|| format!("reading the timeline in {}", dir.display()))?;
    if timeline.cases.is_empty() {
        bail!(
            "{}: a timeline needs cases.csv (id,entry,kpi,root_cause,window_start,window_end,injected_at) to know which incidents to analyse",
            dir.display()
        );
    }
    let mut rules = WasmRuleEngine::load_configured(plugins, rules_params)
        .context("loading the fault-tree rule components")?;
    let mut out = std::io::stdout().lock();
    let mut reports = Vec::new();
    for case in &timeline.cases {
        let start = case.injected_at.or_else(|| timeline.case_start(case, true));
        let Some(start) = start else {
            if !opts.json {
                writeln!(
                    out,
                    "Incident {}: no anomaly of {} on {} opens an incident in its window\n",
                    case.id, case.kpi, case.entry
                )?;
            }
            continue;
        };
        let mut bundle = timeline.bundle(&case.entry, &case.kpi, start, case.window_end);
        bundle.spec.incident.id = Some(case.id.clone());
        let report = replay::analyze_bundle(&bundle, &mut rules, &AnalysisConfig::default())
            .with_context(|| format!("analysing incident {}", case.id))?;
        if opts.json {
            reports.push(report);
        } else {
            writeln!(out, "{}", report.to_text())?;
        }
    }
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &reports)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Analyse and print the report on stdout, with the rules' parameters as `[live.rules]` sets
/// them (so a replay diagnoses as the daemon did).
pub fn run(opts: &AnalyzeOptions, plugins: &PluginsConfig, rules_params: &Settings) -> Result<()> {
    if is_timeline(opts)
        && let Some(dir) = &opts.dir
    {
        return run_timeline(dir, opts, plugins, rules_params);
    }
    let bundle = load(opts)?;
    let mut rules = WasmRuleEngine::load_configured(plugins, rules_params)
        .context("loading the fault-tree rule components")?;
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
