//! Reassembly and connection tracking settings (`[streams]` of the daemon's configuration).
use serde::{Deserialize, Serialize};

use crate::conntrack::TrackerConfig;

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
    /// Every `[streams]` value within its range (see docs/sonde.example.toml).
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            self.max_connections >= 1,
            "streams.max_connections must be at least 1 (got 0)"
        );
        ensure!(
            self.max_pending_bytes >= 1,
            "streams.max_pending_bytes must be at least 1 (got 0)"
        );
        ensure!(
            self.idle_timeout_s >= 1,
            "streams.idle_timeout_s must be at least 1 (got 0)"
        );
        Ok(())
    }

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
