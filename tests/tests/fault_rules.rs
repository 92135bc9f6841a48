//! Fault-tree rules in the Wasm sandbox: the embedded default tree answers exactly as the same
//! rules compiled natively; misbehaving components (a spin loop, a panic, a memory bomb) are
//! each stopped by their own limit, counted, and do not disturb the default tree; a component
//! sees no environment, arguments or files; repeated failures quarantine a component; compiled
//! code is cached and only our own artifacts are loaded back. And `sonde analyze` end to end.
//! These tests need no root.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sonde_analysis::replay::analyze_bundle;
use sonde_analysis::report::{AnalysisConfig, Report};
use sonde_analysis::rules::{NativeRules, RuleEngine as _};
use sonde_analysis::scenarios;
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::fault_rules::{DEFAULT_RULES_WASM, WasmRuleEngine};
use sonde_sandbox::{CacheOutcome, Limits, PluginEngine};
use sonde_sdk::fault_rule::params::Settings;
use sonde_sdk::fault_rule::{
    Attribution, Category, Incident, Metric, Neighbour, Relation, RuleInput, Subject, SubjectKind,
    metric as m,
};
use sonde_tests::{sonde_bin_path, wasm};

fn plugins(rule_dirs: Vec<PathBuf>, limits: Limits) -> PluginsConfig {
    PluginsConfig {
        cache_dir: None,
        default_rules: true,
        // The fixtures here are unsigned: these tests are about the sandbox, not signatures
        // (tests/tests/plugin_signing.rs is), so their scratch directories allow unsigned ones.
        allow_unsigned_dirs: rule_dirs.clone(),
        rule_dirs,
        limits,
        ..PluginsConfig::default()
    }
}

fn metric(name: &str, before: f64, after: f64) -> Metric {
    Metric {
        name: name.into(),
        before,
        after,
        anomalous: before != after,
    }
}

fn rule_input(kind: SubjectKind, id: &str, metrics: Vec<Metric>) -> RuleInput {
    RuleInput {
        incident: Incident {
            id: "inc-1".into(),
            entry: "gateway".into(),
            kpi: m::LATENCY_MEAN_MS.into(),
            started_at_ms: 1_700_000_000_000,
        },
        subject: Subject {
            kind,
            id: id.into(),
            metrics,
            labels: vec![],
        },
        neighbours: vec![],
        attributions: vec![],
        changes: vec![],
    }
}

/// A network fault on an edge, a CPU-throttled service, errors on one endpoint.
fn three_candidates() -> Vec<RuleInput> {
    let mut edge = rule_input(
        SubjectKind::Edge,
        "gateway->cart",
        vec![
            metric(m::CALLER_LATENCY_MS, 6.0, 210.0),
            metric(m::CALLEE_LATENCY_MS, 5.0, 5.0),
            metric(m::RETRANSMIT_RATE, 0.0, 41.0),
            metric(m::RTT_MS, 0.3, 35.0),
        ],
    );
    for (id, relation) in [("gateway", Relation::Caller), ("cart", Relation::Callee)] {
        edge.neighbours.push(Neighbour {
            kind: SubjectKind::Service,
            id: id.into(),
            relation,
            abnormal: id == "gateway",
            score: 0.0,
            metrics: vec![],
            labels: vec![],
        });
    }
    let cpu = rule_input(
        SubjectKind::Service,
        "product",
        vec![
            metric(m::CPU_THROTTLED_RATIO, 0.0, 0.45),
            metric(m::CPU_USAGE_CORES, 0.8, 1.0),
            metric(m::LATENCY_MEAN_MS, 8.0, 95.0),
        ],
    );
    let mut code = rule_input(
        SubjectKind::Service,
        "cart",
        vec![
            metric(m::ERROR_RATE, 0.001, 0.06),
            metric(m::REQUEST_RATE, 200.0, 200.0),
        ],
    );
    code.attributions.push(Attribution {
        kpi: m::ERROR_RATE.into(),
        elements: vec![("endpoint".into(), "/checkout".into())],
        explanatory_power: 0.97,
        before: 0.001,
        after: 0.19,
    });
    vec![edge, cpu, code]
}

