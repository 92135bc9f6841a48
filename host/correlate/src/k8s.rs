//! Kubernetes metadata: watchers on this node's pods, and on the cluster's services, endpoint
//! slices, nodes, and the owners between a pod and its workload (ReplicaSets, Jobs; metadata
//! only), folded into [`Index`]: pod UID → pod, pod IP → pod, ClusterIP or endpoint IP →
//! service, node IP → node.
//!
//! Each watcher is kube-runtime's `watcher` with its default backoff: it lists, then watches
//! from the list's resourceVersion, and relists when the server says the version is gone (410).
//! A relist arrives as `Init`, `InitApply`…, `InitDone`; the table buffers it and swaps it in
//! whole, so objects deleted while the watch was down disappear too.
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, Result};
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event, watcher};
use serde::{Deserialize, Serialize};

/// `[kubernetes]`: where the API server is, and which node this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSettings {
    /// `auto`: in-cluster when `KUBERNETES_SERVICE_HOST` is set, else a kubeconfig
    /// (`kubeconfig`, `$KUBECONFIG`, `~/.kube/config`) when one exists, else none.
    /// `in-cluster`, `kubeconfig`: only that. `off`: cgroups and /proc only.
    pub mode: KubeMode,
    /// Kubeconfig file (mode `kubeconfig`, or `auto`).
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, to watch only its pods. Default: `$NODE_NAME` (set it from the
    /// downward API in the DaemonSet), else the host name.
    pub node_name: Option<String>,
    /// How long start-up waits for the first lists before capture begins, so the first
    /// connections are labelled; capture starts anyway after it (labels fill in later).
    pub sync_timeout_ms: u64,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            mode: KubeMode::Auto,
            kubeconfig: None,
            node_name: None,
            sync_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KubeMode {
    Auto,
    InCluster,
    Kubeconfig,
    Off,
}

impl KubernetesSettings {
    /// The node name: configured, `$NODE_NAME`, or the host name.
    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_default()
    }

    /// The client this configuration asks for; `Ok(None)` when there is no cluster to talk to
    /// (mode `off`, or `auto` with neither in-cluster variables nor a kubeconfig).
    pub async fn client(&self) -> Result<Option<kube::Client>> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let kubeconfig = self
            .kubeconfig
            .clone()
            .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
            .filter(|p| p.exists());
        let config = match (self.mode, in_cluster, kubeconfig) {
            (KubeMode::Off, ..) => return Ok(None),
            (KubeMode::InCluster, ..) | (KubeMode::Auto, true, _) => {
                kube::Config::incluster().context("in-cluster Kubernetes configuration")?
            }
            (KubeMode::Kubeconfig | KubeMode::Auto, _, Some(path)) => {
                let kc = Kubeconfig::read_from(&path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            (KubeMode::Kubeconfig, _, None) => {
                anyhow::bail!("[kubernetes] mode = kubeconfig, but no kubeconfig file exists")
            }
            (KubeMode::Auto, false, None) => return Ok(None),
        };
        Ok(Some(
            kube::Client::try_from(config).context("building the Kubernetes client")?,
        ))
    }
}

/// A pod as correlation needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub ips: Vec<IpAddr>,
    /// Host-network pods share the node's address: never looked up by IP.
    pub host_network: bool,
    pub owner: Option<Owner>,
    /// `pod-template-hash`: the suffix a Deployment's ReplicaSet name carries.
    pub template_hash: Option<String>,
    /// (container id without the `containerd://` scheme, container name).
    pub containers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceMeta {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceMeta {
    pub namespace: String,
    pub name: String,
    /// The service it belongs to (`kubernetes.io/service-name`).
    pub service: String,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeMeta {
    pub name: String,
    pub ips: Vec<IpAddr>,
}

/// A ReplicaSet or a Job: only who owns it matters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnedMeta {
    pub uid: String,
    pub owner: Option<Owner>,
}

/// What a table needs of its rows: a key, and the addresses to index them by.
pub trait Row: Clone {
    type Key: Clone + Eq + Hash;
    fn key(&self) -> Self::Key;
    fn ips(&self) -> &[IpAddr] {
        &[]
    }
}

impl Row for PodMeta {
    type Key = String;
    fn key(&self) -> String {
        self.uid.clone()
    }
    fn ips(&self) -> &[IpAddr] {
        if self.host_network { &[] } else { &self.ips }
    }
}
impl Row for ServiceMeta {
    type Key = (String, String);
    fn key(&self) -> Self::Key {
        (self.namespace.clone(), self.name.clone())
    }
    fn ips(&self) -> &[IpAddr] {
        &self.cluster_ips
    }
}
impl Row for SliceMeta {
    type Key = (String, String);
    fn key(&self) -> Self::Key {
        (self.namespace.clone(), self.name.clone())
    }
    fn ips(&self) -> &[IpAddr] {
        &self.addresses
    }
}
impl Row for NodeMeta {
    type Key = String;
    fn key(&self) -> String {
        self.name.clone()
    }
    fn ips(&self) -> &[IpAddr] {
        &self.ips
    }
}
impl Row for OwnedMeta {
    type Key = String;
    fn key(&self) -> String {
        self.uid.clone()
    }
}

/// One resource's objects, by key and by address, fed by watcher events.
#[derive(Debug)]
pub struct Table<T: Row> {
    rows: HashMap<T::Key, T>,
    by_ip: HashMap<IpAddr, T::Key>,
    /// A relist in progress: rows listed so far.
    relist: Option<HashMap<T::Key, T>>,
}

impl<T: Row> Default for Table<T> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            by_ip: HashMap::new(),
            relist: None,
        }
    }
}

