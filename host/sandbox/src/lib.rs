//! The WebAssembly sandbox every plugin runs in, whatever its world (fault rules now, protocol
//! parsers next). Nothing here knows a world: a world's module (e.g. [`fault_rules`]) brings its
//! bindgen `<World>Pre` through [`WorldPre`] and gets instances, limits, failure handling and
//! counters from [`Sandboxed`].
//!
//! - One [`PluginEngine`] per process: a wasmtime `Engine` with epoch interruption, and a
//!   ticker thread that advances the epoch every [`EPOCH_TICK`]; a call's deadline is a number
//!   of ticks, so a looping plugin is stopped no earlier than its budget and within one tick
//!   after it. Fuel (a
//!   deterministic instruction budget) and the pooling allocator are optional, off by default.
//! - Every store gets a [`CapLimiter`]: linear memory, tables and instances are capped, and
//!   hitting a cap is recorded so the failure is reported as "memory cap", not as a generic
//!   trap. (Epoch checks do not interrupt a bulk `memory.copy`; the memory cap bounds that.)
//! - WASI: only `wasi:io`, `wasi:cli` (exit, stdio, terminal, an empty environment) and
//!   `wasi:random` are linked; `wasi:clocks` only when the operator grants it
//!   (`[plugins] grant_clocks`: a parser or rule has its timestamps from the daemon, and a clock
//!   is a side channel). No filesystem and no sockets at all: those
//!   imports, like any other we do not provide, are defined as traps
//!   ([`stub_unknown_imports`]), so a component that merely declares them still loads and fails
//!   only if it calls them. No arguments, no environment
//!   variables; stdout and stderr go to a small bounded buffer ([`output`]) whose text is added
//!   to a trap's error message.
//! - Components are compiled once and cached on disk ([`cache`]); only artifacts we compiled
//!   ourselves are ever deserialized.
//! - A failed call (trap, deadline, fuel, memory cap) drops the instance: the next call gets a
//!   fresh one. Failures in a row quarantine the plugin with a doubling backoff ([`Health`]).

pub mod cache;
pub mod fault_rules;
pub mod manifest;
pub mod output;
pub mod package;
pub mod parsers;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use settings::PluginsConfig;
pub use sonde_parse::{Failure, FailureKind, Health, Quarantine};

pub use cache::{CacheOutcome, ComponentCache};
pub use output::OutputCapture;

/// How often the epoch advances: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What a plugin's stdout and stderr may leave in memory per instance.
pub const OUTPUT_CAPTURE_BYTES: usize = 4096;

/// `[plugins] max_component_bytes` by default, and its range.
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 32 << 20;
pub const MIN_COMPONENT_BYTES: u64 = 1 << 10;
pub const MAX_COMPONENT_BYTES: u64 = 1 << 30;

/// The largest manifest (`.toml` next to a component) read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Tables and memories one component instance may create (a Rust `wasm32-wasip2` component has
/// a handful of core instances, one or two memories and a few tables).
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 4;

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
    /// Core instances one component instance may create.
    pub instances: usize,
    /// Fuel (about one unit per Wasm instruction) per call; 0 disables fuel metering, leaving
    /// the wall-clock deadline as the only CPU bound. Costs some speed when on.
    pub fuel: u64,
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
            instances: 16,
            fuel: 0,
            quarantine_after: 3,
            quarantine_ms: 30_000,
        }
    }
}

impl Limits {
    /// Every `[plugins.limits]` value within its range (see docs/sonde.example.toml).
    pub fn validate(&self) -> Result<()> {
        use anyhow::ensure;
        ensure!(
            self.memory_bytes >= 1 << 20,
            "plugins.limits.memory_bytes must be at least 1 MiB (got {})",
            self.memory_bytes
        );
        ensure!(
            (1..=60_000).contains(&self.call_deadline_ms),
            "plugins.limits.call_deadline_ms must be within [1, 60000] (got {})",
            self.call_deadline_ms
        );
        ensure!(
            self.table_elements >= 1,
            "plugins.limits.table_elements must be at least 1 (got 0)"
        );
        ensure!(
            self.instances >= 1,
            "plugins.limits.instances must be at least 1 (got 0)"
        );
        ensure!(
            self.quarantine_after >= 1,
            "plugins.limits.quarantine_after must be at least 1 (got 0)"
        );
        Ok(())
    }

