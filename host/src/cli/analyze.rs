//! `sonde analyze`: the root-cause engine on an incident bundle or a built-in scenario.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sonde_sandbox::PluginsConfig;

use crate::analyze::AnalyzeOptions;
use crate::config::Config;

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Bundle directory: topology.toml, metrics/*.csv, breakdowns/*.csv; or a timeline in the
    /// import layout: metrics.csv (time,service,metric,value), edges.csv, cases.csv.
    dir: Option<PathBuf>,
    /// Analyse a built-in scenario instead (see --list-examples).
    #[arg(long, conflicts_with = "dir")]
    example: Option<String>,
    /// With --example: also write the scenario as a bundle directory here.
    #[arg(long, requires = "example")]
    save: Option<PathBuf>,
    /// List the built-in scenarios.
    #[arg(long)]
    list_examples: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Extra fault-rule components (*.wasm) from this directory; repeatable.
    #[arg(long)]
    rules_dir: Vec<PathBuf>,
    /// Leave the embedded default fault tree out.
    #[arg(long)]
    no_default_rules: bool,
    /// Load the --rules-dir components without a signed manifest (your own, while you write
    /// them); otherwise they must be signed by a trusted key (`[plugins] trusted_keys`).
    #[arg(long, requires = "rules_dir")]
    allow_unsigned: bool,
    /// Plugin compile cache directory (default from the config; `none` for no cache).
    #[arg(long)]
    plugin_cache: Option<String>,
}

impl AnalyzeArgs {
    /// The rule flags override the file's `[plugins]` (the only section analysis reads).
    pub fn apply(&self, plugins: &mut PluginsConfig) {
        plugins.rule_dirs.extend(self.rules_dir.iter().cloned());
        if self.allow_unsigned {
            plugins
                .allow_unsigned_dirs
                .extend(self.rules_dir.iter().cloned());
        }
        if self.no_default_rules {
            plugins.default_rules = false;
        }
        if let Some(cache) = &self.plugin_cache {
            plugins.cache_dir =
                (cache != "none" && !cache.is_empty()).then(|| PathBuf::from(cache));
        }
    }
}

pub fn run(args: AnalyzeArgs, config: &Config) -> Result<()> {
    if args.list_examples {
        print!("{}", crate::analyze::examples());
        return Ok(());
    }
    let mut plugins = config.plugins.clone();
    args.apply(&mut plugins);
    let opts = AnalyzeOptions {
        dir: args.dir,
        example: args.example,
        save: args.save,
        json: args.json,
    };
    crate::analyze::run(&opts, &plugins, &config.live.rules)
}
