//! One deadline per plugin call: when a call needs a fresh instance, instantiation and the
//! call share the budget. A spinning rule whose instantiation alone outlasts the deadline
//! (250 ms of it, with a 200 ms deadline) is stopped as soon as its call starts, not after a
//! fresh deadline for the call. The call's own time is measured apart from the instantiation's,
//! so a loaded machine that stretches the sleep does not decide the outcome. No root needed.
use std::sync::{Arc, Mutex};
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
    /// When the last instantiation ended.
    instantiated_at: Arc<Mutex<Option<Instant>>>,
}

impl WorldPre for SlowPre {
    type Bindings = FaultRule;
    fn instantiate(
        &self,
        store: &mut wasmtime::Store<SandboxState>,
    ) -> wasmtime::Result<FaultRule> {
        std::thread::sleep(self.delay);
        let bindings = self.pre.instantiate(store);
        *self.instantiated_at.lock().unwrap() = Some(Instant::now());
        bindings
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
    let delay = Duration::from_millis(250);
    let instantiated_at = Arc::new(Mutex::new(None));
    let mut sandbox = Sandboxed::new(SlowPre {
        pre,
        delay,
        instantiated_at: instantiated_at.clone(),
    });
    let input = to_wit(&input());
    // Twice: the failed call drops its instance, so the second instantiates again.
    for round in 1..=2 {
        let started = Instant::now();
        let r = sandbox.call(&engine, &limits, |b, store| {
            b.call_evaluate(store, std::slice::from_ref(&input))
        });
        let ended = Instant::now();
        let took = ended - started;
        let call = ended
            - instantiated_at
                .lock()
                .unwrap()
                .take()
                .expect("instantiated");
        let Err(failure) = r else {
            panic!("round {round}: the spin loop was not stopped");
        };
        assert_eq!(failure.kind, FailureKind::Deadline, "{}", failure.message);
        assert!(
            took >= deadline,
            "round {round}: stopped before its deadline: {took:?}"
        );
        // The budget was spent before the call began: the guest is stopped at its first
        // epoch check. A fresh deadline for the call would have let it spin at least 200 ms.
        assert!(
            call < deadline / 2,
            "round {round}: the call ran {call:?} after an instantiation that used up the \
             {deadline:?} deadline (whole call {took:?}, tick {EPOCH_TICK:?})"
        );
        assert!(!sandbox.instantiated());
    }
    assert_eq!(sandbox.health.instantiations, 2);
    assert_eq!(sandbox.health.deadline_exceeded, 2);
}
