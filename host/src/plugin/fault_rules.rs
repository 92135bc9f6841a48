//! Fault-tree rules as sandboxed components: the daemon side of the `fault-rule` world.
//!
//! [`WasmRuleEngine`] implements the analysis engine's `RuleEngine`: one `evaluate` call per
//! component per incident carries every candidate. A component that traps, loops past its
//! deadline or hits its memory cap yields a `RuleFailure` for that incident; the other
//! components still answer, and the failing one gets a fresh instance next time (or a
//! quarantine after repeated failures).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use sonde_analysis::rules as plain;
use wasmtime::Store;

use super::{FailureKind, Health, Limits, PluginEngine, SandboxState, arm_deadline, classify};
use crate::config::PluginsConfig;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "fault-rule",
});

use self::sonde::plugin::fault_types as w;

/// The default fault tree (`plugins/fta-rules`), built by build.rs for wasm32-wasip2.
pub static DEFAULT_RULES_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sonde_fta_rules.wasm"));

/// One loaded rule component.
pub struct RulePlugin {
    /// From the component's `info`.
    pub name: String,
    pub version: String,
    /// `embedded` or the file it came from.
    pub source: String,
    pre: FaultRulePre<SandboxState>,
    instance: Option<(Store<SandboxState>, FaultRule)>,
    pub health: Health,
}

/// Every installed fault-rule component, run in the sandbox.
pub struct WasmRuleEngine {
    engine: PluginEngine,
    limits: Limits,
    pub plugins: Vec<RulePlugin>,
}

fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

impl WasmRuleEngine {
    /// The embedded default tree (unless disabled) and every `*.wasm` in the rule directories.
    /// A component that does not load is an error naming its file: the operator asked for it.
    pub fn load(cfg: &PluginsConfig) -> Result<Self> {
        let mut engine = Self::new(PluginEngine::new(cfg.cache_dir.as_deref())?, cfg.limits);
        if cfg.default_rules {
            engine.add(DEFAULT_RULES_WASM, "embedded").context("loading the embedded default fault tree")?;
        }
        for dir in &cfg.rule_dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("reading rule directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect();
            files.sort();
            for file in files {
                engine.add_file(&file)?;
            }
        }
        Ok(engine)
    }

    pub fn new(engine: PluginEngine, limits: Limits) -> Self {
        Self { engine, limits, plugins: Vec::new() }
    }

    pub fn plugin_engine(&self) -> &PluginEngine {
        &self.engine
    }

    pub fn add_file(&mut self, file: &Path) -> Result<()> {
        let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        self.add(&wasm, &file.display().to_string()).with_context(|| format!("loading rule component {}", file.display()))
    }

    /// Compile (or fetch from the cache), link, and ask the component who it is.
    pub fn add(&mut self, wasm: &[u8], source: &str) -> Result<()> {
        let (component, _) = self.engine.component(wasm)?;
        let mut linker = self.engine.linker()?;
        linker.define_unknown_imports_as_traps(&component).map_err(wasm_err)?;
        let pre = FaultRulePre::new(linker.instantiate_pre(&component).map_err(wasm_err)?).map_err(wasm_err)
            .context("the component does not implement the sonde:plugin/fault-rule world")?;
        let mut plugin = RulePlugin {
            name: String::new(),
            version: String::new(),
            source: source.to_string(),
            pre,
            instance: None,
            health: Health::default(),
        };
        let info = plugin.call(&self.engine, &self.limits, |bindings, store| bindings.call_info(store)).map_err(|(_, e)| anyhow::anyhow!(e))?;
        plugin.name = info.name;
        plugin.version = info.version;
        tracing::info!(rule = %plugin.name, version = %plugin.version, source, "fault-rule component loaded");
        self.plugins.push(plugin);
        Ok(())
    }
}

impl RulePlugin {
    /// One call in the sandbox: instantiate if needed, arm the deadline, classify a failure and
    /// drop the instance after it.
    fn call<R>(
        &mut self,
        engine: &PluginEngine,
        limits: &Limits,
        f: impl FnOnce(&FaultRule, &mut Store<SandboxState>) -> wasmtime::Result<R>,
    ) -> std::result::Result<R, (FailureKind, String)> {
        if self.instance.is_none() {
            let mut store = engine.store(limits);
            arm_deadline(&mut store, limits);
            self.health.instantiations += 1;
            match self.pre.instantiate(&mut store) {
                Ok(bindings) => self.instance = Some((store, bindings)),
                Err(e) => {
                    let kind = classify(&e, store.data().limiter.hit);
                    return Err((kind, format!("instantiation failed: {e:#}")));
                }
            }
        }
        let (store, bindings) = self.instance.as_mut().expect("instantiated above");
        arm_deadline(store, limits);
        match f(bindings, store) {
            Ok(r) => Ok(r),
            Err(e) => {
                let kind = classify(&e, store.data().limiter.hit);
                // A trapped instance is poisoned: never call it again.
                self.instance = None;
                let what = match kind {
                    FailureKind::Deadline => format!("stopped at its {} ms deadline", limits.call_deadline_ms),
                    FailureKind::MemoryCap => format!("stopped at its {} byte memory cap", limits.memory_bytes),
                    _ => "trapped".to_string(),
                };
                Err((kind, format!("{what}: {e:#}")))
            }
        }
    }
}

