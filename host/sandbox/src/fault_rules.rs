//! Fault-tree rules as sandboxed components: the daemon side of the `fault-rule` world.
//!
//! [`WasmRuleEngine`] implements the analysis engine's `RuleEngine`: one `evaluate` call per
//! component per incident carries every candidate. A component that traps, loops past its
//! deadline or hits its memory cap yields a `RuleFailure` for that incident; the other
//! components still answer, and the failing one gets a fresh instance next time (or a
//! quarantine after repeated failures).
//!
//! A component that also implements `configurable-fault-rule` says which of its rules take
//! parameters (`parameters`, asked once at load); [`WasmRuleEngine::configure`] checks the
//! operator's `[live.rules]` against those and every fresh instance gets its own rules' values
//! (`configure`) before it is called.

use std::path::Path;

use anyhow::{Context as _, Result};
use sonde_analysis::rules as plain;
use sonde_sdk::fault_rule::params::{self, RuleParams, Settings};
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::{
    BadOutput, EngineOptions, Health, Limits, PluginEngine, PluginStats, SandboxState, Sandboxed,
    WorldPre,
};
use crate::PluginsConfig;

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "fault-rule",
});

use self::sonde::plugin::fault_types as w;

/// The `configurable-fault-rule` world's bindings (its `fault-rule` part is the module's own).
mod configurable {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "configurable-fault-rule",
        with: {
            "sonde:plugin/fault-types": crate::fault_rules::sonde::plugin::fault_types,
        },
    });
}
use configurable::sonde::plugin::fault_params as wp;

/// The default fault tree (`plugins/fta-rules`), built by build.rs for wasm32-wasip2. Empty
/// when the build skipped it (`SONDE_WASM_SKIP`).
pub static DEFAULT_RULES_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_fta_rules.wasm"));

/// The WIT world these components implement.
pub const WORLD: &str = "fault-rule";

/// How a rule component is instantiated: the `fault-rule` exports, and when it has them the
/// `configurable-fault-rule` ones, which get the component's parameter values right away.
pub struct RulePre {
    instance_pre: InstancePre<SandboxState>,
    plain: FaultRuleIndices,
    configurable: Option<configurable::ConfigurableFaultRuleIndices>,
    /// `configure`'s argument; empty: not called, every parameter has its default.
    settings: Vec<(String, Vec<(String, f64)>)>,
}

/// A rule instance's exports.
pub struct RuleBindings {
    rule: FaultRule,
    configurable: Option<configurable::ConfigurableFaultRule>,
}

impl RulePre {
    fn new(instance_pre: InstancePre<SandboxState>) -> wasmtime::Result<Self> {
        let plain = FaultRuleIndices::new(&instance_pre)?;
        // Missing `parameters`/`configure`: a plain fault rule (any 0.1 component), no tunables.
        let configurable = configurable::ConfigurableFaultRuleIndices::new(&instance_pre).ok();
        Ok(Self {
            instance_pre,
            plain,
            configurable,
            settings: Vec::new(),
        })
    }
}

impl WorldPre for RulePre {
    type Bindings = RuleBindings;
    fn instantiate(&self, store: &mut Store<SandboxState>) -> wasmtime::Result<RuleBindings> {
        let instance = self.instance_pre.instantiate(&mut *store)?;
        let rule = self.plain.load(&mut *store, &instance)?;
        let configurable = match &self.configurable {
            Some(indices) => Some(indices.load(&mut *store, &instance)?),
            None => None,
        };
        if let Some(c) = &configurable
            && !self.settings.is_empty()
        {
            c.call_configure(&mut *store, &self.settings)?
                .map_err(|e| {
                    wasmtime::Error::new(BadOutput(format!(
                        "configure refused its parameters: {e}"
                    )))
                })?;
        }
        Ok(RuleBindings { rule, configurable })
    }
}

/// One loaded rule component.
pub struct RulePlugin {
    /// From the component's `info`.
    pub name: String,
    pub version: String,
    /// `embedded` or the file it came from.
    pub source: String,
    /// Its rules that take parameters (from `parameters`; none for a plain `fault-rule`).
    pub rules: Vec<RuleParams>,
    /// Whether it implements `configurable-fault-rule` (a plain `fault-rule` does not).
    pub configurable: bool,
    sandbox: Sandboxed<RulePre>,
}

impl RulePlugin {
    /// Drops the instance as a failure would: the next call makes a fresh one.
    #[cfg(test)]
    pub(crate) fn drop_instance(&mut self) {
        self.sandbox.pre_mut();
    }

    pub fn health(&self) -> &Health {
        &self.sandbox.health
    }

    pub fn stats(&self) -> PluginStats {
        PluginStats {
            world: WORLD,
            name: self.name.clone(),
            version: self.version.clone(),
            source: self.source.clone(),
            health: self.sandbox.health.clone(),
        }
    }
}

/// Every installed fault-rule component, run in the sandbox.
pub struct WasmRuleEngine {
    engine: PluginEngine,
    limits: Limits,
    pub plugins: Vec<RulePlugin>,
}

