//! TLS plaintext from OpenSSL: finds the libssl files processes map and attaches the
//! uprobes of `host-ebpf/src/tls.rs` to each distinct file once.
//!
//! Discovery: at start, the standard library directories and every process's
//! `/proc/<pid>/maps`; then a rescan of `/proc` every [`RESCAN`] (from the capture's drain
//! loop) for processes started later, or that loaded libssl later (Python imports `ssl` at
//! run time). A file is known by (device, inode), reached through `/proc/<pid>/root` so a
//! container's own libssl is found too. Symbols come from the ELF symbol tables (aya resolves
//! them); OpenSSL 1.1 has no `SSL_read_ex`/`SSL_write_ex`, which is not a failure.
//!
//! Uprobes on a file fire in every process that maps it, present and future: a process
//! started after the daemon with a libssl already attached is covered from its first call.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};

use crate::{
    budget::{self, ProgramCost},
    programs::{self, Feature, ProbeState, ProbeStatus},
};

/// The kernel-side programs, in load order.
pub const PROGRAMS: [&str; 4] = [
    "sonde_ssl_enter",
    "sonde_ssl_enter_ex",
    "sonde_ssl_write_ret",
    "sonde_ssl_read_ret",
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

/// How often `/proc` is rescanned for processes that map a libssl not attached yet.
pub const RESCAN: Duration = Duration::from_secs(1);

/// Where distributions install libssl (attached at start even if no process maps it yet).
const LIB_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib64",
];

/// The attach state of the libssl uprobes.
#[derive(Default)]
pub struct Tls {
    /// Every libssl file seen, by (device, inode): its path and whether it is attached.
    files: HashMap<(u64, u64), (PathBuf, bool)>,
    /// Attach failures by reason.
    failures: BTreeMap<&'static str, u64>,
    /// Processes whose maps showed a libssl already (not read again).
    done: HashSet<u32>,
    last_scan: Option<Instant>,
}

/// A summary for `/api/health` (also in the programs' status detail).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TlsStatus {
    pub files_attached: usize,
    pub files_failed: usize,
    pub failures: BTreeMap<&'static str, u64>,
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
    let mut tls = Tls::default();
    tls.scan(ebpf);
    tls.describe(&mut out);
    (out, Some(tls))
}

impl Tls {
    /// Rescans `/proc` when [`RESCAN`] has passed; returns true when something changed.
    pub fn maybe_rescan(&mut self, ebpf: &mut Ebpf) -> bool {
        if self.last_scan.is_some_and(|t| t.elapsed() < RESCAN) {
            return false;
        }
        let before = (self.files.len(), self.failures.values().sum::<u64>());
        self.scan(ebpf);
        before != (self.files.len(), self.failures.values().sum::<u64>())
    }

    pub fn status(&self) -> TlsStatus {
        TlsStatus {
            files_attached: self.files.values().filter(|f| f.1).count(),
            files_failed: self.files.values().filter(|f| !f.1).count(),
            failures: self.failures.clone(),
        }
    }

    /// Writes the attach summary into the TLS programs' status detail.
    pub fn describe(&self, probes: &mut [ProbeStatus]) {
        let s = self.status();
        let mut paths: Vec<String> = self
            .files
            .values()
            .filter(|f| f.1)
            .map(|f| f.0.display().to_string())
            .collect();
        paths.sort();
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
            "libssl files attached: {} ({}); attach failures: {failures}",
            s.files_attached,
            paths.join(", ")
        );
        for p in probes
            .iter_mut()
            .filter(|p| p.feature == Feature::Tls && p.state == ProbeState::Attached)
        {
            p.detail = detail.clone();
        }
    }

    fn scan(&mut self, ebpf: &mut Ebpf) {
        self.last_scan = Some(Instant::now());
        if self.files.is_empty() {
            for dir in LIB_DIRS {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name();
                    if is_libssl(&name.to_string_lossy()) {
                        self.consider(ebpf, &e.path());
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
            if self.done.contains(&pid) {
                continue;
            }
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
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
                self.consider(ebpf, &PathBuf::from(format!("/proc/{pid}/root{path}")));
            }
            if found {
                self.done.insert(pid);
            }
        }
        self.done.retain(|p| alive.contains(p));
    }

    /// Attaches to the file at `path` unless its (device, inode) was seen before.
    fn consider(&mut self, ebpf: &mut Ebpf, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let key = (meta.dev(), meta.ino());
        if self.files.contains_key(&key) {
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
        let ok = self.attach_file(ebpf, &shown);
        self.files.insert(key, (shown, ok));
    }

    fn attach_file(&mut self, ebpf: &mut Ebpf, path: &Path) -> bool {
        let mut attached = 0;
        for (symbol, entry, ret, required) in HOOKS {
            let mut result = Ok(());
            for program in [entry, ret] {
                let r = ebpf
                    .program_mut(program)
                    .ok_or(aya::programs::ProgramError::NotLoaded)
                    .and_then(<&mut UProbe>::try_from)
                    .and_then(|p| p.attach(symbol, path, UProbeScope::AllProcesses));
                if let Err(e) = r {
                    result = Err(e);
                    break;
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
        attached >= 2
    }
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