impl plain::RuleEngine for WasmRuleEngine {
    fn evaluate(&mut self, inputs: &[plain::RuleInput]) -> plain::RuleOutcome {
        let wit_inputs: Vec<w::RuleInput> = inputs.iter().map(to_wit).collect();
        let mut outcome = plain::RuleOutcome { diagnoses: vec![Vec::new(); inputs.len()], failures: Vec::new() };
        for plugin in &mut self.plugins {
            let now = Instant::now();
            if plugin.health.quarantined(now) {
                outcome.failures.push(plain::RuleFailure { rule: plugin.name.clone(), error: "quarantined after repeated failures".into() });
                continue;
            }
            let result = plugin.call(&self.engine, &self.limits, |b, store| b.call_evaluate(store, &wit_inputs));
            let result = result.and_then(|lists| {
                if lists.len() == inputs.len() {
                    Ok(lists)
                } else {
                    Err((FailureKind::BadOutput, format!("returned {} result lists for {} inputs", lists.len(), inputs.len())))
                }
            });
            match result {
                Ok(lists) => {
                    plugin.health.succeeded();
                    for (slot, list) in outcome.diagnoses.iter_mut().zip(lists) {
                        slot.extend(list.into_iter().map(|d| plain::RuledDiagnosis { rule: plugin.name.clone(), diagnosis: from_wit(d) }));
                    }
                }
                Err((kind, message)) => {
                    tracing::warn!(rule = %plugin.name, ?kind, error = %message, "fault-rule component failed");
                    plugin.health.failed(kind, message.clone(), &self.limits, now);
                    outcome.failures.push(plain::RuleFailure { rule: plugin.name.clone(), error: message });
                }
            }
        }
        outcome
    }
}

fn kind_to_wit(k: plain::SubjectKind) -> w::SubjectKind {
    match k {
        plain::SubjectKind::Service => w::SubjectKind::Service,
        plain::SubjectKind::Edge => w::SubjectKind::Edge,
        plain::SubjectKind::Node => w::SubjectKind::Node,
    }
}

fn relation_to_wit(r: plain::Relation) -> w::Relation {
    match r {
        plain::Relation::Downstream => w::Relation::Downstream,
        plain::Relation::Upstream => w::Relation::Upstream,
        plain::Relation::Host => w::Relation::Host,
        plain::Relation::Hosted => w::Relation::Hosted,
        plain::Relation::Caller => w::Relation::Caller,
        plain::Relation::Callee => w::Relation::Callee,
    }
}

fn metrics_to_wit(ms: &[plain::Metric]) -> Vec<w::Metric> {
    ms.iter().map(|m| w::Metric { name: m.name.clone(), before: m.before, after: m.after, anomalous: m.anomalous }).collect()
}

/// The plain rule input as the WIT record.
pub fn to_wit(i: &plain::RuleInput) -> w::RuleInput {
    w::RuleInput {
        incident: w::Incident {
            id: i.incident.id.clone(),
            entry: i.incident.entry.clone(),
            kpi: i.incident.kpi.clone(),
            started_at_ms: i.incident.started_at_ms,
        },
        subject: w::Subject {
            kind: kind_to_wit(i.subject.kind),
            id: i.subject.id.clone(),
            metrics: metrics_to_wit(&i.subject.metrics),
            labels: i.subject.labels.clone(),
        },
        neighbours: i
            .neighbours
            .iter()
            .map(|n| w::Neighbour {
                kind: kind_to_wit(n.kind),
                id: n.id.clone(),
                relation: relation_to_wit(n.relation),
                abnormal: n.abnormal,
                score: n.score,
                metrics: metrics_to_wit(&n.metrics),
                labels: n.labels.clone(),
            })
            .collect(),
        attributions: i
            .attributions
            .iter()
            .map(|a| w::Attribution {
                kpi: a.kpi.clone(),
                elements: a.elements.clone(),
                explanatory_power: a.explanatory_power,
                before: a.before,
                after: a.after,
            })
            .collect(),
        changes: i
            .changes
            .iter()
            .map(|c| w::Change { at_ms: c.at_ms, subject: c.subject.clone(), description: c.description.clone() })
            .collect(),
    }
}

fn category_from_wit(c: w::Category) -> plain::Category {
    match c {
        w::Category::Network => plain::Category::Network,
        w::Category::DownstreamSlow => plain::Category::DownstreamSlow,
        w::Category::CpuSaturation => plain::Category::CpuSaturation,
        w::Category::MemoryPressure => plain::Category::MemoryPressure,
        w::Category::NodeSaturation => plain::Category::NodeSaturation,
        w::Category::DatabaseSlow => plain::Category::DatabaseSlow,
        w::Category::DnsFailure => plain::Category::DnsFailure,
        w::Category::CodeError => plain::Category::CodeError,
        w::Category::RecentChange => plain::Category::RecentChange,
        w::Category::Other(s) => plain::Category::Other(s),
    }
}

/// A diagnosis from the sandbox, with its confidence forced into 0..=1 (a plugin's number is
/// not trusted to be sane).
pub fn from_wit(d: w::Diagnosis) -> plain::Diagnosis {
    plain::Diagnosis {
        category: category_from_wit(d.category),
        confidence: if d.confidence.is_finite() { d.confidence.clamp(0.0, 1.0) } else { 0.0 },
        evidence: d
            .evidence
            .into_iter()
            .map(|e| plain::Evidence { metric: e.metric, before: e.before, after: e.after, note: e.note })
            .collect(),
        explanation: d.explanation,
    }
}
