//! The daemon's one configuration struct, read from a TOML file (see docs/config.md) and
//! overridden by CLI flags.
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use sonde_capture::CaptureOptions;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub capture: CaptureOptions,
    pub streams: sonde_capture::streams::StreamSettings,
    pub metrics: MetricsSettings,
    pub api: crate::http::ApiSettings,
    pub plugins: sonde_sandbox::PluginsConfig,
    pub network: sonde_netmap::NetworkSettings,
    pub correlation: sonde_correlate::CorrelationSettings,
    pub admin: crate::admin::AdminSettings,
    pub kubernetes: sonde_correlate::k8s::KubernetesSettings,
    pub live: sonde_live::LiveSettings,
    pub logs: sonde_logs::LogMinerConfig,
    pub privacy: PrivacySettings,
}

/// What the API may show of what processes wrote and sent (`[privacy]`). Off by default:
/// `/api/logs` (and incident reports) show log templates, whose variable parts — numbers,
/// hex, ids, tokens, `password=…` values, URL query values — are masked, and `/api/records`
/// shows routes (a `[metrics]` route template, else the parser's normalised route), never a
/// raw path, query string or statement text. Metrics never carry raw values either way.
/// Daemon-wide policy, applied where `sonde-logs` and `sonde-pipeline` are built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    /// Keep one raw sample line per log template (`sample` in `/api/logs`, reports).
    pub log_samples: bool,
    /// Show raw URL paths (`url.path`; `url.query`, `url.full` when a parser sets them) and
    /// statement text (`db.query.text`) in `/api/records`, and HTTP operations as the parser
    /// named them.
    pub raw_records: bool,
}

/// Prometheus endpoint (`[metrics]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `/metrics` is served; loopback by default. Empty disables it.
    pub listen: Option<SocketAddr>,
    /// Series per RED metric; beyond, records go to one overflow series (counted).
    pub max_series: usize,
    /// Series of all the RED latency metrics together (bounds the page; see
    /// [`sonde_pipeline::red::RedSettings::max_series_total`]).
    pub max_series_total: usize,
    /// Series per RED metric one service may hold (1 to 1048576; above `max_series` it is
    /// `max_series`); beyond, its records go to the overflow series (counted).
    pub max_series_per_service: usize,
    /// HTTP route templates applied to raw paths (`"/api/orders/{id}"`, trailing `{*}`).
    pub route_templates: Vec<String>,
    /// Database operations at least this slow go to the slow-query log (`/api/slow-queries`).
    pub slow_query_ms: u64,
    /// Entries the slow-query log keeps.
    pub slow_query_log: usize,
    /// Records `/api/records` keeps (the latest).
    pub record_log: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        let red = sonde_pipeline::red::RedSettings::default();
        MetricsSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            max_series: red.max_series,
            max_series_total: red.max_series_total,
            max_series_per_service: red.max_series_per_service,
            route_templates: red.route_templates,
            slow_query_ms: red.slow_query_ms,
            slow_query_log: red.slow_query_log,
            record_log: 1024,
        }
    }
}

impl MetricsSettings {
    pub fn red_settings(&self) -> sonde_pipeline::red::RedSettings {
        sonde_pipeline::red::RedSettings {
            max_series: self.max_series,
            max_series_total: self.max_series_total,
            max_series_per_service: self.max_series_per_service,
            route_templates: self.route_templates.clone(),
            slow_query_ms: self.slow_query_ms,
            slow_query_log: self.slow_query_log,
        }
    }
}

impl MetricsSettings {
    /// Every `[metrics]` value within its range (see docs/sonde.example.toml).
    pub fn validate(&self) -> Result<()> {
        self.red_settings().validate()?;
        anyhow::ensure!(
            (1..=1 << 20).contains(&self.max_series_per_service),
            "metrics.max_series_per_service must be 1 to 1048576 (above max_series it is max_series)"
        );
        anyhow::ensure!(
            self.record_log >= 1,
            "metrics.record_log must be at least 1 (got 0)"
        );
        Ok(())
    }
}

impl Config {
    /// Every section's values within their ranges (each settings type checks its own; the
    /// ranges are in docs/sonde.example.toml): what `sonde run` checks before it touches
    /// anything. The error names the key.
    pub fn validate(&self) -> Result<()> {
        self.capture
            .validate()
            .map_err(|e| anyhow::anyhow!("capture.{e}"))?;
        self.streams.validate()?;
        self.metrics.validate()?;
        self.api.validate()?;
        self.plugins.validate()?;
        self.network.validate()?;
        self.correlation.validate()?;
        if self.live.enabled {
            self.live.validate()?;
            self.check_rule_params()?;
        }
        self.logs.validate()?;
        Ok(())
    }

