//! Kernel capture: load and attach the eBPF programs, read the ring buffer, decode events.
pub mod btf;
pub mod budget;
mod comm;
pub mod conntrack;
pub mod doctor;
pub mod events;
pub mod net;
pub mod programs;
pub mod reassembly;
pub mod recording;
pub mod scope;
pub mod streams;
pub mod tables;
pub mod tls;
pub mod tls_go;
pub mod tracefs;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
};
use sonde_common::{self as abi, Offsets};
use tokio::io::unix::AsyncFd;

use self::events::{DecodeError, Event};
use self::net::NetMaps;
use self::programs::{Attachment, Feature, ProbeState, ProbeStatus, SocketLookup};

/// The eBPF object built by build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde-ebpf.o"));

/// The largest `[capture] ring_bytes` (256 MiB).
pub const MAX_RING_BYTES: u32 = 256 << 20;

/// Capture settings (the `[capture]` section of the config file).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureOptions {
    /// Payload bytes copied per syscall; the rest is counted and marked as a gap.
    pub capture_bytes: u32,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Trace the daemon's own process too (off: its output would feed back into itself).
    pub trace_self: bool,
    /// The kernel wakes the daemon once this many bytes wait in the ring (0: ring_bytes/16).
    pub wakeup_bytes: u32,
    /// The daemon also drains the ring this often, whatever is waiting: the upper bound on
    /// how late a record below the wakeup threshold is seen.
    pub poll_interval_ms: u64,
    /// Capture socket payloads (the syscall programs). Off: only TCP state changes and the
    /// network probes run (no L7 records); for nodes that want the network map alone.
    pub payload: bool,
    /// Run the network-quality probes (retransmits, drops, RTT, resets, interfaces, softirq).
    pub network: bool,
    /// With `network`: per-device packet and byte counters (two programs per packet).
    pub interface_probes: bool,
    /// With `network`: NET_RX/NET_TX softirq delay and run-time histograms. Off by default:
    /// three programs per softirq, which on loopback-heavy nodes means per packet
    /// (BENCHMARKS.md, network probes).
    pub softirq_probes: bool,
    /// Capture what processes write to stdout/stderr (fd 1 and 2, when not an inet socket)
    /// as [`events::Event::Log`] chunks, for log-template mining. Needs `payload`.
    pub capture_stdio: bool,
    /// Payload bytes copied per stdout/stderr write (≤ `sonde_common::MAX_STDIO`); the rest
    /// is counted (`log_bytes_truncated`). 0 turns stdout/stderr capture off like `capture_stdio`.
    pub stdio_bytes: u32,
    /// stdout/stderr chunks per second per CPU; beyond, dropped and counted
    /// (`log_rate_limited`): chatty writers must not fill the ring socket data shares. 0: no
    /// limit.
    pub stdio_per_sec: u32,
    /// How the kernel side learns that an fd is an inet socket: "auto" (the sock_*_length
    /// tracepoints where the kernel has them, Linux ≥ 6.3; else the file table),
    /// "tracepoint" or "fd-table".
    pub socket_lookup: SocketLookup,
    /// Follow sendfile/splice on sockets (the bytes are not copied: they become gaps of
    /// known length, so parsers stay in step). Needs `payload`.
    pub sendfile: bool,
    /// TLS plaintext through uprobes on libssl (OpenSSL 1.1/3, dynamically linked): HTTPS
    /// served or fetched through it gives the same records as cleartext. Needs `payload`.
    pub tls: bool,
    /// Which network namespaces and cgroups are captured (`[capture.scope]`, [`scope`]);
    /// empty: everything.
    pub scope: scope::ScopeOptions,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            capture_bytes: abi::DEFAULT_CAPTURE_BYTES,
            ring_bytes: 16 << 20,
            trace_self: false,
            wakeup_bytes: 0,
            poll_interval_ms: 20,
            payload: true,
            network: true,
            interface_probes: true,
            softirq_probes: false,
            capture_stdio: true,
            stdio_bytes: abi::DEFAULT_STDIO_BYTES,
            stdio_per_sec: abi::DEFAULT_STDIO_PER_SEC,
            socket_lookup: SocketLookup::Auto,
            sendfile: true,
            tls: true,
            scope: scope::ScopeOptions::default(),
        }
    }
}

