//! Cost of the fault-rule sandbox: compiling the default tree (cold, and from the cache),
//! instantiating it, and one batched `evaluate` through Wasm against the same rules compiled
//! natively, on the inputs of a real incident (the 100-service topology) and of a small one.
//!
//! `cargo bench -p sonde --bench fault_rules [-- --quick]`

use std::time::Instant;

use sonde_analysis::demarcation::{DemarcationConfig, walk};
use sonde_analysis::report::rule_input;
use sonde_analysis::rules::{NativeRules, RuleEngine, RuleInput};
use sonde_analysis::scenarios;
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::fault_rules::{DEFAULT_RULES_WASM, WasmRuleEngine};
use sonde_sandbox::{Limits, PluginEngine};

fn inputs(bundle: &sonde_analysis::replay::Bundle) -> Vec<RuleInput> {
    let window = bundle.window().unwrap();
    let topology = bundle.topology(window);
    let incident = bundle.incident(window);
    let w = walk(&topology, &incident.entry, &DemarcationConfig::default());
    w.candidates
        .iter()
        .map(|c| rule_input(&topology, &incident, &w, c, &[]))
        .collect()
}

fn time<R>(runs: usize, mut f: impl FnMut() -> R) -> f64 {
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(f());
    }
    t.elapsed().as_secs_f64() * 1e6 / runs as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 200 } else { 2000 };
    let cache = std::env::temp_dir().join(format!("sonde-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let cold = {
        let engine = PluginEngine::new(Some(&cache)).unwrap();
        let t = Instant::now();
        engine.component(DEFAULT_RULES_WASM).unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    let warm = {
        let engine = PluginEngine::new(Some(&cache)).unwrap();
        let t = Instant::now();
        engine.component(DEFAULT_RULES_WASM).unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    let _ = std::fs::remove_dir_all(&cache);
    println!("| step | time |\n|---|---:|");
    println!(
        "| compile the default tree ({} KiB of wasm), cold | {cold:.1} ms |",
        DEFAULT_RULES_WASM.len() / 1024
    );
    println!("| load it from the cache (our own artifact) | {warm:.2} ms |");
    let load = {
        let t = Instant::now();
        let _e = WasmRuleEngine::load(&PluginsConfig {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    println!("| load + link + instantiate + `info` (no cache) | {load:.1} ms |");

    println!(
        "\n| incident | candidates | Wasm µs/batch | native µs/batch | ratio |\n|---|---:|---:|---:|---:|"
    );
    let mut wasm = WasmRuleEngine::load(&PluginsConfig {
        cache_dir: None,
        limits: Limits::default(),
        ..Default::default()
    })
    .unwrap();
    let mut native = NativeRules::new().with("default", sonde_fta_rules::evaluate);
    for (name, bundle) in [
        (
            "endpoint-errors",
            scenarios::scenario("endpoint-errors").unwrap(),
        ),
        ("node-cpu", scenarios::scenario("node-cpu").unwrap()),
        ("100 services", scenarios::large(100, 0, 42).0),
    ] {
        let batch = inputs(&bundle);
        let w = time(runs, || wasm.evaluate(&batch));
        let n = time(runs, || native.evaluate(&batch));
        assert!(wasm.evaluate(&batch).failures.is_empty());
        println!(
            "| {name} | {} | {w:.1} | {n:.1} | {:.1}× |",
            batch.len(),
            w / n
        );
    }
}
