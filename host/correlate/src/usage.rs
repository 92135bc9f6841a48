//! Container resource usage (CPU time and throttling, memory and its limit, pressure) read
//! from the cgroup files of the container's cgroups, so requests slowed by CPU throttling or
//! memory pressure can be told apart from slow code.
//!
//! cgroup v2 files are preferred; v1 fills what v2 lacks, field by field. That matters on
//! hybrid hosts, whose cgroup2 hierarchy has no controllers: its `cpu.stat` carries only
//! `usage_usec`, and memory files come from the v1 `memory` hierarchy. It also matters that a
//! hybrid host's unified hierarchy may keep a process at its root while the v1 controllers
//! place it in its container: the v2 file of a field is used only when the unified path is
//! the same as the process's path in that field's v1 hierarchy (or it has none), otherwise
//! host-wide totals would pass for the container's.
//!
//! Nothing here fails: a file that is missing or unreadable leaves its fields None.
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cgroup::{CgroupMounts, ProcCgroups};

/// Usage of one cgroup (in practice: one container), cumulative counters since its creation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContainerUsage {
    pub cpu_usage_ns: Option<u64>,
    /// CFS enforcement periods elapsed (only counted while a quota is set).
    pub cpu_periods: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_ns: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// None when unlimited (`max`, or v1's near-2^63 "no limit" value).
    pub memory_limit_bytes: Option<u64>,
    /// Total time some task was stalled on CPU (PSI, v2 only).
    pub cpu_pressure_some_us: Option<u64>,
    pub memory_pressure_some_us: Option<u64>,
    /// Total time all tasks were stalled on memory.
    pub memory_pressure_full_us: Option<u64>,
}

/// The fields of a cgroup v2 `cpu.stat` that are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStatV2 {
    pub usage_usec: Option<u64>,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
}

/// One line of a PSI file (`some ...` or `full ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PressureLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time in microseconds.
    pub total_us: u64,
}

/// A PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    pub some: Option<PressureLine>,
    pub full: Option<PressureLine>,
}

/// v1 `memory.limit_in_bytes` reports "no limit" as the largest page-aligned i64
/// (9223372036854771712); anything this large is no real limit.
const UNLIMITED_V1: u64 = 1 << 62;

/// Parses flat-keyed cgroup files (`key value` per line: `cpu.stat`, `memory.stat`); lines
/// that do not fit are skipped.
pub fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_ascii_whitespace();
            let (key, value) = (parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            Some((key, value.parse().ok()?))
        })
        .collect()
}

/// Parses a cgroup v2 `cpu.stat`.
pub fn parse_cpu_stat_v2(text: &str) -> CpuStatV2 {
    let kv = parse_flat_keyed(text);
    CpuStatV2 {
        usage_usec: kv.get("usage_usec").copied(),
        nr_periods: kv.get("nr_periods").copied(),
        nr_throttled: kv.get("nr_throttled").copied(),
        throttled_usec: kv.get("throttled_usec").copied(),
    }
}

/// Parses a PSI file: `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and `full ...`.
/// A line missing `total` is dropped (the averages alone cannot be accumulated).
pub fn parse_pressure(text: &str) -> Pressure {
    let mut out = Pressure::default();
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let Some(kind) = parts.next() else { continue };
        let mut parsed = PressureLine::default();
        let mut total = None;
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => parsed.avg10 = value.parse().unwrap_or(0.0),
                "avg60" => parsed.avg60 = value.parse().unwrap_or(0.0),
                "avg300" => parsed.avg300 = value.parse().unwrap_or(0.0),
                "total" => total = value.parse().ok(),
                _ => {}
            }
        }
        let Some(total_us) = total else { continue };
        parsed.total_us = total_us;
        match kind {
            "some" => out.some = Some(parsed),
            "full" => out.full = Some(parsed),
            _ => {}
        }
    }
    out
}

/// Parses a single-value file (`memory.current`, `cpuacct.usage`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Parses a memory limit: None for `max` and for v1's "unlimited" value.
pub fn parse_limit(text: &str) -> Option<u64> {
    parse_u64(text).filter(|&v| v < UNLIMITED_V1)
}

/// Reads a cgroup file; None when it is missing (controller not enabled, cgroup gone) or
/// unreadable (e.g. PSI disabled at boot gives EOPNOTSUPP) — usage is best effort.
fn read_file(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => {
            tracing::debug!(path = %path.display(), error = %err, "reading cgroup file");
            None
        }
    }
}