impl CaptureOptions {
    pub fn validate(&self) -> Result<()> {
        if self.capture_bytes < abi::MIN_CAPTURE_BYTES {
            bail!(
                "capture_bytes {} is below the minimum {}",
                self.capture_bytes,
                abi::MIN_CAPTURE_BYTES
            );
        }
        if self.capture_bytes as usize > abi::MAX_CAPTURE {
            bail!(
                "capture_bytes {} exceeds the maximum {}",
                self.capture_bytes,
                abi::MAX_CAPTURE
            );
        }
        if self.stdio_bytes as usize > abi::MAX_STDIO {
            bail!(
                "stdio_bytes {} exceeds the maximum {}",
                self.stdio_bytes,
                abi::MAX_STDIO
            );
        }
        let page = page_size();
        if !self.ring_bytes.is_power_of_two()
            || (self.ring_bytes as usize) < page
            || self.ring_bytes > MAX_RING_BYTES
        {
            bail!(
                "ring_bytes {} must be a power of two within [the page size ({page}), {MAX_RING_BYTES}]",
                self.ring_bytes
            );
        }
        if self.wakeup_bytes >= self.ring_bytes {
            bail!(
                "wakeup_bytes {} must be below ring_bytes {}",
                self.wakeup_bytes,
                self.ring_bytes
            );
        }
        if self.poll_interval_ms == 0 {
            bail!("poll_interval_ms must be at least 1");
        }
        Ok(())
    }

