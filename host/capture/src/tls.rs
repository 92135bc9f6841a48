//! TLS plaintext: finds the libssl files processes map and the Go binaries that link
//! crypto/tls ([`crate::tls_go`]), and attaches the uprobes of `host-ebpf/src/tls.rs` and
//! `tls_go.rs` to each distinct file once.
//!
//! Discovery: at start, the standard library directories and every process in `/proc` (its
//! `maps` for a libssl, its `exe` for a Go binary). Then new processes through the
//! `sched:sched_process_exec` tracepoint (`host-ebpf/src/exec.rs` pushes the tgid on a queue
//! drained every [`EXEC_POLL`]): each is read at once and every [`RESCAN`] for [`RECENT`]
//! after (Python imports `ssl`, and maps libssl, after its exec). All of `/proc` is read again
//! every [`FULL_RESCAN`] as a safety net (every [`RESCAN`] if the tracepoint is missing).
//! A file is known by (device, inode), reached through `/proc/<pid>/root` (libssl) or
//! `/proc/<pid>/exe` (Go), so a container's own copy is found too. Symbols come from the ELF
//! symbol tables; OpenSSL 1.1 has no `SSL_read_ex`/`SSL_write_ex`, which is not a failure.
//!
//! Uprobes on a file fire in every process that maps it, present and future: a process
//! started after the daemon with a libssl already attached is covered from its first call.
//! A file found through processes is detached when the last of them has exited or exec'd
//! (checked every [`RESCAN`]); the libssl files of the library directories stay attached.
//! The exec report reaches user space after the exec: a program that does TLS in its first
//! milliseconds, with a library not attached yet, is missed until the attach.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{MapData, Queue},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};

use crate::{
    budget::{self, ProgramCost},
    programs::{self, Feature, ProbeState, ProbeStatus},
    tls_go,
};

/// The kernel-side programs, in load order: OpenSSL's, then Go crypto/tls's.
pub const PROGRAMS: [&str; 8] = [
    "sonde_ssl_enter",
    "sonde_ssl_enter_ex",
    "sonde_ssl_write_ret",
    "sonde_ssl_read_ret",
    "sonde_go_tls_write_enter",
    "sonde_go_tls_read_enter",
    "sonde_go_tls_read_ret",
    "sonde_tls_exec",
];

/// The tracepoint that reports new processes to the discovery.
const EXEC_PROGRAM: &str = "sonde_tls_exec";

/// Go's (function, entry program, RET program): Write is emitted at its entry (see
/// `host-ebpf/src/tls_go.rs`), Read at its RETs.
const GO_HOOKS: [(&str, &str, Option<&str>); 2] = [
    (tls_go::WRITE, "sonde_go_tls_write_enter", None),
    (
        tls_go::READ,
        "sonde_go_tls_read_enter",
        Some("sonde_go_tls_read_ret"),
    ),
];

/// (symbol, entry program, return program, required).
const HOOKS: [(&str, &str, &str, bool); 4] = [
    ("SSL_write", "sonde_ssl_enter", "sonde_ssl_write_ret", true),
    ("SSL_read", "sonde_ssl_enter", "sonde_ssl_read_ret", true),
    (
        "SSL_write_ex",
        "sonde_ssl_enter_ex",
        "sonde_ssl_write_ret",
        false,
    ),
    (
        "SSL_read_ex",
        "sonde_ssl_enter_ex",
        "sonde_ssl_read_ret",
        false,
    ),
];

/// Where distributions install libssl (attached at start even if no process maps it yet).
const LIB_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib64",
];

/// How often the processes that exec'd recently are read again (they map libssl later:
/// Python imports `ssl` at run time), and how often attached files' users are checked.
pub const RESCAN: Duration = Duration::from_secs(1);

/// How long after its exec a process is read again every [`RESCAN`].
const RECENT: Duration = Duration::from_secs(10);

