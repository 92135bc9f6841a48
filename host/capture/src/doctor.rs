//! `sonde doctor`: what this kernel offers, and whether each eBPF program would load here, with
//! its verifier cost against the budget (capture::budget). Loads and attaches every program
//! (the links are dropped before it returns).
//! Exit status 1 when the core socket capture could not run. What the kernel matrix calls.
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::{
    CaptureOptions, Prepared,
    budget::{self, Budget},
    programs::{ProbeState, ProbeStatus, SocketLookup},
};

/// One kernel capability and whether this kernel has it.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    pub name: &'static str,
    pub present: bool,
    /// What Sonde does with it, or without it.
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: String,
    pub capabilities: Vec<Capability>,
    pub socket_lookup: Option<SocketLookup>,
    /// The capture scope (`[capture.scope]`), resolved; None when it did not resolve.
    pub scope: Option<crate::scope::ResolvedScope>,
    pub probes: Vec<ProbeStatus>,
    /// Budget crossings, one line each (empty: every program within the margins).
    pub budget_violations: Vec<String>,
    /// Total time the verifier took over every loaded program, in ms.
    pub verify_ms: u64,
    /// Why the core cannot run ("" when it can).
    pub core_error: String,
}

impl Report {
    pub fn core_ok(&self) -> bool {
        self.core_error.is_empty()
    }
}

fn exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `CONFIG_<name>` from the kernel's config, where the machine ships it (None: unknown).
fn kconfig(name: &str) -> Option<bool> {
    let path = format!("/boot/config-{}", kernel_release());
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().any(|l| l == format!("CONFIG_{name}=y")))
}

fn capabilities(tracefs: Option<&Path>) -> Vec<Capability> {
    let tp = |c: &str, n: &str| tracefs.is_some_and(|t| crate::tracepoint_exists(t, c, n));
    let cap = |name, present: bool, note: &str| Capability {
        name,
        present,
        note: note.to_string(),
    };
    let ringbuf = aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false);
    let fentry =
        aya::sys::is_program_supported(aya::programs::ProgramType::Tracing).unwrap_or(false);
    let direct_calls = kconfig("DYNAMIC_FTRACE_WITH_DIRECT_CALLS");
    vec![
        cap(
            "btf",
            exists("/sys/kernel/btf/vmlinux"),
            "required: offsets come from BTF",
        ),
        cap(
            "tracefs",
            tracefs.is_some(),
            "required: Sonde mounts it when missing",
        ),
        cap(
            "ring-buffer",
            ringbuf,
            "required: every event goes through one (Linux ≥ 5.8)",
        ),
        cap(
            "syscall-tracepoints",
            tp("syscalls", "sys_enter_read"),
            "required: payload capture",
        ),
        cap(
            "sock-length-tracepoints",
            tp("sock", "sock_send_length") && tp("sock", "sock_recv_length"),
            "Linux ≥ 6.3; without them sockets are found through the file table",
        ),
        cap(
            "bpf-loop",
            crate::has_bpf_loop(),
            "Linux ≥ 5.17: every iovec of a readv/writev/sendmsg/recvmsg is walked (up to \
             1024); without it the first 16",
        ),
        cap(
            "sendfile-tracepoints",
            tp("syscalls", "sys_enter_sendfile64") && tp("syscalls", "sys_enter_splice"),
            "sendfile/splice bytes become gaps of known length",
        ),
        cap(
            "io-uring-tracepoints",
            tp("io_uring", "io_uring_submit_req"),
            "sockets driven through io_uring are not captured (no payload tracepoint)",
        ),
        cap(
            "uprobes",
            exists("/sys/bus/event_source/devices/uprobe"),
            "for TLS plaintext (not yet used)",
        ),
        cap(
            "kprobes",
            exists("/sys/bus/event_source/devices/kprobe"),
            "not used: Sonde stands on tracepoints",
        ),
        cap(
            "bpf-trampolines",
            fentry && direct_calls != Some(false),
            &format!(
                "fentry programs {}; CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS {} (not yet used)",
                if fentry { "load" } else { "do not load" },
                match direct_calls {
                    Some(true) => "set",
                    Some(false) => "not set",
                    None => "unknown",
                }
            ),
        ),
    ]
}

/// Every option on, so every program is tried.
fn everything(base: &CaptureOptions) -> CaptureOptions {
    CaptureOptions {
        payload: true,
        network: true,
        interface_probes: true,
        softirq_probes: true,
        sendfile: true,
        ..base.clone()
    }
}