    /// The quarantine policy these limits set.
    pub fn quarantine(&self) -> Quarantine {
        Quarantine {
            after: self.quarantine_after,
            first_ms: self.quarantine_ms,
        }
    }

    /// Epoch ticks a call may run. The first tick comes anywhere within one period of arming,
    /// so one extra tick makes the budget a floor: a call runs at least `call_deadline_ms` and
    /// at most one tick more.
    fn deadline_ticks(&self) -> u64 {
        self.call_deadline_ms
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            + 1
    }
}

/// How the engine is built; one per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Where precompiled components live; `None` compiles in memory every time.
    pub cache_dir: Option<PathBuf>,
    /// Meter fuel (needed for [`Limits::fuel`]).
    pub fuel: bool,
    /// Use the pooling allocator with slots for this many concurrent component instances (0: the
    /// default on-demand allocator). Faster instantiation, address space reserved up front.
    pub pooling_instances: u32,
    /// The per-store limits, to size the pool's slots.
    pub limits: Limits,
    /// Link `wasi:clocks` (wall and monotonic) for plugins; off: calling them traps.
    pub grant_clocks: bool,
    /// Benchmarks only: compile without epoch interruption and never arm a call deadline, to
    /// measure what the deadline mechanism costs. Without deadlines a looping plugin is never
    /// stopped. Off (deadlines on) by default and in [`Self::from_config`].
    pub no_epoch_deadlines: bool,
}

impl EngineOptions {
    /// The options `[plugins]` asks for (an empty `cache_dir` means no disk cache; fuel is
    /// metered only when a fuel limit is set).
    pub fn from_config(cfg: &crate::PluginsConfig) -> Self {
        Self {
            cache_dir: cfg.cache_dir.clone().filter(|d| !d.as_os_str().is_empty()),
            fuel: cfg.limits.fuel > 0,
            pooling_instances: cfg.pooling_instances,
            limits: cfg.limits,
            grant_clocks: cfg.grant_clocks,
            no_epoch_deadlines: false,
        }
    }
}

/// Caps memory, tables and instances of one store and remembers when a cap was hit.
#[derive(Debug)]
pub struct CapLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    /// Set when a grow was refused: the call's failure is a memory cap.
    pub hit: bool,
}

impl ResourceLimiter for CapLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            // An error (not `Ok(false)`) traps at once, like `StoreLimits` with
            // `trap_on_grow_failure`, instead of letting the guest see a failed grow and, like
            // Rust's allocator, abort anyway with a less clear message.
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached (asked for {desired})",
                self.memory_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "table cap of {} elements reached",
                self.table_elements
            ));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// What a plugin's store holds.
pub struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: CapLimiter,
    /// The plugin's stdout and stderr.
    pub output: OutputCapture,
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The process-wide engine and the ticker that drives call deadlines.
pub struct PluginEngine {
    engine: Engine,
    cache: ComponentCache,
    fuel: bool,
    grant_clocks: bool,
    /// Epoch interruption is on and calls are armed with a deadline (see
    /// [`EngineOptions::no_epoch_deadlines`]).
    deadlines: bool,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

impl PluginEngine {
    /// Default options with this cache directory (`None`: compile in memory every time).
    pub fn new(cache_dir: Option<&std::path::Path>) -> Result<Self> {
        Self::with_options(&EngineOptions {
            cache_dir: cache_dir.map(|d| d.to_path_buf()),
            ..Default::default()
        })
    }