impl WasmRuleEngine {
    /// The embedded default tree (unless disabled) and every `*.wasm` in the rule directories
    /// (sorted by file name). A component there must pass [`super::manifest::verify`] (signed
    /// by a trusted key, or in an `allow_unsigned_dirs` directory) and its own `info` must agree
    /// with its manifest; the bytes verified are the bytes loaded. A component that does not
    /// load is an error naming its file: the operator asked for it.
    pub fn load(cfg: &PluginsConfig) -> Result<Self> {
        use super::manifest::{self, Trust, World};
        let engine = PluginEngine::with_options(&EngineOptions::from_config(cfg))?;
        let files = super::wasm_files(&cfg.rule_dirs, "rule")?;
        let trust = Trust::from_config(cfg, Some(World::FaultRule))?;
        // Every component checked before anything compiles: a refusal comes first, and names
        // the file and what to do.
        let verified = files
            .iter()
            .map(|f| manifest::verify(f, &trust))
            .collect::<Result<Vec<_>, _>>()?;
        // Each plugin keeps its instance between calls: a pool smaller than the plugin count
        // would fail instantiations later, reported as the plugins' own failures.
        let count = files.len() + usize::from(cfg.default_rules);
        anyhow::ensure!(
            cfg.pooling_instances == 0 || count <= cfg.pooling_instances as usize,
            "pooling_instances = {} but there are {count} rule components (each keeps an instance)",
            cfg.pooling_instances,
        );
        let mut engine = Self::new(engine, cfg.limits);
        if cfg.default_rules {
            anyhow::ensure!(
                !DEFAULT_RULES_WASM.is_empty(),
                "this sonde was built with SONDE_WASM_SKIP: it has no default fault tree (set default_rules = false)"
            );
            engine
                .add(DEFAULT_RULES_WASM, "embedded")
                .context("loading the embedded default fault tree")?;
        }
        for verified in verified {
            let file = &verified.path;
            engine
                .add(&verified.wasm, &file.display().to_string())
                .with_context(|| format!("loading rule component {}", file.display()))?;
            let p = engine.plugins.last().expect("just added");
            verified.check_identity(&p.name, &p.version)?;
            tracing::info!(rule = %p.name, file = %file.display(), provenance = %verified.provenance(), "rule component verified");
        }
        Ok(engine)
    }

    /// An engine with no rules yet; see [`add`](Self::add).
    pub fn new(engine: PluginEngine, limits: Limits) -> Self {
        Self {
            engine,
            limits,
            plugins: Vec::new(),
        }
    }