    /// `[live.rules]` against the default tree's rules (built in, so no component is loaded):
    /// an unknown rule or parameter, or a value out of range, is an error here. A rule the
    /// default tree lacks may belong to a component of `rule_dirs`, which only `sonde run`
    /// loads and checks.
    fn check_rule_params(&self) -> Result<()> {
        let builtin = if self.plugins.default_rules {
            sonde_fta_rules::parameters()
        } else {
            Vec::new()
        };
        let others = !self.plugins.rule_dirs.is_empty();
        sonde_sdk::fault_rule::params::check_known(&builtin, &self.live.rules, others)
            .map_err(|e| anyhow::anyhow!("live.rules.{e}"))
    }

    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        config
            .metrics
            .validate()
            .with_context(|| format!("config file {}", path.display()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_unknown_keys_fail() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/sonde.example.toml"
        ))
        .expect("docs/sonde.example.toml");
        let c: Config = toml::from_str(&text).expect("example parses");
        // The example's values are within their ranges, and so are the defaults.
        c.validate().unwrap();
        Config::default().validate().unwrap();
        assert_eq!(
            c.plugins.max_component_bytes,
            sonde_sandbox::DEFAULT_MAX_COMPONENT_BYTES
        );
        assert_eq!(c.capture.capture_bytes, 16384);
        assert!(toml::from_str::<Config>("[capture]\ncapture_byte = 1\n").is_err());
        // The example documents the defaults of [plugins].
        let d = sonde_sandbox::PluginsConfig::default();
        assert_eq!(
            (
                c.plugins.cache_dir,
                c.plugins.default_rules,
                c.plugins.pooling_instances
            ),
            (d.cache_dir, d.default_rules, d.pooling_instances)
        );
        assert_eq!(c.plugins.limits, d.limits);
        assert!(toml::from_str::<Config>("[plugins.limits]\nmemory = 1\n").is_err());
        // … and of [network] and [capture]'s switches.
        assert_eq!(c.network, sonde_netmap::NetworkSettings::default());
        assert!(c.capture.payload && c.capture.network);
        // … and of [capture.scope] (empty: everything).
        assert_eq!(
            c.capture.scope,
            sonde_capture::scope::ScopeOptions::default()
        );
        assert!(toml::from_str::<Config>("[capture.scope]\nnet = []\n").is_err());
        c.network.validate().unwrap();
        assert!(toml::from_str::<Config>("[network]\nwindow = 1\n").is_err());
        // … and of [correlation], [kubernetes] and [metrics].
        assert_eq!(
            c.correlation,
            sonde_correlate::CorrelationSettings::default()
        );
        assert_eq!(
            c.kubernetes,
            sonde_correlate::k8s::KubernetesSettings::default()
        );
        assert_eq!(c.metrics.record_log, MetricsSettings::default().record_log);
        assert_eq!(c.api, crate::http::ApiSettings::default());
        c.api.validate().unwrap();
        assert!(toml::from_str::<Config>("[api]\ntoken = \"x\"\n").is_err());
        assert_eq!(
            c.metrics.max_series_per_service,
            MetricsSettings::default().max_series_per_service
        );
        c.metrics.validate().unwrap();
        let over = MetricsSettings {
            max_series: 10,
            max_series_per_service: 11,
            ..MetricsSettings::default()
        };
        assert!(
            over.validate().is_ok(),
            "a small max_series alone stays valid"
        );
        let huge = MetricsSettings {
            max_series_per_service: (1 << 20) + 1,
            ..MetricsSettings::default()
        };
        assert!(huge.validate().is_err());
        let zero = MetricsSettings {
            max_series_per_service: 0,
            ..MetricsSettings::default()
        };
        assert!(zero.validate().is_err());
        assert_eq!(c.admin, crate::admin::AdminSettings::default());
        // … and of [privacy]: raw values are opt-in.
        assert_eq!(c.privacy, PrivacySettings::default());
        assert!(!c.privacy.log_samples && !c.privacy.raw_records);
        assert!(toml::from_str::<Config>("[privacy]\nsamples = true\n").is_err());
        assert!(toml::from_str::<Config>("[kubernetes]\nmode = \"sometimes\"\n").is_err());
    }

    #[test]
    fn every_section_is_validated_and_the_error_names_the_key() {
        for (toml, key) in [
            ("[capture]\ncapture_bytes = 0", "capture.capture_bytes"),
            ("[capture]\nring_bytes = 2147483648", "capture.ring_bytes"),
            (
                "[capture]\npoll_interval_ms = 0",
                "capture.poll_interval_ms",
            ),
            ("[streams]\nmax_connections = 0", "streams.max_connections"),
            ("[metrics]\nmax_series = 0", "metrics.max_series"),
            ("[metrics]\nrecord_log = 0", "metrics.record_log"),
            (
                "[plugins]\nparser_queue_jobs = 0",
                "plugins.parser_queue_jobs",
            ),
            (
                "[plugins]\nmax_component_bytes = 0",
                "plugins.max_component_bytes",
            ),
            (
                "[plugins.limits]\ncall_deadline_ms = 0",
                "plugins.limits.call_deadline_ms",
            ),
            ("[network]\nmax_connections = 0", "network.max_connections"),
            (
                "[network]\nread_interval_ms = 0",
                "network.read_interval_ms",
            ),
            (
                "[correlation]\nscan_interval_ms = 0",
                "correlation.scan_interval_ms",
            ),
            ("[live]\nstep_ms = 0", "live.step_ms"),
            (
                "[live.rules.cpu-saturaton]\nconfidence = 0.5",
                "live.rules.cpu-saturaton: no such rule",
            ),
            (
                "[live.rules.cpu-saturation]\nconfidance = 0.5",
                "live.rules.cpu-saturation.confidance: no such parameter",
            ),
            (
                "[live.rules.cpu-saturation]\nconfidence = 1.5",
                "live.rules.cpu-saturation.confidence = 1.5: out of range 0 to 1",
            ),
            ("[logs]\nsimilarity = 7.5", "logs.similarity"),
            ("[logs]\nsimilarity = 0.0", "logs.similarity"),
            ("[logs]\nmax_services = 0", "logs.max_services"),
        ] {
            let c: Config = toml::from_str(toml).unwrap();
            let e = format!("{:#}", c.validate().expect_err(toml));
            assert!(e.starts_with(key), "{toml}: {e}");
            assert!(!e.contains('\n'), "{toml}: one line: {e}");
        }
        // The live section is checked only when it runs (as before).
        let off: Config = toml::from_str("[live]\nenabled = false\nstep_ms = 0").unwrap();
        off.validate().unwrap();
        let edge: Config = toml::from_str("[logs]\nsimilarity = 1.0").unwrap();
        edge.validate().unwrap();
    }

    #[test]
    fn the_default_trees_parameters_are_documented() {
        let doc = include_str!("../../ARCHITECTURE.md");
        let fmt = |v: f64| format!("{v}");
        for r in sonde_fta_rules::parameters() {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", r.rule)))
                .unwrap_or_else(|| panic!("ARCHITECTURE.md has no row for {}", r.rule));
            for p in &r.params {
                let entry = format!(
                    "`{}` = {} ({}–{})",
                    p.name,
                    fmt(p.default),
                    fmt(p.min),
                    fmt(p.max)
                );
                assert!(
                    row.contains(&entry),
                    "{}: {entry} missing from {row}",
                    r.rule
                );
            }
        }
    }

    #[test]
    fn live_rules_set_the_default_trees_parameters() {
        let c: Config = toml::from_str(
            "[live.rules.cpu-saturation]\nconfidence = 0.7\nthrottled_min = 0.1\n\
             [live.rules.node-saturation]\nmin_services = 3\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.live.rules["node-saturation"]["min_services"], 3.0);
        // The values reach the rules: the native tree reads what the component is given.
        let p = sonde_fta_rules::params(&c.live.rules).unwrap();
        let cpu = &sonde_fta_rules::resources::CPU_SPEC;
        assert_eq!(p.of(cpu).get("throttled_min"), 0.1);
        // A rule the default tree lacks may be a rule_dirs component's: `sonde run` checks it.
        let mut other: Config =
            toml::from_str("[live.rules.queue-backlog]\nconfidence = 0.5").unwrap();
        assert!(other.validate().is_err());
        other.plugins.rule_dirs = vec!["/etc/sonde/rules".into()];
        other.validate().unwrap();
        // Without the default tree, its rules are unknown.
        let mut off: Config =
            toml::from_str("[live.rules.cpu-saturation]\nconfidence = 0.5").unwrap();
        off.plugins.default_rules = false;
        let e = format!("{:#}", off.validate().unwrap_err());
        assert!(e.contains("rules with parameters: none"), "{e}");
    }
}