/// Where each field's files are for one process.
struct Dirs<'a> {
    mounts: &'a CgroupMounts,
    cgroups: &'a ProcCgroups,
}

impl Dirs<'_> {
    /// The unified dir, if it holds the process's cgroup for `controller` (see module doc).
    fn v2(&self, controller: &str) -> Option<PathBuf> {
        let unified = self.cgroups.unified.as_deref()?;
        if self
            .cgroups
            .path_for(controller)
            .is_some_and(|p| p != unified)
        {
            return None;
        }
        self.mounts.dir_for_unified(unified)
    }

    fn v1(&self, controller: &str) -> Option<PathBuf> {
        let path = self.cgroups.path_for(controller)?;
        self.mounts.dir_for_v1(controller, path)
    }
}

fn read_in(dir: Option<&PathBuf>, file: &str) -> Option<String> {
    read_file(&dir?.join(file))
}

/// Reads the usage of the cgroups a process is in (any process of the container will do).
pub fn read_usage(mounts: &CgroupMounts, cgroups: &ProcCgroups) -> ContainerUsage {
    let dirs = Dirs { mounts, cgroups };
    let (v2_cpu, v2_acct, v2_mem) = (dirs.v2("cpu"), dirs.v2("cpuacct"), dirs.v2("memory"));
    let (v1_cpu, v1_acct, v1_mem) = (dirs.v1("cpu"), dirs.v1("cpuacct"), dirs.v1("memory"));

    let read_cpu_stat = |dir: Option<&PathBuf>| {
        read_in(dir, "cpu.stat")
            .map(|t| parse_cpu_stat_v2(&t))
            .unwrap_or_default()
    };
    let cpu_v2 = read_cpu_stat(v2_cpu.as_ref());
    let acct_v2 = if v2_acct == v2_cpu {
        cpu_v2
    } else {
        read_cpu_stat(v2_acct.as_ref())
    };
    let cpu_v1_text = read_in(v1_cpu.as_ref(), "cpu.stat");
    let cpu_v1 = cpu_v1_text
        .as_deref()
        .map(parse_flat_keyed)
        .unwrap_or_default();
    let usec_to_ns = |us: u64| us.saturating_mul(1000);

    // An existing v2 memory.max saying "max" is an answer (unlimited), not a missing file.
    let memory_limit_bytes = match read_in(v2_mem.as_ref(), "memory.max") {
        Some(text) => parse_limit(&text),
        None => read_in(v1_mem.as_ref(), "memory.limit_in_bytes").and_then(|t| parse_limit(&t)),
    };
    let cpu_pressure = read_in(v2_cpu.as_ref(), "cpu.pressure").map(|t| parse_pressure(&t));
    let mem_pressure = read_in(v2_mem.as_ref(), "memory.pressure").map(|t| parse_pressure(&t));

    ContainerUsage {
        cpu_usage_ns: acct_v2
            .usage_usec
            .map(usec_to_ns)
            .or_else(|| read_in(v1_acct.as_ref(), "cpuacct.usage").and_then(|t| parse_u64(&t))),
        cpu_periods: cpu_v2
            .nr_periods
            .or_else(|| cpu_v1.get("nr_periods").copied()),
        cpu_throttled_periods: cpu_v2
            .nr_throttled
            .or_else(|| cpu_v1.get("nr_throttled").copied()),
        cpu_throttled_ns: cpu_v2
            .throttled_usec
            .map(usec_to_ns)
            .or_else(|| cpu_v1.get("throttled_time").copied()),
        memory_bytes: read_in(v2_mem.as_ref(), "memory.current")
            .or_else(|| read_in(v1_mem.as_ref(), "memory.usage_in_bytes"))
            .and_then(|t| parse_u64(&t)),
        memory_limit_bytes,
        cpu_pressure_some_us: cpu_pressure.and_then(|p| p.some).map(|l| l.total_us),
        memory_pressure_some_us: mem_pressure.and_then(|p| p.some).map(|l| l.total_us),
        memory_pressure_full_us: mem_pressure.and_then(|p| p.full).map(|l| l.total_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::parse_proc_cgroup;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    fn unique(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("sonde-usage-{name}-{}-{nanos}", std::process::id())
    }

    #[test]
    fn flat_keyed() {
        let kv = parse_flat_keyed(
            "nr_periods 10\nnr_throttled 2\nthrottled_time 300\nbad\nx y\na 1 2\n",
        );
        assert_eq!(kv.len(), 3);
        assert_eq!(kv.get("throttled_time"), Some(&300));
        assert!(parse_flat_keyed("").is_empty());
    }

    #[test]
    fn cpu_stat_v2() {
        let full = "usage_usec 8540361768\nuser_usec 6909553335\nsystem_usec 1630808432\n\
                    nr_periods 40\nnr_throttled 3\nthrottled_usec 12000\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat_v2(full),
            CpuStatV2 {
                usage_usec: Some(8540361768),
                nr_periods: Some(40),
                nr_throttled: Some(3),
                throttled_usec: Some(12000),
            }
        );
        // Hybrid host, no cpu controller: usage only.
        let only = parse_cpu_stat_v2("usage_usec 5\nuser_usec 3\nsystem_usec 2\nnice_usec 0\n");
        assert_eq!((only.usage_usec, only.nr_periods), (Some(5), None));
    }

    #[test]
    fn pressure() {
        let p = parse_pressure(
            "some avg10=1.12 avg60=1.24 avg300=2.55 total=483422772\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        let some = p.some.expect("some line");
        assert_eq!(some.total_us, 483422772);
        assert!((some.avg10 - 1.12).abs() < 1e-9 && (some.avg300 - 2.55).abs() < 1e-9);
        assert_eq!(p.full.map(|l| l.total_us), Some(0));
        // cpu.pressure on old kernels has no full line; garbage is ignored.
        let p =
            parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\nnoise\nfull avg10=1\n");
        assert_eq!((p.some.map(|l| l.total_us), p.full), (Some(7), None));
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(536870912));
        assert_eq!(parse_u64("  42\n"), Some(42));
        assert_eq!(parse_u64(""), None);
    }

    /// A directory tree removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(name: &str) -> TempTree {
            let dir = std::env::temp_dir().join(unique(name));
            std::fs::create_dir_all(&dir).expect("creating temp dir");
            TempTree(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("creating temp subdir");
            }
            std::fs::write(path, text).expect("writing temp file");
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn pure_v2_files() {
        let tree = TempTree::new("v2");
        let mounts = CgroupMounts::parse(&format!(
            "30 23 0:26 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
            tree.0.display()
        ));
        tree.write(
            "pod/ctr/cpu.stat",
            "usage_usec 2000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 30\n",
        );
        tree.write("pod/ctr/memory.current", "1048576\n");
        tree.write("pod/ctr/memory.max", "max\n");
        tree.write(
            "pod/ctr/cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=11\n",
        );
        tree.write(
            "pod/ctr/memory.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=22\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=33\n",
        );
        let usage = read_usage(&mounts, &parse_proc_cgroup("0::/pod/ctr\n"));
        assert_eq!(
            usage,
            ContainerUsage {
                cpu_usage_ns: Some(2_000_000),
                cpu_periods: Some(10),
                cpu_throttled_periods: Some(4),
                cpu_throttled_ns: Some(30_000),
                memory_bytes: Some(1048576),
                memory_limit_bytes: None,
                cpu_pressure_some_us: Some(11),
                memory_pressure_some_us: Some(22),
                memory_pressure_full_us: Some(33),
            }
        );
        tree.write("pod/ctr/memory.max", "4194304\n");
        let usage = read_usage(&mounts, &parse_proc_cgroup("0::/pod/ctr\n"));
        assert_eq!(usage.memory_limit_bytes, Some(4194304));
        // A vanished cgroup: all None, no error.
        assert_eq!(
            read_usage(&mounts, &parse_proc_cgroup("0::/gone\n")),
            ContainerUsage::default()
        );
    }

    #[test]
    fn hybrid_fills_per_field() {
        let tree = TempTree::new("hybrid");
        let d = tree.0.display();
        let mounts = CgroupMounts::parse(&format!(
            "32 31 0:29 / {d}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / {d}/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / {d}/unified rw - cgroup2 cgroup2 rw\n"
        ));
        // The unified hierarchy without controllers: usage only, plus PSI.
        tree.write("unified/cpu.stat", "usage_usec 999999\n");
        tree.write(
            "unified/cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
        );
        tree.write("unified/docker/c/cpu.stat", "usage_usec 7\nuser_usec 7\n");
        tree.write(
            "unified/docker/c/memory.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=8\n",
        );
        tree.write("cpu,cpuacct/docker/c/cpuacct.usage", "123456789\n");
        tree.write(
            "cpu,cpuacct/docker/c/cpu.stat",
            "nr_periods 5\nnr_throttled 1\nthrottled_time 250\n",
        );
        tree.write("memory/docker/c/memory.usage_in_bytes", "4096\n");
        tree.write(
            "memory/docker/c/memory.limit_in_bytes",
            "9223372036854771712\n",
        );

        // Runtime placed the process consistently: v2 usage, v1 for the rest.
        let same = parse_proc_cgroup("4:memory:/docker/c\n2:cpu,cpuacct:/docker/c\n0::/docker/c\n");
        let usage = read_usage(&mounts, &same);
        assert_eq!(usage.cpu_usage_ns, Some(7000));
        assert_eq!(
            (usage.cpu_periods, usage.cpu_throttled_periods),
            (Some(5), Some(1))
        );
        assert_eq!(usage.cpu_throttled_ns, Some(250));
        assert_eq!(
            (usage.memory_bytes, usage.memory_limit_bytes),
            (Some(4096), None)
        );
        assert_eq!(usage.memory_pressure_some_us, Some(8));
        assert_eq!(usage.cpu_pressure_some_us, None);

        // Unified at the root but v1 in the container: the root's totals are not used.
        let root = parse_proc_cgroup("4:memory:/docker/c\n2:cpu,cpuacct:/docker/c\n0::/\n");
        let usage = read_usage(&mounts, &root);
        assert_eq!(usage.cpu_usage_ns, Some(123456789));
        assert_eq!(
            (usage.cpu_pressure_some_us, usage.memory_pressure_some_us),
            (None, None)
        );
        assert_eq!(usage.memory_bytes, Some(4096));
    }

    /// A test cgroup with a process in it: the process is killed and reaped and the cgroup
    /// removed on drop, also when the test fails.
    struct TestCgroup {
        dir: PathBuf,
        child: Option<Child>,
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            // The kernel may take a moment to see the cgroup empty after the reap.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(&self.dir) {
                    Ok(()) => return,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => return,
                    Err(err) if Instant::now() > deadline => {
                        eprintln!("could not remove test cgroup {}: {err}", self.dir.display());
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }

    #[test]
    fn real_v1_cgroup_usage_rises() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "real_v1_cgroup_usage_rises creates a cgroup and must run as root (euid {euid})"
        );
        let mounts = CgroupMounts::read().expect("reading /proc/self/mountinfo");
        let own_text =
            std::fs::read_to_string("/proc/self/cgroup").expect("reading /proc/self/cgroup");
        let own = parse_proc_cgroup(&own_text);
        let parent = own
            .path_for("cpuacct")
            .expect("this test needs the cgroup v1 cpuacct controller; /proc/self/cgroup has none");
        let parent_dir = mounts
            .dir_for_v1("cpuacct", parent)
            .expect("cpuacct hierarchy not mounted");
        let name = unique("cg");
        let path = format!("{}/{name}", parent.trim_end_matches('/'));
        let dir = parent_dir.join(&name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        let mut cg = TestCgroup { dir, child: None };

        // A fresh cgroup reads zero: the v1 dir is read, not some ancestor's totals.
        let mut fresh = own.clone();
        for (ctrls, p) in &mut fresh.v1 {
            if ctrls.split(',').any(|c| c == "cpuacct") {
                *p = path.clone();
            }
        }
        assert_eq!(read_usage(&mounts, &fresh).cpu_usage_ns, Some(0));

        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawning busy loop");
        let pid = child.id();
        cg.child = Some(child);
        std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", cg.dir.display()));

        let text =
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("reading child cgroup");
        let cgroups = parse_proc_cgroup(&text);
        assert_eq!(cgroups.path_for("cpuacct"), Some(path.as_str()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let usage = read_usage(&mounts, &cgroups);
            if usage.cpu_usage_ns.is_some_and(|ns| ns > 50_000_000) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cpu usage did not rise above 50 ms in 10 s: {usage:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(child) = &mut cg.child {
            child.kill().expect("killing busy loop");
            child.wait().expect("reaping busy loop");
        }
        cg.child = None;
        drop(cg);
        assert!(!parent_dir.join(&name).exists(), "test cgroup left behind");
    }
}
