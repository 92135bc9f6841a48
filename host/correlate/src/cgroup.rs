//! Process → container (and pod UID) from the cgroup paths in `/proc/<pid>/cgroup`, and
//! cgroup path → directory from the cgroup mounts in `/proc/self/mountinfo`.
//!
//! Container runtimes do not tell the kernel which container a process belongs to; the
//! cgroup path they create for it is the only stable, cheap, per-process hint. Its shape
//! depends on the runtime, on the cgroup driver (systemd slices/scopes or plain cgroupfs
//! directories) and on nesting (kind clusters run kubelets inside Docker containers), so the
//! path is read from its innermost segment outwards and the first segment that decides
//! (a container, a conmon, or a pod without a container) wins.
//!
//! Hosts come in three shapes and all are handled: pure cgroup v2 (`0::/path` only), pure
//! v1, and hybrid (v1 controllers plus a controller-less cgroup2 at `/sys/fs/cgroup/unified`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// Which container runtime created a container, as far as its cgroup path tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Runtime {
    #[serde(rename = "containerd")]
    Containerd,
    #[serde(rename = "cri-o")]
    Crio,
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "podman")]
    Podman,
    /// A bare container id (cgroupfs driver): any runtime could have created it.
    #[serde(rename = "unknown")]
    Unknown,
}

impl Runtime {
    /// The name used in exported records (same as the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// A container a process runs in: its runtime, its 64-hex id and, under Kubernetes, the UID
/// of its pod (dashed UUID form, as in the API).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ContainerRef {
    pub runtime: Runtime,
    pub id: String,
    pub pod_uid: Option<String>,
}

/// The parsed `/proc/<pid>/cgroup`: the cgroup v2 path (`0::/path`) and the v1 hierarchies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcCgroups {
    /// Path in the unified (v2) hierarchy, if the host mounts one.
    pub unified: Option<String>,
    /// v1 hierarchies: controllers (comma list as written, e.g. `cpu,cpuacct` or
    /// `name=systemd`) and the path.
    pub v1: Vec<(String, String)>,
}

/// v1 controllers whose path most likely is the container's own cgroup: runtimes always
/// create these, while e.g. `cpuset` or `net_cls` are sometimes left at the root.
const PREFERRED_V1: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "name=systemd"];

/// Parses the text of `/proc/<pid>/cgroup`. Malformed lines are skipped: the file is
/// kernel-generated, so one only appears when reading from a hand-made or truncated root.
///
/// A trailing ` (deleted)` (the cgroup was removed while the process still sat in it) is
/// stripped so the path still names the container.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut out = ProcCgroups::default();
    for line in text.lines() {
        // The path may itself contain ':', so split at most twice.
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hier.parse::<u32>().is_err() {
            continue;
        }
        let path = path.strip_suffix(" (deleted)").unwrap_or(path).to_string();
        if hier == "0" && controllers.is_empty() {
            out.unified = Some(path);
        } else {
            out.v1.push((controllers.to_string(), path));
        }
    }
    out
}

impl ProcCgroups {
    /// The v1 path of the hierarchy holding `controller` (one member of a comma list, e.g.
    /// `cpu` matches `cpu,cpuacct`; `name=systemd` matches the named hierarchy).
    pub fn path_for(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(ctrls, _)| ctrls.split(',').any(|c| c == controller))
            .map(|(_, path)| path.as_str())
    }

    /// Paths in the order they are trusted to name the container: the unified path, the
    /// preferred v1 controllers, then any other v1 hierarchy.
    fn candidate_paths(&self) -> impl Iterator<Item = &str> {
        let preferred = PREFERRED_V1.iter().filter_map(|c| self.path_for(c));
        let rest = self.v1.iter().map(|(_, p)| p.as_str());
        self.unified
            .as_deref()
            .into_iter()
            .chain(preferred)
            .chain(rest)
    }

    /// The container the process runs in: the first candidate path that names one.
    pub fn container(&self) -> Option<ContainerRef> {
        self.candidate_paths().find_map(container_of_path)
    }

    /// The UID of the pod the process runs in (also for processes directly in the pod
    /// cgroup, outside any container).
    pub fn pod_uid(&self) -> Option<String> {
        self.candidate_paths().find_map(pod_uid_of_path)
    }
}

