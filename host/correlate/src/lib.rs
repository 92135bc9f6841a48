//! Correlation: who is behind a connection, with one set of labels for every layer.
//!
//! - Process → container: `/proc/<pid>/cgroup` names the container (containerd, CRI-O,
//!   Docker, Podman; systemd and cgroupfs drivers) and the pod UID ([`cgroup`]); processes are
//!   cached by pid and dropped when they exit ([`procs`]).
//! - Container → resource usage: CPU, throttling, memory and pressure from the same cgroups
//!   ([`usage`]), for the root-cause engine's vertical step.
//! - Pod, workload, service, node: Kubernetes watchers ([`k8s`]); without a cluster, labels
//!   come from cgroups and `/proc` alone.
//! - Trace context from records' headers is `sonde_parse::trace_context` (records carry it).
//!
//! Label names follow OpenTelemetry's resource conventions with `_` for `.`:
//! `service_name`, `k8s_namespace_name`, `k8s_pod_name`, `k8s_pod_uid`, `k8s_node_name`,
//! `k8s_container_name`, `container_id`, and one of `k8s_deployment_name`,
//! `k8s_statefulset_name`, `k8s_daemonset_name`, `k8s_replicaset_name`, `k8s_job_name`,
//! `k8s_cronjob_name`. The other end of a connection gets the same names prefixed `peer_`.
pub mod cgroup;
pub mod k8s;
pub mod procs;
pub mod usage;

use sonde_metrics::{Exposition, Kind, LabelText};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use self::cgroup::CgroupMounts;
use self::k8s::{Index, KubeWatch, PodMeta, WorkloadKind};
use self::procs::ProcessTable;
use self::usage::ContainerUsage;

pub const SERVICE_NAME: &str = "service_name";
pub const NAMESPACE: &str = "k8s_namespace_name";
pub const POD: &str = "k8s_pod_name";
pub const POD_UID: &str = "k8s_pod_uid";
pub const NODE: &str = "k8s_node_name";
pub const CONTAINER_ID: &str = "container_id";
pub const CONTAINER_NAME: &str = "k8s_container_name";
/// Prefix of the other end's labels.
pub const PEER: &str = "peer_";

/// `[correlation]`: where `/proc` is, and how often processes and containers are scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationSettings {
    /// The host's `/proc` (a DaemonSet with `hostPID: true` sees it at `/proc`; mount it
    /// elsewhere and say so here otherwise).
    pub proc_root: PathBuf,
    /// How often `/proc` is scanned for new and exited processes, and container usage read.
    pub scan_interval_ms: u64,
    /// Processes cached; beyond, lookups read `/proc` every time (counted).
    pub max_processes: usize,
    /// Containers with usage series; beyond, new containers get none (counted).
    pub max_containers: usize,
    /// Join the host's cgroup namespace (pid 1's under `proc_root`) at start when the daemon
    /// runs in another one (a container with a private cgroup namespace): then
    /// `/proc/<pid>/cgroup` shows host paths, which resolve under a host `/sys/fs/cgroup`
    /// mount (deploy/base/daemonset.yaml).
    pub host_cgroup_namespace: bool,
}

impl CorrelationSettings {
    /// Every `[correlation]` value within its range (see docs/sonde.example.toml).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.scan_interval_ms >= 100,
            "correlation.scan_interval_ms must be at least 100 (got {})",
            self.scan_interval_ms
        );
        Ok(())
    }
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            scan_interval_ms: 2000,
            max_processes: 65536,
            max_containers: 2000,
            host_cgroup_namespace: true,
        }
    }
}

/// Join the cgroup namespace of pid 1 under `proc_root` when it is not this process's.
/// Returns whether it switched. Call before any thread starts: a namespace change applies to
/// the calling thread and the threads it creates later.
pub fn join_host_cgroup_namespace(proc_root: &std::path::Path) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let own = std::fs::metadata("/proc/self/ns/cgroup")
        .context("reading /proc/self/ns/cgroup")?
        .ino();
    let host_path = proc_root.join("1/ns/cgroup");
    let host = std::fs::metadata(&host_path)
        .with_context(|| format!("reading {}", host_path.display()))?
        .ino();
    if own == host {
        return Ok(false);
    }
    let f = std::fs::File::open(&host_path)
        .with_context(|| format!("opening {}", host_path.display()))?;
    // SAFETY: setns(2) on a namespace file descriptor we own; no memory is involved.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWCGROUP) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("joining the host's cgroup namespace (needs CAP_SYS_ADMIN)");
    }
    Ok(true)
}