    /// The wakeup threshold handed to the kernel side.
    pub fn effective_wakeup_bytes(&self) -> u32 {
        if self.wakeup_bytes == 0 {
            self.ring_bytes / 16
        } else {
            self.wakeup_bytes
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Per-CPU counters from the kernel side plus user-side decode errors.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CaptureStats {
    /// `per_cpu[cpu][stat]`, slots named by `sonde_common::stat::NAMES`.
    pub per_cpu: Vec<[u64; abi::stat::COUNT as usize]>,
    pub decode_errors: u64,
    /// Processes that submitted io_uring requests (their sockets are not captured).
    pub io_uring: Vec<IoUringUser>,
}

/// One process's io_uring use, from the kernel map.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IoUringUser {
    pub tgid: u32,
    pub comm: String,
    pub requests: u64,
    pub socket_requests: u64,
}

impl CaptureStats {
    pub fn total(&self, stat: u32) -> u64 {
        self.per_cpu.iter().map(|c| c[stat as usize]).sum()
    }
}

/// A loaded, attached capture. Dropping it detaches every program (links are fd-owned, nothing
/// is pinned, so a killed daemon leaves nothing behind either).
pub struct Capture {
    // Field order: the ring and maps drop before the programs' owner.
    ring: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    verdicts: BpfHashMap<MapData, u64, u8>,
    /// Per-process io_uring use (None: the program is not running).
    io_uring: Option<BpfHashMap<MapData, u32, abi::IoUringUse>>,
    net: Option<NetMaps>,
    /// Network probes that could not be attached (tracepoint missing, verifier refusal).
    net_missing: Vec<String>,
    /// Every program's state (attached, failed, off) and what it cost to verify.
    probes: Vec<ProbeStatus>,
    /// The libssl uprobes (None: off or failed to load).
    tls: Option<tls::Tls>,
    /// How sockets are recognised on this kernel.
    socket_lookup: SocketLookup,
    /// `enum skb_drop_reason` names of this kernel (empty when the probes are off).
    drop_reason_names: std::collections::HashMap<u32, String>,
    decode_errors: u64,
    /// Decodes without an allocation per record (payloads in shared blocks).
    decoder: events::Decoder,
    attached: usize,
    poll_interval: std::time::Duration,
    /// Possible CPUs (per-CPU map width), read once at start.
    cpus: usize,
    _ebpf: Ebpf,
}

impl Capture {
    /// Preflight (root, BTF, tracefs), load, attach. Only the core socket capture is fatal:
    /// an optional program that cannot load or attach turns its feature off alone.
    pub fn start(opts: &CaptureOptions) -> Result<Capture> {
        let prepared = Prepared::new(opts)?;
        let mut ebpf = prepared.load_object(opts)?;
        let mut probes = bring_up(&mut ebpf, &prepared, opts, true)?;
        let socket_io = probes
            .iter()
            .any(|p| p.feature == Feature::SocketIo && p.state == ProbeState::Attached);
        let tls_wanted = if !opts.payload {
            Err("payload capture is off".to_string())
        } else if !opts.tls {
            Err("off in the configuration".to_string())
        } else if !socket_io {
            Err("socket capture is not running".to_string())
        } else {
            Ok(())
        };
        let (tls_probes, tls) = tls::bring_up(&mut ebpf, tls_wanted, true);
        probes.extend(tls_probes);
        let net_running = probes
            .iter()
            .any(|p| p.feature.is_network() && p.state == ProbeState::Attached);
        let net_missing: Vec<String> = probes
            .iter()
            .filter(|p| p.feature.is_network() && p.state == ProbeState::Failed)
            .flat_map(|p| p.tracepoints.iter().cloned())
            .chain(
                probes
                    .iter()
                    .filter(|p| {
                        p.feature.is_network()
                            && p.state == ProbeState::Off
                            && prepared.net.why_unavailable(p.feature).is_some()
                    })
                    .flat_map(|p| p.tracepoints.iter().cloned()),
            )
            .collect();
        let attached = probes
            .iter()
            .filter(|p| p.state == ProbeState::Attached)
            .map(|p| p.tracepoints.len())
            .sum();
        let (net, drop_reason_names) = if net_running {
            (
                Some(NetMaps::take(&mut ebpf)?),
                net::drop_reason_names(&prepared.tracefs),
            )
        } else {
            (None, Default::default())
        };
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS")?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("map STATS")?)?;
        let verdicts = BpfHashMap::try_from(ebpf.take_map("VERDICTS").context("map VERDICTS")?)?;
        let io_uring = if probes
            .iter()
            .any(|p| p.feature == Feature::IoUring && p.state == ProbeState::Attached)
        {
            Some(BpfHashMap::try_from(
                ebpf.take_map("IO_URING").context("map IO_URING")?,
            )?)
        } else {
            None
        };
        tracing::info!(
            programs = attached,
            ring_bytes = opts.ring_bytes,
            capture_bytes = opts.capture_bytes,
            payload = opts.payload,
            stdio = opts.payload && opts.capture_stdio && opts.stdio_bytes > 0,
            network = net.is_some(),
            socket_lookup = ?prepared.socket_lookup,
            "capture attached"
        );
        Ok(Capture {
            // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf.
            ring: unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?,
            stats,
            verdicts,
            io_uring,
            net,
            net_missing,
            probes,
            tls,
            socket_lookup: prepared.socket_lookup,
            drop_reason_names,
            decode_errors: 0,
            decoder: events::Decoder::new(),
            attached,
            poll_interval: std::time::Duration::from_millis(opts.poll_interval_ms),
            cpus: prepared.cpus,
            _ebpf: ebpf,
        })
    }

    /// Every program's state, for `/api/health` and `sonde_probe_info`.
    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
    }

    /// How sockets are recognised on this kernel (never `Auto` once started).
    pub fn socket_lookup(&self) -> SocketLookup {
        self.socket_lookup
    }

    /// The network probes' maps (None when the probes are off): to read them, and to delete
    /// entries that were read for the last time.
    pub fn net_maps(&mut self) -> Option<&mut NetMaps> {
        self.net.as_mut()
    }

    /// Drop reason names of this kernel, from kfree_skb's format (empty: probes off).
    pub fn drop_reason_names(&self) -> &std::collections::HashMap<u32, String> {
        &self.drop_reason_names
    }

    /// Network probes that are not running (`category:name`).
    pub fn net_missing(&self) -> &[String] {
        &self.net_missing
    }

    /// Number of tracepoint attachments.
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// Waits until the ring buffer has records (a kernel wakeup, or the poll timer for
    /// records below the wakeup threshold), then decodes up to `max` of them into `out`.
    /// Records that fail to decode are counted (see [`CaptureStats::decode_errors`]).
    pub async fn next_batch(&mut self, out: &mut Vec<Event>, max: usize) -> Result<()> {
        loop {
            self.rescan_tls();
            if self.drain(out, max) > 0 {
                return Ok(());
            }
            // Readiness is cleared before the next drain: a record that lands after the
            // drain without a wakeup is picked up by the timer.
            if let Ok(guard) =
                tokio::time::timeout(self.poll_interval, self.ring.readable_mut()).await
            {
                guard?.clear_ready();
            }
        }
    }

    /// Attaches the TLS uprobes to libssl files that processes started mapping since the last
    /// scan (at most every [`tls::RESCAN`]).
    fn rescan_tls(&mut self) {
        if let Some(t) = self.tls.as_mut()
            && t.maybe_rescan(&mut self._ebpf)
        {
            t.describe(&mut self.probes);
        }
    }

    /// The libssl uprobes' attach state (None: the TLS feature is not running).
    pub fn tls_status(&self) -> Option<tls::TlsStatus> {
        self.tls.as_ref().map(|t| t.status())
    }

    /// Decodes up to `max` waiting records without blocking; returns how many were taken.
    fn drain(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            match self.decoder.decode(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    self.decode_errors += 1;
                    log_decode_error(&e);
                }
            }
            n += 1;
        }
        n
    }

    pub fn stats(&self) -> Result<CaptureStats> {
        let cpus = self.cpus;
        let mut per_cpu = vec![[0u64; abi::stat::COUNT as usize]; cpus];
        for slot in 0..abi::stat::COUNT {
            let values = self.stats.get(&slot, 0)?;
            for (cpu, v) in values.iter().enumerate().take(cpus) {
                per_cpu[cpu][slot as usize] = *v;
            }
        }
        let mut io_uring: Vec<IoUringUser> = self
            .io_uring
            .iter()
            .flat_map(|m| m.iter().filter_map(|r| r.ok()))
            .map(|(tgid, u)| IoUringUser {
                tgid,
                comm: events::comm_str(&u.comm),
                requests: u.requests,
                socket_requests: u.socket_requests,
            })
            .collect();
        io_uring.sort_by_key(|u| u.tgid);
        Ok(CaptureStats {
            per_cpu,
            decode_errors: self.decode_errors,
            io_uring,
        })
    }

    /// Tell the kernel to stop (or resume) copying payload for a connection. Bytes and
    /// positions keep being counted, so streams stay consistent.
    pub fn set_verdict(&mut self, conn_id: u64, verdict: u8) -> Result<()> {
        if verdict == abi::verdict::CAPTURE {
            match self.verdicts.remove(&conn_id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(e.into()),
            }
        } else {
            Ok(self.verdicts.insert(conn_id, verdict, 0)?)
        }
    }
}