/// What one path segment says about containment.
enum Segment {
    Container(Runtime, String),
    /// A conmon (CRI-O / podman monitor) scope: the process is not in a container.
    Monitor,
    Pod(String),
    Other,
}

/// The container a cgroup path names: its innermost container segment, provided no pod
/// segment or conmon scope comes first (a process directly in a pod cgroup, or a conmon,
/// is in no container even if the whole pod is nested in a kind node's container).
pub fn container_of_path(path: &str) -> Option<ContainerRef> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, seg) in segments.iter().enumerate().rev() {
        match classify(&segments[..i], seg) {
            Segment::Container(runtime, id) => {
                return Some(ContainerRef {
                    runtime,
                    id,
                    pod_uid: pod_uid_in(&segments[..i]),
                });
            }
            Segment::Monitor | Segment::Pod(_) => return None,
            Segment::Other => {}
        }
    }
    None
}

/// The UID of the innermost pod a cgroup path lies in (dashed form).
pub fn pod_uid_of_path(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    pod_uid_in(&segments)
}

/// Innermost pod segment: the pod a container (or a conmon, or a process directly in the
/// pod cgroup) belongs to is the closest one above it.
fn pod_uid_in(segments: &[&str]) -> Option<String> {
    segments
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, seg)| match classify(&segments[..i], seg) {
            Segment::Pod(uid) => Some(uid),
            _ => None,
        })
}

/// Scope/directory prefixes of the runtimes, longest first so `crio-conmon-` wins over
/// `crio-`. A `None` runtime marks a conmon scope.
const PREFIXES: [(&str, Option<Runtime>); 7] = [
    ("cri-containerd-", Some(Runtime::Containerd)),
    ("libpod-conmon-", None),
    ("crio-conmon-", None),
    ("nerdctl-", Some(Runtime::Containerd)),
    ("docker-", Some(Runtime::Docker)),
    ("libpod-", Some(Runtime::Podman)),
    ("crio-", Some(Runtime::Crio)),
];

/// Classifies one segment; `parents` are the segments above it (for the cgroupfs shapes,
/// which only mean something under `kubepods` or `docker`).
fn classify(parents: &[&str], seg: &str) -> Segment {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix)
            && is_container_id(id)
        {
            return match runtime {
                Some(rt) => Segment::Container(rt, id.to_string()),
                None => Segment::Monitor,
            };
        }
    }
    if is_container_id(seg) {
        let runtime = match parents.last() {
            Some(&"docker") => Runtime::Docker,
            _ => Runtime::Unknown,
        };
        return Segment::Container(runtime, seg.to_string());
    }
    // systemd driver: kubepods-pod<uid>.slice, kubepods-<qos>-pod<uid>.slice, '_' for '-'.
    if let Some(slice) = seg
        .strip_prefix("kubepods-")
        .and_then(|s| s.strip_suffix(".slice"))
        && let Some((_, uid)) = slice.rsplit_once("pod")
    {
        let uid = uid.replace('_', "-");
        if is_pod_uid(&uid) {
            return Segment::Pod(uid);
        }
    }
    // cgroupfs driver: /kubepods[/<qos>]/pod<uid>.
    if let Some(uid) = seg.strip_prefix("pod")
        && is_pod_uid(uid)
        && parents.iter().any(|p| p.starts_with("kubepods"))
    {
        return Segment::Pod(uid.to_string());
    }
    Segment::Other
}

/// Container ids are 64 lowercase hex digits (runc, containerd, CRI-O, Docker, podman).
fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Pod UIDs are lowercase 8-4-4-4-12 UUIDs.
fn is_pod_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// Where the cgroup hierarchies are mounted in this mount namespace, from
/// `/proc/self/mountinfo`, to turn a cgroup path into the directory holding its files.
#[derive(Clone, Debug, Default)]
pub struct CgroupMounts {
    /// Mount point of the cgroup2 hierarchy (`/sys/fs/cgroup` or, on hybrid hosts,
    /// `/sys/fs/cgroup/unified`).
    pub unified: Option<PathBuf>,
    /// v1 hierarchies: their controllers (incl. `name=systemd`) and mount point.
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The root field of each mount, by mount point, when it is not `/`: a container that
    /// bind-mounts part of a hierarchy sees it at the mount point, so that prefix has to
    /// come off a cgroup path before joining. Kept by mount point so editing the public
    /// lists cannot misalign it.
    roots: HashMap<PathBuf, String>,
}

