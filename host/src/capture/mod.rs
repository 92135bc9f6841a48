//! Kernel capture: load and attach the eBPF programs, read the ring buffer, decode events.
pub mod btf;
pub mod events;
pub mod net;
pub mod reassembly;
pub mod recording;
pub mod tracefs;

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use sonde_common::{self as abi, Offsets};
use tokio::io::unix::AsyncFd;

use self::events::{DecodeError, Event};
use self::net::{NET_ATTACHMENTS, NetMaps};

/// The eBPF object built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde-ebpf.o"));

/// Which program goes on which tracepoint. One program may serve several tracepoints (the
/// exits: the syscall kind travels in the in-flight entry).
pub const ATTACHMENTS: &[(&str, &str, &str)] = &[
    ("sonde_enter_read", "syscalls", "sys_enter_read"),
    ("sonde_enter_write", "syscalls", "sys_enter_write"),
    ("sonde_enter_readv", "syscalls", "sys_enter_readv"),
    ("sonde_enter_writev", "syscalls", "sys_enter_writev"),
    ("sonde_enter_sendto", "syscalls", "sys_enter_sendto"),
    ("sonde_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("sonde_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("sonde_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("sonde_enter_sendmmsg", "syscalls", "sys_enter_sendmmsg"),
    ("sonde_enter_recvmmsg", "syscalls", "sys_enter_recvmmsg"),
    ("sonde_exit_send", "syscalls", "sys_exit_write"),
    ("sonde_exit_send", "syscalls", "sys_exit_writev"),
    ("sonde_exit_send", "syscalls", "sys_exit_sendto"),
    ("sonde_exit_send", "syscalls", "sys_exit_sendmsg"),
    ("sonde_exit_send", "syscalls", "sys_exit_sendmmsg"),
    ("sonde_exit_recv", "syscalls", "sys_exit_read"),
    ("sonde_exit_recv", "syscalls", "sys_exit_readv"),
    ("sonde_exit_recv", "syscalls", "sys_exit_recvfrom"),
    ("sonde_exit_recv", "syscalls", "sys_exit_recvmsg"),
    ("sonde_exit_recv", "syscalls", "sys_exit_recvmmsg"),
    ("sonde_enter_connect", "syscalls", "sys_enter_connect"),
    ("sonde_enter_accept", "syscalls", "sys_enter_accept"),
    ("sonde_enter_accept4", "syscalls", "sys_enter_accept4"),
    ("sonde_exit_conn", "syscalls", "sys_exit_connect"),
    ("sonde_exit_conn", "syscalls", "sys_exit_accept"),
    ("sonde_exit_conn", "syscalls", "sys_exit_accept4"),
    ("sonde_enter_close", "syscalls", "sys_enter_close"),
    ("sonde_sock_send", "sock", "sock_send_length"),
    ("sonde_sock_recv", "sock", "sock_recv_length"),
    ("sonde_sock_state", "sock", "inet_sock_set_state"),
];

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
        }
    }
}

