//! Throw-away pairs of network namespaces joined by a veth link, driven with iproute2's `ip`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use anyhow::{Context as _, bail};

use crate::Peer;

/// Every namespace the tests create starts with this, followed by `<pid>-<n>`.
pub const NETNS_PREFIX: &str = "sonde-t-";
/// Name of the veth end inside namespace A (created there directly: no root-namespace clash).
pub const VETH_A: &str = "sonde-va";
/// Name of the veth end inside namespace B.
pub const VETH_B: &str = "sonde-vb";

static INSTANCES: AtomicU32 = AtomicU32::new(0);
/// Serialises namespace creation: the first `ip netns add` sets up the /run/netns mount, and
/// two of those racing can fail.
pub(crate) static CREATE: Mutex<()> = Mutex::new(());
static STALE_CLEANUP: Once = Once::new();

/// Two network namespaces, A (10.77.N.1/24 on [`VETH_A`]) and B (10.77.N.2/24 on [`VETH_B`]),
/// with `lo` up in both. N differs between live instances so parallel tests never share
/// addresses. Dropping it deletes both namespaces, which also destroys the veth pair.
pub struct NetnsPair {
    a: String,
    b: String,
    subnet: u8,
}

impl NetnsPair {
    /// Creates the pair; the first call in a process also removes namespaces left behind by
    /// crashed earlier runs ([`remove_stale_netns`]).
    pub fn new() -> anyhow::Result<Self> {
        remove_stale_netns_once();
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Built before setup so Drop removes whatever was created if a step fails.
        let pair = Self {
            a: format!("{NETNS_PREFIX}{pid}-{n}a"),
            b: format!("{NETNS_PREFIX}{pid}-{n}b"),
            // Offset by pid so concurrently running test binaries are unlikely to collide too.
            subnet: u8::try_from((pid.wrapping_add(n)) % 254 + 1).expect("< 255"),
        };
        let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        pair.setup()?;
        Ok(pair)
    }

    fn setup(&self) -> anyhow::Result<()> {
        let (a, b) = (self.a.as_str(), self.b.as_str());
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        ip(&[
            "link", "add", VETH_A, "netns", a, "type", "veth", "peer", "name", VETH_B, "netns", b,
        ])?;
        for (ns, dev, addr) in [(a, VETH_A, self.addr_a()), (b, VETH_B, self.addr_b())] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// Name of namespace A.
    pub fn ns_a(&self) -> &str {
        &self.a
    }

    /// Name of namespace B.
    pub fn ns_b(&self) -> &str {
        &self.b
    }

    /// 10.77.N.1, the address of [`VETH_A`] in namespace A.
    pub fn addr_a(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// 10.77.N.2, the address of [`VETH_B`] in namespace B.
    pub fn addr_b(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 2)
    }

    /// Runs `cmd` inside namespace `ns` (`ip netns exec`), failing on a nonzero exit;
    /// returns its stdout.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["netns", "exec", ns];
        args.extend_from_slice(cmd);
        ip(&args)
    }

    /// Spawns `sonde-testpeer ARGS...` inside namespace `ns`.
    pub fn spawn_peer(&self, ns: &str, args: &[&str]) -> anyhow::Result<Peer> {
        Peer::spawn_in(Some(ns), args)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// Runs [`remove_stale_netns`] the first time any fixture in this process asks, warning
/// instead of failing: leftovers of an earlier crash should not fail an unrelated test.
pub(crate) fn remove_stale_netns_once() {
    STALE_CLEANUP.call_once(|| {
        if let Err(e) = remove_stale_netns() {
            eprintln!("warning: removing stale {NETNS_PREFIX}* namespaces: {e:#}");
        }
    });
}

/// Names from `ip netns list` (its lines look like `name (id: 3)` or just `name`).
pub fn netns_list() -> anyhow::Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Deletes `sonde-t-*` namespaces whose creating process is gone (left by a crashed run);
/// namespaces of live test processes are kept. Returns the names it deleted.
pub fn remove_stale_netns() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in netns_list()? {
        let Some(rest) = ns.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let owner_alive =
            owner.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !owner_alive {
            ip(&["netns", "del", &ns])?;
            removed.push(ns);
        }
    }
    Ok(removed)
}

/// Runs `ip ARGS...`, failing with its stderr on a nonzero exit; returns stdout.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("`ip` printed non-UTF-8 output")
}
