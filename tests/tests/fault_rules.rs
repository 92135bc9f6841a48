//! Fault-tree rules in the Wasm sandbox: the embedded default tree answers exactly as the same
//! rules compiled natively; misbehaving components (a spin loop, a panic, a memory bomb) are
//! each stopped by their own limit, counted, and do not disturb the default tree; repeated
//! failures quarantine a component; compiled code is cached and only our own artifacts are
//! loaded back. And `sonde analyze` end to end. These tests need no root.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sonde::config::PluginsConfig;
use sonde::plugin::fault_rules::{DEFAULT_RULES_WASM, WasmRuleEngine};
use sonde::plugin::{CacheOutcome, Limits, PluginEngine};
use sonde_analysis::replay::analyze_bundle;
use sonde_analysis::report::{AnalysisConfig, Report};
use sonde_analysis::rules::NativeRules;
use sonde_analysis::scenarios;
use sonde_tests::{sonde_bin_path, wasm};

fn plugins(rule_dirs: Vec<PathBuf>, limits: Limits) -> PluginsConfig {
    PluginsConfig { cache_dir: None, default_rules: true, rule_dirs, limits }
}

fn native(name: &str) -> Report {
    let mut rules = NativeRules::new().with("sonde-default-tree", sonde_fta_rules::evaluate);
    analyze_bundle(&scenarios::scenario(name).unwrap(), &mut rules, &AnalysisConfig::default()).unwrap()
}