    pub fn plugin_engine(&self) -> &PluginEngine {
        &self.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counters of every loaded rule, in evaluation order.
    pub fn stats(&self) -> Vec<PluginStats> {
        self.plugins.iter().map(RulePlugin::stats).collect()
    }

    pub fn add_file(&mut self, file: &Path) -> Result<()> {
        let wasm = crate::read_plugin_file(
            file,
            crate::DEFAULT_MAX_COMPONENT_BYTES,
            "[plugins] max_component_bytes",
        )
        .with_context(|| format!("reading {}", file.display()))?;
        self.add(&wasm, &file.display().to_string())
            .with_context(|| format!("loading rule component {}", file.display()))
    }

    /// Compile (or fetch from the cache), link, and ask the component who it is (a first call
    /// in the sandbox, under the same limits).
    pub fn add(&mut self, wasm: &[u8], source: &str) -> Result<()> {
        let (component, _) = self.engine.component(wasm)?;
        let linker = self.engine.linker_for(&component)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let pre = RulePre::new(pre)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("the component does not implement the sonde:plugin/fault-rule world")?;
        let configurable = pre.configurable.is_some();
        let mut sandbox = Sandboxed::new(pre);
        // Who it is and what it lets tune: one sandbox call.
        let (info, rules) = sandbox
            .call(&self.engine, &self.limits, |b, store| {
                let info = b.rule.call_info(&mut *store)?;
                let rules = match &b.configurable {
                    Some(c) => c.call_parameters(&mut *store)?,
                    None => Vec::new(),
                };
                Ok((info, rules))
            })
            .map_err(|f| anyhow::anyhow!("info: {f}"))?;
        let rules: Vec<RuleParams> = rules.into_iter().map(rule_params_from_wit).collect();
        // Reports name diagnoses and failures by rule: two of the same name would be ambiguous.
        if let Some(other) = self.plugins.iter().find(|p| p.name == info.name) {
            anyhow::bail!(
                "a rule named {:?} is already loaded from {} (set default_rules = false to replace the default tree)",
                info.name,
                other.source
            );
        }
        // `[live.rules.<rule>]` names one rule of one component.
        for r in &rules {
            if let Some(other) = self
                .plugins
                .iter()
                .find(|p| p.rules.iter().any(|o| o.rule == r.rule))
            {
                anyhow::bail!(
                    "{:?} declares rule {:?}, which {:?} (from {}) already declares: parameters could not say which they mean",
                    info.name,
                    r.rule,
                    other.name,
                    other.source
                );
            }
        }
        tracing::info!(rule = %info.name, version = %info.version, source, tunable_rules = rules.len(), "fault-rule component loaded");
        self.plugins.push(RulePlugin {
            name: info.name,
            version: info.version,
            source: source.to_string(),
            rules,
            configurable,
            sandbox,
        });
        Ok(())
    }

    /// [`load`](Self::load), then [`configure`](Self::configure) with `[live.rules]`.
    pub fn load_configured(cfg: &PluginsConfig, rules: &Settings) -> Result<Self> {
        let mut engine = Self::load(cfg)?;
        engine.configure(rules)?;
        Ok(engine)
    }

    /// Every loaded rule that takes parameters, with the component that has it.
    pub fn rule_params(&self) -> impl Iterator<Item = (&str, &RuleParams)> {
        self.plugins
            .iter()
            .flat_map(|p| p.rules.iter().map(move |r| (p.name.as_str(), r)))
    }

    /// Sets the rules' parameters (`[live.rules]`): every rule and parameter named must be
    /// declared by a loaded component and every value be within its range, or nothing is set
    /// and the error is one line starting `live.rules.<rule>…`. Each component gets the values
    /// of its own rules, checked again by its `configure` on a fresh instance made now; a
    /// second call replaces the first's values (what it leaves out is back to its default).
    pub fn configure(&mut self, settings: &Settings) -> Result<()> {
        let declared: Vec<RuleParams> = self.rule_params().map(|(_, r)| r.clone()).collect();
        params::check(&declared, settings).map_err(|e| anyhow::anyhow!("live.rules.{e}"))?;
        for plugin in &mut self.plugins {
            let mine: Settings = settings
                .iter()
                .filter(|(rule, _)| plugin.rules.iter().any(|r| &&r.rule == rule))
                .map(|(rule, values)| (rule.clone(), values.clone()))
                .collect();
            let list = params::settings_to_list(&mine);
            if plugin.sandbox.pre().settings == list {
                continue;
            }
            // Values set before and now unset go back to their defaults: a fresh instance
            // without `configure` has them.
            plugin.sandbox.pre_mut().settings = list;
            if mine.is_empty() {
                continue;
            }
            plugin
                .sandbox
                .call(&self.engine, &self.limits, |_, _| Ok(()))
                .map_err(|f| {
                    anyhow::anyhow!("live.rules: rule component {:?}: {f}", plugin.name)
                })?;
            tracing::info!(rule = %plugin.name, rules = ?mine.keys().collect::<Vec<_>>(), "fault-rule parameters set");
        }
        Ok(())
    }
}

fn rule_params_from_wit(r: wp::RuleParams) -> RuleParams {
    RuleParams {
        rule: r.rule,
        doc: r.doc,
        params: r
            .params
            .into_iter()
            .map(|p| params::ParamInfo {
                name: p.name,
                default: p.default,
                min: p.min,
                max: p.max,
                doc: p.doc,
            })
            .collect(),
    }
}

impl plain::RuleEngine for WasmRuleEngine {
    fn evaluate(&mut self, inputs: &[plain::RuleInput]) -> plain::RuleOutcome {
        let mut outcome = plain::RuleOutcome {
            diagnoses: vec![Vec::new(); inputs.len()],
            failures: Vec::new(),
        };
        if inputs.is_empty() {
            return outcome;
        }
        let wit_inputs: Vec<w::RuleInput> = inputs.iter().map(to_wit).collect();
        for plugin in &mut self.plugins {
            let result = plugin.sandbox.call(&self.engine, &self.limits, |b, store| {
                let lists = b.rule.call_evaluate(store, &wit_inputs)?;
                if lists.len() != wit_inputs.len() {
                    let msg = format!(
                        "returned {} result lists for {} inputs",
                        lists.len(),
                        wit_inputs.len()
                    );
                    return Err(wasmtime::Error::new(BadOutput(msg)));
                }
                Ok(lists)
            });
            match result {
                Ok(lists) => {
                    for (slot, list) in outcome.diagnoses.iter_mut().zip(lists) {
                        slot.extend(list.into_iter().map(|d| plain::RuledDiagnosis {
                            rule: plugin.name.clone(),
                            diagnosis: from_wit(d),
                        }));
                    }
                }
                Err(failure) => {
                    tracing::warn!(rule = %plugin.name, kind = ?failure.kind, error = %failure.message, "fault-rule component failed");
                    outcome.failures.push(plain::RuleFailure {
                        rule: plugin.name.clone(),
                        error: failure.message,
                    });
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
    ms.iter()
        .map(|m| w::Metric {
            name: m.name.clone(),
            before: m.before,
            after: m.after,
            anomalous: m.anomalous,
        })
        .collect()
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
            .map(|c| w::Change {
                at_ms: c.at_ms,
                subject: c.subject.clone(),
                description: c.description.clone(),
            })
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
        confidence: if d.confidence.is_finite() {
            d.confidence.clamp(0.0, 1.0)
        } else {
            0.0
        },
        evidence: d
            .evidence
            .into_iter()
            .map(|e| plain::Evidence {
                metric: e.metric,
                before: e.before,
                after: e.after,
                note: e.note,
            })
            .collect(),
        explanation: d.explanation,
    }
}