fn log_decode_error(e: &DecodeError) {
    tracing::warn!(error = %e, "dropping a malformed ring-buffer record");
}

/// Clear errors for what Sonde cannot work without.
fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("Sonde must run as root (it loads eBPF programs and may mount tracefs)");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "/sys/kernel/btf/vmlinux is missing: Sonde needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y)"
        );
    }
    Ok(())
}

/// The object's configuration for this kernel: offsets, the socket lookup, the CPU count.
pub struct Prepared {
    pub tracefs: PathBuf,
    pub socket_lookup: SocketLookup,
    /// The network probes' offsets, and the probes this kernel cannot serve.
    pub net: net::NetOffsetReport,
    pub config: abi::Config,
    pub cpus: usize,
    /// The capture scope, resolved (empty: everything).
    pub scope: scope::ResolvedScope,
}

impl Prepared {
    /// Preflight (root, BTF, tracefs) and every offset the programs need.
    pub fn new(opts: &CaptureOptions) -> Result<Prepared> {
        opts.validate()?;
        // Before root and BTF: a path that does not resolve is a configuration error.
        let scope = opts.scope.resolve()?;
        preflight()?;
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this sonde was built with AYA_BUILD_SKIP: it has no eBPF object; rebuild without it"
            );
        }
        let tracefs = tracefs::ensure_mounted()?;
        let btf = btf::Btf::from_sys()?;
        let socket_lookup = resolve_socket_lookup(&tracefs, opts.socket_lookup)?;
        let offsets = kernel_offsets(&tracefs, &btf, socket_lookup)?;
        // Network offsets are optional like the probes: a feature without them stays off.
        let net = net::net_offsets(&tracefs, &btf);
        if opts.network {
            for (f, e) in &net.unavailable {
                tracing::warn!(feature = f.name(), error = %e, "network probe off on this kernel");
            }
        }
        let mut flags = 0;
        if opts.capture_stdio && opts.stdio_bytes > 0 {
            flags |= abi::config_flags::CAPTURE_STDIO;
        }
        if socket_lookup == SocketLookup::FdTable {
            flags |= abi::config_flags::SOCK_FROM_FD;
        }
        // Test-only: the unrolled walk of kernels without bpf_loop, on this one.
        let no_loop = std::env::var_os("SONDE_TEST_NO_BPF_LOOP").is_some();
        if !no_loop && has_bpf_loop() {
            flags |= abi::config_flags::BPF_LOOP;
        } else {
            let why = if no_loop {
                "SONDE_TEST_NO_BPF_LOOP is set"
            } else {
                "this kernel lacks the bpf_loop helper (Linux < 5.17)"
            };
            tracing::warn!(
                "{why}: only the first {} iovecs of a readv/writev/sendmsg/recvmsg are captured",
                abi::MAX_IOV
            );
        }
        // Test-only: make the optional sendfile program one the verifier must refuse.
        if std::env::var_os("SONDE_TEST_REJECT_SENDFILE").is_some() {
            flags |= abi::config_flags::TEST_REJECT_SPLICE;
        }
        // Test-only: the same for a TLS program.
        if std::env::var_os("SONDE_TEST_REJECT_TLS").is_some() {
            flags |= abi::config_flags::TEST_REJECT_TLS;
        }
        // Benchmark-only: the same attachments, every program returning at once (the floor
        // of `bench/capture-overhead.sh --floor`). Logged loudly: nothing is captured.
        if std::env::var_os("SONDE_BENCH_FLOOR").is_some_and(|v| v == "1") {
            tracing::warn!(
                "SONDE_BENCH_FLOOR=1: every eBPF program returns at once; nothing is captured"
            );
            flags |= abi::config_flags::FLOOR_ONLY;
        }
        flags |= scope.flags();
        if !scope.is_empty() {
            tracing::info!(scope = scope.describe(), "capture scope");
        }
        let config = abi::Config {
            self_tgid: if opts.trace_self {
                0
            } else {
                std::process::id()
            },
            capture_bytes: opts.capture_bytes,
            wakeup_bytes: opts.effective_wakeup_bytes(),
            stdio_bytes: opts.stdio_bytes,
            flags,
            daemon_tgid: std::process::id(),
            stdio_per_sec: opts.stdio_per_sec,
            scope_cgroup_levels: scope.cgroup_levels(),
            offsets,
            net: net.offsets,
            scope: scope_offsets(&btf)?,
        };
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting possible CPUs")?;
        Ok(Prepared {
            tracefs,
            socket_lookup,
            net,
            config,
            cpus,
            scope,
        })
    }

    /// Creates the maps and parses the programs; nothing is verified or attached yet.
    pub fn load_object(&self, opts: &CaptureOptions) -> Result<Ebpf> {
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &self.config, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("SCRATCH", self.cpus as u32)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        self.scope
            .fill_maps(&mut ebpf)
            .context("writing the capture scope")?;
        Ok(ebpf)
    }
}