/// Who one end of a connection is. Empty strings are unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Identity {
    /// The Kubernetes Service in front of the pod, else its workload, else the pod, else
    /// the process name. The Service comes first so that a server's name and the name its
    /// clients see behind a ClusterIP are the same.
    pub service_name: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub node: String,
    pub container_id: String,
    pub container_name: String,
    pub workload: Option<(WorkloadKind, String)>,
}

impl Identity {
    /// Append the known labels, keys prefixed with `prefix` (`""` or [`PEER`]).
    pub fn push_labels(&self, prefix: &str, out: &mut Vec<(String, String)>) {
        let workload = self.workload.as_ref().map(|(k, n)| (k.label(), n.as_str()));
        let pairs = [
            (SERVICE_NAME, self.service_name.as_str()),
            (NAMESPACE, &self.namespace),
            (POD, &self.pod),
            (POD_UID, &self.pod_uid),
            (NODE, &self.node),
            (CONTAINER_ID, &self.container_id),
            (CONTAINER_NAME, &self.container_name),
        ];
        for (k, v) in pairs.into_iter().chain(workload) {
            if !v.is_empty() {
                out.push((format!("{prefix}{k}"), v.to_string()));
            }
        }
    }

    fn from_pod(index: &Index, pod: &PodMeta) -> Identity {
        let workload = index.workload(pod);
        let service = pod
            .ips
            .iter()
            .find_map(|ip| index.service_of_endpoint(ip))
            .filter(|(ns, _)| *ns == pod.namespace)
            .map(|(_, s)| s.to_string());
        Identity {
            service_name: service
                .or_else(|| workload.as_ref().map(|(_, n)| n.clone()))
                .unwrap_or_else(|| pod.name.clone()),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            node: pod.node.clone(),
            workload,
            ..Identity::default()
        }
    }
}

/// A cgroup's container and pod UID (either may be unknown).
type CgroupOwner = (Option<cgroup::ContainerRef>, Option<String>);

/// The container and pod UID a process's cgroups name.
fn owner_of_process(p: &procs::ProcInfo) -> CgroupOwner {
    let pod_uid = p
        .pod_uid
        .clone()
        .or_else(|| p.container.as_ref()?.pod_uid.clone());
    (p.container.clone(), pod_uid)
}

/// cgroup ids remembered; beyond, the cache starts over.
const CGROUP_ID_CACHE: usize = 16384;

/// The path of the cgroup v2 directory with id `id` under the cgroup2 mount `mount`.
fn cgroup_path_of_id(mount: &std::path::Path, id: u64) -> Option<String> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    /// `struct file_handle` with kernfs's 8-byte handle (FILEID_KERNFS).
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    const FILEID_KERNFS: i32 = 0xfe;
    let dir = std::fs::File::open(mount).ok()?;
    let mut h = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `h` is a valid file_handle header followed by its 8 handle bytes, live for the
    // call; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            (&mut h as *mut KernfsHandle).cast::<libc::file_handle>(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor from open_by_handle_at, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    Some(path.to_string_lossy().into_owned())
}

/// A container's usage and who it is, as of the last scan.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerRow {
    pub identity: Identity,
    pub runtime: String,
    pub pids: usize,
    pub usage: ContainerUsage,
}

/// Counters of the correlation layer (`sonde_correlation_*`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CorrelationStats {
    pub processes: usize,
    pub containers: usize,
    /// Containers left without usage series (over `max_containers`).
    pub containers_dropped: u64,
    pub scans: u64,
    pub process_exits: u64,
}

