//! The capture scope (`[capture.scope]`): which network namespaces and cgroups the kernel side
//! follows. Resolved at start (paths to namespace inodes and cgroup ids, each bad entry a
//! one-line error), handed to the kernel as `CONFIG` flags and two small hash maps. Empty
//! (the default): everything, at no cost (the kernel side's checks are pruned by the verifier).
//!
//! What cannot be scoped: the softirq probes carry neither a process nor a socket, and
//! programs without process context (TCP state changes, segments, resets, retransmits, drops,
//! devices) cannot judge a cgroup: they follow the namespace part of a scope only
//! (ARCHITECTURE.md, capture scope). `tcp:tcp_probe` judges its socket where the kernel's
//! record has one (`skaddr`); where it has not, it only follows flows another probe began.
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{Ebpf, maps::HashMap as BpfHashMap};
use sonde_common::{self as abi, MAX_SCOPE_CGROUP_LEVEL, MAX_SCOPE_ENTRIES};

/// What a scope does not narrow, for `sonde doctor` (and the docs).
pub const UNSCOPED: &str = "not scoped (node-wide whatever the scope): irq:softirq_* (no \
     socket or process to judge), resets sent for no socket, drops without a device; TCP state \
     changes, segments (tcp:tcp_probe), resets, retransmits, drops and devices follow the \
     namespaces only, never the cgroups (no process context)";

/// `statfs` magic of the namespace filesystem (`/proc/<pid>/ns/*`, `ip netns` bind mounts).
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `statfs` magic of cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The `[capture.scope]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeOptions {
    /// Network namespaces: paths to a namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`)
    /// or inode numbers (what `ls -L -i /proc/PID/ns/net` or `lsns -t net` show).
    pub netns: Vec<String>,
    /// cgroup v2 directories (`/sys/fs/cgroup/system.slice/nginx.service`); each includes
    /// its descendants.
    pub cgroups: Vec<String>,
    /// Leave the listed namespaces and cgroups out and capture everything else. Without it,
    /// only tasks inside them are captured (in a listed namespace and, when both lists are
    /// given, in a listed cgroup too).
    pub exclude: bool,
}

/// A cgroup of the scope, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeCgroup {
    pub path: PathBuf,
    /// cgroup v2 id: the directory's inode number.
    pub id: u64,
    /// Depth below the cgroup v2 root (the root is 0).
    pub level: u32,
}

/// The scope as the kernel side takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedScope {
    /// Network namespace inodes.
    pub netns: Vec<u32>,
    pub cgroups: Vec<ScopeCgroup>,
    pub exclude: bool,
}

impl ScopeOptions {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty() && self.cgroups.is_empty()
    }

    /// Paths to inodes and ids; the first entry that does not resolve is the error.
    pub fn resolve(&self) -> Result<ResolvedScope> {
        let total = self.netns.len() + self.cgroups.len();
        if self.netns.len() > MAX_SCOPE_ENTRIES as usize
            || self.cgroups.len() > MAX_SCOPE_ENTRIES as usize
        {
            bail!(
                "capture.scope: at most {MAX_SCOPE_ENTRIES} namespaces and {MAX_SCOPE_ENTRIES} cgroups ({total} given)"
            );
        }
        let netns = self
            .netns
            .iter()
            .map(|n| resolve_netns(n).map_err(|e| anyhow!("capture.scope.netns {n:?}: {e:#}")))
            .collect::<Result<Vec<_>>>()?;
        let root = if self.cgroups.is_empty() {
            PathBuf::new()
        } else {
            cgroup2_mount()?
        };
        let cgroups = self
            .cgroups
            .iter()
            .map(|c| {
                resolve_cgroup(&root, Path::new(c))
                    .map_err(|e| anyhow!("capture.scope.cgroups {c:?}: {e:#}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ResolvedScope {
            netns,
            cgroups,
            exclude: self.exclude,
        })
    }
}

impl ResolvedScope {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty() && self.cgroups.is_empty()
    }

    /// `config_flags` bits for this scope.
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        if !self.netns.is_empty() {
            f |= abi::config_flags::SCOPE_NETNS;
        }
        if !self.cgroups.is_empty() {
            f |= abi::config_flags::SCOPE_CGROUPS;
        }
        if f != 0 && self.exclude {
            f |= abi::config_flags::SCOPE_EXCLUDE;
        }
        f
    }

    /// `Config::scope_cgroup_levels`: one bit per level a listed cgroup sits at.
    pub fn cgroup_levels(&self) -> u32 {
        self.cgroups.iter().fold(0, |m, c| m | 1 << c.level)
    }

    /// Fills the kernel side's `SCOPE_NETNS` and `SCOPE_CGROUPS` maps (before any program runs).
    pub fn fill_maps(&self, ebpf: &mut Ebpf) -> Result<()> {
        let mut netns: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(ebpf.map_mut("SCOPE_NETNS").context("map SCOPE_NETNS")?)?;
        for ino in &self.netns {
            netns.insert(ino, 1, 0)?;
        }
        let mut cgroups: BpfHashMap<_, u64, u8> =
            BpfHashMap::try_from(ebpf.map_mut("SCOPE_CGROUPS").context("map SCOPE_CGROUPS")?)?;
        for c in &self.cgroups {
            cgroups.insert(c.id, 1, 0)?;
        }
        Ok(())
    }

    /// One line for logs and `sonde doctor`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "everything (no [capture.scope])".into();
        }
        let mut parts = Vec::new();
        if !self.netns.is_empty() {
            let ns: Vec<String> = self.netns.iter().map(|n| format!("net:[{n}]")).collect();
            parts.push(format!("network namespaces {}", ns.join(", ")));
        }
        if !self.cgroups.is_empty() {
            let cg: Vec<String> = self
                .cgroups
                .iter()
                .map(|c| format!("{} (id {}, level {})", c.path.display(), c.id, c.level))
                .collect();
            parts.push(format!("cgroups {}", cg.join(", ")));
        }
        let join = if self.exclude { " or " } else { " and " };
        format!(
            "{} {}",
            if self.exclude {
                "everything but"
            } else {
                "only"
            },
            parts.join(join)
        )
    }
}