/// Whether tracepoint programs may call `bpf_loop` (Linux ≥ 5.17): a load probe, as libbpf
/// does, not a version check (distributions backport helpers). A probe that cannot run counts
/// as no: the unrolled iovec walk works everywhere.
pub fn has_bpf_loop() -> bool {
    aya::sys::is_helper_supported(
        aya::programs::ProgramType::TracePoint,
        aya::sys::BpfHelper::BPF_FUNC_loop,
    )
    .unwrap_or(false)
}

/// `Auto` becomes the tracepoints where both exist, the file table otherwise.
fn resolve_socket_lookup(tracefs: &Path, wanted: SocketLookup) -> Result<SocketLookup> {
    let have = programs::SOCKET_LOOKUP
        .iter()
        .all(|a| tracepoint_exists(tracefs, a.category, a.tracepoint));
    match wanted {
        SocketLookup::Auto if have => Ok(SocketLookup::Tracepoint),
        SocketLookup::Auto => Ok(SocketLookup::FdTable),
        SocketLookup::Tracepoint if !have => bail!(
            "socket_lookup = \"tracepoint\" needs sock:sock_send_length and sock:sock_recv_length \
             (Linux ≥ 6.3); this kernel lacks them: use \"auto\" or \"fd-table\""
        ),
        other => Ok(other),
    }
}