/// The correlation layer: processes, containers, and (when there is a cluster) Kubernetes.
pub struct Correlator {
    settings: CorrelationSettings,
    node_name: String,
    procs: Mutex<ProcessTable>,
    mounts: CgroupMounts,
    kube: Option<KubeWatch>,
    containers: Mutex<BTreeMap<String, ContainerRow>>,
    cgroup_ids: Mutex<std::collections::HashMap<u64, CgroupOwner>>,
    /// Kubernetes events applied as of the last scan: at most one relabelling round per scan.
    generation: std::sync::atomic::AtomicU64,
    stats: Mutex<CorrelationStats>,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator")
            .field("node_name", &self.node_name)
            .field("kubernetes", &self.kube.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Correlator {
    pub fn new(settings: CorrelationSettings, node_name: String, kube: Option<KubeWatch>) -> Self {
        let mounts = CgroupMounts::read().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read cgroup mounts: no container usage");
            CgroupMounts::default()
        });
        Self {
            procs: Mutex::new(
                ProcessTable::new(settings.proc_root.clone())
                    .with_max_processes(settings.max_processes),
            ),
            settings,
            node_name,
            mounts,
            kube,
            containers: Mutex::new(BTreeMap::new()),
            cgroup_ids: Mutex::new(std::collections::HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            stats: Mutex::new(CorrelationStats::default()),
        }
    }

    pub fn settings(&self) -> &CorrelationSettings {
        &self.settings
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn kube(&self) -> Option<&KubeWatch> {
        self.kube.as_ref()
    }

    pub fn scan_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.settings.scan_interval_ms.max(100))
    }

    /// Who process `pid` is (`comm` names it when nothing better is known).
    pub fn identity_of_pid(&self, pid: u32, comm: &str) -> Identity {
        self.identity_of(pid, comm, 0)
    }

    /// Who process `pid` in cgroup `cgroup_id` (v2 id from the kernel, 0 unknown) is. The
    /// cgroup id was read when the process made the connection, so it still names the
    /// container after a short-lived process (a curl, a cron job) is gone from /proc.
    pub fn identity_of(&self, pid: u32, comm: &str, cgroup_id: u64) -> Identity {
        let (container, pod_uid) = match self.owner_of_cgroup_id(cgroup_id) {
            Some(owner) if owner.0.is_some() || owner.1.is_some() => owner,
            _ => {
                let proc_info = self.procs.lock().ok().and_then(|mut p| p.get(pid));
                proc_info
                    .as_deref()
                    .map(owner_of_process)
                    .unwrap_or_default()
            }
        };
        self.identity_from(container, pod_uid, comm)
    }

    /// Who a process in `container` (of pod `pod_uid`) is: its pod's identity when Kubernetes
    /// knows the pod, else `comm` and what the cgroups say.
    fn identity_from(
        &self,
        container: Option<cgroup::ContainerRef>,
        pod_uid: Option<String>,
        comm: &str,
    ) -> Identity {
        let container_id = container.as_ref().map(|c| c.id.clone()).unwrap_or_default();
        let mut id = self
            .with_index(|index| {
                let pod = pod_uid
                    .as_ref()
                    .and_then(|uid| index.pods.get(uid))
                    .or_else(|| {
                        (!container_id.is_empty())
                            .then(|| index.pod_by_container(&container_id))
                            .flatten()
                    })?;
                let mut id = Identity::from_pod(index, pod);
                id.container_name = pod
                    .containers
                    .iter()
                    .find(|(cid, _)| *cid == container_id)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default();
                Some(id)
            })
            .flatten()
            .unwrap_or_else(|| Identity {
                service_name: comm.to_string(),
                pod_uid: pod_uid.clone().unwrap_or_default(),
                ..Identity::default()
            });
        id.container_id = container_id;
        if id.node.is_empty() {
            id.node = self.node_name.clone();
        }
        id
    }

    /// The container and pod UID of a cgroup v2 id: its directory found by handle
    /// (`open_by_handle_at`, the id being the kernfs inode), its path parsed. Cached, also
    /// when it names no container.
    fn owner_of_cgroup_id(&self, id: u64) -> Option<CgroupOwner> {
        if id == 0 {
            return None;
        }
        if let Some(hit) = self.cgroup_ids.lock().ok()?.get(&id) {
            return Some(hit.clone());
        }
        let path = cgroup_path_of_id(self.mounts.unified.as_deref()?, id)?;
        let owner = (
            cgroup::container_of_path(&path),
            cgroup::pod_uid_of_path(&path),
        );
        if let Ok(mut cache) = self.cgroup_ids.lock() {
            if cache.len() >= CGROUP_ID_CACHE {
                cache.clear();
            }
            cache.insert(id, owner.clone());
        }
        Some(owner)
    }

