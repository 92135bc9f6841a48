//! The sandbox's settings (`[plugins]` of the daemon's configuration).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Run the parsers embedded in the binary (HTTP/1.x, MySQL, PostgreSQL, DNS, Redis).
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
    pub limits: crate::Limits,
    /// Publisher keys whose signatures make a component in `parser_dirs` or `rule_dirs`
    /// loadable (`[[plugins.trusted_keys]]` tables: `name`, `key = "ed25519:<base64>"`). A
    /// component there needs a manifest signed by one of them (see `plugin::manifest`).
    pub trusted_keys: Vec<crate::manifest::TrustedKey>,
    /// Directories whose components may be unsigned (no manifest, or one without a
    /// signature); a manifest there is still checked. Empty: every component must be signed.
    pub allow_unsigned_dirs: Vec<PathBuf>,
    /// The largest component file (`.wasm`) read, at start-up or by `sonde plugin load` and
    /// the directory watch; a bigger one is refused before it is read.
    pub max_component_bytes: u64,
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
            limits: crate::Limits::default(),
            trusted_keys: Vec::new(),
            allow_unsigned_dirs: Vec::new(),
            max_component_bytes: crate::DEFAULT_MAX_COMPONENT_BYTES,
        }
    }
}

impl PluginsConfig {
    /// Every `[plugins]` value within its range (see docs/sonde.example.toml).
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            self.parser_queue_jobs >= 1,
            "plugins.parser_queue_jobs must be at least 1 (got 0)"
        );
        ensure!(
            (1..=MAX_BATCH_BYTES).contains(&self.batch_bytes),
            "plugins.batch_bytes must be within [1, {MAX_BATCH_BYTES}] (got {})",
            self.batch_bytes
        );
        ensure!(
            (crate::MIN_COMPONENT_BYTES..=crate::MAX_COMPONENT_BYTES)
                .contains(&self.max_component_bytes),
            "plugins.max_component_bytes must be within [{}, {}] (got {})",
            crate::MIN_COMPONENT_BYTES,
            crate::MAX_COMPONENT_BYTES,
            self.max_component_bytes
        );
        self.limits.validate()
    }
}

/// The largest `[plugins] batch_bytes`.
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;