impl<T: Row> Table<T> {
    pub fn get(&self, key: &T::Key) -> Option<&T> {
        self.rows.get(key)
    }

    pub fn by_ip(&self, ip: &IpAddr) -> Option<&T> {
        self.by_ip.get(ip).and_then(|k| self.rows.get(k))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.rows.values()
    }

    pub fn apply(&mut self, row: T) {
        let key = row.key();
        if let Some(old) = self.rows.remove(&key) {
            self.unindex(&old);
        }
        for ip in row.ips() {
            self.by_ip.insert(*ip, key.clone());
        }
        self.rows.insert(key, row);
    }

    pub fn delete(&mut self, row: &T) {
        if let Some(old) = self.rows.remove(&row.key()) {
            self.unindex(&old);
        }
    }

    /// Remove `old`'s addresses from the index, where they still point at it (a new object
    /// may have taken an address over already).
    fn unindex(&mut self, old: &T) {
        let key = old.key();
        for ip in old.ips() {
            if self.by_ip.get(ip) == Some(&key) {
                self.by_ip.remove(ip);
            }
        }
    }

    /// Apply a watcher event, converted by `convert` (objects it rejects are skipped).
    pub fn on_event<K>(&mut self, event: Event<K>, convert: impl Fn(&K) -> Option<T>) {
        match event {
            Event::Apply(o) => {
                if let Some(row) = convert(&o) {
                    self.apply(row);
                }
            }
            Event::Delete(o) => {
                if let Some(row) = convert(&o) {
                    self.delete(&row);
                }
            }
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(o) => {
                if let (Some(buf), Some(row)) = (self.relist.as_mut(), convert(&o)) {
                    buf.insert(row.key(), row);
                }
            }
            Event::InitDone => {
                if let Some(rows) = self.relist.take() {
                    self.by_ip.clear();
                    self.rows.clear();
                    for (_, row) in rows {
                        self.apply(row);
                    }
                }
            }
        }
    }
}

/// Everything the watchers know, as lookups.
#[derive(Debug, Default)]
pub struct Index {
    pub pods: Table<PodMeta>,
    pub services: Table<ServiceMeta>,
    pub slices: Table<SliceMeta>,
    pub nodes: Table<NodeMeta>,
    pub replica_sets: Table<OwnedMeta>,
    pub jobs: Table<OwnedMeta>,
}

/// A workload kind with a label of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    /// The label that names a workload of this kind (OpenTelemetry's `k8s.*.name`).
    pub fn label(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "k8s_deployment_name",
            WorkloadKind::ReplicaSet => "k8s_replicaset_name",
            WorkloadKind::StatefulSet => "k8s_statefulset_name",
            WorkloadKind::DaemonSet => "k8s_daemonset_name",
            WorkloadKind::Job => "k8s_job_name",
            WorkloadKind::CronJob => "k8s_cronjob_name",
        }
    }
}

impl Index {
    /// The pod a container belongs to (for cgroups that name a container but no pod).
    pub fn pod_by_container(&self, container_id: &str) -> Option<&PodMeta> {
        self.pods
            .values()
            .find(|p| p.containers.iter().any(|(id, _)| id == container_id))
    }

