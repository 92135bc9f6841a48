//! Tunable rule parameters: each rule of a component declares its thresholds and confidences
//! as named parameters with a default and a range ([`RuleSpec`]); the daemon reads values from
//! its configuration (`[live.rules.<rule>]`), checks them against what the component declares
//! ([`check`]) and hands them over once per instance (`configure` in the WIT world
//! `configurable-fault-rule`); the rule reads them with [`Params::of`].
//!
//! ```
//! use sonde_sdk::fault_rule::params::{ParamSpec, Params, RuleSpec, Settings};
//!
//! const MY_RULE: RuleSpec = RuleSpec {
//!     name: "queue-backlog",
//!     doc: "a queue consumer that falls behind",
//!     params: &[ParamSpec { name: "confidence", default: 0.6, min: 0.0, max: 1.0, doc: "" }],
//! };
//! let mut settings = Settings::new();
//! settings.entry("queue-backlog".into()).or_default().insert("confidence".into(), 0.8);
//! let params = Params::new(&[MY_RULE], &settings).unwrap();
//! assert_eq!(params.of(&MY_RULE).get("confidence"), 0.8);
//! assert_eq!(Params::default().of(&MY_RULE).get("confidence"), 0.6);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values set in the configuration: rule name → parameter name → value.
pub type Settings = BTreeMap<String, BTreeMap<String, f64>>;

/// One tunable of a rule, declared as a constant by the rule's author.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    /// A TOML key: lowercase, `_` between words.
    pub name: &'static str,
    pub default: f64,
    /// The accepted range, inclusive.
    pub min: f64,
    pub max: f64,
    /// What it changes, for `sonde rules` and the docs.
    pub doc: &'static str,
}

/// A rule of a component and its tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleSpec {
    /// The `<name>` of `[live.rules.<name>]`: kebab-case, unique across loaded components.
    pub name: &'static str,
    pub doc: &'static str,
    pub params: &'static [ParamSpec],
}

/// A parameter as a component reports it (the owned form of [`ParamSpec`], which crosses the
/// sandbox boundary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub name: String,
    pub default: f64,
    pub min: f64,
    pub max: f64,
    pub doc: String,
}

/// A rule as a component reports it (the owned form of [`RuleSpec`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleParams {
    pub rule: String,
    pub doc: String,
    pub params: Vec<ParamInfo>,
}

impl From<&RuleSpec> for RuleParams {
    fn from(s: &RuleSpec) -> Self {
        RuleParams {
            rule: s.name.into(),
            doc: s.doc.into(),
            params: s
                .params
                .iter()
                .map(|p| ParamInfo {
                    name: p.name.into(),
                    default: p.default,
                    min: p.min,
                    max: p.max,
                    doc: p.doc.into(),
                })
                .collect(),
        }
    }
}

/// Checks `settings` against the rules that declare parameters: every rule and parameter
/// named must exist and every value be finite and within its range. The error is one line
/// that starts with the key (`cpu-saturation.confidence = 1.5: …`).
pub fn check(rules: &[RuleParams], settings: &Settings) -> Result<(), String> {
    check_known(rules, settings, false)
}

