//! Unit tests of the sandbox with the embedded default tree (the misbehaving components and the
//! cache trust rules are in tests/tests/fault_rules.rs, which builds its own fixtures).

use sonde_analysis::rules::{Metric, RuleEngine as _, RuleInput, Subject, SubjectKind};
use sonde_sdk::fault_rule::{Category, Incident, metric as m};

use super::fault_rules::{DEFAULT_RULES_WASM, WasmRuleEngine};
use super::*;
use crate::PluginsConfig;

fn config(limits: Limits) -> PluginsConfig {
    PluginsConfig {
        cache_dir: None,
        limits,
        ..Default::default()
    }
}

fn cpu_input() -> RuleInput {
    let metric = |name: &str, before, after| Metric {
        name: name.into(),
        before,
        after,
        anomalous: true,
    };
    RuleInput {
        incident: Incident {
            id: "i".into(),
            entry: "cart".into(),
            kpi: m::LATENCY_MEAN_MS.into(),
            started_at_ms: 1,
        },
        subject: Subject {
            kind: SubjectKind::Service,
            id: "cart".into(),
            metrics: vec![
                metric(m::CPU_THROTTLED_RATIO, 0.0, 0.4),
                metric(m::LATENCY_MEAN_MS, 5.0, 60.0),
            ],
            labels: vec![],
        },
        neighbours: vec![],
        attributions: vec![],
        changes: vec![],
    }
}