    /// The workload behind a pod, following ReplicaSet → Deployment and Job → CronJob.
    pub fn workload(&self, pod: &PodMeta) -> Option<(WorkloadKind, String)> {
        let owner = pod.owner.as_ref()?;
        Some(match owner.kind.as_str() {
            "ReplicaSet" => match self
                .replica_sets
                .get(&owner.uid)
                .and_then(|r| r.owner.as_ref())
            {
                Some(o) if o.kind == "Deployment" => (WorkloadKind::Deployment, o.name.clone()),
                Some(_) => (WorkloadKind::ReplicaSet, owner.name.clone()),
                // The ReplicaSet is not (yet) known: a Deployment names its ReplicaSets
                // `<deployment>-<pod-template-hash>`.
                None => match pod
                    .template_hash
                    .as_deref()
                    .and_then(|h| owner.name.strip_suffix(h))
                    .and_then(|n| n.strip_suffix('-'))
                {
                    Some(d) if !d.is_empty() => (WorkloadKind::Deployment, d.to_string()),
                    _ => (WorkloadKind::ReplicaSet, owner.name.clone()),
                },
            },
            "StatefulSet" => (WorkloadKind::StatefulSet, owner.name.clone()),
            "DaemonSet" => (WorkloadKind::DaemonSet, owner.name.clone()),
            "Job" => match self.jobs.get(&owner.uid).and_then(|j| j.owner.as_ref()) {
                Some(o) if o.kind == "CronJob" => (WorkloadKind::CronJob, o.name.clone()),
                _ => (WorkloadKind::Job, owner.name.clone()),
            },
            _ => return None,
        })
    }

    /// The service whose endpoints include this address (a pod serving it).
    pub fn service_of_endpoint(&self, ip: &IpAddr) -> Option<(&str, &str)> {
        self.slices
            .by_ip(ip)
            .map(|s| (s.namespace.as_str(), s.service.as_str()))
    }
}

fn ips<'a>(v: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = v.into_iter().filter_map(|s| s.parse().ok()).collect();
    out.dedup();
    out
}

fn controller(meta: &ObjectMeta) -> Option<Owner> {
    let refs: &[OwnerReference] = meta.owner_references.as_deref().unwrap_or(&[]);
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())
        .map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        })
}

/// A container id without its runtime scheme (`containerd://…`, `cri-o://…`, `docker://…`).
pub fn strip_scheme(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

pub fn pod_meta(p: &Pod) -> Option<PodMeta> {
    let m = &p.metadata;
    let status = p.status.as_ref();
    let spec = p.spec.as_ref();
    let mut addrs: Vec<&String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|v| v.iter().map(|i| &i.ip).collect())
        .unwrap_or_default();
    if let Some(ip) = status.and_then(|s| s.pod_ip.as_ref()) {
        addrs.insert(0, ip);
    }
    let statuses = status.into_iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
    });
    Some(PodMeta {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone()?,
        uid: m.uid.clone()?,
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ips: ips(addrs),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        owner: controller(m),
        template_hash: m
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .cloned(),
        containers: statuses
            .filter_map(|c| {
                let id = strip_scheme(c.container_id.as_deref()?);
                Some((id.to_string(), c.name.clone()))
            })
            .collect(),
    })
}

pub fn service_meta(s: &Service) -> Option<ServiceMeta> {
    let spec = s.spec.as_ref();
    let mut addrs: Vec<&String> = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if let Some(ip) = spec.and_then(|s| s.cluster_ip.as_ref()) {
        addrs.insert(0, ip);
    }
    Some(ServiceMeta {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone()?,
        // "None" (headless) does not parse: no address.
        cluster_ips: ips(addrs),
    })
}

pub fn slice_meta(s: &EndpointSlice) -> Option<SliceMeta> {
    let m = &s.metadata;
    Some(SliceMeta {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone()?,
        service: m
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()?,
        addresses: ips(s.endpoints.iter().flat_map(|e| e.addresses.iter())),
    })
}

pub fn node_meta(n: &Node) -> Option<NodeMeta> {
    Some(NodeMeta {
        name: n.metadata.name.clone()?,
        ips: ips(n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .map(|a| &a.address)),
    })
}

pub fn owned_meta<K>(o: &PartialObjectMeta<K>) -> Option<OwnedMeta> {
    Some(OwnedMeta {
        uid: o.metadata.uid.clone()?,
        owner: controller(&o.metadata),
    })
}

/// How the watchers are doing (`/metrics`: `sonde_kube_*`).
#[derive(Debug, Default)]
pub struct WatchStatus {
    /// Watch events applied, over all resources.
    pub events: AtomicU64,
    /// Errors the watchers returned (each is retried with backoff).
    pub errors: AtomicU64,
    /// Relists (the initial list, and one after each 410 Gone or broken watch).
    pub relists: AtomicU64,
    /// The pods' first list is complete.
    pub pods_synced: AtomicBool,
    /// Watchers whose first list is complete.
    pub synced: AtomicU64,
}