impl CaptureOptions {
    pub fn validate(&self) -> Result<()> {
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
        if !self.ring_bytes.is_power_of_two() || (self.ring_bytes as usize) < page {
            bail!(
                "ring_bytes {} must be a power of two ≥ the page size ({page})",
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
    net: Option<NetMaps>,
    /// Network probes that could not be attached (tracepoint missing, verifier refusal).
    net_missing: Vec<String>,
    /// `enum skb_drop_reason` names of this kernel (empty when the probes are off).
    drop_reason_names: std::collections::HashMap<u32, String>,
    decode_errors: u64,
    attached: usize,
    poll_interval: std::time::Duration,
    /// Possible CPUs (per-CPU map width), read once at start.
    cpus: usize,
    _ebpf: Ebpf,
}

impl Capture {
    /// Preflight (root, BTF, tracefs, every tracepoint), load, attach.
    pub fn start(opts: &CaptureOptions) -> Result<Capture> {
        opts.validate()?;
        preflight()?;
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this sonde was built with AYA_BUILD_SKIP: it has no eBPF object; rebuild without it"
            );
        }
        let root = tracefs::ensure_mounted()?;
        check_tracepoints(&root)?;
        let btf = btf::Btf::from_sys()?;
        let offsets = kernel_offsets(&root, &btf)?;
        // Network offsets are optional like the probes: without them the probes stay off.
        let net_offsets = if opts.network {
            net::net_offsets(&root, &btf)
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "network probes off"))
                .ok()
        } else {
            None
        };
        let config = abi::Config {
            self_tgid: if opts.trace_self {
                0
            } else {
                std::process::id()
            },
            capture_bytes: opts.capture_bytes,
            wakeup_bytes: opts.effective_wakeup_bytes(),
            stdio_bytes: opts.stdio_bytes,
            flags: if opts.capture_stdio && opts.stdio_bytes > 0 {
                abi::config_flags::CAPTURE_STDIO
            } else {
                0
            },
            daemon_tgid: std::process::id(),
            stdio_per_sec: opts.stdio_per_sec,
            _pad: 0,
            offsets,
            net: net_offsets.unwrap_or(abi::net::NetOffsets::ZERO),
        };
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting possible CPUs")?;
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("SCRATCH", cpus as u32)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (the kernel verifier log follows, if any)")?;
        let mut attached = 0;
        for (prog, category, name) in ATTACHMENTS {
            // Without payload capture only the TCP state changes run (roles, the map).
            if !opts.payload && *prog != "sonde_sock_state" {
                continue;
            }
            attach(&mut ebpf, prog, category, name)?;
            attached += 1;
        }
        let mut net_missing = Vec::new();
        if net_offsets.is_some() {
            for (prog, category, name) in NET_ATTACHMENTS {
                let wanted = match *category {
                    "irq" => opts.softirq_probes,
                    "net" => opts.interface_probes,
                    _ => true,
                };
                if !wanted {
                    continue;
                }
                match attach(&mut ebpf, prog, category, name) {
                    Ok(()) => attached += 1,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "network probe {category}:{name} off");
                        net_missing.push(format!("{category}:{name}"));
                    }
                }
            }
        } else if opts.network {
            net_missing.extend(NET_ATTACHMENTS.iter().map(|(_, c, n)| format!("{c}:{n}")));
        }
        let (net, drop_reason_names) = if net_offsets.is_some() {
            (
                Some(NetMaps::take(&mut ebpf)?),
                net::drop_reason_names(&root),
            )
        } else {
            (None, Default::default())
        };
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS")?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("map STATS")?)?;
        let verdicts = BpfHashMap::try_from(ebpf.take_map("VERDICTS").context("map VERDICTS")?)?;
        tracing::info!(
            programs = attached,
            ring_bytes = opts.ring_bytes,
            capture_bytes = opts.capture_bytes,
            payload = opts.payload,
            stdio = opts.payload && opts.capture_stdio && opts.stdio_bytes > 0,
            network = net.is_some(),
            "capture attached"
        );
        Ok(Capture {
            // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf.
            ring: unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?,
            stats,
            verdicts,
            net,
            net_missing,
            drop_reason_names,
            decode_errors: 0,
            attached,
            poll_interval: std::time::Duration::from_millis(opts.poll_interval_ms),
            cpus,
            _ebpf: ebpf,
        })
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

    /// Decodes up to `max` waiting records without blocking; returns how many were taken.
    fn drain(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            match events::decode(&item) {
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
        Ok(CaptureStats {
            per_cpu,
            decode_errors: self.decode_errors,
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

/// Loads (once: one program may serve several tracepoints) and attaches `prog`.
fn attach(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<()> {
    let program: &mut TracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from the eBPF object"))?
        .try_into()?;
    if program.fd().is_err() {
        program
            .load()
            .with_context(|| format!("verifier rejected {prog}"))?;
    }
    program
        .attach(category, name)
        .with_context(|| format!("attaching {prog} to {category}:{name}"))?;
    Ok(())
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

/// Every tracepoint Sonde attaches to must exist; the error names the first one missing.
pub fn check_tracepoints(tracefs_root: &Path) -> Result<()> {
    for (_, category, name) in ATTACHMENTS {
        let dir = tracefs_root.join("events").join(category).join(name);
        if !dir.is_dir() {
            bail!(
                "tracepoint {category}:{name} is missing on this kernel ({})",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Record and struct offsets for the kernel side, from tracefs formats and BTF.
pub fn kernel_offsets(tracefs_root: &Path, btf: &btf::Btf) -> Result<Offsets> {
    let send = tracefs::Format::read(tracefs_root, "sock", "sock_send_length")?;
    let recv = tracefs::Format::read(tracefs_root, "sock", "sock_recv_length")?;
    let state = tracefs::Format::read(tracefs_root, "sock", "inet_sock_set_state")?;
    let skc = |m: &str| btf.member_offset("sock_common", m);
    Ok(Offsets {
        send_len_sk: send.offset("sk", 8)?,
        send_len_family: send.offset("family", 2)?,
        send_len_protocol: send.offset("protocol", 2)?,
        recv_len_sk: recv.offset("sk", 8)?,
        recv_len_family: recv.offset("family", 2)?,
        recv_len_protocol: recv.offset("protocol", 2)?,
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
    fn missing_tracepoint_is_named() {
        let root = std::env::temp_dir().join(format!("sonde-fake-tracefs-{}", std::process::id()));
        for (_, category, name) in ATTACHMENTS {
            if *name != "inet_sock_set_state" {
                std::fs::create_dir_all(root.join("events").join(category).join(name)).unwrap();
            }
        }
        let err = check_tracepoints(&root).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&root);
        assert!(
            err.contains("tracepoint sock:inet_sock_set_state is missing"),
            "{err}"
        );
    }

    /// The kernel side reads `Config` as one blob: no implicit padding may sit between its parts.
    #[test]
    fn config_layout_has_no_implicit_padding() {
        use std::mem::size_of;
        assert_eq!(size_of::<abi::net::NetOffsets>(), 44 * 2);
        assert_eq!(
            size_of::<abi::Config>(),
            8 * 4 + size_of::<Offsets>() + size_of::<abi::net::NetOffsets>()
        );
    }

    /// Every offset the network probes need exists on the running kernel (tracefs + BTF).
    #[test]
    fn net_offsets_from_running_kernel() {
        let root = tracefs::ensure_mounted().expect("tracefs (run as root)");
        let btf = btf::Btf::from_sys().expect("BTF");
        let n = net::net_offsets(&root, &btf).expect("network offsets");
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
    }
}