    /// Who is at `ip`, when Kubernetes knows: a pod, a Service's ClusterIP, or a node.
    pub fn identity_of_ip(&self, ip: IpAddr) -> Option<Identity> {
        self.with_index(|index| {
            if let Some(pod) = index.pods.by_ip(&ip) {
                return Some(Identity::from_pod(index, pod));
            }
            if let Some(svc) = index.services.by_ip(&ip) {
                return Some(Identity {
                    service_name: svc.name.clone(),
                    namespace: svc.namespace.clone(),
                    ..Identity::default()
                });
            }
            // A pod on another node: only its endpoint slice names it.
            if let Some((ns, svc)) = index.service_of_endpoint(&ip) {
                return Some(Identity {
                    service_name: svc.to_string(),
                    namespace: ns.to_string(),
                    ..Identity::default()
                });
            }
            index.nodes.by_ip(&ip).map(|n| Identity {
                node: n.name.clone(),
                ..Identity::default()
            })
        })
        .flatten()
    }

    /// The labels of a connection: its process's, then the peer's (prefixed `peer_`).
    pub fn conn_labels(
        &self,
        pid: u32,
        comm: &str,
        cgroup_id: u64,
        peer: Option<IpAddr>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(12);
        self.identity_of(pid, comm, cgroup_id)
            .push_labels("", &mut out);
        if let Some(peer) = peer.and_then(|ip| self.identity_of_ip(ip)) {
            peer.push_labels(PEER, &mut out);
        }
        out
    }

    fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> Option<R> {
        let kube = self.kube.as_ref()?;
        let index = kube.index.read().ok()?;
        Some(f(&index))
    }

    /// Changes (at most once per scan) when Kubernetes metadata changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Labels that new metadata may complete: with a cluster to watch, a connection whose
    /// process is not yet a known pod, or whose peer is nobody known yet.
    pub fn incomplete(&self, labels: &[(String, String)]) -> bool {
        self.kube.is_some()
            && !(labels.iter().any(|(k, _)| k == POD)
                && labels.iter().any(|(k, _)| k.starts_with(PEER)))
    }