/// The safety net behind the exec tracepoint: all of `/proc` is read this often (every
/// [`RESCAN`] when the tracepoint could not be attached).
pub const FULL_RESCAN: Duration = Duration::from_secs(30);

/// How often the `EXECS` queue is drained (the drain loop runs far more often under load).
const EXEC_POLL: Duration = Duration::from_millis(50);

/// What a probed file is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Libssl,
    Go,
}

/// One distinct file (device, inode) the TLS uprobes were attached to, or tried.
struct Target {
    path: PathBuf,
    kind: Kind,
    attached: bool,
    /// Found in the standard library directories: kept attached for processes to come.
    standing: bool,
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Live processes that map it (libssl) or run it (Go); detached when none is left.
    users: HashSet<u32>,
}

/// How a file came to be attached.
#[derive(Clone, Copy)]
enum Via {
    Exec,
    Scan,
}

/// The attach state of the TLS uprobes.
pub struct Tls {
    targets: HashMap<(u64, u64), Target>,
    /// Executables that are not Go binaries using crypto/tls (not read again).
    not_go: HashSet<(u64, u64)>,
    /// Attach failures by reason.
    failures: BTreeMap<&'static str, u64>,
    /// Processes whose maps showed a libssl already (not read again).
    done: HashSet<u32>,
    /// The tgids pushed by `sched:sched_process_exec` (None: the tracepoint is not attached,
    /// `/proc` is read in full every [`RESCAN`]).
    execs: Option<Queue<MapData, u32>>,
    /// Processes that exec'd in the last [`RECENT`].
    recent: HashMap<u32, Instant>,
    found_by_exec: u64,
    found_by_scan: u64,
    detached: u64,
    last_exec_poll: Instant,
    last_tick: Instant,
    last_full: Instant,
}

/// A summary for `/api/health` (also in the programs' status detail).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsStatus {
    pub files_attached: usize,
    pub files_failed: usize,
    /// Go binaries using crypto/tls, by whether their uprobes attached.
    pub go_attached: usize,
    pub go_failed: usize,
    pub failures: BTreeMap<&'static str, u64>,
    /// Files attached after a process's exec was seen (`sched:sched_process_exec`), and by
    /// a read of all of `/proc` (at start, and the periodic safety net).
    pub found_by_exec: u64,
    pub found_by_scan: u64,
    /// Files detached because the last process using them exited.
    pub detached: u64,
    /// Whether new processes are followed through the exec tracepoint.
    pub exec_tracepoint: bool,
}

