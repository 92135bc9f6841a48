//! The outcome of a sandboxed plugin call, as every host of a plugin world (parsers, fault
//! rules) and the pipeline see it: why a call failed, and the per-plugin counters and
//! quarantine state that `/metrics` reports.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The epoch deadline passed (a loop, or simply too slow).
    Deadline,
    /// The call used up its fuel.
    Fuel,
    /// Memory or table growth beyond the cap.
    MemoryCap,
    /// Any other trap: a panic, unreachable, out-of-bounds access, a denied import.
    Trap,
    /// The plugin answered, but not what the contract asks (e.g. wrong number of results).
    BadOutput,
    /// Not called: the plugin is quarantined after repeated failures.
    Quarantined,
}

/// A failed call: its kind and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// When failures in a row quarantine a plugin, and for how long (the sandbox's limits say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarantine {
    /// Failures in a row before the plugin is quarantined.
    pub after: u32,
    /// First quarantine; each further one doubles (up to 64×).
    pub first_ms: u64,
}

/// Per-plugin counters and quarantine state: what `/metrics` reports per plugin.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// Calls made (successful or not; quarantine skips are not calls).
    pub calls: u64,
    pub failures: u64,
    pub deadline_exceeded: u64,
    pub fuel_exhausted: u64,
    pub memory_cap_hits: u64,
    pub traps: u64,
    pub bad_output: u64,
    pub instantiations: u64,
    /// Wall-clock time of the last call (instantiation included) and of all calls.
    pub last_call_us: u64,
    pub total_call_us: u64,
    /// The longest call: how far past its deadline a stopped plugin ran.
    pub max_call_us: u64,
    /// Calls refused while quarantined.
    pub skipped: u64,
    pub failures_in_a_row: u32,
    pub quarantines: u32,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub quarantined_until: Option<Instant>,
}

impl Health {
    /// Is the plugin quarantined now? (Counts a skip if so.)
    pub fn quarantined(&mut self, now: Instant) -> bool {
        match self.quarantined_until {
            Some(t) if now < t => {
                self.skipped += 1;
                true
            }
            _ => false,
        }
    }

    pub fn succeeded(&mut self) {
        self.calls += 1;
        self.failures_in_a_row = 0;
    }

    pub fn failed(&mut self, kind: FailureKind, message: String, policy: Quarantine, now: Instant) {
        self.calls += 1;
        self.failures += 1;
        match kind {
            FailureKind::Deadline => self.deadline_exceeded += 1,
            FailureKind::Fuel => self.fuel_exhausted += 1,
            FailureKind::MemoryCap => self.memory_cap_hits += 1,
            FailureKind::Trap => self.traps += 1,
            FailureKind::BadOutput => self.bad_output += 1,
            FailureKind::Quarantined => {}
        }
        self.last_error = Some(message);
        self.failures_in_a_row += 1;
        if self.failures_in_a_row >= policy.after.max(1) {
            let factor = 1u64 << self.quarantines.min(6);
            self.quarantined_until =
                Some(now + Duration::from_millis(policy.first_ms.saturating_mul(factor)));
            self.quarantines += 1;
            self.failures_in_a_row = 0;
        }
    }
}