    pub fn with_options(opts: &EngineOptions) -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(!opts.no_epoch_deadlines)
            .consume_fuel(opts.fuel);
        if opts.pooling_instances > 0 {
            let n = opts.pooling_instances;
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(opts.limits.instances as u32))
                .max_core_instances_per_component(opts.limits.instances as u32)
                .total_memories(n.saturating_mul(MAX_MEMORIES as u32))
                .max_memories_per_component(MAX_MEMORIES as u32)
                .total_tables(n.saturating_mul(MAX_TABLES as u32))
                .max_tables_per_component(MAX_TABLES as u32)
                .table_elements(opts.limits.table_elements)
                // Our limiter stops growth at `memory_bytes`; the pool must not stop it first.
                .max_memory_size(opts.limits.memory_bytes.next_multiple_of(64 << 10));
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)
            .map_err(wasm_err)
            .context("creating the wasmtime engine")?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            // A weak handle: the ticker never keeps a dropped engine alive.
            let weak = engine.weak();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sonde-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match weak.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .context("starting the epoch ticker thread")?
        };
        let cache = ComponentCache::new(opts.cache_dir.clone());
        Ok(Self {
            engine,
            cache,
            fuel: opts.fuel,
            grant_clocks: opts.grant_clocks,
            deadlines: !opts.no_epoch_deadlines,
            stop,
            ticker: Some(ticker),
        })
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

    /// A linker with the WASI subset we grant (see the module docs) and nothing else; a world's
    /// module adds its host interfaces (if any), then [`stub_unknown_imports`] for `component`.
    pub fn linker(&self) -> Result<Linker<SandboxState>> {
        let mut linker = Linker::new(&self.engine);
        add_wasi_subset(&mut linker, self.grant_clocks)
            .map_err(wasm_err)
            .context("linking WASI")?;
        Ok(linker)
    }

    /// A linker for `component`: the WASI subset, then traps for every other import.
    pub fn linker_for(&self, component: &Component) -> Result<Linker<SandboxState>> {
        let mut linker = self.linker()?;
        let linked: &[&str] = if self.grant_clocks { CLOCKS_WASI } else { &[] };
        stub_unknown_imports(&mut linker, component, linked)
            .context("stubbing the component's other imports")?;
        Ok(linker)
    }

    /// A fresh store under `limits`, its deadline not yet armed.
    pub fn store(&self, limits: &Limits) -> Store<SandboxState> {
        let output = OutputCapture::new(OUTPUT_CAPTURE_BYTES);
        // No args, no environment, no preopened directory; sockets are not even linked, and
        // denied here as well should anyone link them later.
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = SandboxState {
            wasi,
            table: ResourceTable::new(),
            limiter: CapLimiter {
                memory_bytes: limits.memory_bytes,
                table_elements: limits.table_elements,
                instances: limits.instances,
                hit: false,
            },
            output,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store
    }

    /// Arm a store for one call: the deadline (and fuel, when metered) starts now.
    pub fn arm(&self, store: &mut Store<SandboxState>, limits: &Limits) {
        store.data_mut().limiter.hit = false;
        store.data().output.clear();
        if self.deadlines {
            store.set_epoch_deadline(limits.deadline_ticks());
        }
        if self.fuel {
            let fuel = if limits.fuel == 0 {
                u64::MAX
            } else {
                limits.fuel
            };
            // Cannot fail: fuel metering is on in this engine.
            let _ = store.set_fuel(fuel);
        }
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

struct HasTable;

impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// `wasi:io`, `wasi:cli` (no environment or arguments are configured) and `wasi:random`
/// ([`GRANTED_WASI`]), `wasi:clocks` when granted ([`CLOCKS_WASI`]); deliberately never
/// `wasi:filesystem` nor `wasi:sockets`.
fn add_wasi_subset(l: &mut Linker<SandboxState>, clocks_granted: bool) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync::io};
    use wasmtime_wasi::random::WasiRandom;
    type S = SandboxState;

    io::error::add_to_linker::<S, HasTable>(l, |s| &mut s.table)?;
    io::poll::add_to_linker::<S, HasTable>(l, |s| &mut s.table)?;
    io::streams::add_to_linker::<S, HasTable>(l, |s| &mut s.table)?;
    if clocks_granted {
        clocks::wall_clock::add_to_linker::<S, WasiClocks>(l, S::clocks)?;
        clocks::monotonic_clock::add_to_linker::<S, WasiClocks>(l, S::clocks)?;
    }
    random::random::add_to_linker::<S, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<S, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<S, WasiRandom>(l, |s| s.wasi.random())?;
    cli::exit::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::environment::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stdin::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stdout::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stderr::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_input::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_output::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stdin::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stdout::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stderr::add_to_linker::<S, WasiCli>(l, S::cli)?;
    Ok(())
}