fn native(name: &str) -> Report {
    let mut rules = NativeRules::new().with("sonde-default-tree", sonde_fta_rules::evaluate);
    analyze_bundle(
        &scenarios::scenario(name).unwrap(),
        &mut rules,
        &AnalysisConfig::default(),
    )
    .unwrap()
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
fn sandboxed_default_tree_diagnoses_network_cpu_and_code_like_native() {
    let mut engine =
        WasmRuleEngine::load(&plugins(vec![], Limits::default())).expect("default tree loads");
    let inputs = three_candidates();
    let out = engine.evaluate(&inputs);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(out.diagnoses.len(), 3);
    let expected = [
        Category::Network,
        Category::CpuSaturation,
        Category::CodeError,
    ];
    for ((input, got), category) in inputs.iter().zip(&out.diagnoses).zip(expected) {
        assert!(got.iter().all(|d| d.rule == "sonde-default-tree"));
        let got: Vec<_> = got.iter().map(|d| d.diagnosis.clone()).collect();
        assert_eq!(
            got,
            sonde_fta_rules::evaluate(input),
            "{}: the sandbox answers as the native build",
            input.subject.id
        );
        assert_eq!(got[0].category, category, "{}: {got:?}", input.subject.id);
        assert!(got[0].confidence >= 0.8, "{got:?}");
    }
    assert!(
        out.diagnoses[0][0]
            .diagnosis
            .explanation
            .contains("retransmit_rate 0.0/s → 41.0/s")
    );
    assert!(
        out.diagnoses[2][0]
            .diagnosis
            .explanation
            .contains("endpoint=/checkout")
    );
    // One call for the whole batch (plus `info` at load), one instance.
    let h = engine.plugins[0].health();
    assert_eq!((h.calls, h.instantiations, h.failures), (2, 1, 0));
}

#[test]
fn sandboxed_default_tree_answers_like_the_native_build() {
    let mut engine =
        WasmRuleEngine::load(&plugins(vec![], Limits::default())).expect("default tree loads");
    assert_eq!(engine.plugins.len(), 1);
    assert_eq!(engine.plugins[0].name, "sonde-default-tree");
    for (name, _) in scenarios::SCENARIOS {
        let wasm = analyze_bundle(
            &scenarios::scenario(name).unwrap(),
            &mut engine,
            &AnalysisConfig::default(),
        )
        .unwrap();
        assert!(
            wasm.rule_failures.is_empty(),
            "{name}: {:?}",
            wasm.rule_failures
        );
        assert!(
            !wasm.root_causes[0].diagnoses.is_empty(),
            "{name}: the sandboxed rules said something"
        );
        assert_eq!(without_timing(wasm), without_timing(native(name)), "{name}");
    }
    // One call per incident, whatever the number of candidates (plus `info` at load).
    assert_eq!(
        engine.plugins[0].health().calls,
        scenarios::SCENARIOS.len() as u64 + 1
    );
    assert_eq!(engine.plugins[0].health().failures, 0);
}

/// `[live.rules]` values as the configuration holds them.
fn rule_settings(values: &[(&str, &str, f64)]) -> Settings {
    let mut s = Settings::new();
    for (rule, name, v) in values {
        s.entry(rule.to_string())
            .or_default()
            .insert(name.to_string(), *v);
    }
    s
}

#[test]
fn the_sandboxed_tree_declares_the_native_trees_parameters() {
    let engine =
        WasmRuleEngine::load(&plugins(vec![], Limits::default())).expect("default tree loads");
    let declared: Vec<_> = engine.rule_params().map(|(_, r)| r.clone()).collect();
    assert_eq!(declared, sonde_fta_rules::parameters());
    assert!(
        engine
            .rule_params()
            .all(|(component, _)| component == "sonde-default-tree")
    );
    assert!(declared.len() >= 10, "every branch: {declared:?}");
}

#[test]
fn parameters_change_what_the_sandboxed_tree_says() {
    let inputs = three_candidates();
    let cpu = |engine: &mut WasmRuleEngine| {
        let out = engine.evaluate(&inputs);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        out.diagnoses[1]
            .iter()
            .find(|d| d.diagnosis.category == Category::CpuSaturation)
            .map(|d| d.diagnosis.confidence)
    };
    let mut engine =
        WasmRuleEngine::load(&plugins(vec![], Limits::default())).expect("default tree loads");
    // 45% of periods throttled: 0.6 + 0.45, capped at 0.95.
    assert_eq!(cpu(&mut engine), Some(0.95));

    // A raised threshold: 45% throttled is noise now, the diagnosis is gone.
    let raised = rule_settings(&[("cpu-saturation", "throttled_min", 0.5)]);
    let mut engine = WasmRuleEngine::load_configured(&plugins(vec![], Limits::default()), &raised)
        .expect("valid parameters");
    assert_eq!(cpu(&mut engine), None);

    // A confidence: it shows in the answer, and the native build with the same values agrees.
    let lower = rule_settings(&[
        ("cpu-saturation", "confidence_throttled", 0.1),
        ("code-error", "confidence", 0.66),
    ]);
    let mut engine = WasmRuleEngine::load_configured(&plugins(vec![], Limits::default()), &lower)
        .expect("valid parameters");
    assert!((cpu(&mut engine).unwrap() - 0.55).abs() < 1e-9);
    let out = engine.evaluate(&inputs);
    let code = &out.diagnoses[2][0].diagnosis;
    assert_eq!(
        (code.category.clone(), code.confidence),
        (Category::CodeError, 0.66)
    );
    let params = sonde_fta_rules::params(&lower).unwrap();
    for (input, got) in inputs.iter().zip(&out.diagnoses) {
        let got: Vec<_> = got.iter().map(|d| d.diagnosis.clone()).collect();
        assert_eq!(got, sonde_fta_rules::evaluate_with(input, &params));
    }
    // Configuring made one fresh instance that got the values; calls then reuse it.
    let h = engine.plugins[0].health();
    assert_eq!((h.instantiations, h.failures), (2, 0));
}

#[test]
fn unknown_rules_parameters_and_values_out_of_range_are_refused() {
    for (settings, expected) in [
        (
            rule_settings(&[("cpu-saturaton", "confidence", 0.5)]),
            "live.rules.cpu-saturaton: no such rule (rules with parameters: network, ",
        ),
        (
            rule_settings(&[("cpu-saturation", "confidance", 0.5)]),
            "live.rules.cpu-saturation.confidance: no such parameter (cpu-saturation has: ",
        ),
        (
            rule_settings(&[("dns-failure", "confidence", 2.0)]),
            "live.rules.dns-failure.confidence = 2: out of range 0 to 1",
        ),
    ] {
        let err = WasmRuleEngine::load_configured(&plugins(vec![], Limits::default()), &settings)
            .err()
            .expect("refused");
        let err = format!("{err:#}");
        assert!(err.starts_with(expected), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn a_fault_rule_component_without_parameters_still_loads() {
    let dir = tempdir("plain-rule");
    std::fs::copy(wasm::bad_rule("plain"), dir.join("plain.wasm")).unwrap();
    let cfg = plugins(vec![dir.clone()], Limits::default());
    let mut engine = WasmRuleEngine::load(&cfg).expect("a fault-rule-only component loads");
    let plain = engine
        .plugins
        .iter()
        .find(|p| p.name == "bad-plain")
        .unwrap();
    assert!(!plain.configurable && plain.rules.is_empty());
    assert!(
        engine.plugins[0].configurable,
        "the default tree is configurable"
    );
    // The default tree beside it takes its parameters; both answer.
    engine
        .configure(&rule_settings(&[("dns-failure", "confidence", 0.5)]))
        .expect("the default tree's rule");
    let out = engine.evaluate(&three_candidates());
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert!(
        out.diagnoses[0]
            .iter()
            .all(|d| d.rule == "sonde-default-tree")
    );
    // Parameters named after it are no rule's.
    let err =
        WasmRuleEngine::load_configured(&cfg, &rule_settings(&[("bad-plain", "confidence", 0.5)]))
            .err()
            .expect("refused");
    assert!(
        format!("{err:#}").starts_with("live.rules.bad-plain: no such rule"),
        "{err:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sandboxed_and_native_trees_agree_with_non_default_parameters() {
    // Every branch's parameters moved, so a branch that ignored its values would show.
    let settings = rule_settings(&[
        ("network", "confidence", 0.6),
        ("network", "confidence_per_signal", 0.1),
        ("downstream-slow", "confidence", 0.65),
        ("cpu-saturation", "throttled_min", 0.2),
        ("cpu-saturation", "confidence_throttled", 0.3),
        ("memory-pressure", "high", 0.7),
        ("node-saturation", "min_services", 3.0),
        ("database-slow", "confidence", 0.8),
        ("dns-failure", "confidence", 0.75),
        ("code-error", "concentrated", 0.8),
        ("service-slow", "confidence_unattributed", 0.6),
        ("recent-change", "window_min", 30.0),
    ]);
    let mut engine =
        WasmRuleEngine::load_configured(&plugins(vec![], Limits::default()), &settings)
            .expect("valid parameters");
    let params = sonde_fta_rules::params(&settings).unwrap();
    let mut moved = 0;
    for (name, _) in scenarios::SCENARIOS {
        let bundle = scenarios::scenario(name).unwrap();
        let wasm = analyze_bundle(&bundle, &mut engine, &AnalysisConfig::default()).unwrap();
        assert!(
            wasm.rule_failures.is_empty(),
            "{name}: {:?}",
            wasm.rule_failures
        );
        let mut native = NativeRules::new().with_params(
            "sonde-default-tree",
            sonde_fta_rules::evaluate_with,
            params.clone(),
        );
        let native = analyze_bundle(&bundle, &mut native, &AnalysisConfig::default()).unwrap();
        assert_eq!(
            without_timing(wasm.clone()),
            without_timing(native),
            "{name}"
        );
        if without_timing(wasm) != without_timing(self::native(name)) {
            moved += 1;
        }
    }
    assert!(moved > 0, "the parameters changed some report");
}

#[test]
fn misbehaving_rules_are_stopped_by_their_own_limit() {
    let dir = tempdir("bad-rules");
    for feature in ["spin", "trap", "membomb"] {
        let wasm = wasm::bad_rule(feature);
        std::fs::copy(&wasm, dir.join(wasm.file_name().unwrap())).unwrap();
    }
    let limits = Limits {
        call_deadline_ms: 100,
        memory_bytes: 32 << 20,
        quarantine_after: 100,
        ..Limits::default()
    };
    let mut engine =
        WasmRuleEngine::load(&plugins(vec![dir.clone()], limits)).expect("all four load");
    let names: Vec<&str> = engine.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["sonde-default-tree", "bad-membomb", "bad-spin", "bad-trap"]
    );

    let expected = without_timing(native("endpoint-errors"));
    for round in 1..=2u64 {
        let started = Instant::now();
        let report = analyze_bundle(
            &scenarios::scenario("endpoint-errors").unwrap(),
            &mut engine,
            &AnalysisConfig::default(),
        )
        .unwrap();
        let took = started.elapsed();
        // The spin loop costs its deadline; everything else is fast. Generous bound for CI.
        assert!(took < Duration::from_secs(5), "round {round} took {took:?}");

        let failures: Vec<(&str, &str)> = report
            .rule_failures
            .iter()
            .map(|f| (f.rule.as_str(), f.error.as_str()))
            .collect();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures
                .iter()
                .any(|(r, e)| *r == "bad-spin" && e.contains("deadline")),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|(r, e)| *r == "bad-trap" && e.contains("trapped")),
            "{failures:?}"
        );
        // The panic message the guest printed is in the report.
        assert!(
            failures
                .iter()
                .any(|(r, e)| *r == "bad-trap" && e.contains("bad rule asked about")),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|(r, e)| *r == "bad-membomb" && e.contains("memory cap")),
            "{failures:?}"
        );

        // The default tree's answers are untouched by its neighbours' failures.
        let mut clean = without_timing(report);
        clean.rule_failures.clear();
        assert_eq!(clean, expected, "round {round}");

        let health = |name: &str| {
            engine
                .plugins
                .iter()
                .find(|p| p.name == name)
                .unwrap()
                .health()
                .clone()
        };
        let (spin, trap, bomb) = (
            health("bad-spin"),
            health("bad-trap"),
            health("bad-membomb"),
        );
        // Each stopped by its own limit, and only that one.
        assert_eq!(
            (spin.deadline_exceeded, spin.traps, spin.memory_cap_hits),
            (round, 0, 0),
            "{spin:?}"
        );
        assert_eq!(
            (trap.deadline_exceeded, trap.traps, trap.memory_cap_hits),
            (0, round, 0),
            "{trap:?}"
        );
        assert_eq!(
            (bomb.deadline_exceeded, bomb.traps, bomb.memory_cap_hits),
            (0, 0, round),
            "{bomb:?}"
        );
        // The spin ran its 100 ms deadline (plus at most one 5 ms epoch tick), not much more;
        // the others stopped at once. Generous upper bounds for a loaded CI machine.
        assert!(
            (100_000..1_500_000).contains(&spin.last_call_us),
            "spin stopped after {} µs",
            spin.last_call_us
        );
        assert!(
            bomb.last_call_us < 1_500_000,
            "memory bomb stopped after {} µs",
            bomb.last_call_us
        );
        assert!(
            trap.last_call_us < 1_000_000,
            "trap after {} µs",
            trap.last_call_us
        );
        // A failed instance is dropped; the next call gets a fresh one (the first evaluate
        // reuses the instance that answered `info` at load).
        assert_eq!(trap.instantiations, round);
        assert_eq!(health("sonde-default-tree").failures, 0);
        assert_eq!(health("sonde-default-tree").instantiations, 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repeated_failures_quarantine_a_rule() {
    let dir = tempdir("quarantine");
    std::fs::copy(wasm::bad_rule("trap"), dir.join("bad-trap.wasm")).unwrap();
    let limits = Limits {
        quarantine_after: 2,
        quarantine_ms: 60_000,
        ..Limits::default()
    };
    let mut engine = WasmRuleEngine::load(&PluginsConfig {
        default_rules: false,
        ..plugins(vec![dir.clone()], limits)
    })
    .unwrap();
    let bundle = scenarios::scenario("network-edge").unwrap();
    for _ in 0..3 {
        analyze_bundle(&bundle, &mut engine, &AnalysisConfig::default()).unwrap();
    }
    let report = analyze_bundle(&bundle, &mut engine, &AnalysisConfig::default()).unwrap();
    assert!(
        report.rule_failures[0].error.contains("quarantined"),
        "{:?}",
        report.rule_failures
    );
    let h = engine.plugins[0].health();
    assert_eq!((h.traps, h.skipped, h.quarantines), (2, 2, 1), "{h:?}");
    // With no rule answering, the engine still ranks and reports; categories are unknown.
    assert_eq!(report.root_causes[0].category, "unknown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rule_sees_no_environment_arguments_or_files() {
    let dir = tempdir("wasi-denied");
    for feature in ["snoop", "fs"] {
        std::fs::copy(
            wasm::bad_rule(feature),
            dir.join(format!("bad-{feature}.wasm")),
        )
        .unwrap();
    }
    // SAFETY: set before the engine exists; nothing else in this test reads the environment.
    unsafe { std::env::set_var("SONDE_TEST_SECRET", "do-not-leak") };
    let mut engine = WasmRuleEngine::load(&PluginsConfig {
        default_rules: false,
        ..plugins(vec![dir.clone()], Limits::default())
    })
    .unwrap();
    let out = engine.evaluate(&three_candidates()[..1]);
    // No clock unless the operator grants it: reading the time traps.
    let snoop_failure = out
        .failures
        .iter()
        .find(|f| f.rule == "bad-snoop")
        .expect("the clock is not granted");
    assert!(
        snoop_failure.error.contains("wasi:clocks/wall-clock"),
        "{snoop_failure:?}"
    );
    assert!(
        snoop_failure.error.contains("is not granted"),
        "{snoop_failure:?}"
    );
    // Granted, the rule sees the time, and still no environment or arguments.
    let mut granted = WasmRuleEngine::load(&PluginsConfig {
        default_rules: false,
        grant_clocks: true,
        ..plugins(vec![dir.clone()], Limits::default())
    })
    .unwrap();
    let granted_out = granted.evaluate(&three_candidates()[..1]);
    let snoop: Vec<&str> = granted_out.diagnoses[0]
        .iter()
        .filter(|d| d.rule == "bad-snoop")
        .map(|d| d.diagnosis.explanation.as_str())
        .collect();
    assert_eq!(snoop, ["env=0 args=0 clock=true"], "{granted_out:?}");
    // The filesystem is not linked: touching it traps (or fails), it never reads the file.
    let fs_answer: Vec<&str> = out.diagnoses[0]
        .iter()
        .filter(|d| d.rule == "bad-fs")
        .map(|d| d.diagnosis.explanation.as_str())
        .collect();
    let fs_failure = out
        .failures
        .iter()
        .find(|f| f.rule == "bad-fs")
        .expect("touching the filesystem traps");
    assert!(
        fs_failure
            .error
            .contains("`wasi:filesystem/preopens@0.2.6#get-directories` is not granted"),
        "{fs_failure:?}"
    );
    assert!(fs_answer.is_empty());
    assert!(
        out.failures
            .iter()
            .all(|f| f.rule == "bad-fs" || f.rule == "bad-snoop"),
        "{:?}",
        out.failures
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compiled_components_are_cached_and_only_our_own_are_loaded() {
    let dir = tempdir("plugin-cache");
    let bad = std::fs::read(wasm::bad_rule("trap")).unwrap();
    let first = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(
        first.component(DEFAULT_RULES_WASM).unwrap().1,
        CacheOutcome::Compiled
    );
    assert_eq!(first.component(&bad).unwrap().1, CacheOutcome::Compiled);
    let entry = first
        .cache()
        .entry_path(first.engine(), DEFAULT_RULES_WASM)
        .unwrap();
    let bad_entry = first.cache().entry_path(first.engine(), &bad).unwrap();
    assert_ne!(entry, bad_entry);
    assert_eq!(
        std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A new engine (a restart) loads the artifact instead of compiling.
    let second = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(
        second.component(DEFAULT_RULES_WASM).unwrap().1,
        CacheOutcome::Hit
    );
    assert_eq!(
        second
            .cache()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        second
            .cache()
            .misses
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Another component's artifact under this name fails the key check: recompiled, not run.
    std::fs::copy(&bad_entry, &entry).unwrap();
    let third = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(
        third.component(DEFAULT_RULES_WASM).unwrap().1,
        CacheOutcome::Compiled
    );
    assert_eq!(
        third
            .cache()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // A corrupted artifact (right key, garbage after it) is refused by wasmtime and recompiled.
    let mut bytes = std::fs::read(&entry).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&entry, &bytes).unwrap();
    let fourth = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(
        fourth.component(DEFAULT_RULES_WASM).unwrap().1,
        CacheOutcome::Compiled
    );
    assert_eq!(
        fourth.component(DEFAULT_RULES_WASM).unwrap().1,
        CacheOutcome::Hit,
        "rewritten"
    );

    // A cache directory others can write is never read from.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fifth = PluginEngine::new(Some(&dir)).unwrap();
    assert_eq!(
        fifth.component(DEFAULT_RULES_WASM).unwrap().1,
        CacheOutcome::Compiled
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn sonde(args: &[&str]) -> std::process::Output {
    Command::new(sonde_bin_path())
        .args(args)
        .output()
        .expect("running sonde")
}

fn json_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "sonde failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON report")
}

#[test]
fn sonde_analyze_replays_a_bundle_directory() {
    let dir = tempdir("analyze");
    let bundle = dir.join("bundle");
    let a = json_report(&sonde(&[
        "analyze",
        "--example",
        "network-edge",
        "--save",
        bundle.to_str().unwrap(),
        "--json",
        "--plugin-cache",
        "none",
    ]));
    assert_eq!(a["root_causes"][0]["category"], "network");
    assert_eq!(a["root_causes"][0]["element"]["kind"], "edge");
    assert!(bundle.join("topology.toml").is_file() && bundle.join("metrics/metrics.csv").is_file());

    let b = json_report(&sonde(&[
        "analyze",
        bundle.to_str().unwrap(),
        "--json",
        "--plugin-cache",
        "none",
    ]));
    assert_eq!(
        a["root_causes"], b["root_causes"],
        "the saved bundle replays to the same report"
    );

    let text = sonde(&[
        "analyze",
        bundle.to_str().unwrap(),
        "--plugin-cache",
        "none",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Root causes:") && text.contains("[network] edge gateway->cart"),
        "{text}"
    );

    // A broken bundle: a clear error naming the file and line, non-zero exit.
    let csv = bundle.join("metrics/metrics.csv");
    let mut rows = std::fs::read_to_string(&csv).unwrap();
    rows.push_str("1700009999,service:gateway,latency_mean_ms,fast\n");
    std::fs::write(&csv, rows).unwrap();
    let out = sonde(&[
        "analyze",
        bundle.to_str().unwrap(),
        "--plugin-cache",
        "none",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.csv:") && err.contains("\"fast\" is not a number"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sonde_analyze_and_config_check_take_live_rules_from_the_config() {
    let dir = tempdir("analyze-live-rules");
    let config = dir.join("sonde.toml");
    std::fs::write(
        &config,
        "[live.rules.network]\nconfidence = 0.6\nconfidence_per_signal = 0.0\n",
    )
    .unwrap();
    let args = |config: &std::path::Path| {
        sonde(&[
            "analyze",
            "--example",
            "network-edge",
            "--json",
            "--plugin-cache",
            "none",
            "--config",
            config.to_str().unwrap(),
        ])
    };
    let r = json_report(&args(&config));
    let d = &r["root_causes"][0]["diagnoses"][0]["diagnosis"];
    assert_eq!(d["category"], "network");
    assert_eq!(d["confidence"], 0.6, "the configured confidence: {d}");
    let listed = sonde(&["rules", "--config", config.to_str().unwrap()]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("[live.rules.cpu-saturation]")
            && listed.contains("  confidence = 0.6 (set; default 0.8)"),
        "{listed}"
    );

    // A misspelt parameter: `config check` and `analyze` both refuse it, in one line.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[live.rules.network]\nconfidance = 0.6\n").unwrap();
    let check = sonde(&["config", "check", bad.to_str().unwrap()]);
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains(
            "live.rules.network.confidance: no such parameter (network has: callee_explains,"
        ) && err.trim().lines().count() == 1,
        "{err}"
    );
    let out = args(&bad);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("live.rules.network.confidance: no such parameter"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sonde_analyze_rules_dir_adds_components() {
    let dir = tempdir("analyze-rules");
    std::fs::copy(wasm::bad_rule("trap"), dir.join("bad-trap.wasm")).unwrap();
    // An unsigned fixture: the config allows unsigned components from its directory.
    let config = dir.join("sonde.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\nallow_unsigned_dirs = [{:?}]\n",
            dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = json_report(&sonde(&[
        "--config",
        config.to_str().unwrap(),
        "analyze",
        "--example",
        "node-cpu",
        "--json",
        "--plugin-cache",
        "none",
        "--rules-dir",
        dir.to_str().unwrap(),
    ]));
    assert_eq!(out["root_causes"][0]["category"], "node-saturation");
    assert_eq!(out["rule_failures"][0]["rule"], "bad-trap");
    let _ = std::fs::remove_dir_all(&dir);
}
