//! Correlation: who is behind a connection, with one set of labels for every layer.
//!
//! - Process → container: `/proc/<pid>/cgroup` names the container (containerd, CRI-O,
//!   Docker, Podman; systemd and cgroupfs drivers) and the pod UID ([`cgroup`]); processes are
//!   cached by pid and dropped when they exit ([`procs`]).
//! - Container → resource usage: CPU, throttling, memory and pressure from the same cgroups
//!   ([`usage`]), for the root-cause engine's vertical step.
//! - Pod, workload, service, node: Kubernetes watchers ([`k8s`]); without a cluster, labels
//!   come from cgroups and `/proc` alone.
//! - Trace context from records' headers ([`trace_context`]).
//!
//! Label names follow OpenTelemetry's resource conventions with `_` for `.`:
//! `service_name`, `k8s_namespace_name`, `k8s_pod_name`, `k8s_pod_uid`, `k8s_node_name`,
//! `k8s_container_name`, `container_id`, and one of `k8s_deployment_name`,
//! `k8s_statefulset_name`, `k8s_daemonset_name`, `k8s_replicaset_name`, `k8s_job_name`,
//! `k8s_cronjob_name`. The other end of a connection gets the same names prefixed `peer_`.
pub mod cgroup;
pub mod k8s;
pub mod procs;
pub mod trace_context;
pub mod usage;


use std::collections::BTreeMap;
use std::fmt::Write as _;
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
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            scan_interval_ms: 2000,
            max_processes: 65536,
            max_containers: 2000,
        }
    }
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
            stats: Mutex::new(CorrelationStats::default()),
        }
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
        let proc_info = self.procs.lock().ok().and_then(|mut p| p.get(pid));
        let container = proc_info.as_ref().and_then(|p| p.container.clone());
        let pod_uid = proc_info
            .as_ref()
            .and_then(|p| p.pod_uid.clone().or_else(|| p.container.as_ref()?.pod_uid.clone()));
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
    pub fn conn_labels(&self, pid: u32, comm: &str, peer: Option<IpAddr>) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(12);
        self.identity_of_pid(pid, comm).push_labels("", &mut out);
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

    /// Scan `/proc` (new and exited processes) and read every live container's usage.
    pub fn scan(&self) {
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
            let identity = self.identity_of_pid(first.pid, &first.comm);
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
    pub fn render_prometheus(&self, o: &mut String) {
        let rows = self.containers();
        type Get = fn(&ContainerUsage) -> Option<f64>;
        let series: [(&str, &str, &str, Get); 9] = [
            (
                "container_cpu_usage_seconds_total",
                "counter",
                "CPU time the container's cgroup used.",
                |u| u.cpu_usage_ns.map(|v| v as f64 / 1e9),
            ),
            (
                "container_cpu_cfs_periods_total",
                "counter",
                "CFS enforcement periods of the container's CPU quota.",
                |u| u.cpu_periods.map(|v| v as f64),
            ),
            (
                "container_cpu_cfs_throttled_periods_total",
                "counter",
                "CFS periods in which the container was throttled.",
                |u| u.cpu_throttled_periods.map(|v| v as f64),
            ),
            (
                "container_cpu_cfs_throttled_seconds_total",
                "counter",
                "Time the container was throttled by its CPU quota.",
                |u| u.cpu_throttled_ns.map(|v| v as f64 / 1e9),
            ),
            (
                "container_memory_usage_bytes",
                "gauge",
                "Memory the container's cgroup uses.",
                |u| u.memory_bytes.map(|v| v as f64),
            ),
            (
                "container_spec_memory_limit_bytes",
                "gauge",
                "The container's memory limit (absent when unlimited).",
                |u| u.memory_limit_bytes.map(|v| v as f64),
            ),
            (
                "container_pressure_cpu_waiting_seconds_total",
                "counter",
                "Time tasks of the container waited for a CPU (PSI some).",
                |u| u.cpu_pressure_some_us.map(|v| v as f64 / 1e6),
            ),
            (
                "container_pressure_memory_waiting_seconds_total",
                "counter",
                "Time tasks of the container waited on memory (PSI some).",
                |u| u.memory_pressure_some_us.map(|v| v as f64 / 1e6),
            ),
            (
                "container_pressure_memory_stalled_seconds_total",
                "counter",
                "Time all tasks of the container were stalled on memory (PSI full).",
                |u| u.memory_pressure_full_us.map(|v| v as f64 / 1e6),
            ),
        ];
        let labels: Vec<String> = rows
            .iter()
            .map(|(_, r)| {
                let mut l = Vec::new();
                r.identity.push_labels("", &mut l);
                if !r.runtime.is_empty() {
                    l.push(("container_runtime".into(), r.runtime.clone()));
                }
                l.iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        for (name, kind, help, get) in series {
            let mut head = false;
            for ((_, row), labels) in rows.iter().zip(&labels) {
                let Some(v) = get(&row.usage) else { continue };
                if !head {
                    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
                    head = true;
                }
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        }
        let s = self.stats();
        let _ = writeln!(
            o,
            "# HELP sonde_correlation_processes Processes in the correlation cache.\n# TYPE sonde_correlation_processes gauge\nsonde_correlation_processes {}",
            s.processes
        );
        let _ = writeln!(
            o,
            "# HELP sonde_correlation_containers Containers seen in the last scan.\n# TYPE sonde_correlation_containers gauge\nsonde_correlation_containers {}",
            s.containers
        );
        let _ = writeln!(
            o,
            "# HELP sonde_correlation_containers_dropped_total Containers left without usage series (max_containers).\n# TYPE sonde_correlation_containers_dropped_total counter\nsonde_correlation_containers_dropped_total {}",
            s.containers_dropped
        );
        let _ = writeln!(
            o,
            "# HELP sonde_correlation_process_exits_total Processes dropped from the cache because they exited.\n# TYPE sonde_correlation_process_exits_total counter\nsonde_correlation_process_exits_total {}",
            s.process_exits
        );
        if let Some(k) = &self.kube {
            let st = &k.status;
            let _ = writeln!(
                o,
                "# HELP sonde_kube_watch_events_total Kubernetes watch events applied.\n# TYPE sonde_kube_watch_events_total counter\nsonde_kube_watch_events_total {}",
                st.events.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                o,
                "# HELP sonde_kube_watch_errors_total Kubernetes watch errors (each retried with backoff).\n# TYPE sonde_kube_watch_errors_total counter\nsonde_kube_watch_errors_total {}",
                st.errors.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                o,
                "# HELP sonde_kube_relists_total Kubernetes lists (the first, and one after each expired or broken watch).\n# TYPE sonde_kube_relists_total counter\nsonde_kube_relists_total {}",
                st.relists.load(Ordering::Relaxed)
            );
            if let Ok(i) = k.index.read() {
                let _ = writeln!(
                    o,
                    "# HELP sonde_kube_objects Kubernetes objects known, by resource.\n# TYPE sonde_kube_objects gauge"
                );
                for (what, n) in [
                    ("pods", i.pods.len()),
                    ("services", i.services.len()),
                    ("endpointslices", i.slices.len()),
                    ("nodes", i.nodes.len()),
                    ("replicasets", i.replica_sets.len()),
                    ("jobs", i.jobs.len()),
                ] {
                    let _ = writeln!(o, "sonde_kube_objects{{resource=\"{what}\"}} {n}");
                }
            }
        }
    }
}

/// Prometheus label-value escaping.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