/// The WASI interfaces [`add_wasi_subset`] links, without their version: the linker matches a
/// component's `@0.2.x` import to our `@0.2.y` by semver.
pub const GRANTED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// The clock interfaces, linked only with `grant_clocks`.
pub const CLOCKS_WASI: &[&str] = &["wasi:clocks/wall-clock", "wasi:clocks/monotonic-clock"];

fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// A stand-in for resource types of interfaces we do not grant; never instantiated.
struct Denied;

/// The host type wasmtime-wasi binds a granted resource to, for the resources other interfaces
/// `use` (the `wasi:io` ones).
fn granted_resource(iface: &str, name: &str) -> Option<wasmtime::component::ResourceType> {
    use wasmtime::component::ResourceType;
    use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, IoError};
    match (iface, name) {
        ("wasi:io/error", "error") => Some(ResourceType::host::<IoError>()),
        ("wasi:io/poll", "pollable") => Some(ResourceType::host::<DynPollable>()),
        ("wasi:io/streams", "input-stream") => Some(ResourceType::host::<DynInputStream>()),
        ("wasi:io/streams", "output-stream") => Some(ResourceType::host::<DynOutputStream>()),
        _ => None,
    }
}

/// Define every import of `component` that is neither granted WASI nor one of `provided`
/// (unversioned interface names the caller linked itself) as a function that traps when called.
///
/// Not `Linker::define_unknown_imports_as_traps`: in wasmtime 48 it looks names up exactly, so
/// a component importing `wasi:cli/environment@0.2.6` gets a trap stub under that name which
/// shadows our semver-compatible `@0.2.12` implementation (wasmtime issue #10663): every WASI
/// call, even writing a panic message, would trap. Here granted interfaces are skipped by name
/// without version and left to the linker's semver matching.
pub fn stub_unknown_imports(
    linker: &mut Linker<SandboxState>,
    component: &Component,
    provided: &[&str],
) -> Result<()> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::{LinkerInstance, ResourceType};

    type Aliases = Vec<(ResourceType, ResourceType)>;

    fn stub(
        inst: &mut LinkerInstance<'_, SandboxState>,
        engine: &Engine,
        aliases: &Aliases,
        name: &str,
        item: &ComponentItem,
        path: &str,
    ) -> Result<()> {
        match item {
            ComponentItem::ComponentFunc(_) => {
                let path = path.to_string();
                inst.func_new(name, move |_, _, _, _| {
                    wasmtime::bail!("import `{path}` is not granted to plugins")
                })
                .map_err(wasm_err)?;
            }
            ComponentItem::ComponentInstance(i) => {
                let mut sub = inst.instance(name).map_err(wasm_err)?;
                for (export, e) in i.exports(engine) {
                    stub(
                        &mut sub,
                        engine,
                        aliases,
                        export,
                        &e.ty,
                        &format!("{path}#{export}"),
                    )?;
                }
            }
            ComponentItem::Resource(ty) => {
                // A `use` of a granted resource (`wasi:filesystem/types` re-exports
                // `wasi:io/streams.input-stream`) must be that resource; anything else is ours.
                let host = aliases
                    .iter()
                    .find(|(imported, _)| imported == ty)
                    .map_or(ResourceType::host::<Denied>(), |(_, h)| *h);
                inst.resource(name, host, |_, _| Ok(())).map_err(wasm_err)?;
            }
            // Types need no definition; modules and components cannot be imported by a plugin.
            ComponentItem::Type(_) | ComponentItem::CoreFunc(_) => {}
            ComponentItem::Module(_) | ComponentItem::Component(_) => {
                anyhow::bail!(
                    "the component imports a module or component (`{path}`); plugins cannot"
                )
            }
        }
        Ok(())
    }

    let engine = linker.engine().clone();
    let ty = component.component_type();
    // The component's view of the granted resources, and the host types we bound them to.
    let mut aliases: Aliases = Vec::new();
    for (name, import) in ty.imports(&engine) {
        if let ComponentItem::ComponentInstance(i) = &import.ty {
            for (export, e) in i.exports(&engine) {
                if let (ComponentItem::Resource(imported), Some(host)) =
                    (&e.ty, granted_resource(unversioned(name), export))
                {
                    aliases.push((*imported, host));
                }
            }
        }
    }
    for (name, import) in ty.imports(&engine) {
        let iface = unversioned(name);
        if GRANTED_WASI.contains(&iface) || provided.contains(&iface) {
            continue;
        }
        stub(
            &mut linker.root(),
            &engine,
            &aliases,
            name,
            &import.ty,
            name,
        )?;
    }
    Ok(())
}