/// [`check`], but a rule name none of `rules` declares is let through when
/// `other_rules_possible` (other components, not known yet, may declare it).
pub fn check_known(
    rules: &[RuleParams],
    settings: &Settings,
    other_rules_possible: bool,
) -> Result<(), String> {
    for (rule, values) in settings {
        let Some(spec) = rules.iter().find(|r| &r.rule == rule) else {
            if other_rules_possible {
                continue;
            }
            let known: Vec<&str> = rules.iter().map(|r| r.rule.as_str()).collect();
            return Err(format!(
                "{rule}: no such rule (rules with parameters: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        for (name, &value) in values {
            let Some(p) = spec.params.iter().find(|p| &p.name == name) else {
                let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
                return Err(format!(
                    "{rule}.{name}: no such parameter ({rule} has: {})",
                    known.join(", ")
                ));
            };
            if !(value.is_finite() && p.min <= value && value <= p.max) {
                return Err(format!(
                    "{rule}.{name} = {value}: out of range {} to {}",
                    p.min, p.max
                ));
            }
        }
    }
    Ok(())
}

/// The settings as the WIT `configure` call takes them.
pub fn settings_to_list(s: &Settings) -> Vec<(String, Vec<(String, f64)>)> {
    s.iter()
        .map(|(rule, values)| {
            (
                rule.clone(),
                values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            )
        })
        .collect()
}

/// The settings from the WIT `configure` call's list (a later duplicate wins).
pub fn settings_from_list(list: Vec<(String, Vec<(String, f64)>)>) -> Settings {
    let mut s = Settings::new();
    for (rule, values) in list {
        s.entry(rule).or_default().extend(values);
    }
    s
}

/// Checked parameter values; a parameter that was not set has its default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    set: Settings,
}

impl Params {
    /// The values of `settings`, [check]ed against `rules`.
    pub fn new(rules: &[RuleSpec], settings: &Settings) -> Result<Params, String> {
        let owned: Vec<RuleParams> = rules.iter().map(RuleParams::from).collect();
        check(&owned, settings)?;
        Ok(Params {
            set: settings.clone(),
        })
    }

    /// One rule's values.
    pub fn of<'a>(&'a self, rule: &'static RuleSpec) -> RuleValues<'a> {
        RuleValues {
            rule,
            set: self.set.get(rule.name),
        }
    }
}

/// One rule's parameter values, see [`Params::of`].
#[derive(Debug, Clone, Copy)]
pub struct RuleValues<'a> {
    rule: &'static RuleSpec,
    set: Option<&'a BTreeMap<String, f64>>,
}

impl RuleValues<'_> {
    /// The value of parameter `name`: as configured, else its default.
    ///
    /// # Panics
    /// When the rule does not declare `name`: a bug in the rule, which its tests catch.
    pub fn get(&self, name: &str) -> f64 {
        let spec = self
            .rule
            .params
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("rule {} declares no parameter {name}", self.rule.name));
        self.set
            .and_then(|s| s.get(name))
            .copied()
            .unwrap_or(spec.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: RuleSpec = RuleSpec {
        name: "cpu-saturation",
        doc: "",
        params: &[
            ParamSpec {
                name: "confidence",
                default: 0.7,
                min: 0.0,
                max: 1.0,
                doc: "",
            },
            ParamSpec {
                name: "throttled_min",
                default: 0.05,
                min: 0.0,
                max: 1.0,
                doc: "",
            },
        ],
    };

    fn one(rule: &str, name: &str, v: f64) -> Settings {
        let mut s = Settings::new();
        s.entry(rule.into()).or_default().insert(name.into(), v);
        s
    }

    #[test]
    fn unknown_names_and_bad_values_are_one_line_errors() {
        let e = Params::new(&[RULE], &one("cpu-saturaton", "confidence", 0.5)).unwrap_err();
        assert_eq!(
            e,
            "cpu-saturaton: no such rule (rules with parameters: cpu-saturation)"
        );
        let e = Params::new(&[RULE], &one("cpu-saturation", "confidance", 0.5)).unwrap_err();
        assert_eq!(
            e,
            "cpu-saturation.confidance: no such parameter (cpu-saturation has: confidence, throttled_min)"
        );
        for bad in [1.5, -0.1, f64::NAN, f64::INFINITY] {
            let e = Params::new(&[RULE], &one("cpu-saturation", "confidence", bad)).unwrap_err();
            assert!(
                e.starts_with("cpu-saturation.confidence = ") && e.ends_with("out of range 0 to 1"),
                "{e}"
            );
        }
        let foreign = one("queue-backlog", "confidence", 0.5);
        let owned = [RuleParams::from(&RULE)];
        assert!(check(&owned, &foreign).is_err());
        assert!(check_known(&owned, &foreign, true).is_ok());
    }

    #[test]
    fn set_values_win_and_the_rest_keep_their_defaults() {
        let p = Params::new(&[RULE], &one("cpu-saturation", "confidence", 0.9)).unwrap();
        assert_eq!(p.of(&RULE).get("confidence"), 0.9);
        assert_eq!(p.of(&RULE).get("throttled_min"), 0.05);
        let list = settings_to_list(&one("cpu-saturation", "confidence", 0.9));
        assert_eq!(
            settings_from_list(list),
            one("cpu-saturation", "confidence", 0.9)
        );
    }

    #[test]
    #[should_panic(expected = "declares no parameter nope")]
    fn reading_an_undeclared_parameter_is_a_bug() {
        Params::default().of(&RULE).get("nope");
    }
}