/// The running watchers: their shared index, and their status.
#[derive(Debug, Clone)]
pub struct KubeWatch {
    pub index: Arc<RwLock<Index>>,
    pub status: Arc<WatchStatus>,
    pub node_name: String,
}

/// Watchers [`KubeWatch::spawn`] starts.
pub const WATCHERS: u64 = 6;

/// What the watchers read, as (API group, resource; "" is the core group): the objects the
/// daemon's RBAC must let it list and watch, no more (deploy/base/rbac-daemon.yaml;
/// tests/tests/deploy.rs checks the rules against this list). Taken from the types the
/// watchers are built on, which also name them in [`KubeWatch::spawn`].
pub fn watched_resources() -> [(&'static str, &'static str); WATCHERS as usize] {
    [
        api_resource::<Pod>(),
        api_resource::<Service>(),
        api_resource::<EndpointSlice>(),
        api_resource::<Node>(),
        api_resource::<ReplicaSet>(),
        api_resource::<Job>(),
    ]
}

fn api_resource<K: k8s_openapi::Resource>() -> (&'static str, &'static str) {
    (K::GROUP, K::URL_PATH_SEGMENT)
}

impl KubeWatch {
    /// Wait until every watcher has listed once, or `timeout`; whether they all did.
    pub async fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.status.synced.load(Ordering::Relaxed) < WATCHERS {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    /// Start the watchers on the current tokio runtime. They run until the process ends;
    /// errors are retried with kube-runtime's default backoff and logged once per outage.
    pub fn spawn(client: kube::Client, node_name: String) -> KubeWatch {
        let index = Arc::new(RwLock::new(Index::default()));
        let status = Arc::new(WatchStatus::default());
        let w = KubeWatch {
            index,
            status,
            node_name: node_name.clone(),
        };
        let pods = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let all = watcher::Config::default;
        w.run(
            api_resource::<Pod>().1,
            watcher(Api::<Pod>::all(client.clone()), pods),
            |i| &mut i.pods,
            pod_meta,
        );
        w.run(
            api_resource::<Service>().1,
            watcher(Api::<Service>::all(client.clone()), all()),
            |i| &mut i.services,
            service_meta,
        );
        w.run(
            api_resource::<EndpointSlice>().1,
            watcher(Api::<EndpointSlice>::all(client.clone()), all()),
            |i| &mut i.slices,
            slice_meta,
        );
        w.run(
            api_resource::<Node>().1,
            watcher(Api::<Node>::all(client.clone()), all()),
            |i| &mut i.nodes,
            node_meta,
        );
        w.run(
            api_resource::<ReplicaSet>().1,
            watcher(
                Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
                all(),
            ),
            |i| &mut i.replica_sets,
            owned_meta,
        );
        w.run(
            api_resource::<Job>().1,
            watcher(Api::<PartialObjectMeta<Job>>::all(client), all()),
            |i| &mut i.jobs,
            owned_meta,
        );
        w
    }

    fn run<K, T, S>(
        &self,
        what: &'static str,
        stream: S,
        table: fn(&mut Index) -> &mut Table<T>,
        convert: fn(&K) -> Option<T>,
    ) where
        K: Send + 'static,
        T: Row + Send + Sync + 'static,
        T::Key: Send + Sync,
        S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    {
        let index = self.index.clone();
        let status = self.status.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.default_backoff());
            let mut failing = false;
            let mut first_list = true;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        if failing {
                            tracing::info!(resource = what, "Kubernetes watch recovered");
                            failing = false;
                        }
                        let done = matches!(event, Event::InitDone);
                        if matches!(event, Event::Init) {
                            status.relists.fetch_add(1, Ordering::Relaxed);
                        }
                        status.events.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut i) = index.write() {
                            table(&mut i).on_event(event, convert);
                        }
                        if done && what == "pods" {
                            status.pods_synced.store(true, Ordering::Relaxed);
                        }
                        if done && first_list {
                            first_list = false;
                            status.synced.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // 410 Gone: the history moved on; the watcher relists. Routine.
                    Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                        tracing::debug!(
                            resource = what,
                            "Kubernetes watch expired (410); relisting"
                        );
                    }
                    Err(e) => {
                        status.errors.fetch_add(1, Ordering::Relaxed);
                        // One line per outage, not one per retry.
                        if !failing {
                            tracing::warn!(resource = what, error = %e, "Kubernetes watch failed; retrying with backoff");
                            failing = true;
                        } else {
                            tracing::debug!(resource = what, error = %e, "Kubernetes watch still failing");
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, ip: &str) -> PodMeta {
        PodMeta {
            namespace: "shop".into(),
            name: format!("web-{uid}"),
            uid: uid.into(),
            node: "n1".into(),
            ips: vec![ip.parse().unwrap()],
            host_network: false,
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: "web-6d4cf56db6".into(),
                uid: "rs1".into(),
            }),
            template_hash: Some("6d4cf56db6".into()),
            containers: vec![],
        }
    }

    #[test]
    fn table_indexes_by_ip_and_a_relist_replaces_everything() {
        let mut t = Table::<PodMeta>::default();
        t.on_event(Event::Apply(pod("a", "10.0.0.1")), |p| Some(p.clone()));
        t.on_event(Event::Apply(pod("b", "10.0.0.2")), |p| Some(p.clone()));
        assert_eq!(t.by_ip(&"10.0.0.1".parse().unwrap()).unwrap().uid, "a");
        // Pod b moves to a new address: the old one no longer finds it.
        t.on_event(Event::Apply(pod("b", "10.0.0.3")), |p| Some(p.clone()));
        assert!(t.by_ip(&"10.0.0.2".parse().unwrap()).is_none());
        // A new pod took a's address before a's deletion arrived: the deletion keeps it.
        t.on_event(Event::Apply(pod("c", "10.0.0.1")), |p| Some(p.clone()));
        t.on_event(Event::Delete(pod("a", "10.0.0.1")), |p| Some(p.clone()));
        assert_eq!(t.by_ip(&"10.0.0.1".parse().unwrap()).unwrap().uid, "c");
        // A relist that no longer has b: b is gone once it is done, not before.
        t.on_event(Event::Init, |p: &PodMeta| Some(p.clone()));
        t.on_event(Event::InitApply(pod("c", "10.0.0.1")), |p| Some(p.clone()));
        assert_eq!(t.len(), 2);
        t.on_event(Event::InitDone, |p: &PodMeta| Some(p.clone()));
        assert_eq!(t.len(), 1);
        assert!(t.by_ip(&"10.0.0.3".parse().unwrap()).is_none());
    }

    #[test]
    fn workload_follows_owners_and_falls_back_to_the_template_hash() {
        let mut i = Index::default();
        let p = pod("a", "10.0.0.1");
        assert_eq!(
            i.workload(&p),
            Some((WorkloadKind::Deployment, "web".into()))
        );
        i.replica_sets.apply(OwnedMeta {
            uid: "rs1".into(),
            owner: Some(Owner {
                kind: "Deployment".into(),
                name: "storefront".into(),
                uid: "d1".into(),
            }),
        });
        assert_eq!(
            i.workload(&p),
            Some((WorkloadKind::Deployment, "storefront".into()))
        );
        let mut bare = p.clone();
        bare.template_hash = None;
        bare.owner.as_mut().unwrap().uid = "rs2".into();
        assert_eq!(
            i.workload(&bare),
            Some((WorkloadKind::ReplicaSet, "web-6d4cf56db6".into()))
        );
        let mut job = p.clone();
        job.owner = Some(Owner {
            kind: "Job".into(),
            name: "backup-29000".into(),
            uid: "j1".into(),
        });
        assert_eq!(
            i.workload(&job),
            Some((WorkloadKind::Job, "backup-29000".into()))
        );
        i.jobs.apply(OwnedMeta {
            uid: "j1".into(),
            owner: Some(Owner {
                kind: "CronJob".into(),
                name: "backup".into(),
                uid: "c1".into(),
            }),
        });
        assert_eq!(
            i.workload(&job),
            Some((WorkloadKind::CronJob, "backup".into()))
        );
    }

    #[test]
    fn conversions_read_real_shapes() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                "labels": {"pod-template-hash": "abc"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}]},
            "status": {"podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
                "containerStatuses": [{"name": "app", "containerID": "containerd://abcd", "image": "x", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        let m = pod_meta(&p).unwrap();
        assert_eq!(m.ips.len(), 2);
        assert_eq!(m.containers, vec![("abcd".to_string(), "app".to_string())]);
        assert_eq!(m.owner.unwrap().kind, "ReplicaSet");
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}
        }))
        .unwrap();
        assert!(service_meta(&s).unwrap().cluster_ips.is_empty());
    }
}