#[test]
fn the_default_tree_imports_nothing_beyond_the_granted_wasi() {
    let engine = PluginEngine::new(None).unwrap();
    let (component, _) = engine.component(DEFAULT_RULES_WASM).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(engine.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(!imports.is_empty());
    for name in &imports {
        assert!(
            // `sonde:plugin/*-types` are type-only interfaces (nothing to call).
            ["sonde:plugin/", "wasi:io/", "wasi:cli/", "wasi:random/"]
                .iter()
                .any(|p| name.starts_with(p)),
            "unexpected import {name} (all: {imports:?})"
        );
    }
    let linker = engine.linker_for(&component).unwrap();
    linker.instantiate_pre(&component).unwrap();
}

#[test]
fn every_fresh_instance_gets_the_parameters() {
    let settings: sonde_sdk::fault_rule::params::Settings = [(
        "cpu-saturation".to_string(),
        [("confidence_throttled".to_string(), 0.1)].into(),
    )]
    .into();
    let mut engine =
        WasmRuleEngine::load_configured(&config(Limits::default()), &settings).unwrap();
    let confidence = |engine: &mut WasmRuleEngine| {
        let out = engine.evaluate(&[cpu_input()]);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        out.diagnoses[0]
            .iter()
            .find(|d| d.diagnosis.category == Category::CpuSaturation)
            .map(|d| d.diagnosis.confidence)
            .unwrap()
    };
    // 0.1 + the 40% throttled share (the default would be 0.6 + 0.4, capped at 0.95).
    assert!((confidence(&mut engine) - 0.5).abs() < 1e-9);
    // As after a trap: a new instance, which must be configured like the first.
    engine.plugins[0].drop_instance();
    assert!((confidence(&mut engine) - 0.5).abs() < 1e-9);
    // Loaded (info), configured, and re-made once.
    assert_eq!(engine.plugins[0].health().instantiations, 3);
    // Configured again without it: back to the default.
    engine.configure(&Default::default()).unwrap();
    assert_eq!(confidence(&mut engine), 0.95);
}

#[test]
fn default_tree_in_the_sandbox_matches_native() {
    let mut engine = WasmRuleEngine::load(&config(Limits::default())).unwrap();
    let input = cpu_input();
    let out = engine.evaluate(std::slice::from_ref(&input));
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let got: Vec<_> = out.diagnoses[0]
        .iter()
        .map(|d| d.diagnosis.clone())
        .collect();
    assert_eq!(got, sonde_fta_rules::evaluate(&input));
    assert_eq!(got[0].category, Category::CpuSaturation);
    // An empty batch crosses no boundary.
    assert!(engine.evaluate(&[]).diagnoses.is_empty());
    let stats = engine.stats();
    assert_eq!(stats[0].world, "fault-rule");
    assert_eq!(stats[0].source, "embedded");
    assert_eq!(
        (stats[0].health.calls, stats[0].health.instantiations),
        (2, 1),
        "info + one evaluate, one instance"
    );
}

#[test]
fn pooling_allocator_runs_the_same_rules() {
    let mut engine = WasmRuleEngine::load(&PluginsConfig {
        pooling_instances: 4,
        ..config(Limits::default())
    })
    .unwrap();
    let input = cpu_input();
    for _ in 0..3 {
        let out = engine.evaluate(std::slice::from_ref(&input));
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        assert_eq!(
            out.diagnoses[0][0].diagnosis,
            sonde_fta_rules::evaluate(&input)[0]
        );
    }
    // A second rule component (the same tree, as an operator's file) needs a second slot.
    let dir = std::env::temp_dir().join(format!("sonde-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("copy.wasm"), DEFAULT_RULES_WASM).unwrap();
    let two = |slots| PluginsConfig {
        pooling_instances: slots,
        rule_dirs: vec![dir.clone()],
        // An unsigned copy: this test is about pool slots, not signatures.
        allow_unsigned_dirs: vec![dir.clone()],
        ..config(Limits::default())
    };
    let err = WasmRuleEngine::load(&two(1))
        .err()
        .expect("one slot for two plugins");
    assert!(
        format!("{err:#}").contains("pooling_instances = 1 but there are 2"),
        "{err:#}"
    );
    // With two slots it gets further, and is refused for its name: same as the default tree's.
    let err = WasmRuleEngine::load(&two(2)).err().expect("duplicate name");
    assert!(
        format!("{err:#}").contains("already loaded from embedded"),
        "{err:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fuel_bounds_a_call_when_enabled() {
    // Plenty of fuel: the rules answer.
    let mut engine = WasmRuleEngine::load(&config(Limits {
        fuel: 50_000_000,
        ..Limits::default()
    }))
    .unwrap();
    assert!(engine.evaluate(&[cpu_input()]).failures.is_empty());
    // A few instructions' worth: the first call (instantiation + `info`) runs out.
    let err = WasmRuleEngine::load(&config(Limits {
        fuel: 10,
        ..Limits::default()
    }))
    .err()
    .expect("out of fuel");
    let err = format!("{err:#}");
    assert!(err.contains("fuel"), "{err}");
}

#[test]
fn quarantine_doubles_and_success_resets_the_count() {
    let limits = Limits {
        quarantine_after: 2,
        quarantine_ms: 1000,
        ..Limits::default()
    };
    let mut h = Health::default();
    let t0 = Instant::now();
    h.failed(FailureKind::Trap, "x".into(), limits.quarantine(), t0);
    h.succeeded();
    h.failed(FailureKind::Deadline, "y".into(), limits.quarantine(), t0);
    assert!(!h.quarantined(t0), "a success in between resets the count");
    h.failed(FailureKind::MemoryCap, "z".into(), limits.quarantine(), t0);
    assert!(h.quarantined(t0 + Duration::from_millis(999)));
    assert!(!h.quarantined(t0 + Duration::from_millis(1000)));
    h.failed(FailureKind::Fuel, "a".into(), limits.quarantine(), t0);
    h.failed(FailureKind::Fuel, "b".into(), limits.quarantine(), t0);
    assert!(
        h.quarantined(t0 + Duration::from_millis(1999)),
        "second quarantine is twice as long"
    );
    assert_eq!(
        (
            h.traps,
            h.deadline_exceeded,
            h.memory_cap_hits,
            h.fuel_exhausted
        ),
        (1, 1, 1, 2)
    );
    assert_eq!((h.quarantines, h.skipped, h.calls), (2, 2, 6));
    assert_eq!(h.last_error.as_deref(), Some("b"));
}

#[test]
fn deadline_ticks_are_a_floor() {
    let l = |ms| {
        Limits {
            call_deadline_ms: ms,
            ..Limits::default()
        }
        .deadline_ticks()
    };
    assert_eq!((l(0), l(1), l(5), l(6), l(200)), (1, 2, 2, 3, 41));
}

#[test]
fn the_rule_engine_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<WasmRuleEngine>();
    send::<PluginEngine>();
}

#[test]
fn table_and_instance_limits_stop_a_component_at_instantiation() {
    use crate::parsers::{HTTP_PARSER_WASM, WasmParser, engine};
    let cfg = PluginsConfig {
        cache_dir: None,
        ..Default::default()
    };
    let engine = engine(&cfg).unwrap();
    // Within the defaults it loads.
    WasmParser::load(engine.clone(), Limits::default(), HTTP_PARSER_WASM, "t").unwrap();
    let tiny_table = Limits {
        table_elements: 1,
        ..Limits::default()
    };
    let e = WasmParser::load(engine.clone(), tiny_table, HTTP_PARSER_WASM, "t")
        .err()
        .expect("a 1-element table cap refuses the component");
    assert!(format!("{e:#}").contains("table"), "{e:#}");
    let one_instance = Limits {
        instances: 1,
        ..Limits::default()
    };
    let e = WasmParser::load(engine, one_instance, HTTP_PARSER_WASM, "t")
        .err()
        .expect("a component of several core instances exceeds 1");
    assert!(format!("{e:#}").contains("instance"), "{e:#}");
}

#[test]
fn plugins_config_is_validated() {
    PluginsConfig::default().validate().unwrap();
    let bad = |c: PluginsConfig, key: &str| {
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.contains(key), "{e}");
    };
    bad(
        PluginsConfig {
            parser_queue_jobs: 0,
            ..Default::default()
        },
        "plugins.parser_queue_jobs",
    );
    bad(
        PluginsConfig {
            batch_bytes: 0,
            ..Default::default()
        },
        "plugins.batch_bytes",
    );
    bad(
        PluginsConfig {
            max_component_bytes: 0,
            ..Default::default()
        },
        "plugins.max_component_bytes",
    );
    bad(
        PluginsConfig {
            max_component_bytes: 4 << 30,
            ..Default::default()
        },
        "plugins.max_component_bytes",
    );
    for (limits, key) in [
        (
            Limits {
                call_deadline_ms: 0,
                ..Limits::default()
            },
            "call_deadline_ms",
        ),
        (
            Limits {
                memory_bytes: 1,
                ..Limits::default()
            },
            "memory_bytes",
        ),
        (
            Limits {
                instances: 0,
                ..Limits::default()
            },
            "instances",
        ),
        (
            Limits {
                quarantine_after: 0,
                ..Limits::default()
            },
            "quarantine_after",
        ),
    ] {
        bad(config(limits), key);
    }
}

#[test]
fn plugin_files_are_regular_and_bounded() {
    let dir = std::env::temp_dir().join(format!("sonde-read-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.wasm");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    assert_eq!(read_plugin_file(&file, 4096, "k").unwrap().len(), 4096);
    let e = read_plugin_file(&file, 4095, "[plugins] max_component_bytes").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
    assert!(
        e.to_string().contains("4096 bytes") && e.to_string().contains("max_component_bytes"),
        "{e}"
    );
    // A FIFO nobody writes to: refused at once, not a read that never ends.
    let fifo = dir.join("fifo.wasm");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let e = read_plugin_file(&fifo, 1 << 20, "k").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(e.to_string().contains("a FIFO, not a regular file"), "{e}");
    let e = read_plugin_file(&dir, 1 << 20, "k").unwrap_err();
    assert!(e.to_string().contains("a directory"), "{e}");
    let e = read_plugin_file(std::path::Path::new("/dev/zero"), 1 << 20, "k").unwrap_err();
    assert!(e.to_string().contains("a device"), "{e}");
    let e = read_plugin_file(&dir.join("missing.wasm"), 1 << 20, "k").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    let _ = std::fs::remove_dir_all(&dir);
}