pub fn tracepoint_exists(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs.join("events").join(category).join(name).is_dir()
}

/// Why a feature does not run under these options (None: it is wanted).
fn unwanted(f: Feature, p: &Prepared, opts: &CaptureOptions) -> Option<String> {
    let off = |why: &str| Some(why.to_string());
    match f {
        Feature::SocketIo if !opts.payload => off("payload capture is off"),
        Feature::SocketLookup if !opts.payload => off("payload capture is off"),
        Feature::SocketLookup if p.socket_lookup != SocketLookup::Tracepoint => {
            off("sockets are found through the file table on this kernel")
        }
        Feature::Sendfile if !opts.payload || !opts.sendfile => off("off in the configuration"),
        Feature::IoUring if !opts.payload => off("payload capture is off"),
        Feature::IoUring if p.config.offsets.uring_opcode == 0 => {
            off("not on this kernel: no io_uring:io_uring_submit_req tracepoint")
        }
        Feature::SocketIo
        | Feature::SocketLookup
        | Feature::TcpState
        | Feature::Sendfile
        | Feature::IoUring
        | Feature::Tls => None,
        _ if !opts.network => off("network probes are off in the configuration"),
        Feature::Interfaces if !opts.interface_probes => off("off in the configuration"),
        Feature::Softirq if !opts.softirq_probes => off("off in the configuration"),
        _ => p
            .net
            .why_unavailable(f)
            .map(|e| format!("not on this kernel: {e}")),
    }
}

/// Loads every wanted program and (with `attach`) attaches it; returns every program's
/// status. A core program that fails is an error; an optional one is turned off alone.
pub fn bring_up(
    ebpf: &mut Ebpf,
    p: &Prepared,
    opts: &CaptureOptions,
    attach: bool,
) -> Result<Vec<ProbeStatus>> {
    let stacks = budget::static_stack(EBPF_OBJECT).unwrap_or_default();
    let mut out: Vec<ProbeStatus> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for a in programs::all() {
        if seen.contains(&a.program) {
            continue;
        }
        seen.push(a.program);
        let targets: Vec<&Attachment> =
            programs::all().filter(|b| b.program == a.program).collect();
        let mut status = ProbeStatus {
            program: a.program.to_string(),
            feature: a.feature,
            state: ProbeState::Off,
            detail: String::new(),
            tracepoints: targets
                .iter()
                .map(|t| format!("{}:{}", t.category, t.tracepoint))
                .collect(),
            cost: None,
        };
        if let Some(why) = unwanted(a.feature, p, opts) {
            status.detail = why;
            out.push(status);
            continue;
        }
        // An optional feature whose tracepoint this kernel lacks is off, not failed.
        if !a.feature.is_core()
            && let Some(t) = targets
                .iter()
                .find(|t| !tracepoint_exists(&p.tracefs, t.category, t.tracepoint))
        {
            status.detail = format!(
                "not on this kernel: tracepoint {}:{} is missing",
                t.category, t.tracepoint
            );
            out.push(status);
            continue;
        }
        // The static stack is known whether or not the kernel took the program.
        let cost = |processed_insns, verify_time| budget::ProgramCost {
            program: a.program.to_string(),
            stack_bytes: stacks.get(a.program).copied().unwrap_or(0),
            processed_insns,
            verify_time,
        };
        let result = bring_up_one(ebpf, p, a.program, &targets, attach);
        match result {
            Ok((took, insns)) => {
                status.state = if attach {
                    ProbeState::Attached
                } else {
                    ProbeState::Loaded
                };
                status.cost = Some(cost(insns, Some(took)));
            }
            Err(e) if a.feature.is_core() && attach => {
                bail!("{e} (core socket capture cannot run without it)")
            }
            Err(e) => {
                if attach {
                    tracing::warn!(
                        feature = a.feature.name(),
                        program = a.program,
                        "{e}; feature {} turned off, the rest runs",
                        a.feature.name()
                    );
                }
                status.state = ProbeState::Failed;
                status.detail = e;
                status.cost = Some(cost(None, None));
            }
        }
        out.push(status);
    }
    Ok(out)
}

