//! The process table: what `/proc` says about each process (command, start time, cgroups,
//! container, pod, namespaces), cached by pid.
//!
//! Events name a process only by pid, and pids are reused, so a cached entry is trusted only
//! together with the process start time it was read with (field 22 of `/proc/<pid>/stat`,
//! in clock ticks since boot: it differs between two processes that share a pid). Entries
//! are revalidated by re-reading that one field — on a `get` of an entry older than
//! [`DEFAULT_REVALIDATE_AFTER`], and for every entry on [`ProcessTable::scan`], which is also
//! how exited processes leave the table.
//!
//! The root is configurable because a DaemonSet sees the host's processes only through the
//! host's `/proc` mounted elsewhere (e.g. `/host/proc`).
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::cgroup::{ContainerRef, ProcCgroups, parse_proc_cgroup};

/// Entries cached at once by default: enough for a busy node, bounded so a fork storm cannot
/// grow memory without limit.
pub const DEFAULT_MAX_PROCESSES: usize = 65_536;

/// Age after which a cached entry is revalidated on `get`: pids are not reused faster than
/// that in practice, and revalidating costs one read of `stat`.
pub const DEFAULT_REVALIDATE_AFTER: Duration = Duration::from_secs(1);

/// What the table knows about one process (a thread group: `pid` is the tgid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcInfo {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid, the
    /// identity of the process.
    pub start_ticks: u64,
    /// Command name as the kernel keeps it (at most 15 bytes).
    pub comm: String,
    pub cgroups: ProcCgroups,
    pub container: Option<ContainerRef>,
    pub pod_uid: Option<String>,
    /// Inode of the pid namespace (`/proc/<pid>/ns/pid` → `pid:[4026531836]`); None when
    /// the link cannot be read (other users' processes without privileges).
    pub pid_ns: Option<u64>,
    /// Inode of the network namespace.
    pub net_ns: Option<u64>,
}

/// Counters of the table's work, for the daemon's self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcStats {
    /// Processes read in full from `/proc`.
    pub reads: u64,
    /// Reads that failed for another reason than the process being gone.
    pub read_errors: u64,
    /// Cached processes found gone (or replaced by a new process with the same pid).
    pub exits: u64,
    /// Cached pids found to belong to a new process.
    pub pid_reuse: u64,
    /// Processes not cached because the table was full.
    pub dropped: u64,
}

/// What a [`ProcessTable::scan`] changed.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Pids newly cached.
    pub added: Vec<u32>,
    /// Entries removed: the process exited, its pid now belongs to another process, or it
    /// could no longer be read. Callers drop per-process state keyed by them.
    pub exited: Vec<Arc<ProcInfo>>,
}

struct Entry {
    info: Arc<ProcInfo>,
    /// When the start time was last confirmed.
    checked: Instant,
}

/// Cache of [`ProcInfo`] by pid, read from a `/proc` root.
pub struct ProcessTable {
    root: PathBuf,
    max_processes: usize,
    revalidate_after: Duration,
    entries: HashMap<u32, Entry>,
    pub stats: ProcStats,
}

