//! Throw-away cgroups shaped like a Kubernetes node's: the test creates, under this process's
//! own cgroup in every mounted hierarchy (cgroup v1 controllers, `name=systemd`, cgroup2), the
//! directories containerd, CRI-O or Docker would (systemd or cgroupfs driver), and starts real
//! processes in them. The daemon then finds container ids and pod UIDs exactly as it would on
//! a node. Removed on drop (processes still inside are killed first).
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// Which runtime and cgroup driver a container's path imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`
    ContainerdSystemd,
    /// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/crio-<id>.scope`
    CrioSystemd,
    /// `kubepods/burstable/pod<uid>/<id>` (cgroupfs driver, as Docker/cri-dockerd set it up)
    DockerCgroupfs,
    /// `docker/<id>` (plain Docker, no Kubernetes: no pod)
    Docker,
}

/// A fake container: its id, its pod's UID, and its cgroup directories.
#[derive(Debug)]
pub struct FakeContainer {
    pub id: String,
    /// Empty for [`Shape::Docker`].
    pub pod_uid: String,
    pub shape: Shape,
    /// The path below this process's cgroup (the same in every hierarchy).
    pub rel_path: String,
    /// Every directory created, outermost first (for removal innermost first).
    created: Vec<PathBuf>,
    /// The leaf directory in each hierarchy.
    leaves: Vec<PathBuf>,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` hex digits, unique per test process and call.
fn unique_hex(n: usize) -> String {
    let seed = u64::from(std::process::id()) << 32
        ^ SEQ.fetch_add(1, Ordering::Relaxed)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut out = String::new();
    let mut x = seed;
    while out.len() < n {
        x = splitmix(x);
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(n);
    out
}

/// Mount points of every cgroup hierarchy with this process's path in it.
fn hierarchies() -> Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let _source = post.next();
        let opts = post.next().unwrap_or("");
        let mount = pre.split(' ').nth(4).unwrap_or("");
        let own_path = match fstype {
            "cgroup2" => own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(str::to_string),
            "cgroup" => own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
                let wanted: Vec<&str> = ctrl.split(',').collect();
                let has = opts.split(',').any(|o| wanted.contains(&o));
                has.then(|| path.to_string())
            }),
            _ => None,
        };
        if let Some(p) = own_path {
            out.push(PathBuf::from(mount).join(p.trim_start_matches('/')));
        }
    }
    if out.is_empty() {
        bail!("no cgroup hierarchy is mounted");
    }
    Ok(out)
}

impl FakeContainer {
    /// Create the container's cgroups in every hierarchy, under a top directory named after
    /// this process, `tag` and a sequence number.
    pub fn create(shape: Shape, tag: &str) -> Result<FakeContainer> {
        crate::require_root();
        let id = unique_hex(64);
        let u = unique_hex(32);
        let pod_uid = if shape == Shape::Docker {
            String::new()
        } else {
            format!(
                "{}-{}-{}-{}-{}",
                &u[..8],
                &u[8..12],
                &u[12..16],
                &u[16..20],
                &u[20..32]
            )
        };
        let slice_uid = pod_uid.replace('-', "_");
        // A top directory of its own: removing it never races another container's.
        let top = format!(
            "sonde-test-{}-{tag}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let segments: Vec<String> = match shape {
            Shape::ContainerdSystemd => vec![
                "kubepods.slice".into(),
                "kubepods-burstable.slice".into(),
                format!("kubepods-burstable-pod{slice_uid}.slice"),
                format!("cri-containerd-{id}.scope"),
            ],
            Shape::CrioSystemd => vec![
                "kubepods.slice".into(),
                "kubepods-besteffort.slice".into(),
                format!("kubepods-besteffort-pod{slice_uid}.slice"),
                format!("crio-{id}.scope"),
            ],
            Shape::DockerCgroupfs => vec![
                "kubepods".into(),
                "burstable".into(),
                format!("pod{pod_uid}"),
                id.clone(),
            ],
            Shape::Docker => vec!["docker".into(), id.clone()],
        };
        let rel_path = std::iter::once(top.clone())
            .chain(segments.iter().cloned())
            .collect::<Vec<_>>()
            .join("/");
        let mut c = FakeContainer {
            id,
            pod_uid,
            shape,
            rel_path,
            created: Vec::new(),
            leaves: Vec::new(),
        };
        for base in hierarchies()? {
            let mut dir = base.join(&top);
            let mut chain = vec![dir.clone()];
            for s in &segments {
                dir = dir.join(s);
                chain.push(dir.clone());
            }
            for d in chain {
                if !d.exists() {
                    std::fs::create_dir(&d)
                        .with_context(|| format!("creating cgroup {}", d.display()))?;
                    c.created.push(d.clone());
                    // A v1 cpuset starts with no CPUs and no memory nodes, and refuses tasks
                    // until it has some: inherit the parent's, as container runtimes do.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let parent = d.parent().expect("nested").join(f);
                        if let Ok(v) = std::fs::read_to_string(&parent) {
                            std::fs::write(d.join(f), v.trim())
                                .with_context(|| format!("setting {f} of {}", d.display()))?;
                        }
                    }
                }
            }
            c.leaves.push(dir);
        }
        Ok(c)
    }

    /// A command prefix that moves itself into this container's cgroups (every hierarchy)
    /// and execs the rest: `sh -c '…; exec "$@"' sh <command…>`.
    pub fn wrapper(&self) -> Vec<String> {
        let files: Vec<String> = self
            .leaves
            .iter()
            .map(|l| format!("'{}'", l.join("cgroup.procs").display()))
            .collect();
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "for f in {}; do echo $$ > \"$f\" || exit 97; done; exec \"$@\"",
                files.join(" ")
            ),
            "sh".into(),
        ]
    }

    /// Pids in the container (from the first hierarchy).
    pub fn pids(&self) -> Vec<u32> {
        self.leaves
            .first()
            .and_then(|l| std::fs::read_to_string(l.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        // Kill what is still inside, poll until it is gone, then remove innermost first.
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: plain kill(2) on a pid we placed in our own cgroup.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for d in self.created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
