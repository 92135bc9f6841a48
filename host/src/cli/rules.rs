//! `sonde rules`: the fault-tree rules the configuration loads (the embedded default tree and
//! every `rule_dirs` component), each rule's tunable parameters with their defaults, ranges and
//! the values `[live.rules]` sets. Loads the components as `sonde run` does, so a bad
//! `[live.rules]` fails here with the same one line.
use anyhow::{Context as _, Result};
use clap::Args;
use sonde_sandbox::fault_rules::WasmRuleEngine;

use crate::config::Config;

#[derive(Args, Debug)]
pub struct RulesArgs {
    /// Print JSON (one object per rule: component, rule, doc, params) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RulesArgs, config: &Config) -> Result<()> {
    let engine = WasmRuleEngine::load_configured(&config.plugins, &config.live.rules)
        .context("loading the fault-tree rule components")?;
    if args.json {
        let rules: Vec<serde_json::Value> = engine
            .rule_params()
            .map(|(component, r)| {
                serde_json::json!({
                    "component": component,
                    "rule": r.rule,
                    "doc": r.doc,
                    "params": r.params,
                    "set": config.live.rules.get(&r.rule),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rules)?);
        return Ok(());
    }
    for (component, r) in engine.rule_params() {
        println!("[live.rules.{}]  ({component}) {}", r.rule, r.doc);
        for p in &r.params {
            let set = config.live.rules.get(&r.rule).and_then(|v| v.get(&p.name));
            let value = match set {
                Some(v) => format!("{v} (set; default {})", p.default),
                None => format!("{} (default)", p.default),
            };
            println!("  {} = {value}, {} to {}: {}", p.name, p.min, p.max, p.doc);
        }
    }
    Ok(())
}
