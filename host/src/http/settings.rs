//! The API's settings (`[api]` of the daemon's configuration).
use std::path::PathBuf;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// A file holding the bearer token that lets clients off loopback read `/api/*`
    /// (`Authorization: Bearer <token>`). Unset: `/api/*` answers loopback clients only.
    /// `/metrics` is open either way.
    pub token_file: Option<PathBuf>,
    /// Connections served at once (1–1024); one more is answered 503 at once and closed.
    pub max_connections: usize,
    /// How long one rendered `/metrics` page may serve every scrape (0–60000 ms). 0, the
    /// default: a scrape gets a page rendered after it arrived, or the one under way when it
    /// arrived (concurrent scrapers share a render either way).
    pub metrics_cache_ms: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            token_file: None,
            max_connections: 32,
            metrics_cache_ms: 0,
        }
    }
}

impl ApiSettings {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (1..=1024).contains(&self.max_connections),
            "api.max_connections must be within 1..=1024 (got {})",
            self.max_connections
        );
        ensure!(
            self.metrics_cache_ms <= 60_000,
            "api.metrics_cache_ms must be at most 60000 (got {})",
            self.metrics_cache_ms
        );
        Ok(())
    }
}