/// One program: its tracepoints exist, it verifies, it attaches to each of them.
fn bring_up_one(
    ebpf: &mut Ebpf,
    p: &Prepared,
    program: &str,
    targets: &[&Attachment],
    attach: bool,
) -> std::result::Result<(std::time::Duration, Option<u32>), String> {
    if let Some(t) = targets
        .iter()
        .find(|t| !tracepoint_exists(&p.tracefs, t.category, t.tracepoint))
    {
        return Err(format!(
            "tracepoint {}:{} is missing on this kernel",
            t.category, t.tracepoint
        ));
    }
    let cost = programs::load(ebpf, program)?;
    if attach {
        for t in targets {
            programs::attach(ebpf, program, t.category, t.tracepoint)
                .map_err(|e| format!("{e:#}"))?;
        }
    }
    Ok(cost)
}

/// Record and struct offsets for the kernel side, from tracefs formats and BTF.
pub fn kernel_offsets(
    tracefs_root: &Path,
    btf: &btf::Btf,
    lookup: SocketLookup,
) -> Result<Offsets> {
    let state = tracefs::Format::read(tracefs_root, "sock", "inet_sock_set_state")?;
    let skc = |m: &str| btf.member_offset("sock_common", m);
    let mut o = Offsets {
        state_skaddr: state.offset("skaddr", 8)?,
        state_oldstate: state.offset("oldstate", 4)?,
        state_newstate: state.offset("newstate", 4)?,
        state_sport: state.offset("sport", 2)?,
        state_dport: state.offset("dport", 2)?,
        state_family: state.offset("family", 2)?,
        state_protocol: state.offset("protocol", 2)?,
        state_saddr: state.offset("saddr", 4)?,
        state_daddr: state.offset("daddr", 4)?,
        state_saddr_v6: state.offset("saddr_v6", 16)?,
        state_daddr_v6: state.offset("daddr_v6", 16)?,
        skc_daddr: skc("skc_daddr")?,
        skc_rcv_saddr: skc("skc_rcv_saddr")?,
        skc_dport: skc("skc_dport")?,
        skc_num: skc("skc_num")?,
        skc_family: skc("skc_family")?,
        skc_v6_daddr: skc("skc_v6_daddr")?,
        skc_v6_rcv_saddr: skc("skc_v6_rcv_saddr")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdt_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        inode_mode: btf.member_offset("inode", "i_mode")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sock_protocol: btf.member_offset("sock", "sk_protocol")?,
        task_group_leader: btf.member_offset("task_struct", "group_leader")?,
        task_comm: btf.member_offset("task_struct", "comm")?,
        // Optional: kernels without io_uring (or its tracepoints) leave it 0 (feature off).
        uring_opcode: tracefs::Format::read(tracefs_root, "io_uring", "io_uring_submit_req")
            .and_then(|f| f.offset("opcode", 1))
            .unwrap_or(0),
        ..Offsets::ZERO
    };
    if lookup == SocketLookup::Tracepoint {
        let send = tracefs::Format::read(tracefs_root, "sock", "sock_send_length")?;
        let recv = tracefs::Format::read(tracefs_root, "sock", "sock_recv_length")?;
        o.send_len_sk = send.offset("sk", 8)?;
        o.send_len_family = send.offset("family", 2)?;
        o.send_len_protocol = send.offset("protocol", 2)?;
        o.recv_len_sk = recv.offset("sk", 8)?;
        o.recv_len_family = recv.offset("family", 2)?;
        o.recv_len_protocol = recv.offset("protocol", 2)?;
    }
    Ok(o)
}