/// The bytes of the plugin file at `path` (a component or its manifest), at most `max`: only
/// a regular file is read. It is opened without blocking (a FIFO, a device or a directory is
/// refused at once, judged by the metadata of the descriptor opened, not of the path), its
/// size is checked before reading, and the read itself stops after `max` bytes (a file that
/// grows meanwhile is refused too). Errors keep the open's kind (`NotFound`); `limit` names
/// the setting `max` comes from, for the message.
pub fn read_plugin_file(path: &std::path::Path, max: u64, limit: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read as _};
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("refused: {what}, not a regular file"),
        ));
    }
    let too_big = |size: u64| {
        Error::new(
            ErrorKind::FileTooLarge,
            format!("refused: {size} bytes, above the limit of {max} ({limit})"),
        )
    };
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Every `*.wasm` file of `dirs`, each directory's in file-name order: how rule and parser
/// components are found. A directory that cannot be read is an error naming it.
pub fn wasm_files(dirs: &[PathBuf], what: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in dirs {
        let mut in_dir: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {what} directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    Ok(files)
}

/// Returned by a world's call closure when the plugin's answer breaks the contract; the
/// instance is kept (it is not poisoned), the call counts as [`FailureKind::BadOutput`].
#[derive(Debug)]
pub struct BadOutput(pub String);

impl std::fmt::Display for BadOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad output: {}", self.0)
    }
}

impl std::error::Error for BadOutput {}

/// Classify a failed call from the error and the store's limiter.
pub fn classify(err: &wasmtime::Error, memory_cap_hit: bool) -> FailureKind {
    if memory_cap_hit {
        return FailureKind::MemoryCap;
    }
    if err.downcast_ref::<BadOutput>().is_some() {
        return FailureKind::BadOutput;
    }
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => FailureKind::Deadline,
        Some(wasmtime::Trap::OutOfFuel) => FailureKind::Fuel,
        _ => FailureKind::Trap,
    }
}

/// One loaded plugin of any world, as `/metrics` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStats {
    /// The WIT world (`fault-rule`, `protocol-parser`).
    pub world: &'static str,
    pub name: String,
    pub version: String,
    /// `embedded` or the file it came from.
    pub source: String,
    pub health: Health,
}

/// A world's bindgen `<World>Pre`: how to make a fresh instance in a sandbox store.
pub trait WorldPre {
    type Bindings;
    fn instantiate(&self, store: &mut Store<SandboxState>) -> wasmtime::Result<Self::Bindings>;
}

/// One plugin's instance (made on demand), its failure handling and its counters.
pub struct Sandboxed<P: WorldPre> {
    pre: P,
    instance: Option<(Store<SandboxState>, P::Bindings)>,
    pub health: Health,
}

impl<P: WorldPre> Sandboxed<P> {
    pub fn new(pre: P) -> Self {
        Self {
            pre,
            instance: None,
            health: Health::default(),
        }
    }

