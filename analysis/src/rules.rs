//! The fault-tree interface. Rules are sandboxed `fault-rule` WebAssembly components that the
//! daemon runs (`host/sandbox/`); the engine reaches them through [`RuleEngine`], so this
//! crate stays free of any Wasm runtime and tests can plug in the same rules compiled natively.

use serde::{Deserialize, Serialize};
pub use sonde_sdk::fault_rule::{
    Attribution, Category, Change, Diagnosis, Evidence, Incident, Metric, Neighbour, Relation,
    RuleInput, Subject, SubjectKind,
};

/// A diagnosis together with the rule that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuledDiagnosis {
    /// The rule component's name (from its `info`).
    pub rule: String,
    pub diagnosis: Diagnosis,
}

/// A rule that could not answer (trap, deadline, memory cap, bad output). The report lists
/// these so a reader knows which rules did not get a say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFailure {
    pub rule: String,
    pub error: String,
}

/// The answers of every rule for a batch of candidates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleOutcome {
    /// One list per input, in input order.
    pub diagnoses: Vec<Vec<RuledDiagnosis>>,
    pub failures: Vec<RuleFailure>,
}

/// Runs every installed rule on a batch of candidates. One call per incident: implementations
/// should pass the whole batch across the sandbox boundary at once.
pub trait RuleEngine {
    fn evaluate(&mut self, inputs: &[RuleInput]) -> RuleOutcome;
}

pub use sonde_sdk::fault_rule::params::Params;

/// A rule as a plain function (the native build of a rule component).
pub type RuleFn = fn(&RuleInput) -> Vec<Diagnosis>;

/// A rule with parameters as a plain function (`sonde_fta_rules::evaluate_with`).
pub type ParamRuleFn = fn(&RuleInput, &Params) -> Vec<Diagnosis>;

enum Native {
    Plain(RuleFn),
    WithParams(ParamRuleFn, Params),
}

/// A rule engine over plain functions: the default tree compiled natively in tests, or rules
/// embedded in a tool that has no Wasm runtime.
pub struct NativeRules {
    rules: Vec<(String, Native)>,
}

impl NativeRules {
    pub fn new() -> Self {
        Self { rules: Vec::new() }
    }

    pub fn with(mut self, name: impl Into<String>, rule: RuleFn) -> Self {
        self.rules.push((name.into(), Native::Plain(rule)));
        self
    }

    /// A rule that takes parameters, with the (checked) values it runs with: what the Wasm
    /// engine passes its component through `configure`.
    pub fn with_params(
        mut self,
        name: impl Into<String>,
        rule: ParamRuleFn,
        params: Params,
    ) -> Self {
        self.rules
            .push((name.into(), Native::WithParams(rule, params)));
        self
    }
}

impl Default for NativeRules {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleEngine for NativeRules {
    fn evaluate(&mut self, inputs: &[RuleInput]) -> RuleOutcome {
        let diagnoses = inputs
            .iter()
            .map(|input| {
                self.rules
                    .iter()
                    .flat_map(|(name, rule)| {
                        let diagnoses = match rule {
                            Native::Plain(rule) => rule(input),
                            Native::WithParams(rule, params) => rule(input, params),
                        };
                        diagnoses.into_iter().map(|diagnosis| RuledDiagnosis {
                            rule: name.clone(),
                            diagnosis,
                        })
                    })
                    .collect()
            })
            .collect();
        RuleOutcome {
            diagnoses,
            failures: Vec::new(),
        }
    }
}