/// Known v1 controllers; other superoptions of a cgroup mount (`rw`, `xattr`,
/// `release_agent=...`, security labels) are mount options, not controllers.
const V1_CONTROLLERS: [&str; 15] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

impl CgroupMounts {
    /// Parses mountinfo text (see proc(5)): `id parent major:minor root mount_point options
    /// [optional...] - fstype source superoptions`. The first mount of each hierarchy wins.
    pub fn parse(mountinfo: &str) -> CgroupMounts {
        let mut out = CgroupMounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split_whitespace().collect();
            let right: Vec<&str> = right.split_whitespace().collect();
            let (Some(root), Some(mount_point), Some(fstype)) =
                (left.get(3), left.get(4), right.first())
            else {
                continue;
            };
            let root = unescape(root);
            let mount_point = PathBuf::from(unescape(mount_point));
            match *fstype {
                "cgroup2" => {
                    if out.unified.is_some() {
                        continue;
                    }
                    out.unified = Some(mount_point.clone());
                }
                "cgroup" => {
                    let controllers: Vec<String> = right
                        .get(2)
                        .unwrap_or(&"")
                        .split(',')
                        .filter(|o| o.starts_with("name=") || V1_CONTROLLERS.contains(o))
                        .map(str::to_string)
                        .collect();
                    if controllers.is_empty()
                        || out
                            .v1
                            .iter()
                            .any(|(c, _)| c.iter().any(|x| controllers.contains(x)))
                    {
                        continue;
                    }
                    out.v1.push((controllers, mount_point.clone()));
                }
                _ => continue,
            }
            if root != "/" {
                out.roots.insert(mount_point, root);
            }
        }
        out
    }

    /// Reads this process's `/proc/self/mountinfo`.
    pub fn read() -> Result<CgroupMounts> {
        Self::read_from(Path::new("/proc/self/mountinfo"))
    }

    /// Reads a mountinfo file (e.g. another namespace's `/proc/<pid>/mountinfo`).
    pub fn read_from(path: &Path) -> Result<CgroupMounts> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mounts = Self::parse(&text);
        tracing::debug!(unified = ?mounts.unified, v1 = mounts.v1.len(), "cgroup mounts");
        Ok(mounts)
    }

    /// Directory of a v1 cgroup `path` in the hierarchy holding `controller`.
    pub fn dir_for_v1(&self, controller: &str, path: &str) -> Option<PathBuf> {
        let (_, mount_point) = self
            .v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == controller))?;
        self.join(mount_point, path)
    }

    /// Directory of a cgroup v2 `path`.
    pub fn dir_for_unified(&self, path: &str) -> Option<PathBuf> {
        self.join(self.unified.as_ref()?, path)
    }

    /// Mount point joined with the part of `path` below the mount's root; None when the
    /// path lies outside what is mounted (or climbs out, as paths of processes outside our
    /// cgroup namespace do: `/../..`).
    fn join(&self, mount_point: &Path, path: &str) -> Option<PathBuf> {
        let root = self.roots.get(mount_point).map_or("/", String::as_str);
        let root = root.trim_end_matches('/');
        let rest = path.strip_prefix(root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None; // `/docker/ab` is not below root `/docker/a`.
        }
        let mut dir = mount_point.to_path_buf();
        for seg in rest.split('/').filter(|s| !s.is_empty()) {
            if seg == ".." || seg == "." {
                return None;
            }
            dir.push(seg);
        }
        Some(dir)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(s) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(v) = u8::from_str_radix(s, 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "4f8a2bb5a8f0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4";
    const CID2: &str = "9e0f1a2b3c4d5e6f708192a3b44f8a2bb5a8f0c1d2e3f405162738495a6b7c8d";
    const UID: &str = "1b3c45de-6f70-4a1b-9c2d-3e4f5a6b7c8d";
    const UID_: &str = "1b3c45de_6f70_4a1b_9c2d_3e4f5a6b7c8d";

    fn c(path: &str) -> Option<(Runtime, String, Option<String>)> {
        container_of_path(path).map(|r| (r.runtime, r.id, r.pod_uid))
    }

    fn some(rt: Runtime, id: &str, pod: Option<&str>) -> Option<(Runtime, String, Option<String>)> {
        Some((rt, id.to_string(), pod.map(str::to_string)))
    }

    #[test]
    fn systemd_driver_kubernetes() {
        let burstable = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(c(&burstable), some(Runtime::Containerd, CID, Some(UID)));
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope"
        );
        assert_eq!(c(&besteffort), some(Runtime::Crio, CID, Some(UID)));
        let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope");
        assert_eq!(c(&guaranteed), some(Runtime::Docker, CID, Some(UID)));
        assert_eq!(pod_uid_of_path(&guaranteed).as_deref(), Some(UID));
    }

    #[test]
    fn conmon_is_not_a_container() {
        let conmon = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope"
        );
        assert_eq!(c(&conmon), None);
        // ...but it does run for the pod.
        assert_eq!(pod_uid_of_path(&conmon).as_deref(), Some(UID));
        assert_eq!(
            c(&format!("/machine.slice/libpod-conmon-{CID}.scope")),
            None
        );
        // Nested in a kind node, conmon is still not attributed to the node container.
        assert_eq!(
            c(&format!(
                "/docker/{CID2}/system.slice/crio-conmon-{CID}.scope"
            )),
            None
        );
    }

    #[test]
    fn pod_without_container() {
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        assert_eq!(c(&pod), None);
        assert_eq!(pod_uid_of_path(&pod).as_deref(), Some(UID));
        let nested = format!("/docker/{CID2}/kubepods/besteffort/pod{UID}");
        assert_eq!(
            c(&nested),
            None,
            "the kind node must not be taken for the pod's container"
        );
        assert_eq!(pod_uid_of_path(&nested).as_deref(), Some(UID));
    }

    #[test]
    fn cgroupfs_driver_kubernetes() {
        assert_eq!(
            c(&format!("/kubepods/burstable/pod{UID}/{CID}")),
            some(Runtime::Unknown, CID, Some(UID))
        );
        assert_eq!(
            c(&format!("/kubepods/besteffort/pod{UID}/{CID}")),
            some(Runtime::Unknown, CID, Some(UID))
        );
        assert_eq!(
            c(&format!("/kubepods/pod{UID}/{CID}")),
            some(Runtime::Unknown, CID, Some(UID))
        );
        assert_eq!(
            c(&format!("/kubepods/pod{UID}/crio-{CID}")),
            some(Runtime::Crio, CID, Some(UID))
        );
        // `pod<uuid>` only means a pod under kubepods.
        assert_eq!(pod_uid_of_path(&format!("/somewhere/pod{UID}")), None);
    }

    #[test]
    fn nested_takes_innermost() {
        // kind: kubelet runs inside a Docker container.
        let kind = format!("/docker/{CID2}/kubepods/burstable/pod{UID}/{CID}");
        assert_eq!(c(&kind), some(Runtime::Unknown, CID, Some(UID)));
        let kind_systemd = format!(
            "/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(c(&kind_systemd), some(Runtime::Containerd, CID, Some(UID)));
        let sandboxed = format!("/process_api/abc/docker/{CID}");
        assert_eq!(c(&sandboxed), some(Runtime::Docker, CID, None));
        // systemd running inside a container: the container is above the leaf.
        assert_eq!(
            c(&format!("/docker/{CID}/system.slice/nginx.service")),
            some(Runtime::Docker, CID, None)
        );
    }

    #[test]
    fn plain_runtimes() {
        assert_eq!(
            c(&format!("/docker/{CID}")),
            some(Runtime::Docker, CID, None)
        );
        assert_eq!(
            c(&format!("/system.slice/docker-{CID}.scope")),
            some(Runtime::Docker, CID, None)
        );
        assert_eq!(
            c(&format!("/machine.slice/libpod-{CID}.scope")),
            some(Runtime::Podman, CID, None)
        );
        assert_eq!(
            c(&format!("/libpod_parent/libpod-{CID}")),
            some(Runtime::Podman, CID, None)
        );
        assert_eq!(
            c(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container"
            )),
            some(Runtime::Podman, CID, None)
        );
        assert_eq!(
            c(&format!("/default/{CID}")),
            some(Runtime::Unknown, CID, None)
        );
        assert_eq!(
            c(&format!("/system.slice/nerdctl-{CID}.scope")),
            some(Runtime::Containerd, CID, None)
        );
    }

    #[test]
    fn not_containers() {
        for path in [
            "/",
            "",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/process_api/3d7c48c9390e99f6cc8b2cbdd6ece638",
            "/init.scope",
        ] {
            assert_eq!(c(path), None, "{path}");
        }
    }

    #[test]
    fn invalid_ids_rejected() {
        let upper = CID.to_uppercase();
        let short = &CID[..63];
        let long = format!("{CID}0");
        let nonhex = format!("{}g", &CID[..63]);
        for id in [upper.as_str(), short, long.as_str(), nonhex.as_str()] {
            assert_eq!(c(&format!("/docker/{id}")), None, "{id}");
            assert_eq!(c(&format!("/system.slice/docker-{id}.scope")), None, "{id}");
        }
        // Bad pod UIDs: wrong length, misplaced dash, uppercase.
        for uid in [
            "1b3c45de_6f70_4a1b_9c2d_3e4f5a6b7c8",
            "1b3c45de6_f70_4a1b_9c2d_3e4f5a6b7c8d",
            "1B3C45DE_6f70_4a1b_9c2d_3e4f5a6b7c8d",
        ] {
            let path =
                format!("/kubepods.slice/kubepods-pod{uid}.slice/cri-containerd-{CID}.scope");
            assert_eq!(c(&path), some(Runtime::Containerd, CID, None), "{uid}");
            assert_eq!(pod_uid_of_path(&path), None, "{uid}");
        }
    }

    #[test]
    fn runtime_names() {
        for (rt, name) in [
            (Runtime::Containerd, "containerd"),
            (Runtime::Crio, "cri-o"),
            (Runtime::Docker, "docker"),
            (Runtime::Podman, "podman"),
            (Runtime::Unknown, "unknown"),
        ] {
            assert_eq!(rt.as_str(), name);
            assert_eq!(serde_json::to_string(&rt).ok(), Some(format!("\"{name}\"")));
        }
    }

    #[test]
    fn parse_v1_v2_mixed() {
        let text = format!(
            "12:hugetlb:/\n\
             11:memory:/kubepods/burstable/pod{UID}/{CID}\n\
             4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n\
             3:net_cls,net_prio:/\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n\
             0::/\n\
             garbage line\n"
        );
        let cg = parse_proc_cgroup(&text);
        assert_eq!(cg.unified.as_deref(), Some("/"));
        assert_eq!(cg.v1.len(), 5);
        assert_eq!(cg.v1[2].0, "cpu,cpuacct");
        assert_eq!(cg.path_for("cpuacct"), cg.path_for("memory"));
        assert_eq!(cg.path_for("net_prio"), Some("/"));
        assert!(cg.path_for("name=systemd").is_some());
        assert_eq!(cg.path_for("cpuset"), None);
        assert_eq!(cg.path_for("cpu,cpuacct"), None);
        let container = cg.container().map(|r| (r.runtime, r.id, r.pod_uid));
        assert_eq!(container, some(Runtime::Unknown, CID, Some(UID)));
        assert_eq!(cg.pod_uid().as_deref(), Some(UID));
    }

    #[test]
    fn parse_v2_only_and_deleted() {
        let text = format!(
            "0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope (deleted)\n"
        );
        let cg = parse_proc_cgroup(&text);
        assert!(cg.v1.is_empty());
        assert_eq!(cg.container().map(|r| r.id), Some(CID.to_string()));
        assert_eq!(parse_proc_cgroup("0::/\n").container(), None);
    }

    #[test]
    fn unified_wins_then_preferred_v1() {
        // The memory path names the container even though cpuset is listed first.
        let text = format!("5:cpuset:/docker/{CID2}\n4:memory:/docker/{CID}\n0::/\n");
        let cg = parse_proc_cgroup(&text);
        assert_eq!(cg.container().map(|r| r.id), Some(CID.to_string()));
        let text = format!("4:memory:/docker/{CID2}\n0::/system.slice/docker-{CID}.scope\n");
        assert_eq!(
            parse_proc_cgroup(&text).container().map(|r| r.id),
            Some(CID.to_string())
        );
        // Only a non-preferred hierarchy names it: still found.
        let text = format!("5:cpuset:/docker/{CID}\n4:memory:/\n0::/\n");
        assert_eq!(
            parse_proc_cgroup(&text).container().map(|r| r.id),
            Some(CID.to_string())
        );
    }

    /// This machine's shape: hybrid, cpu and cpuacct mounted separately.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_hybrid() {
        let m = CgroupMounts::parse(HYBRID);
        assert_eq!(
            m.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(m.v1.len(), 4);
        assert_eq!(
            m.dir_for_v1("memory", "/process_api/x"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/x"))
        );
        assert_eq!(
            m.dir_for_v1("cpuacct", "/"),
            Some(PathBuf::from("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(
            m.dir_for_v1("name=systemd", "/init.scope"),
            Some(PathBuf::from("/sys/fs/cgroup/systemd/init.scope"))
        );
        assert_eq!(m.dir_for_v1("pids", "/"), None);
        assert_eq!(
            m.dir_for_unified("/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/a/b"))
        );
        assert_eq!(m.dir_for_unified("/../../x"), None);
    }

    #[test]
    fn mountinfo_v2_and_comounted_v1() {
        let m = CgroupMounts::parse(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(
            m.dir_for_unified("/"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert!(m.v1.is_empty());
        let m = CgroupMounts::parse(
            "33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,xattr,cpu,cpuacct\n\
             34 25 0:29 / /mnt/again rw shared:9 - cgroup cgroup rw,xattr,cpu,cpuacct\n\
             26 25 0:23 / /sys/fs/cgroup/systemd rw shared:5 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd\n",
        );
        assert_eq!(m.v1.len(), 2, "the second mount of a hierarchy is ignored");
        assert_eq!(m.v1[0].0, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(m.v1[1].0, vec!["name=systemd".to_string()]);
        assert_eq!(
            m.dir_for_v1("cpuacct", "/docker/x"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/docker/x"))
        );
    }

    #[test]
    fn mountinfo_non_root_mount_root() {
        // Inside a container without a cgroup namespace: its own cgroup is mounted.
        let text = format!(
            "700 690 0:29 /docker/{CID} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n\
             701 690 0:38 /kubepods/pod{UID} /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n\
             702 690 0:40 / /mnt/with\\040space rw - cgroup cgroup rw,pids\n"
        );
        let m = CgroupMounts::parse(&text);
        assert_eq!(
            m.dir_for_v1("memory", &format!("/docker/{CID}")),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            m.dir_for_v1("memory", &format!("/docker/{CID}/child")),
            Some(PathBuf::from("/sys/fs/cgroup/memory/child"))
        );
        // Outside the mounted subtree, or a sibling sharing a prefix.
        assert_eq!(m.dir_for_v1("memory", "/docker"), None);
        assert_eq!(m.dir_for_v1("memory", &format!("/docker/{CID}x")), None);
        assert_eq!(
            m.dir_for_unified(&format!("/kubepods/pod{UID}/{CID}")),
            Some(PathBuf::from(format!("/sys/fs/cgroup/unified/{CID}")))
        );
        assert_eq!(
            m.dir_for_v1("pids", "/a"),
            Some(PathBuf::from("/mnt/with space/a"))
        );
    }

    #[test]
    fn real_files_parse() {
        let mounts = CgroupMounts::read().expect("reading /proc/self/mountinfo");
        let text = std::fs::read_to_string("/proc/self/cgroup").expect("reading /proc/self/cgroup");
        let cg = parse_proc_cgroup(&text);
        assert!(cg.unified.is_some() || !cg.v1.is_empty());
        if let Some(path) = &cg.unified {
            let dir = mounts.dir_for_unified(path).expect("unified dir");
            assert!(dir.join("cgroup.procs").exists(), "{}", dir.display());
        }
    }
}