    /// Is there a live instance? (None after a failure, until the next call.)
    pub fn instantiated(&self) -> bool {
        self.instance.is_some()
    }

    /// How instances are made.
    pub fn pre(&self) -> &P {
        &self.pre
    }

    /// How instances are made, to change it (e.g. a rule's parameters, passed to every fresh
    /// instance): the current instance, made the old way, is dropped; the next call makes one
    /// the new way.
    pub fn pre_mut(&mut self) -> &mut P {
        self.instance = None;
        &mut self.pre
    }

    /// One call in the sandbox: refused while quarantined; arms the deadline; instantiates if
    /// needed (instantiation and call share that one deadline); on failure classifies it,
    /// adds what the plugin printed, drops the instance (a trapped instance is never called
    /// again) and counts it. Return [`BadOutput`] from `f` for a contract violation.
    pub fn call<R>(
        &mut self,
        engine: &PluginEngine,
        limits: &Limits,
        f: impl FnOnce(&P::Bindings, &mut Store<SandboxState>) -> wasmtime::Result<R>,
    ) -> std::result::Result<R, Failure> {
        let now = Instant::now();
        if self.health.quarantined(now) {
            return Err(Failure {
                kind: FailureKind::Quarantined,
                message: "quarantined after repeated failures".into(),
            });
        }
        let result = self.call_inner(engine, limits, now, f);
        let took = now.elapsed().as_micros() as u64;
        self.health.last_call_us = took;
        self.health.total_call_us += took;
        self.health.max_call_us = self.health.max_call_us.max(took);
        result
    }

    fn call_inner<R>(
        &mut self,
        engine: &PluginEngine,
        limits: &Limits,
        now: Instant,
        f: impl FnOnce(&P::Bindings, &mut Store<SandboxState>) -> wasmtime::Result<R>,
    ) -> std::result::Result<R, Failure> {
        // One deadline for the whole call: a fresh instance is armed once, before it is made,
        // and the call runs on what instantiation left of the budget (re-arming gave a slow
        // instantiation and the call a full deadline each).
        let fresh = self.instance.is_none();
        if fresh {
            let mut store = engine.store(limits);
            engine.arm(&mut store, limits);
            self.health.instantiations += 1;
            match self.pre.instantiate(&mut store) {
                Ok(bindings) => self.instance = Some((store, bindings)),
                Err(e) => {
                    let failure = describe(&e, &store, limits, "instantiation failed");
                    self.health.failed(
                        failure.kind,
                        failure.message.clone(),
                        limits.quarantine(),
                        now,
                    );
                    return Err(failure);
                }
            }
        }
        let (store, bindings) = self.instance.as_mut().expect("instantiated above");
        if !fresh {
            engine.arm(store, limits);
        }
        match f(bindings, store) {
            Ok(r) => {
                self.health.succeeded();
                Ok(r)
            }
            Err(e) => {
                let failure = describe(&e, store, limits, "trapped");
                if failure.kind != FailureKind::BadOutput {
                    self.instance = None;
                }
                self.health.failed(
                    failure.kind,
                    failure.message.clone(),
                    limits.quarantine(),
                    now,
                );
                Err(failure)
            }
        }
    }
}

fn describe(
    e: &wasmtime::Error,
    store: &Store<SandboxState>,
    limits: &Limits,
    trapped: &str,
) -> Failure {
    let kind = classify(e, store.data().limiter.hit);
    let what = match kind {
        FailureKind::Deadline => format!("stopped at its {} ms deadline", limits.call_deadline_ms),
        FailureKind::Fuel => format!("stopped when its {} units of fuel ran out", limits.fuel),
        FailureKind::MemoryCap => format!("stopped at its {} byte memory cap", limits.memory_bytes),
        FailureKind::BadOutput => "broke the contract".to_string(),
        _ => trapped.to_string(),
    };
    let mut message = format!("{what}: {e:#}");
    if let Some(said) = store.data().output.text() {
        message.push_str(&format!("; plugin output: {said}"));
    }
    Failure { kind, message }
}

#[cfg(test)]
mod tests;