impl ProcessTable {
    /// A table over the proc filesystem at `root` (usually `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcessTable {
            root: root.into(),
            max_processes: DEFAULT_MAX_PROCESSES,
            revalidate_after: DEFAULT_REVALIDATE_AFTER,
            entries: HashMap::new(),
            stats: ProcStats::default(),
        }
    }

    /// Caps the number of cached entries (see [`DEFAULT_MAX_PROCESSES`]).
    pub fn with_max_processes(mut self, max: usize) -> Self {
        self.max_processes = max;
        self
    }

    /// Sets the age after which `get` revalidates an entry (see [`DEFAULT_REVALIDATE_AFTER`]).
    pub fn with_revalidate_after(mut self, after: Duration) -> Self {
        self.revalidate_after = after;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached processes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ProcInfo>> {
        self.entries.values().map(|e| &e.info)
    }

    /// The process `pid` is now, or None if it does not exist (or cannot be read). A cached
    /// entry older than the revalidation age is checked against the current start time, so
    /// a reused pid never returns the previous process.
    pub fn get(&mut self, pid: u32) -> Option<Arc<ProcInfo>> {
        let now = Instant::now();
        if let Some(entry) = self.entries.get_mut(&pid) {
            if now.duration_since(entry.checked) < self.revalidate_after {
                return Some(entry.info.clone());
            }
            match read_start_ticks(&self.root, pid) {
                Ok(Some(start)) if start == entry.info.start_ticks => {
                    entry.checked = now;
                    return Some(entry.info.clone());
                }
                Ok(Some(_)) => {
                    self.stats.pid_reuse += 1;
                    self.stats.exits += 1;
                    self.entries.remove(&pid);
                    // Fall through: read the new process.
                }
                Ok(None) => {
                    self.stats.exits += 1;
                    self.entries.remove(&pid);
                    return None;
                }
                Err(err) => {
                    // Unverifiable: better no answer than possibly the wrong process.
                    self.stats.read_errors += 1;
                    tracing::debug!(pid, error = %format!("{err:#}"), "revalidating process");
                    self.entries.remove(&pid);
                    return None;
                }
            }
        }
        self.load(pid, now)
    }

    /// Forgets `pid` (e.g. on an exit event), returning what was cached.
    pub fn remove(&mut self, pid: u32) -> Option<Arc<ProcInfo>> {
        self.entries.remove(&pid).map(|e| e.info)
    }

    /// Reads the processes under the root: caches those not known yet, and removes those
    /// gone or replaced (one read of `stat` each). Threads are not listed at the top of
    /// `/proc`, so only thread-group leaders are cached.
    pub fn scan(&mut self) -> ScanResult {
        let mut result = ScanResult::default();
        let present = match list_pids(&self.root) {
            Ok(pids) => pids,
            Err(err) => {
                // Without a listing nothing can be said to have exited.
                self.stats.read_errors += 1;
                tracing::warn!(error = %format!("{err:#}"), "scanning processes");
                return result;
            }
        };
        let now = Instant::now();
        let root = &self.root;
        let stats = &mut self.stats;
        let exited = &mut result.exited;
        self.entries.retain(|&pid, entry| {
            let keep = present.contains(&pid)
                && match read_start_ticks(root, pid) {
                    Ok(Some(start)) if start == entry.info.start_ticks => true,
                    Ok(Some(_)) => {
                        stats.pid_reuse += 1;
                        false
                    }
                    Ok(None) => false,
                    Err(err) => {
                        stats.read_errors += 1;
                        tracing::debug!(pid, error = %format!("{err:#}"), "revalidating process");
                        exited.push(entry.info.clone());
                        return false;
                    }
                };
            if keep {
                entry.checked = now;
            } else {
                stats.exits += 1;
                exited.push(entry.info.clone());
            }
            keep
        });
        let mut new: Vec<u32> = present
            .into_iter()
            .filter(|p| !self.entries.contains_key(p))
            .collect();
        new.sort_unstable();
        for pid in new {
            if self.entries.len() >= self.max_processes {
                self.stats.dropped += 1;
                continue;
            }
            if self.load(pid, now).is_some() {
                result.added.push(pid);
            }
        }
        result
    }

    /// The cached processes of each container, by container id: where callers find a live
    /// container's cgroup paths.
    pub fn by_container(&self) -> HashMap<String, Vec<Arc<ProcInfo>>> {
        let mut out: HashMap<String, Vec<Arc<ProcInfo>>> = HashMap::new();
        for entry in self.entries.values() {
            if let Some(container) = &entry.info.container {
                out.entry(container.id.clone())
                    .or_default()
                    .push(entry.info.clone());
            }
        }
        out
    }

    /// Reads `pid` in full and caches it if there is room.
    fn load(&mut self, pid: u32, now: Instant) -> Option<Arc<ProcInfo>> {
        let info = match read_proc(&self.root, pid) {
            Ok(Some(info)) => Arc::new(info),
            Ok(None) => return None,
            Err(err) => {
                self.stats.read_errors += 1;
                tracing::debug!(pid, error = %format!("{err:#}"), "reading process");
                return None;
            }
        };
        self.stats.reads += 1;
        if self.entries.len() < self.max_processes {
            self.entries.insert(
                pid,
                Entry {
                    info: info.clone(),
                    checked: now,
                },
            );
        } else {
            self.stats.dropped += 1;
        }
        Some(info)
    }
}

/// The fields of `/proc/<pid>/stat` the table uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFields {
    pub comm: String,
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so it ends at the LAST `)`; the numeric fields follow.
pub fn parse_stat(text: &str) -> Result<StatFields> {
    let open = text
        .find('(')
        .context("stat: no '(' before the command name")?;
    let close = text
        .rfind(')')
        .context("stat: no ')' after the command name")?;
    if close < open {
        bail!("stat: malformed command name");
    }
    let comm = text[open + 1..close].to_string();
    // After the ')' come fields 3 (state) onwards; starttime is field 22.
    let start = text[close + 1..]
        .split_ascii_whitespace()
        .nth(22 - 3)
        .context("stat: too few fields")?;
    let start_ticks = start
        .parse()
        .with_context(|| format!("stat: bad starttime {start:?}"))?;
    Ok(StatFields { comm, start_ticks })
}

