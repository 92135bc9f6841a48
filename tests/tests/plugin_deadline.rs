//! One deadline per plugin call: when a call needs a fresh instance, instantiation and the
//! call share the budget. A spinning rule whose instantiation is slow (here: 150 ms of it,
//! with a 200 ms deadline) is stopped within the deadline and one epoch tick of the call's
//! start, not after a full deadline for each. No root needed.
use std::time::{Duration, Instant};

use sonde_sandbox::fault_rules::{FaultRule, FaultRulePre, to_wit};
use sonde_sandbox::{
    EPOCH_TICK, FailureKind, Limits, PluginEngine, SandboxState, Sandboxed, WorldPre,
};
use sonde_sdk::fault_rule::{Incident, Metric, RuleInput, Subject, SubjectKind, metric as m};
use sonde_tests::wasm;

/// The fault-rule world, with `delay` spent in every instantiation (a component whose
/// instantiation is slow: big data segments, a long start function).
struct SlowPre {
    pre: FaultRulePre<SandboxState>,
    delay: Duration,
}

impl WorldPre for SlowPre {
    type Bindings = FaultRule;
    fn instantiate(
        &self,
        store: &mut wasmtime::Store<SandboxState>,
    ) -> wasmtime::Result<FaultRule> {
        std::thread::sleep(self.delay);
        self.pre.instantiate(store)
    }
}

fn input() -> RuleInput {
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
            metrics: vec![Metric {
                name: m::LATENCY_MEAN_MS.into(),
                before: 5.0,
                after: 60.0,
                anomalous: true,
            }],
            labels: vec![],
        },
        neighbours: vec![],
        attributions: vec![],
        changes: vec![],
    }
}

#[test]
fn instantiation_and_call_share_one_deadline() {
    let engine = PluginEngine::new(None).unwrap();
    let bytes = std::fs::read(wasm::bad_rule("spin")).unwrap();
    let (component, _) = engine.component(&bytes).unwrap();
    let linker = engine.linker_for(&component).unwrap();
    let pre = FaultRulePre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let deadline = Duration::from_millis(200);
    let limits = Limits {
        call_deadline_ms: deadline.as_millis() as u64,
        quarantine_after: 100,
        ..Limits::default()
    };
    let delay = Duration::from_millis(150);
    let mut sandbox = Sandboxed::new(SlowPre { pre, delay });
    let input = to_wit(&input());
    // Twice: the failed call drops its instance, so the second instantiates again.
    for round in 1..=2 {
        let started = Instant::now();
        let r = sandbox.call(&engine, &limits, |b, store| {
            b.call_evaluate(store, std::slice::from_ref(&input))
        });
        let took = started.elapsed();
        let Err(failure) = r else {
            panic!("round {round}: the spin loop was not stopped");
        };
        assert_eq!(failure.kind, FailureKind::Deadline, "{}", failure.message);
        assert!(
            took >= deadline,
            "round {round}: stopped before its deadline: {took:?}"
        );
        // Deadline + one tick, and some room for a loaded machine; a deadline for each part
        // would be at least 150 + 200 ms.
        assert!(
            took < deadline + EPOCH_TICK + Duration::from_millis(75),
            "round {round}: instantiation and call took {took:?} for a {deadline:?} deadline"
        );
        assert!(!sandbox.instantiated());
    }
    assert_eq!(sandbox.health.instantiations, 2);
    assert_eq!(sandbox.health.deadline_exceeded, 2);
}