fn without_timing(mut r: Report) -> Report {
    r.elapsed_ms = 0.0;
    r
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sonde-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn sandboxed_default_tree_answers_like_the_native_build() {
    let mut engine = WasmRuleEngine::load(&plugins(vec![], Limits::default())).expect("default tree loads");
    assert_eq!(engine.plugins.len(), 1);
    assert_eq!(engine.plugins[0].name, "sonde-default-tree");
    for (name, _) in scenarios::SCENARIOS {
        let wasm = analyze_bundle(&scenarios::scenario(name).unwrap(), &mut engine, &AnalysisConfig::default()).unwrap();
        assert!(wasm.rule_failures.is_empty(), "{name}: {:?}", wasm.rule_failures);
        assert!(!wasm.root_causes[0].diagnoses.is_empty(), "{name}: the sandboxed rules said something");
        assert_eq!(without_timing(wasm), without_timing(native(name)), "{name}");
    }
    // One call per incident, whatever the number of candidates.
    assert_eq!(engine.plugins[0].health.calls, scenarios::SCENARIOS.len() as u64);
    assert_eq!(engine.plugins[0].health.failures, 0);
}

#[test]
fn misbehaving_rules_are_stopped_by_their_own_limit() {
    let dir = tempdir("bad-rules");
    for feature in ["spin", "trap", "membomb"] {
        let wasm = wasm::bad_rule(feature);
        std::fs::copy(&wasm, dir.join(wasm.file_name().unwrap())).unwrap();
    }
    let limits = Limits { call_deadline_ms: 100, memory_bytes: 32 << 20, quarantine_after: 100, ..Limits::default() };
    let mut engine = WasmRuleEngine::load(&plugins(vec![dir.clone()], limits)).expect("all four load");
    let names: Vec<&str> = engine.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sonde-default-tree", "bad-membomb", "bad-spin", "bad-trap"]);

    let expected = without_timing(native("endpoint-errors"));
    for round in 1..=2u64 {
        let started = Instant::now();
        let report = analyze_bundle(&scenarios::scenario("endpoint-errors").unwrap(), &mut engine, &AnalysisConfig::default()).unwrap();
        let took = started.elapsed();
        // The spin loop costs its deadline; everything else is fast. Generous bound for CI.
        assert!(took < Duration::from_secs(5), "round {round} took {took:?}");

        let failures: Vec<(&str, &str)> = report.rule_failures.iter().map(|f| (f.rule.as_str(), f.error.as_str())).collect();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures.iter().any(|(r, e)| *r == "bad-spin" && e.contains("deadline")), "{failures:?}");
        assert!(failures.iter().any(|(r, e)| *r == "bad-trap" && e.contains("trapped")), "{failures:?}");
        assert!(failures.iter().any(|(r, e)| *r == "bad-membomb" && e.contains("memory cap")), "{failures:?}");

        // The default tree's answers are untouched by its neighbours' failures.
        let mut clean = without_timing(report);
        clean.rule_failures.clear();
        assert_eq!(clean, expected, "round {round}");

        let health = |name: &str| engine.plugins.iter().find(|p| p.name == name).unwrap().health.clone();
        assert_eq!(health("bad-spin").deadline_exceeded, round);
        assert_eq!(health("bad-trap").traps, round);
        assert_eq!(health("bad-membomb").memory_cap_hits, round);
        // A failed instance is dropped; the next call gets a fresh one.
        assert_eq!(health("bad-trap").instantiations, round);
        assert_eq!(health("sonde-default-tree").failures, 0);
        assert_eq!(health("sonde-default-tree").instantiations, 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repeated_failures_quarantine_a_rule() {
    let dir = tempdir("quarantine");
    std::fs::copy(wasm::bad_rule("trap"), dir.join("bad-trap.wasm")).unwrap();
    let limits = Limits { quarantine_after: 2, quarantine_ms: 60_000, ..Limits::default() };
    let mut engine = WasmRuleEngine::load(&PluginsConfig { default_rules: false, ..plugins(vec![dir.clone()], limits) }).unwrap();
    let bundle = scenarios::scenario("network-edge").unwrap();
    for _ in 0..3 {
        analyze_bundle(&bundle, &mut engine, &AnalysisConfig::default()).unwrap();
    }
    let report = analyze_bundle(&bundle, &mut engine, &AnalysisConfig::default()).unwrap();
    assert!(report.rule_failures[0].error.contains("quarantined"), "{:?}", report.rule_failures);
    let h = &engine.plugins[0].health;
    assert_eq!((h.traps, h.skipped, h.quarantines), (2, 2, 1), "{h:?}");
    // With no rule answering, the engine still ranks and reports; categories are unknown.
    assert_eq!(report.root_causes[0].category, "unknown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compiled_components_are_cached_and_only_our_own_are_loaded() {
    let dir = tempdir("plugin-cache");
    let bad = std::fs::read(wasm::bad_rule("trap")).unwrap();
    let first = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(first.component(DEFAULT_RULES_WASM).unwrap().1, CacheOutcome::Compiled);
    assert_eq!(first.component(&bad).unwrap().1, CacheOutcome::Compiled);
    let entry = first.cache().entry_path(first.engine(), DEFAULT_RULES_WASM).unwrap();
    let bad_entry = first.cache().entry_path(first.engine(), &bad).unwrap();
    assert_ne!(entry, bad_entry);
    assert_eq!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777, 0o600);

    // A new engine (a restart) loads the artifact instead of compiling.
    let second = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(second.component(DEFAULT_RULES_WASM).unwrap().1, CacheOutcome::Hit);

    // Another component's artifact under this name fails the key check: recompiled, not run.
    std::fs::copy(&bad_entry, &entry).unwrap();
    let third = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(third.component(DEFAULT_RULES_WASM).unwrap().1, CacheOutcome::Compiled);
    assert_eq!(third.cache().rejected.load(std::sync::atomic::Ordering::Relaxed), 1);

    // A corrupted artifact (right key, garbage after it) is refused by wasmtime and recompiled.
    let mut bytes = std::fs::read(&entry).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&entry, &bytes).unwrap();
    let fourth = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(fourth.component(DEFAULT_RULES_WASM).unwrap().1, CacheOutcome::Compiled);
    assert_eq!(fourth.component(DEFAULT_RULES_WASM).unwrap().1, CacheOutcome::Hit, "rewritten");

    // A cache directory others can write is never read from.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fifth = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(fifth.component(DEFAULT_RULES_WASM).unwrap().1, CacheOutcome::Compiled);
    let _ = std::fs::remove_dir_all(&dir);
}

fn sonde(args: &[&str]) -> std::process::Output {
    Command::new(sonde_bin_path()).args(args).output().expect("running sonde")
}

fn json_report(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "sonde failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON report")
}

#[test]
fn sonde_analyze_replays_a_bundle_directory() {
    let dir = tempdir("analyze");
    let bundle = dir.join("bundle");
    let a = json_report(&sonde(&[
        "analyze", "--example", "network-edge", "--save", bundle.to_str().unwrap(), "--json", "--plugin-cache", "none",
    ]));
    assert_eq!(a["root_causes"][0]["category"], "network");
    assert_eq!(a["root_causes"][0]["element"]["kind"], "edge");
    assert!(bundle.join("topology.toml").is_file() && bundle.join("metrics/metrics.csv").is_file());

    let b = json_report(&sonde(&["analyze", bundle.to_str().unwrap(), "--json", "--plugin-cache", "none"]));
    assert_eq!(a["root_causes"], b["root_causes"], "the saved bundle replays to the same report");

    let text = sonde(&["analyze", bundle.to_str().unwrap(), "--plugin-cache", "none"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Root causes:") && text.contains("[network] edge gateway->cart"), "{text}");

    // A broken bundle: a clear error naming the file and line, non-zero exit.
    let csv = bundle.join("metrics/metrics.csv");
    let mut rows = std::fs::read_to_string(&csv).unwrap();
    rows.push_str("1700009999,service:gateway,latency_mean_ms,fast\n");
    std::fs::write(&csv, rows).unwrap();
    let out = sonde(&["analyze", bundle.to_str().unwrap(), "--plugin-cache", "none"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics.csv:") && err.contains("\"fast\" is not a number"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sonde_analyze_rules_dir_adds_components() {
    let dir = tempdir("analyze-rules");
    std::fs::copy(wasm::bad_rule("trap"), dir.join("bad-trap.wasm")).unwrap();
    let out = json_report(&sonde(&[
        "analyze", "--example", "node-cpu", "--json", "--plugin-cache", "none", "--rules-dir", dir.to_str().unwrap(),
    ]));
    assert_eq!(out["root_causes"][0]["category"], "node-saturation");
    assert_eq!(out["rule_failures"][0]["rule"], "bad-trap");
    let _ = std::fs::remove_dir_all(&dir);
}