/// `pid:[4026531836]` → 4026531836.
fn parse_ns_link(link: &str) -> Option<u64> {
    let (_, rest) = link.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// Whether an I/O error means the process is gone (its `/proc` dir vanished, or the kernel
/// reports it dead mid-read) rather than a real failure.
fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// Reads a file of a process: Ok(None) when the process is gone.
fn read_proc_file(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if is_gone(&err) => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_stat(root: &Path, pid: u32) -> Result<Option<StatFields>> {
    let path = root.join(pid.to_string()).join("stat");
    match read_proc_file(&path)? {
        Some(text) => parse_stat(&text)
            .with_context(|| path.display().to_string())
            .map(Some),
        None => Ok(None),
    }
}

fn read_start_ticks(root: &Path, pid: u32) -> Result<Option<u64>> {
    Ok(read_stat(root, pid)?.map(|s| s.start_ticks))
}

fn read_ns(dir: &Path, name: &str) -> Option<u64> {
    let link = std::fs::read_link(dir.join("ns").join(name)).ok()?;
    parse_ns_link(link.to_str()?)
}

/// Reads one process: Ok(None) when it does not exist. The files are read one by one, so
/// the pid could change hands in between; `stat` is read again last and the whole read
/// retried if the start time moved.
fn read_proc(root: &Path, pid: u32) -> Result<Option<ProcInfo>> {
    let dir = root.join(pid.to_string());
    for _ in 0..3 {
        let Some(stat) = read_stat(root, pid)? else {
            return Ok(None);
        };
        let Some(cgroup_text) = read_proc_file(&dir.join("cgroup"))? else {
            return Ok(None);
        };
        let cgroups = parse_proc_cgroup(&cgroup_text);
        let pid_ns = read_ns(&dir, "pid");
        let net_ns = read_ns(&dir, "net");
        match read_start_ticks(root, pid)? {
            None => return Ok(None),
            Some(start) if start != stat.start_ticks => continue,
            Some(_) => {}
        }
        return Ok(Some(ProcInfo {
            pid,
            start_ticks: stat.start_ticks,
            comm: stat.comm,
            container: cgroups.container(),
            pod_uid: cgroups.pod_uid(),
            cgroups,
            pid_ns,
            net_ns,
        }));
    }
    bail!("pid {pid} kept changing hands while being read")
}

/// The numeric entries of the proc root: the thread-group ids.
fn list_pids(root: &Path) -> Result<HashSet<u32>> {
    let dir = std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?;
    let mut pids = HashSet::new();
    for entry in dir {
        // An entry vanishing mid-listing is normal churn, not a failure of the scan.
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        {
            pids.insert(pid);
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Runtime;
    use std::process::{Child, Command};

    const CID: &str = "4f8a2bb5a8f0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4";
    const UID: &str = "1b3c45de-6f70-4a1b-9c2d-3e4f5a6b7c8d";

    /// A fake proc root, removed on drop.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(name: &str) -> FakeRoot {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir()
                .join(format!("sonde-procs-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("creating fake proc root");
            FakeRoot(dir)
        }

        fn add(&self, pid: u32, comm: &str, start: u64, cgroup: &str) {
            let dir = self.0.join(pid.to_string());
            std::fs::create_dir_all(&dir).expect("creating fake pid dir");
            let stat = format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
            );
            std::fs::write(dir.join("stat"), stat).expect("writing fake stat");
            std::fs::write(dir.join("cgroup"), cgroup).expect("writing fake cgroup");
        }

        fn remove(&self, pid: u32) {
            std::fs::remove_dir_all(self.0.join(pid.to_string())).expect("removing fake pid dir");
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A child process killed and reaped on drop, also when the test fails.
    struct ChildGuard(Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn parse_stat_shapes() {
        let text =
            "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 2\n";
        let s = parse_stat(text).expect("parses");
        assert_eq!(s.comm, "a b) c");
        assert_eq!(s.start_ticks, 123456);
        let s =
            parse_stat("7 (()) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99").expect("parses");
        assert_eq!((s.comm.as_str(), s.start_ticks), ("()", 99));
        assert!(parse_stat("").is_err());
        assert!(parse_stat("1 (x) S 1 2").is_err());
        assert!(parse_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 nope").is_err());
        assert_eq!(parse_ns_link("pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_ns_link("net:[x]"), None);
    }

    #[test]
    fn reads_own_process() {
        let mut table = ProcessTable::new("/proc");
        let pid = std::process::id();
        let info = table.get(pid).expect("own process readable");
        let comm = std::fs::read_to_string("/proc/self/comm").expect("reading own comm");
        assert_eq!(info.pid, pid);
        assert_eq!(info.comm, comm.trim_end_matches('\n'));
        assert!(info.start_ticks > 0);
        assert!(info.net_ns.is_some() && info.pid_ns.is_some());
        assert!(info.cgroups.unified.is_some() || !info.cgroups.v1.is_empty());
        assert_eq!(table.stats.reads, 1);
        // A cache hit: no new read.
        let again = table.get(pid).expect("cached");
        assert!(Arc::ptr_eq(&info, &again));
        assert_eq!(table.stats.reads, 1);
    }

    #[test]
    fn scan_sees_child_start_and_exit() {
        let mut child = ChildGuard(
            Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawning sleep"),
        );
        let pid = child.0.id();
        let mut table = ProcessTable::new("/proc");
        let first = table.scan();
        assert!(first.added.contains(&pid), "child {pid} not added");
        assert_eq!(
            table.get(pid).map(|i| i.comm.clone()).as_deref(),
            Some("sleep")
        );
        child.0.kill().expect("killing child");
        child.0.wait().expect("reaping child");
        let second = table.scan();
        assert!(
            second.exited.iter().any(|i| i.pid == pid),
            "child {pid} not reported exited"
        );
        assert!(table.stats.exits >= 1);
        assert!(table.iter().all(|i| i.pid != pid));
    }

    #[test]
    fn fake_root_parsing_and_container() {
        let root = FakeRoot::new("parse");
        let cgroup = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CID}.scope\n",
            UID.replace('-', "_")
        );
        root.add(4242, "a b) c", 123456, &cgroup);
        let mut table = ProcessTable::new(&root.0).with_revalidate_after(Duration::ZERO);
        let info = table.get(4242).expect("fake process");
        assert_eq!(info.comm, "a b) c");
        assert_eq!(info.start_ticks, 123456);
        let container = info.container.clone().expect("container detected");
        assert_eq!(
            (container.runtime, container.id.as_str()),
            (Runtime::Containerd, CID)
        );
        assert_eq!(container.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!((info.pid_ns, info.net_ns), (None, None));
        let by = table.by_container();
        assert_eq!(by.get(CID).map(Vec::len), Some(1));

        // Same pid, new process: never the old entry.
        root.add(4242, "other", 999, "0::/\n");
        let info = table.get(4242).expect("new process");
        assert_eq!((info.comm.as_str(), info.start_ticks), ("other", 999));
        assert_eq!(info.container, None);
        assert_eq!(table.stats.pid_reuse, 1);

        // Gone: None and forgotten.
        root.remove(4242);
        assert!(table.get(4242).is_none());
        assert_eq!((table.len(), table.stats.exits), (0, 2));
        assert!(table.get(4243).is_none());
        assert_eq!(table.stats.read_errors, 0);
    }

    #[test]
    fn fake_root_scan_and_bound() {
        let root = FakeRoot::new("scan");
        root.add(10, "one", 5, "0::/\n");
        root.add(11, "two", 6, &format!("0::/docker/{CID}\n"));
        std::fs::create_dir_all(root.0.join("self")).expect("non-pid entry");
        let mut table = ProcessTable::new(&root.0);
        let scan = table.scan();
        assert_eq!(scan.added, vec![10, 11]);
        assert!(scan.exited.is_empty());
        assert_eq!(table.by_container().keys().collect::<Vec<_>>(), vec![CID]);

        root.remove(10);
        root.add(11, "two-again", 7, "0::/\n");
        root.add(12, "three", 8, "0::/\n");
        let scan = table.scan();
        let mut exited: Vec<_> = scan.exited.iter().map(|i| (i.pid, i.start_ticks)).collect();
        exited.sort_unstable();
        assert_eq!(exited, vec![(10, 5), (11, 6)]);
        assert_eq!(scan.added, vec![11, 12]);
        assert_eq!(table.stats.pid_reuse, 1);
        assert_eq!(table.len(), 2);

        // Bounded: beyond max, not cached, but get still answers.
        let mut small = ProcessTable::new(&root.0).with_max_processes(1);
        let scan = small.scan();
        assert_eq!(
            (scan.added.len(), small.len(), small.stats.dropped),
            (1, 1, 1)
        );
        let uncached = if scan.added == [11] { 12 } else { 11 };
        assert_eq!(small.get(uncached).map(|i| i.pid), Some(uncached));
        assert_eq!((small.len(), small.stats.dropped), (1, 2));
    }
}