/// Struct offsets for the capture scope's namespace checks, from BTF.
pub fn scope_offsets(btf: &btf::Btf) -> Result<abi::ScopeOffsets> {
    Ok(abi::ScopeOffsets {
        task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        nsproxy_net_ns: btf.member_offset("nsproxy", "net_ns")?,
        skc_net: btf.member_offset("sock_common", "skc_net")?,
        net_inum: btf
            .member_offset("net", "ns")?
            .checked_add(btf.member_offset("ns_common", "inum")?)
            .context("struct net: ns.inum offset overflows")?,
    })
}

/// CLOCK_MONOTONIC now, in the kernel side's timestamp base (bpf_ktime_get_ns).
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_lookup_falls_back_to_the_file_table_without_the_tracepoints() {
        let root = std::env::temp_dir().join(format!("sonde-fake-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(root.join("events/sock/sock_send_length")).unwrap();
        assert_eq!(
            resolve_socket_lookup(&root, SocketLookup::Auto).unwrap(),
            SocketLookup::FdTable,
            "one of the two is not enough"
        );
        let err = resolve_socket_lookup(&root, SocketLookup::Tracepoint).unwrap_err();
        assert!(err.to_string().contains("Linux ≥ 6.3"), "{err}");
        std::fs::create_dir_all(root.join("events/sock/sock_recv_length")).unwrap();
        assert_eq!(
            resolve_socket_lookup(&root, SocketLookup::Auto).unwrap(),
            SocketLookup::Tracepoint
        );
        assert_eq!(
            resolve_socket_lookup(&root, SocketLookup::FdTable).unwrap(),
            SocketLookup::FdTable
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The kernel side reads `Config` as one blob: no implicit padding may sit between its parts.
    #[test]
    fn config_layout_has_no_implicit_padding() {
        use std::mem::size_of;
        assert_eq!(size_of::<abi::net::NetOffsets>(), 52 * 2);
        assert_eq!(
            size_of::<abi::Config>(),
            8 * 4
                + size_of::<Offsets>()
                + size_of::<abi::net::NetOffsets>()
                + size_of::<abi::ScopeOffsets>()
        );
    }

    /// Every offset the network probes need exists on the running kernel (tracefs + BTF).
    #[test]
    fn net_offsets_from_running_kernel() {
        let root = tracefs::ensure_mounted().expect("tracefs (run as root)");
        let btf = btf::Btf::from_sys().expect("BTF");
        let report = net::net_offsets(&root, &btf);
        assert!(report.unavailable.is_empty(), "{:?}", report.unavailable);
        let n = report.offsets;
        assert_eq!(n.probe_saddr + 28, n.probe_daddr, "two 28-byte sockaddrs");
        assert!(n.skb_head > 0 && n.skb_len > 0 && n.skb_network_header > 0);
        assert!(n.net_ns_inum > 0);
        let names = net::drop_reason_names(&root);
        assert!(names.values().any(|r| r == "QUEUE_PURGE"));
    }

    #[test]
    fn capture_options_are_validated() {
        let too_big = CaptureOptions {
            capture_bytes: abi::MAX_CAPTURE as u32 + 1,
            ..Default::default()
        };
        assert!(
            too_big
                .validate()
                .unwrap_err()
                .to_string()
                .contains("exceeds the maximum")
        );
        let odd_ring = CaptureOptions {
            ring_bytes: 100_000,
            ..Default::default()
        };
        assert!(
            odd_ring
                .validate()
                .unwrap_err()
                .to_string()
                .contains("power of two")
        );
        CaptureOptions::default().validate().unwrap();
        for bad in [
            CaptureOptions {
                capture_bytes: 0,
                ..Default::default()
            },
            CaptureOptions {
                ring_bytes: 1 << 31,
                ..Default::default()
            },
            CaptureOptions {
                poll_interval_ms: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let big_ring = CaptureOptions {
            ring_bytes: MAX_RING_BYTES,
            ..Default::default()
        };
        big_ring.validate().unwrap();
        let s = streams::StreamSettings::default();
        s.validate().unwrap();
        let e = streams::StreamSettings {
            max_connections: 0,
            ..s
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("streams.max_connections"), "{e}");
    }
}
