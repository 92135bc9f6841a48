//! The daemon's one configuration struct, read from a TOML file (see docs/config.md) and
//! overridden by CLI flags.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::capture::CaptureOptions;
use crate::conntrack::TrackerConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub capture: CaptureOptions,
    pub streams: StreamSettings,
    pub metrics: MetricsSettings,
    pub plugins: PluginsConfig,
    pub network: crate::netmap::NetworkSettings,
    pub correlation: crate::correlate::CorrelationSettings,
    pub admin: crate::admin::AdminSettings,
    pub kubernetes: crate::correlate::k8s::KubernetesSettings,
    pub live: crate::live::LiveSettings,
    pub logs: crate::logs::LogMinerConfig,
}

/// Reassembly and connection tracking (`[streams]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// How long a hole in a stream waits for its chunk before it is declared lost.
    pub reorder_window_ms: u64,
    /// Out-of-order bytes buffered per stream before holes are declared lost.
    pub max_pending_bytes: usize,
    /// How long a closed connection waits for late chunks.
    pub close_linger_ms: u64,
    /// A connection with no event for this long is finalised.
    pub idle_timeout_s: u64,
    /// Tracked connections; beyond, the oldest idle one is evicted (counted).
    pub max_connections: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        let t = TrackerConfig::default();
        StreamSettings {
            reorder_window_ms: t.reorder_window_ns / 1_000_000,
            max_pending_bytes: t.max_pending_bytes,
            close_linger_ms: t.close_linger_ns / 1_000_000,
            idle_timeout_s: t.idle_timeout_ns / 1_000_000_000,
            max_connections: t.max_connections,
        }
    }
}

impl StreamSettings {
    pub fn tracker_config(&self) -> TrackerConfig {
        TrackerConfig {
            max_pending_bytes: self.max_pending_bytes,
            reorder_window_ns: self.reorder_window_ms * 1_000_000,
            close_linger_ns: self.close_linger_ms * 1_000_000,
            idle_timeout_ns: self.idle_timeout_s * 1_000_000_000,
            max_connections: self.max_connections,
        }
    }
}

/// Prometheus endpoint (`[metrics]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `/metrics` is served; loopback by default. Empty disables it.
    pub listen: Option<SocketAddr>,
    /// Series per RED metric; beyond, records go to one overflow series (counted).
    pub max_series: usize,
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
        let red = crate::red::RedSettings::default();
        MetricsSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            max_series: red.max_series,
            route_templates: red.route_templates,
            slow_query_ms: red.slow_query_ms,
            slow_query_log: red.slow_query_log,
            record_log: 1024,
        }
    }
}

impl MetricsSettings {
    pub fn red_settings(&self) -> crate::red::RedSettings {
        crate::red::RedSettings {
            max_series: self.max_series,
            route_templates: self.route_templates.clone(),
            slow_query_ms: self.slow_query_ms,
            slow_query_log: self.slow_query_log,
        }
    }
}

/// Wasm plugins (`[plugins]`): where compiled code is cached, which fault-rule components run,
/// and the sandbox limits every plugin call gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Precompiled components, keyed by the sha256 of the wasm and the engine's compatibility
    /// hash. Must be owned by root: its files are loaded as native code. `""`: no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Run the fault tree embedded in the binary. Set false to replace it with your own.
    pub default_rules: bool,
    /// Directories whose `*.wasm` files are extra `fault-rule` components.
    pub rule_dirs: Vec<PathBuf>,
    /// Give plugins `wasi:clocks` (wall and monotonic time). Off by default: plugins get
    /// timestamps from the daemon, and a clock is a timing side channel.
    pub grant_clocks: bool,
    /// Run the parsers embedded in the binary (HTTP/1.x, MySQL, DNS).
    pub default_parsers: bool,
    /// Directories whose `*.wasm` files are extra `protocol-parser` components.
    pub parser_dirs: Vec<PathBuf>,
    /// Jobs (batches of segments) queued per parser before new ones are dropped (counted, and
    /// the connections in them abandoned by that parser): a slow plugin never stalls capture.
    pub parser_queue_jobs: usize,
    /// A parser's batch is handed over when it holds this many bytes (or at the end of each
    /// capture batch).
    pub batch_bytes: usize,
    /// Pooling allocator slots (concurrent plugin instances; each loaded plugin keeps one);
    /// 0 uses on-demand allocation.
    pub pooling_instances: u32,
    pub limits: crate::plugin::Limits,
    /// Publisher keys whose signatures make a component in `parser_dirs` or `rule_dirs`
    /// loadable (`[[plugins.trusted_keys]]` tables: `name`, `key = "ed25519:<base64>"`). A
    /// component there needs a manifest signed by one of them (see `plugin::manifest`).
    pub trusted_keys: Vec<crate::plugin::manifest::TrustedKey>,
    /// Directories whose components may be unsigned (no manifest, or one without a
    /// signature); a manifest there is still checked. Empty: every component must be signed.
    pub allow_unsigned_dirs: Vec<PathBuf>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            cache_dir: Some(PathBuf::from("/var/cache/sonde/plugins")),
            default_rules: true,
            rule_dirs: Vec::new(),
            grant_clocks: false,
            default_parsers: true,
            parser_dirs: Vec::new(),
            parser_queue_jobs: 64,
            batch_bytes: 256 << 10,
            pooling_instances: 0,
            limits: crate::plugin::Limits::default(),
            trusted_keys: Vec::new(),
            allow_unsigned_dirs: Vec::new(),
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
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
        assert_eq!(c.capture.capture_bytes, 16384);
        assert!(toml::from_str::<Config>("[capture]\ncapture_byte = 1\n").is_err());
        // The example documents the defaults of [plugins].
        let d = PluginsConfig::default();
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
        assert_eq!(c.network, crate::netmap::NetworkSettings::default());
        assert!(c.capture.payload && c.capture.network);
        c.network.validate().unwrap();
        assert!(toml::from_str::<Config>("[network]\nwindow = 1\n").is_err());
        // … and of [correlation], [kubernetes] and [metrics].
        assert_eq!(
            c.correlation,
            crate::correlate::CorrelationSettings::default()
        );
        assert_eq!(
            c.kubernetes,
            crate::correlate::k8s::KubernetesSettings::default()
        );
        assert_eq!(c.metrics.record_log, MetricsSettings::default().record_log);
        assert_eq!(c.admin, crate::admin::AdminSettings::default());
        assert!(toml::from_str::<Config>("[kubernetes]\nmode = \"sometimes\"\n").is_err());
    }
}
