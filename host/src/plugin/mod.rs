//! The WebAssembly sandbox every plugin runs in, whatever its world (fault rules now, protocol
//! parsers next).
//!
//! - One [`PluginEngine`] per process: a wasmtime `Engine` with epoch interruption, and a
//!   ticker thread that advances the epoch every [`EPOCH_TICK`]; a call's deadline is a number
//!   of ticks, so a looping plugin is stopped within one tick of its budget.
//! - Every store gets a [`CapLimiter`]: linear memory and tables are capped, and hitting a cap
//!   is recorded so the failure is reported as "memory cap", not as a generic trap. (Epoch
//!   checks do not interrupt a bulk `memory.copy`; the memory cap bounds that.)
//! - WASI is linked with nothing granted: no preopened directory, no environment, no
//!   arguments, no sockets or name lookup, stdout and stderr discarded. Imports we do not
//!   provide trap when called instead of failing the link, so a component that merely declares
//!   them still loads.
//! - Components are compiled once and cached on disk ([`cache`]); only artifacts we compiled
//!   ourselves are ever deserialized.
//! - A failed call (trap, deadline, memory cap) drops the instance: the next call gets a fresh
//!   one. Failures in a row quarantine the plugin with a doubling backoff ([`Health`]).

pub mod cache;
pub mod fault_rules;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use cache::{CacheOutcome, ComponentCache};

/// How often the epoch advances: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Sandbox limits of every plugin call (`[plugins.limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock budget of one call.
    pub call_deadline_ms: u64,
    /// Elements per table.
    pub table_elements: usize,
    /// Failures in a row before the plugin is quarantined.
    pub quarantine_after: u32,
    /// First quarantine; each further one doubles (up to 64×).
    pub quarantine_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_deadline_ms: 200,
            table_elements: 20_000,
            quarantine_after: 3,
            quarantine_ms: 30_000,
        }
    }
}

impl Limits {
    fn deadline_ticks(&self) -> u64 {
        (self.call_deadline_ms / EPOCH_TICK.as_millis() as u64).max(1)
    }
}

/// Caps memory and tables of one store and remembers when a cap was hit.
#[derive(Debug)]
pub struct CapLimiter {
    memory_bytes: usize,
    table_elements: usize,
    /// Set when a grow was refused: the call's failure is a memory cap.
    pub hit: bool,
}

impl ResourceLimiter for CapLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            // An error (not `Ok(false)`) traps at once instead of letting the guest see a
            // failed grow and, like Rust's allocator, abort anyway with a less clear message.
            return Err(wasmtime::format_err!("memory cap of {} bytes reached (asked for {desired})", self.memory_bytes));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = true;
            return Err(wasmtime::format_err!("table cap of {} elements reached", self.table_elements));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // A component instantiates a handful of core modules (the guest, the WASI adapter, shims).
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

/// What a plugin's store holds.
pub struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: CapLimiter,
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The process-wide engine and the ticker that drives call deadlines.
pub struct PluginEngine {
    engine: Engine,
    cache: ComponentCache,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl PluginEngine {
    /// `cache_dir`: where precompiled components live; `None` compiles in memory every time.
    pub fn new(cache_dir: Option<&std::path::Path>) -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}")).context("creating the wasmtime engine")?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sonde-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .context("starting the epoch ticker thread")?
        };
        let cache = ComponentCache::new(cache_dir.map(|d| d.to_path_buf()));
        Ok(Self { engine, cache, stop, ticker: Some(ticker) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> &ComponentCache {
        &self.cache
    }

    /// Compile (or load from the cache) a component.
    pub fn component(&self, wasm: &[u8]) -> Result<(Component, CacheOutcome)> {
        self.cache.load(&self.engine, wasm)
    }

    /// A linker with WASI (nothing granted) and traps for every other import.
    pub fn linker(&self) -> Result<Linker<SandboxState>> {
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(linker)
    }

    /// A fresh store under `limits`, its deadline not yet armed.
    pub fn store(&self, limits: &Limits) -> Store<SandboxState> {
        let wasi = WasiCtx::builder().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build();
        let state = SandboxState {
            wasi,
            table: ResourceTable::new(),
            limiter: CapLimiter { memory_bytes: limits.memory_bytes, table_elements: limits.table_elements, hit: false },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Arm a store's deadline for one call.
pub fn arm_deadline(store: &mut Store<SandboxState>, limits: &Limits) {
    store.data_mut().limiter.hit = false;
    store.set_epoch_deadline(limits.deadline_ticks());
}

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The epoch deadline passed (a loop, or simply too slow).
    Deadline,
    /// Memory or table growth beyond the cap.
    MemoryCap,
    /// Any other trap: a panic, unreachable, out-of-bounds access, a denied import.
    Trap,
    /// The plugin answered, but not what the contract asks (e.g. wrong number of results).
    BadOutput,
}

/// Classify a failed call from the error and the store's limiter.
pub fn classify(err: &wasmtime::Error, memory_cap_hit: bool) -> FailureKind {
    if memory_cap_hit {
        return FailureKind::MemoryCap;
    }
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => FailureKind::Deadline,
        _ => FailureKind::Trap,
    }
}

/// Per-plugin counters and quarantine state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    pub calls: u64,
    pub failures: u64,
    pub deadline_exceeded: u64,
    pub memory_cap_hits: u64,
    pub traps: u64,
    pub bad_output: u64,
    pub instantiations: u64,
    /// Calls refused while quarantined.
    pub skipped: u64,
    pub failures_in_a_row: u32,
    pub quarantines: u32,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub quarantined_until: Option<Instant>,
}

impl Health {
    /// Is the plugin quarantined now?
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

    pub fn failed(&mut self, kind: FailureKind, message: String, limits: &Limits, now: Instant) {
        self.calls += 1;
        self.failures += 1;
        match kind {
            FailureKind::Deadline => self.deadline_exceeded += 1,
            FailureKind::MemoryCap => self.memory_cap_hits += 1,
            FailureKind::Trap => self.traps += 1,
            FailureKind::BadOutput => self.bad_output += 1,
        }
        self.last_error = Some(message);
        self.failures_in_a_row += 1;
        if self.failures_in_a_row >= limits.quarantine_after.max(1) {
            let factor = 1u64 << self.quarantines.min(6);
            self.quarantined_until = Some(now + Duration::from_millis(limits.quarantine_ms.saturating_mul(factor)));
            self.quarantines += 1;
            self.failures_in_a_row = 0;
        }
    }
}