fn statfs_magic(path: &Path) -> Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("a path with a NUL byte")?;
    // SAFETY: zeroed plain-data struct filled by the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).context("statfs");
    }
    Ok(st.f_type as i64)
}

/// An inode number, or a namespace file whose inode is the namespace's.
fn resolve_netns(entry: &str) -> Result<u32> {
    if let Ok(ino) = entry.parse::<u32>() {
        if ino == 0 {
            bail!("0 is no namespace inode");
        }
        return Ok(ino);
    }
    let path = Path::new(entry);
    let meta = std::fs::metadata(path).context("not an inode number, and no such file")?;
    if statfs_magic(path)? != NSFS_MAGIC {
        bail!("not a namespace file (use /run/netns/NAME or /proc/PID/ns/net)");
    }
    let name = std::fs::read_link(path).ok();
    // /proc/PID/ns/* are links that name their type; a bind mount (ip netns) shows none.
    if let Some(n) = name.as_ref().and_then(|n| n.to_str().map(str::to_owned))
        && !n.starts_with("net:")
    {
        bail!("{n} is not a network namespace");
    }
    u32::try_from(meta.ino()).context("namespace inode above 32 bits")
}

/// The cgroup v2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount = pre.split(' ').nth(4)?;
            (post.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mount))
        })
        .context(
            "capture.scope.cgroups: no cgroup v2 hierarchy is mounted (the scope needs cgroup v2)",
        )
}

fn resolve_cgroup(root: &Path, path: &Path) -> Result<ScopeCgroup> {
    let path = std::fs::canonicalize(path).context("no such directory")?;
    if !path.is_dir() || statfs_magic(&path)? != CGROUP2_SUPER_MAGIC {
        bail!("not a cgroup v2 directory (below {})", root.display());
    }
    let rel = path
        .strip_prefix(root)
        .with_context(|| format!("not below the cgroup v2 mount {}", root.display()))?;
    let level = rel.components().count() as u32;
    if level > MAX_SCOPE_CGROUP_LEVEL {
        bail!("level {level} is deeper than the {MAX_SCOPE_CGROUP_LEVEL} the kernel side checks");
    }
    let id = std::fs::metadata(&path)?.ino();
    Ok(ScopeCgroup { path, id, level })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_scope_sets_nothing() {
        let r = ScopeOptions::default().resolve().unwrap();
        assert!(r.is_empty());
        assert_eq!(r.flags(), 0);
        assert_eq!(r.cgroup_levels(), 0);
    }

    #[test]
    fn own_netns_resolves_to_its_inode() {
        let want = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let r = ScopeOptions {
            netns: vec!["/proc/self/ns/net".into(), want.to_string()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(r.netns, vec![want, want]);
        assert_eq!(r.flags(), abi::config_flags::SCOPE_NETNS);
    }

    #[test]
    fn bad_entries_are_one_line_errors() {
        for (opts, want) in [
            (
                ScopeOptions {
                    netns: vec!["/no/such/netns".into()],
                    ..Default::default()
                },
                "no such file",
            ),
            (
                ScopeOptions {
                    netns: vec!["/etc/hostname".into()],
                    ..Default::default()
                },
                "not a namespace file",
            ),
            (
                ScopeOptions {
                    netns: vec!["/proc/self/ns/mnt".into()],
                    ..Default::default()
                },
                "not a network namespace",
            ),
            (
                ScopeOptions {
                    cgroups: vec!["/etc".into()],
                    ..Default::default()
                },
                "not a cgroup v2 directory",
            ),
        ] {
            let e = format!("{:#}", opts.resolve().unwrap_err());
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn cgroup_root_is_level_zero() {
        let root = cgroup2_mount().unwrap();
        let r = ScopeOptions {
            cgroups: vec![root.display().to_string()],
            exclude: true,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(r.cgroups[0].level, 0);
        assert_eq!(r.cgroup_levels(), 1);
        assert_eq!(
            r.flags(),
            abi::config_flags::SCOPE_CGROUPS | abi::config_flags::SCOPE_EXCLUDE
        );
    }
}
