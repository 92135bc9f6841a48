//! Utilities shared by Sonde's integration tests: the deterministic payload generator, polling
//! with a deadline, locating the binaries under test, spawning `sonde-testpeer`, and
//! throw-away network namespaces.
//!
//! These tests load eBPF programs and create namespaces, so they need root; they fail loudly
//! instead of skipping (see [`require_root`]).

pub mod cgroups;
pub mod collector;
pub mod dblab;
pub mod httplab;
pub mod kubeapi;
pub mod netlab;
mod netns;
mod paths;
mod peer;
pub mod promlab;
pub mod wasm;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

pub use collector::{Collected, Collector, Seen};
pub use netns::{NETNS_PREFIX, NetnsPair, VETH_A, VETH_B, netns_list, remove_stale_netns};
pub use paths::{sonde_bin_path, target_dir, testpeer_path};
pub use peer::{Peer, event_addr};

/// Deterministic payload for message `seed` of a run (message k uses seed k).
///
/// A splitmix64 stream: varied bytes at ~1 ns per 8 bytes, and a prefix property that capture
/// tests rely on: `pattern(s, n)` is the first `n` bytes of `pattern(s, m)` for any `m >= n`,
/// so a payload truncated by the capture side still compares equal to `pattern(s, n)`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    let mut state = seed;
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Polls `f` every ~20 ms until it returns `Some`, failing once `deadline` has elapsed.
///
/// This is the only way tests should wait for asynchronous effects: a fixed sleep is either
/// too short on a loaded CI machine or wastes time everywhere else.
pub fn wait_until<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    const POLL: Duration = Duration::from_millis(20);
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL.min(end - now));
    }
}

/// Panics unless running as root: a skipped eBPF test would pass CI while proving nothing.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (it loads eBPF programs and creates network namespaces); \
         run it as root, e.g. `sudo -E cargo test -p sonde-tests` — it deliberately does not skip"
    );
}

/// A loaded eBPF program as `bpftool -j prog show` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct BpfProg {
    pub id: u32,
    /// Absent for unnamed programs.
    pub name: Option<String>,
}

/// All eBPF programs loaded in the kernel, from `bpftool -j prog show`.
pub fn bpftool_progs() -> anyhow::Result<Vec<BpfProg>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool (Debian package `bpftool`)")?;
    if !out.status.success() {
        bail!(
            "bpftool -j prog show failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing `bpftool -j prog show` output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_varied_and_prefix_stable() {
        let long = pattern(3, 1000);
        assert_eq!(long, pattern(3, 1000));
        assert_eq!(&long[..13], &pattern(3, 13)[..]);
        assert_ne!(pattern(3, 64), pattern(4, 64));
        let distinct: std::collections::HashSet<u8> = long.iter().copied().collect();
        assert!(distinct.len() > 100, "pattern should use many byte values");
        assert!(pattern(0, 0).is_empty());
    }

    #[test]
    fn wait_until_returns_value_or_times_out() {
        let mut n = 0;
        let v = wait_until(Duration::from_secs(1), "n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v.unwrap(), 3);
        let err = wait_until(Duration::from_millis(50), "never", || None::<()>).unwrap_err();
        assert!(err.to_string().contains("never"));
    }
}
