//! Builds the eBPF object (crate `sonde-ebpf`, in host-ebpf/) with the nightly toolchain and
//! bpf-linker, so `cargo build -p sonde` is the only build command anyone runs.
//! `scripts/bootstrap` installs what this needs (nightly rust-src, bpf-linker).
//!
//! Our own, not aya-build: aya-build fixes RUSTFLAGS, and we need `-C target-cpu=v3` (BPF
//! atomic fetch-add for the per-connection stream positions).
use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

include!("../build-support.rs");

const EBPF_CRATE: &str = "sonde-ebpf";
const NIGHTLY: &str = "nightly";

fn main() -> anyhow::Result<()> {
    build_ebpf()
}

fn build_ebpf() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../../host-ebpf");
    let common_dir = manifest_dir.join("../../common");
    for dir in [&ebpf_dir, &common_dir] {
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
    }
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("sonde-ebpf.o");

    if env::var_os("AYA_BUILD_SKIP").is_some() {
        // Same switch as aya-build. For `cargo check`/clippy of the user side alone: an empty object that fails to load
        // with a clear message at run time.
        println!("cargo:warning=AYA_BUILD_SKIP set: the daemon will have no eBPF object");
        std::fs::write(&object, b"")?;
        return Ok(());
    }
    which("bpf-linker").context(
        "bpf-linker not found on PATH; run `scripts/bootstrap` (it builds bpf-linker against \
         the nightly toolchain's LLVM)",
    )?;

    let target = match env::var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "little" => "bpfel-unknown-none",
        _ => "bpfeb-unknown-none",
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let target_dir = out_dir.join("ebpf-target");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        "-Ctarget-cpu=v3".into(),
    ]
    .join("\x1f");

    let mut cmd = nested_cargo(Command::new("rustup"));
    cmd.args([
        "run",
        NIGHTLY,
        "cargo",
        "build",
        "--package",
        EBPF_CRATE,
        "--bins",
        "--release",
    ])
    .args(["--target", target, "-Z", "build-std=core"])
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&ebpf_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    run(cmd, "the eBPF object")?;
    let built = target_dir.join(target).join("release").join(EBPF_CRATE);
    std::fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    Ok(())
}

fn which(bin: &str) -> anyhow::Result<PathBuf> {
    let path = env::var_os("PATH").context("PATH is not set")?;
    env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .with_context(|| format!("no {bin} in PATH"))
}