    /// Scan `/proc` (new and exited processes) and read every live container's usage.
    pub fn scan(&self) {
        if let Some(k) = &self.kube {
            self.generation
                .store(k.status.events.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let (exits, by_container) = match self.procs.lock() {
            Ok(mut p) => {
                let r = p.scan();
                (r.exited.len(), p.by_container())
            }
            Err(_) => return,
        };
        let mut rows = BTreeMap::new();
        let mut dropped = 0u64;
        for (id, procs) in by_container {
            let Some(first) = procs.first() else { continue };
            if rows.len() >= self.settings.max_containers {
                dropped += 1;
                continue;
            }
            // The process is in hand: no second /proc lookup.
            let (container, pod_uid) = owner_of_process(first);
            let identity = self.identity_from(container, pod_uid, &first.comm);
            let runtime = first
                .container
                .as_ref()
                .map(|c| c.runtime.as_str().to_string())
                .unwrap_or_default();
            let usage = usage::read_usage(&self.mounts, &first.cgroups);
            rows.insert(
                id,
                ContainerRow {
                    identity,
                    runtime,
                    pids: procs.len(),
                    usage,
                },
            );
        }
        let processes = self.procs.lock().map(|p| p.len()).unwrap_or(0);
        if let Ok(mut s) = self.stats.lock() {
            s.scans += 1;
            s.process_exits += exits as u64;
            s.processes = processes;
            s.containers = rows.len();
            s.containers_dropped += dropped;
        }
        if let Ok(mut c) = self.containers.lock() {
            *c = rows;
        }
    }

    /// Containers as of the last scan (`/api/containers`).
    pub fn containers(&self) -> Vec<(String, ContainerRow)> {
        self.containers
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> CorrelationStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Container usage series (cAdvisor's names, so existing dashboards work) and the
    /// correlation layer's own counters.
    pub fn render(&self, ex: &mut Exposition) {
        let rows = self.containers();
        type Get = fn(&ContainerUsage) -> Option<f64>;
        let series: [(&str, Kind, &str, Get); 9] = [
            (
                "container_cpu_usage_seconds_total",
                Kind::Counter,
                "CPU time the container's cgroup used.",
                |u| u.cpu_usage_ns.map(|v| v as f64 / 1e9),
            ),
            (
                "container_cpu_cfs_periods_total",
                Kind::Counter,
                "CFS enforcement periods of the container's CPU quota.",
                |u| u.cpu_periods.map(|v| v as f64),
            ),
            (
                "container_cpu_cfs_throttled_periods_total",
                Kind::Counter,
                "CFS periods in which the container was throttled.",
                |u| u.cpu_throttled_periods.map(|v| v as f64),
            ),
            (
                "container_cpu_cfs_throttled_seconds_total",
                Kind::Counter,
                "Time the container was throttled by its CPU quota.",
                |u| u.cpu_throttled_ns.map(|v| v as f64 / 1e9),
            ),
            (
                "container_memory_usage_bytes",
                Kind::Gauge,
                "Memory the container's cgroup uses.",
                |u| u.memory_bytes.map(|v| v as f64),
            ),
            (
                "container_spec_memory_limit_bytes",
                Kind::Gauge,
                "The container's memory limit (absent when unlimited).",
                |u| u.memory_limit_bytes.map(|v| v as f64),
            ),
            (
                "container_pressure_cpu_waiting_seconds_total",
                Kind::Counter,
                "Time tasks of the container waited for a CPU (PSI some).",
                |u| u.cpu_pressure_some_us.map(|v| v as f64 / 1e6),
            ),
            (
                "container_pressure_memory_waiting_seconds_total",
                Kind::Counter,
                "Time tasks of the container waited on memory (PSI some).",
                |u| u.memory_pressure_some_us.map(|v| v as f64 / 1e6),
            ),
            (
                "container_pressure_memory_stalled_seconds_total",
                Kind::Counter,
                "Time all tasks of the container were stalled on memory (PSI full).",
                |u| u.memory_pressure_full_us.map(|v| v as f64 / 1e6),
            ),
        ];
        let labels: Vec<LabelText> = rows
            .iter()
            .map(|(_, r)| {
                let mut l = Vec::new();
                r.identity.push_labels("", &mut l);
                if !r.runtime.is_empty() {
                    l.push(("container_runtime".into(), r.runtime.clone()));
                }
                let mut text = LabelText::new();
                for (k, v) in &l {
                    text.push(k, v);
                }
                text
            })
            .collect();
        for (name, kind, help, get) in series {
            // A family only when a container has the value.
            if !rows.iter().any(|(_, row)| get(&row.usage).is_some()) {
                continue;
            }
            let mut f = ex.family(kind, name, help);
            for ((_, row), labels) in rows.iter().zip(&labels) {
                if let Some(v) = get(&row.usage) {
                    f.sample(labels, v);
                }
            }
        }
        let s = self.stats();
        let kube = self.kube.as_ref().map(|k| &k.status);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let own: [(&str, Kind, &str, Option<u64>); 7] = [
            (
                "sonde_correlation_processes",
                Kind::Gauge,
                "Processes in the correlation cache.",
                Some(s.processes as u64),
            ),
            (
                "sonde_correlation_containers",
                Kind::Gauge,
                "Containers seen in the last scan.",
                Some(s.containers as u64),
            ),
            (
                "sonde_correlation_containers_dropped_total",
                Kind::Counter,
                "Containers left without usage series (max_containers).",
                Some(s.containers_dropped),
            ),
            (
                "sonde_correlation_process_exits_total",
                Kind::Counter,
                "Processes dropped from the cache because they exited.",
                Some(s.process_exits),
            ),
            (
                "sonde_kube_watch_events_total",
                Kind::Counter,
                "Kubernetes watch events applied.",
                kube.map(|k| load(&k.events)),
            ),
            (
                "sonde_kube_watch_errors_total",
                Kind::Counter,
                "Kubernetes watch errors (each retried with backoff).",
                kube.map(|k| load(&k.errors)),
            ),
            (
                "sonde_kube_relists_total",
                Kind::Counter,
                "Kubernetes lists (the first, and one after each expired or broken watch).",
                kube.map(|k| load(&k.relists)),
            ),
        ];
        for (name, kind, help, v) in own {
            if let Some(v) = v {
                ex.family(kind, name, help).sample((), v);
            }
        }
        if let Some(k) = &self.kube
            && let Ok(i) = k.index.read()
        {
            let mut g = ex.gauge(
                "sonde_kube_objects",
                "Kubernetes objects known, by resource.",
            );
            for (what, n) in [
                ("pods", i.pods.len()),
                ("services", i.services.len()),
                ("endpointslices", i.slices.len()),
                ("nodes", i.nodes.len()),
                ("replicasets", i.replica_sets.len()),
                ("jobs", i.jobs.len()),
            ] {
                g.sample([("resource", what)], n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use super::k8s::{Index, KubeWatch, Owner, PodMeta, ServiceMeta, SliceMeta, WatchStatus};
    use super::*;

    fn correlator_with(index: Index) -> Correlator {
        let kube = KubeWatch {
            index: Arc::new(RwLock::new(index)),
            status: Arc::new(WatchStatus::default()),
            node_name: "n1".into(),
        };
        Correlator::new(CorrelationSettings::default(), "n1".into(), Some(kube))
    }

    fn index() -> Index {
        let mut i = Index::default();
        i.pods.apply(PodMeta {
            namespace: "shop".into(),
            name: "web-6d4cf56db6-x2x9z".into(),
            uid: "0b6f4c1e-7a57-4d8c-9f0e-1b2c3d4e5f60".into(),
            node: "n1".into(),
            ips: vec!["10.1.0.7".parse().unwrap()],
            host_network: false,
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: "web-6d4cf56db6".into(),
                uid: "rs".into(),
            }),
            template_hash: Some("6d4cf56db6".into()),
            containers: vec![],
        });
        i.services.apply(ServiceMeta {
            namespace: "shop".into(),
            name: "storefront".into(),
            cluster_ips: vec!["10.96.0.20".parse().unwrap()],
        });
        i
    }

    #[test]
    fn an_address_names_a_pod_a_service_or_nobody() {
        let c = correlator_with(index());
        let pod = c.identity_of_ip("10.1.0.7".parse().unwrap()).unwrap();
        // No endpoint slice yet: the workload names it.
        assert_eq!(pod.service_name, "web");
        assert_eq!(pod.workload, Some((WorkloadKind::Deployment, "web".into())));
        let svc = c.identity_of_ip("10.96.0.20".parse().unwrap()).unwrap();
        assert_eq!(
            (svc.service_name.as_str(), svc.namespace.as_str()),
            ("storefront", "shop")
        );
        assert!(c.identity_of_ip("10.9.9.9".parse().unwrap()).is_none());
    }

    #[test]
    fn the_service_in_front_of_a_pod_names_it_first() {
        let mut i = index();
        i.slices.apply(SliceMeta {
            namespace: "shop".into(),
            name: "storefront-abcde".into(),
            service: "storefront".into(),
            addresses: vec!["10.1.0.7".parse().unwrap()],
        });
        let c = correlator_with(i);
        let pod = c.identity_of_ip("10.1.0.7".parse().unwrap()).unwrap();
        assert_eq!(pod.service_name, "storefront");
        let mut labels = Vec::new();
        pod.push_labels(PEER, &mut labels);
        assert!(labels.contains(&("peer_k8s_deployment_name".into(), "web".into())));
        assert!(labels.contains(&("peer_k8s_pod_name".into(), "web-6d4cf56db6-x2x9z".into())));
        assert!(labels.iter().all(|(_, v)| !v.is_empty()), "no empty labels");
    }

    #[test]
    fn a_cgroup_id_finds_its_directory_and_container() {
        use std::os::unix::fs::MetadataExt as _;
        let mounts = CgroupMounts::read().unwrap();
        let unified = mounts.unified.clone().expect("a cgroup2 mount");
        let id = unique_hex64();
        let dir = unified.join(format!("sonde-unit-{}", std::process::id()));
        let leaf = dir.join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&leaf).expect("root creates cgroups");
        let ino = std::fs::metadata(&leaf).unwrap().ino();
        let path = cgroup_path_of_id(&unified, ino);
        let c = Correlator::new(CorrelationSettings::default(), "n1".into(), None);
        let who = c.identity_of(u32::MAX, "gone", ino);
        let _ = std::fs::remove_dir(&leaf);
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(path.as_deref(), Some(leaf.to_str().unwrap()));
        // The process is gone (no such pid): the cgroup id alone names the container.
        assert_eq!(who.container_id, id);
        assert_eq!(who.service_name, "gone");
    }

    fn unique_hex64() -> String {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{:064x}", t ^ u128::from(std::process::id()) << 64)
    }

    #[test]
    fn without_kubernetes_a_process_is_its_command_and_this_node() {
        let c = Correlator::new(CorrelationSettings::default(), "n1".into(), None);
        let me = c.identity_of_pid(std::process::id(), "tester");
        assert_eq!(me.service_name, "tester");
        assert_eq!(me.node, "n1");
        assert!(me.namespace.is_empty() && me.pod.is_empty());
        let labels = c.conn_labels(
            std::process::id(),
            "tester",
            0,
            Some("10.1.0.7".parse().unwrap()),
        );
        assert!(
            labels.iter().all(|(k, _)| !k.starts_with(PEER)),
            "{labels:?}"
        );
    }
}
