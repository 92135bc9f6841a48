//! Resource series per step: each service's CPU (usage, throttling, limit) from the cgroup of
//! its processes, and the node's CPU and memory. Counters are differenced between steps.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use sonde_correlate::cgroup::{CgroupMounts, ProcCgroups, parse_proc_cgroup};
use sonde_correlate::usage::{parse_pressure, read_usage};

use sonde_sdk::fault_rule::metric as m;

/// The cgroup CPU counters of one service's cgroup (v1 or v2, whichever holds `cpu`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CpuCounters {
    usage_ns: u64,
    periods: u64,
    throttled: u64,
}

/// The process's cgroups, and the path that names its CPU cgroup: the v1 `cpu` hierarchy's
/// path when there is one (hybrid hosts keep `cpu` in v1), else the unified path. None for
/// the root cgroup, which is everybody's.
fn cgroups_of(pid: u32) -> Option<(ProcCgroups, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let cgroups = parse_proc_cgroup(&text);
    let path = cgroups
        .path_for("cpu")
        .map(str::to_string)
        .or_else(|| cgroups.unified.clone())?;
    (path != "/" && !path.is_empty()).then_some((cgroups, path))
}

/// The CPU limit in cores: v2 `cpu.max`, else v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
fn cpu_limit(mounts: &CgroupMounts, cgroups: &ProcCgroups) -> Option<f64> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    if let Some(v1) = cgroups
        .path_for("cpu")
        .and_then(|p| mounts.dir_for_v1("cpu", p))
    {
        let quota: f64 = read(v1.join("cpu.cfs_quota_us"))?.trim().parse().ok()?;
        let period: f64 = read(v1.join("cpu.cfs_period_us"))?.trim().parse().ok()?;
        return (quota > 0.0 && period > 0.0).then(|| quota / period);
    }
    let dir = mounts.dir_for_unified(cgroups.unified.as_deref()?)?;
    let text = read(dir.join("cpu.max"))?;
    let mut it = text.split_ascii_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (period > 0.0).then(|| quota / period)
}

#[derive(Debug, Clone, Copy, Default)]
struct NodeCpu {
    busy: u64,
    total: u64,
}

fn read_node_cpu() -> Option<NodeCpu> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(NodeCpu {
        busy: total - idle,
        total,
    })
}

/// Total time (µs) some task waited for a CPU: the `some` line of /proc/pressure/cpu (PSI).
fn read_node_cpu_stall_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    parse_pressure(&text).some.map(|l| l.total_us)
}

fn read_node_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_ascii_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
    (total > 0.0).then(|| 1.0 - available / total)
}

/// Readings of the previous step, to difference counters.
#[derive(Debug)]
pub(crate) struct Resources {
    mounts: Option<CgroupMounts>,
    previous: HashMap<String, CpuCounters>,
    node: Option<NodeCpu>,
    node_stall_us: Option<u64>,
}

impl Resources {
    pub(crate) fn new() -> Self {
        let mounts = match CgroupMounts::read() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "no cgroup mounts: no service CPU series"
                );
                None
            }
        };
        Self {
            mounts,
            previous: HashMap::new(),
            node: None,
            node_stall_us: None,
        }
    }

    /// Per-step resource series of the services (given their processes) and of the node.
    pub(crate) fn step(
        &mut self,
        services: &BTreeMap<String, Vec<u32>>,
        node: &str,
        step_s: f64,
    ) -> Vec<((String, String), f64)> {
        let mut out = Vec::new();
        if let Some(mounts) = &self.mounts {
            // A cgroup shared by processes of two services says nothing about either.
            let mut owners: BTreeMap<String, (ProcCgroups, Vec<&str>)> = BTreeMap::new();
            for (service, pids) in services {
                if let Some((cgroups, path)) = pids.iter().rev().find_map(|p| cgroups_of(*p)) {
                    let (_, names) = owners.entry(path).or_insert_with(|| (cgroups, Vec::new()));
                    if !names.contains(&service.as_str()) {
                        names.push(service);
                    }
                }
            }
            let mut seen = HashMap::new();
            for (path, (cgroups, names)) in owners {
                let usage = read_usage(mounts, &cgroups);
                let now = CpuCounters {
                    usage_ns: usage.cpu_usage_ns.unwrap_or(0),
                    periods: usage.cpu_periods.unwrap_or(0),
                    throttled: usage.cpu_throttled_periods.unwrap_or(0),
                };
                let prev = self.previous.get(&path).copied();
                seen.insert(path, now);
                let [service] = names.as_slice() else {
                    continue;
                };
                let entity = format!("service:{service}");
                let mut put =
                    |metric: &str, v: f64| out.push(((entity.clone(), metric.to_string()), v));
                if let Some(limit) = cpu_limit(mounts, &cgroups) {
                    put(m::CPU_LIMIT_CORES, limit);
                }
                if let (Some(mem), Some(limit)) = (usage.memory_bytes, usage.memory_limit_bytes)
                    && limit > 0
                {
                    put(m::MEMORY_USAGE_RATIO, mem as f64 / limit as f64);
                }
                let Some(prev) = prev else { continue };
                put(
                    m::CPU_USAGE_CORES,
                    now.usage_ns.saturating_sub(prev.usage_ns) as f64 / 1e9 / step_s,
                );
                let periods = now.periods.saturating_sub(prev.periods);
                let throttled = now.throttled.saturating_sub(prev.throttled);
                put(
                    m::CPU_THROTTLED_RATIO,
                    if periods == 0 {
                        0.0
                    } else {
                        throttled as f64 / periods as f64
                    },
                );
            }
            self.previous = seen;
        }
        let entity = format!("node:{node}");
        if let Some(now) = read_node_cpu() {
            if let Some(prev) = self.node {
                let total = now.total.saturating_sub(prev.total);
                if total > 0 {
                    out.push((
                        (entity.clone(), m::NODE_CPU_RATIO.into()),
                        now.busy.saturating_sub(prev.busy) as f64 / total as f64,
                    ));
                }
            }
            self.node = Some(now);
        }
        // Run-queue delay as PSI measures it: milliseconds per second in which some runnable
        // task waited for a CPU. Utilisation says "busy"; this says "someone had to wait".
        if let Some(now) = read_node_cpu_stall_us() {
            if let Some(prev) = self.node_stall_us {
                let ms = now.saturating_sub(prev) as f64 / 1e3 / step_s;
                out.push(((entity.clone(), m::NODE_RUNQUEUE_DELAY_MS.into()), ms));
            }
            self.node_stall_us = Some(now);
        }
        if let Some(mem) = read_node_memory() {
            out.push(((entity, m::NODE_MEMORY_RATIO.into()), mem));
        }
        out
    }
}
