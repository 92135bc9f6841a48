//! `sonde demo`: the fault lab (tests/lab/, embedded in the binary) built on this machine,
//! Sonde started on it, one fault injected, the report printed. The lab's runner is a Python
//! program (it drives ip, nft, tc, cgroups, MariaDB and dnsmasq); it tears down everything it
//! made, also on failure and Ctrl-C.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The lab's files, as they are in tests/lab/.
const FILES: &[(&str, &str)] = &[
    ("lab.py", include_str!("../../tests/lab/lab.py")),
    ("svc.py", include_str!("../../tests/lab/svc.py")),
];

/// The faults the lab injects.
pub const FAULTS: &[&str] = &[
    "loss",
    "bandwidth",
    "cpu",
    "errors",
    "slow",
    "slow-sql",
    "dns",
];

/// Write the lab next to nothing else the machine has: a fresh private directory.
fn unpack(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in FILES {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn run(fault: &str, baseline: u64, timeout: u64) -> Result<()> {
    if !FAULTS.contains(&fault) {
        bail!(
            "unknown fault {fault:?}; the lab injects: {}",
            FAULTS.join(", ")
        );
    }
    if !nix_is_root() {
        bail!("sonde demo must run as root (it loads eBPF programs and makes network namespaces)");
    }
    for tool in ["python3", "ip", "nft", "tc", "mariadbd", "dnsmasq"] {
        if which(tool).is_none() {
            bail!("{tool} is missing; `scripts/bootstrap` installs what the lab needs");
        }
    }
    let exe = std::env::current_exe().context("locating the sonde binary")?;
    let dir = std::env::temp_dir().join(format!("sonde-demo-{}", std::process::id()));
    unpack(&dir)?;
    println!(
        "sonde demo: building the fault lab, then {baseline} s of steady load, then fault {fault:?}"
    );
    // The runner replaces this process: Ctrl-C reaches it directly and it tears down.
    let err = Command::new("python3")
        .arg(dir.join("lab.py"))
        .args(["run", "--fault", fault, "--sonde"])
        .arg(&exe)
        .args([
            "--baseline",
            &baseline.to_string(),
            "--timeout",
            &timeout.to_string(),
        ])
        .arg("--full-report")
        // Bundles outlive the lab: `sonde analyze` replays them afterwards.
        .arg("--incident-dir")
        .arg(std::env::temp_dir().join("sonde-demo-incidents"))
        .exec();
    Err(err).context("starting the lab runner (python3)")
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