/// Probes this kernel; loads and attaches every program, then drops them.
pub fn examine(base: &CaptureOptions) -> Report {
    let opts = everything(base);
    let mut report = Report {
        kernel: kernel_release(),
        capabilities: Vec::new(),
        socket_lookup: None,
        scope: None,
        probes: Vec::new(),
        budget_violations: Vec::new(),
        verify_ms: 0,
        core_error: String::new(),
    };
    let prepared = match Prepared::new(&opts) {
        Ok(p) => p,
        Err(e) => {
            report.capabilities = capabilities(crate::tracefs::ensure_mounted().ok().as_deref());
            report.core_error = format!("{e:#}");
            return report;
        }
    };
    report.capabilities = capabilities(Some(&prepared.tracefs));
    report.socket_lookup = Some(prepared.socket_lookup);
    report.scope = Some(prepared.scope.clone());
    let mut ebpf = match prepared.load_object(&opts) {
        Ok(e) => e,
        Err(e) => {
            report.core_error = format!("{e:#}");
            return report;
        }
    };
    // Attached too, not only loaded: a kernel refuses some programs only at attach (a
    // tracepoint program whose largest context offset passes the record's end gets EACCES
    // from bpf_link_create, never from the verifier). The links go with `ebpf` when this
    // returns; "loaded" in the report means loaded and attachable.
    match crate::bring_up(&mut ebpf, &prepared, &opts, true) {
        Ok(mut probes) => {
            for p in &mut probes {
                if p.state == ProbeState::Attached {
                    p.state = ProbeState::Loaded;
                }
            }
            report.probes = probes
        }
        Err(e) => report.core_error = format!("{e:#}"),
    }
    // The libssl uprobes: loaded like the rest, attached to no file.
    report
        .probes
        .extend(crate::tls::bring_up(&mut ebpf, Ok(()), false).0);
    if let Some(p) = report
        .probes
        .iter()
        .find(|p| p.feature.is_core() && p.state == ProbeState::Failed)
    {
        report.core_error = p.detail.clone();
    }
    let costs: Vec<_> = report
        .probes
        .iter()
        .filter_map(|p| p.cost.clone())
        .collect();
    report.budget_violations = budget::violations(&costs, &Budget::DEFAULT);
    report.verify_ms = costs
        .iter()
        .filter_map(|c| c.verify_time)
        .sum::<std::time::Duration>()
        .as_millis() as u64;
    report
}

pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "kernel {}", r.kernel);
    for c in &r.capabilities {
        let _ = writeln!(
            s,
            "  {:<24} {:<4} {}",
            c.name,
            if c.present { "yes" } else { "no" },
            c.note
        );
    }
    if let Some(l) = r.socket_lookup {
        let _ = writeln!(s, "sockets found through: {l:?}");
    }
    if let Some(scope) = &r.scope {
        let _ = writeln!(s, "capture scope: {}", scope.describe());
        if !scope.is_empty() {
            let _ = writeln!(s, "  {}", crate::scope::UNSCOPED);
        }
    }
    let _ = writeln!(
        s,
        "\n{:<26} {:<14} {:<8} {:>6} {:>9} {:>9}  DETAIL",
        "PROGRAM", "FEATURE", "STATE", "STACK", "INSNS", "VERIFY"
    );
    for p in &r.probes {
        let (stack, insns, ms) = match &p.cost {
            Some(c) => (
                c.stack_bytes.to_string(),
                c.processed_insns.map_or("-".into(), |n| n.to_string()),
                c.verify_time
                    .map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1e3)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "{:<26} {:<14} {:<8} {:>6} {:>9} {:>9}  {}",
            p.program,
            p.feature.name(),
            p.state.name(),
            stack,
            insns,
            ms,
            p.detail
        );
    }
    let _ = writeln!(s, "\nverification: {} ms in all", r.verify_ms);
    let b = Budget::DEFAULT;
    if r.budget_violations.is_empty() {
        let _ = writeln!(
            s,
            "budget: every program within stack ≤ {} B, ≤ {} processed instructions, ≤ {} ms in all",
            b.max_stack_bytes,
            b.max_processed_insns,
            b.max_total_verify.as_millis()
        );
    } else {
        for v in &r.budget_violations {
            let _ = writeln!(s, "over budget: {v}");
        }
    }
    if r.core_ok() {
        let _ = writeln!(s, "core socket capture: can run");
    } else {
        let _ = writeln!(s, "core socket capture: CANNOT run: {}", r.core_error);
    }
    s
}

/// The command: prints the report; exit status 1 when the core cannot run.
pub fn run(opts: &CaptureOptions, json: bool) -> Result<i32> {
    let r = examine(opts);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render(&r));
    }
    Ok(if r.core_ok() { 0 } else { 1 })
}