/// Loads the TLS programs and attaches them to every libssl found. Never fatal: a program the
/// verifier refuses turns the TLS feature off (one warning, `failed` in the statuses).
/// Without `attach` (`sonde doctor`): loads only, state `loaded`.
pub fn bring_up(
    ebpf: &mut Ebpf,
    wanted: Result<(), String>,
    attach: bool,
) -> (Vec<ProbeStatus>, Option<Tls>) {
    let stacks = budget::static_stack(crate::EBPF_OBJECT).unwrap_or_default();
    let mut out: Vec<ProbeStatus> = PROGRAMS
        .iter()
        .map(|p| ProbeStatus {
            program: p.to_string(),
            feature: Feature::Tls,
            state: ProbeState::Off,
            detail: String::new(),
            tracepoints: HOOKS
                .iter()
                .filter(|h| h.1 == *p || h.2 == *p)
                .map(|h| format!("uprobe:libssl:{}", h.0))
                .chain(
                    GO_HOOKS
                        .iter()
                        .filter(|h| h.1 == *p || h.2 == Some(*p))
                        .map(|h| format!("uprobe:go:{}", h.0)),
                )
                .chain((*p == EXEC_PROGRAM).then(|| "sched:sched_process_exec".to_string()))
                .collect(),
            cost: None,
        })
        .collect();
    if let Err(why) = wanted {
        for s in &mut out {
            s.detail = why.clone();
        }
        return (out, None);
    }
    let mut failed = None;
    for s in &mut out {
        let cost = |processed_insns, verify_time| ProgramCost {
            program: s.program.clone(),
            stack_bytes: stacks.get(s.program.as_str()).copied().unwrap_or(0),
            processed_insns,
            verify_time,
        };
        match programs::load(ebpf, &s.program) {
            Ok((took, insns)) => {
                s.state = if attach {
                    ProbeState::Attached
                } else {
                    ProbeState::Loaded
                };
                s.cost = Some(cost(insns, Some(took)));
            }
            Err(e) => {
                s.state = ProbeState::Failed;
                s.cost = Some(cost(None, None));
                s.detail = e.clone();
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        if attach {
            tracing::warn!(
                feature = "tls",
                "{e}; feature tls turned off, the rest runs"
            );
        }
        for s in &mut out {
            if s.state != ProbeState::Failed {
                s.state = ProbeState::Failed;
                s.detail = format!("another TLS program failed: {e}");
            }
        }
        return (out, None);
    }
    if !attach {
        return (out, None);
    }
    // New processes through the exec tracepoint; without it, /proc is read every second.
    let execs =
        programs::attach(ebpf, EXEC_PROGRAM, "sched", "sched_process_exec").and_then(|()| {
            let map = ebpf
                .take_map("EXECS")
                .ok_or_else(|| anyhow::anyhow!("map EXECS missing from the eBPF object"))?;
            Ok(Queue::try_from(map)?)
        });
    let execs = match execs {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::warn!(
                feature = "tls",
                "{e:#}; new processes are found by reading /proc every second"
            );
            if let Some(s) = out.iter_mut().find(|s| s.program == EXEC_PROGRAM) {
                s.state = ProbeState::Failed;
                s.detail = format!("{e:#}");
            }
            None
        }
    };
    let mut tls = Tls::new(execs);
    tls.full_scan(ebpf);
    tls.describe(&mut out);
    (out, Some(tls))
}

impl Tls {
    fn new(execs: Option<Queue<MapData, u32>>) -> Self {
        let now = Instant::now();
        Tls {
            targets: HashMap::new(),
            not_go: HashSet::new(),
            failures: BTreeMap::new(),
            done: HashSet::new(),
            execs,
            recent: HashMap::new(),
            found_by_exec: 0,
            found_by_scan: 0,
            detached: 0,
            last_exec_poll: now,
            last_tick: now,
            last_full: now,
        }
    }

    /// Follows new processes (the exec queue, every [`EXEC_POLL`]), reads the recent ones
    /// again and detaches files without users (every [`RESCAN`]), and reads all of `/proc`
    /// every [`FULL_RESCAN`]. Returns true when the attach state changed.
    pub fn maybe_rescan(&mut self, ebpf: &mut Ebpf) -> bool {
        let state = |t: &Self| {
            (
                t.targets.len(),
                t.not_go.len(),
                t.detached,
                t.failures.values().sum::<u64>(),
            )
        };
        let before = state(self);
        let mut full_due = self.last_full.elapsed()
            >= if self.execs.is_some() {
                FULL_RESCAN
            } else {
                RESCAN
            };
        if self.last_exec_poll.elapsed() >= EXEC_POLL {
            self.last_exec_poll = Instant::now();
            let mut popped = 0u32;
            while let Some(q) = self.execs.as_mut()
                && let Ok(pid) = q.pop(0)
            {
                popped += 1;
                self.forget(pid);
                self.recent.insert(pid, Instant::now());
                self.scan_pid(ebpf, pid, Via::Exec);
            }
            // A full queue lost pushes: read everything.
            full_due |= popped >= sonde_common::EXECS_CAPACITY;
        }
        if self.last_tick.elapsed() >= RESCAN {
            self.last_tick = Instant::now();
            self.recent.retain(|_, t| t.elapsed() < RECENT);
            let recent: Vec<u32> = self.recent.keys().copied().collect();
            for pid in recent {
                self.scan_pid(ebpf, pid, Via::Exec);
            }
            self.detach_unused(ebpf);
        }
        if full_due {
            self.full_scan(ebpf);
        }
        before != state(self)
    }

    pub fn status(&self) -> TlsStatus {
        let count = |kind: Kind, attached: bool| {
            self.targets
                .values()
                .filter(|t| t.kind == kind && t.attached == attached)
                .count()
        };
        TlsStatus {
            files_attached: count(Kind::Libssl, true),
            files_failed: count(Kind::Libssl, false),
            go_attached: count(Kind::Go, true),
            go_failed: count(Kind::Go, false),
            failures: self.failures.clone(),
            found_by_exec: self.found_by_exec,
            found_by_scan: self.found_by_scan,
            detached: self.detached,
            exec_tracepoint: self.execs.is_some(),
        }
    }

    /// Writes the attach summary into the TLS programs' status detail.
    pub fn describe(&self, probes: &mut [ProbeStatus]) {
        let s = self.status();
        let paths = |kind: Kind| {
            let mut p: Vec<String> = self
                .targets
                .values()
                .filter(|t| t.kind == kind && t.attached)
                .map(|t| t.path.display().to_string())
                .collect();
            p.sort();
            p.join(", ")
        };
        let failures = if s.failures.is_empty() {
            "none".to_string()
        } else {
            s.failures
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let detail = format!(
            "libssl files attached: {} ({}); Go binaries attached: {} ({}); \
             attach failures: {failures}",
            s.files_attached,
            paths(Kind::Libssl),
            s.go_attached,
            paths(Kind::Go)
        );
        for p in probes.iter_mut().filter(|p| {
            p.feature == Feature::Tls
                && p.state == ProbeState::Attached
                && p.program != EXEC_PROGRAM
        }) {
            p.detail = detail.clone();
        }
    }

    /// The standard library directories (first time), then every process in `/proc`.
    fn full_scan(&mut self, ebpf: &mut Ebpf) {
        self.last_full = Instant::now();
        if self.targets.is_empty() {
            for dir in LIB_DIRS {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name();
                    if is_libssl(&name.to_string_lossy()) {
                        self.consider(ebpf, &e.path(), None, Via::Scan);
                    }
                }
            }
        }
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut alive = HashSet::new();
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            alive.insert(pid);
            self.scan_pid(ebpf, pid, Via::Scan);
        }
        self.done.retain(|p| alive.contains(p));
    }

    /// A process exec'd: what it mapped and ran before is not its own any more.
    fn forget(&mut self, pid: u32) {
        self.done.remove(&pid);
        for t in self.targets.values_mut() {
            t.users.remove(&pid);
        }
    }

    /// Reads one process: its executable (a Go binary?) and, until a libssl was found in
    /// them, its maps.
    fn scan_pid(&mut self, ebpf: &mut Ebpf, pid: u32, via: Via) {
        self.consider_executable(ebpf, pid, via);
        if self.done.contains(&pid) {
            return;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        let mut found = false;
        let mut seen: Vec<&str> = Vec::new();
        for line in maps.lines() {
            // address perms offset dev inode path
            let Some(path) = line.split_whitespace().nth(5) else {
                continue;
            };
            let base = path.rsplit('/').next().unwrap_or("");
            if !path.starts_with('/') || !is_libssl(base) || seen.contains(&path) {
                continue;
            }
            seen.push(path);
            found = true;
            let file = PathBuf::from(format!("/proc/{pid}/root{path}"));
            self.consider(ebpf, &file, Some(pid), via);
        }
        if found {
            self.done.insert(pid);
        }
    }

    /// Detaches the files (not the standing ones) whose last user exited.
    fn detach_unused(&mut self, ebpf: &mut Ebpf) {
        let mut gone = Vec::new();
        for (key, t) in &mut self.targets {
            if t.standing || t.links.is_empty() {
                continue;
            }
            t.users
                .retain(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if t.users.is_empty() {
                gone.push(*key);
            }
        }
        for key in gone {
            let Some(t) = self.targets.remove(&key) else {
                continue;
            };
            for (program, link) in t.links {
                if let Some(Ok(p)) = ebpf.program_mut(program).map(<&mut UProbe>::try_from) {
                    let _ = p.detach(link);
                }
            }
            self.detached += 1;
            tracing::info!(file = %t.path.display(), "TLS uprobes detached: no process uses the file any more");
        }
    }

    /// Attaches to the libssl at `path` unless its (device, inode) was seen before; `user`
    /// maps it.
    fn consider(&mut self, ebpf: &mut Ebpf, path: &Path, user: Option<u32>, via: Via) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let key = (meta.dev(), meta.ino());
        if let Some(t) = self.targets.get_mut(&key) {
            t.users.extend(user);
            return;
        }
        // The same file through the daemon's own root reads better than through /proc.
        let shown = path
            .strip_prefix("/proc")
            .ok()
            .and_then(|rest| {
                let mut c = rest.components();
                c.next()?; // pid
                c.next()?; // root
                Some(Path::new("/").join(c.as_path()))
            })
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == key))
            .unwrap_or_else(|| path.to_path_buf());
        let (attached, links) = self.attach_file(ebpf, &shown);
        let target = Target {
            path: shown,
            kind: Kind::Libssl,
            attached,
            standing: user.is_none(),
            links,
            users: user.into_iter().collect(),
        };
        self.remember(key, target, via);
    }

    /// Keeps a file tried once (attached or not), counting how an attached one was found.
    fn remember(&mut self, key: (u64, u64), target: Target, via: Via) {
        if target.attached {
            match via {
                Via::Exec => self.found_by_exec += 1,
                Via::Scan => self.found_by_scan += 1,
            }
        }
        self.targets.insert(key, target);
    }

    /// Attaches to the executable of `pid` if it is a Go binary using crypto/tls not seen
    /// before (by device and inode; any other executable is remembered and not read again).
    fn consider_executable(&mut self, ebpf: &mut Ebpf, pid: u32, via: Via) {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(meta) = std::fs::metadata(&exe) else {
            return; // kernel thread, or gone
        };
        let key = (meta.dev(), meta.ino());
        if self.not_go.contains(&key) {
            return;
        }
        if let Some(t) = self.targets.get_mut(&key) {
            t.users.insert(pid);
            return;
        }
        let shown = std::fs::read_link(&exe).unwrap_or_else(|_| exe.clone());
        let (attached, links) = match tls_go::inspect(&exe) {
            Ok(None) => {
                self.not_go.insert(key);
                return;
            }
            Ok(Some(go)) => self.attach_go(ebpf, &exe, &shown, &go),
            Err(reason) => {
                tracing::warn!(
                    file = %shown.display(),
                    reason,
                    "Go crypto/tls uprobes not attached"
                );
                *self.failures.entry(reason).or_default() += 1;
                (false, Vec::new())
            }
        };
        let target = Target {
            path: shown,
            kind: Kind::Go,
            attached,
            standing: false,
            links,
            users: HashSet::from([pid]),
        };
        self.remember(key, target, via);
    }

    /// The Go programs on one binary: the entry of each function and each of its RETs.
    /// `exe` (`/proc/<pid>/exe`) names the file whatever mount namespace it lives in.
    fn attach_go(
        &mut self,
        ebpf: &mut Ebpf,
        exe: &Path,
        shown: &Path,
        go: &tls_go::GoTls,
    ) -> (bool, Vec<(&'static str, UProbeLinkId)>) {
        let mut links = Vec::new();
        let mut failed = None;
        'hooks: for ((_, entry, ret), probes) in GO_HOOKS.iter().zip([&go.write, &go.read]) {
            let rets = ret.map(|ret| probes.rets.iter().map(move |r| (ret, *r)));
            let points = std::iter::once((*entry, probes.entry)).chain(rets.into_iter().flatten());
            for (program, offset) in points {
                match attach_uprobe(ebpf, program, offset, exe) {
                    Ok(link) => links.push((program, link)),
                    Err(e) => {
                        failed = Some(e);
                        break 'hooks;
                    }
                }
            }
        }
        if let Some(e) = failed {
            let reason = failure_reason(&e);
            tracing::warn!(
                file = %shown.display(),
                reason,
                "Go crypto/tls uprobes not attached: {e:#}"
            );
            *self.failures.entry(reason).or_default() += 1;
            // Half a set would save calls that never return: none at all.
            for (program, link) in links {
                if let Some(Ok(p)) = ebpf.program_mut(program).map(<&mut UProbe>::try_from) {
                    let _ = p.detach(link);
                }
            }
            return (false, Vec::new());
        }
        tracing::info!(
            file = %shown.display(),
            go = go.version,
            uprobes = links.len(),
            "Go crypto/tls uprobes attached"
        );
        (true, links)
    }

    fn attach_file(
        &mut self,
        ebpf: &mut Ebpf,
        path: &Path,
    ) -> (bool, Vec<(&'static str, UProbeLinkId)>) {
        let mut attached = 0;
        let mut links = Vec::new();
        for (symbol, entry, ret, required) in HOOKS {
            let mut result = Ok(());
            for program in [entry, ret] {
                match attach_uprobe(ebpf, program, symbol, path) {
                    Ok(link) => links.push((program, link)),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            match result {
                Ok(()) => attached += 1,
                Err(e) => {
                    let reason = failure_reason(&e);
                    if !required && reason == "symbol-missing" {
                        continue; // OpenSSL 1.1: no _ex calls
                    }
                    tracing::warn!(
                        file = %path.display(),
                        symbol,
                        reason,
                        "TLS uprobe not attached: {e:#}"
                    );
                    *self.failures.entry(reason).or_default() += 1;
                }
            }
        }
        if attached > 0 {
            tracing::info!(file = %path.display(), symbols = attached, "TLS uprobes attached");
        }
        (attached >= 2, links)
    }
}

/// Attaches the loaded uprobe `program` at `location` (a symbol or a file offset) of `path`.
fn attach_uprobe<'a>(
    ebpf: &mut Ebpf,
    program: &str,
    location: impl Into<UProbeAttachLocation<'a>>,
    path: &Path,
) -> Result<UProbeLinkId, aya::programs::ProgramError> {
    ebpf.program_mut(program)
        .ok_or(aya::programs::ProgramError::NotLoaded)
        .and_then(<&mut UProbe>::try_from)
        .and_then(|p| p.attach(location.into(), path, UProbeScope::AllProcesses))
}

/// `libssl.so`, `libssl.so.3`, `libssl.so.1.1` (not libssl3.so: NSS's).
fn is_libssl(name: &str) -> bool {
    name == "libssl.so" || name.starts_with("libssl.so.")
}

fn failure_reason(e: &aya::programs::ProgramError) -> &'static str {
    use aya::programs::{ProgramError, UProbeError};
    match e {
        ProgramError::UProbeError(UProbeError::SymbolError { .. }) => "symbol-missing",
        ProgramError::UProbeError(UProbeError::FileError { .. }) => "file",
        ProgramError::UProbeError(_) => "target",
        _ => "attach",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libssl_names() {
        assert!(is_libssl("libssl.so.3"));
        assert!(is_libssl("libssl.so.1.1"));
        assert!(is_libssl("libssl.so"));
        assert!(!is_libssl("libssl3.so"));
        assert!(!is_libssl("libssl.a"));
    }
}
