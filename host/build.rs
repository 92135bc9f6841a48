//! Builds the eBPF object (crate `sonde-ebpf`, in ../host-ebpf) with the nightly toolchain and
//! bpf-linker, and the embedded Wasm components (the default fault tree, ../plugins/fta-rules)
//! for wasm32-wasip2, so `cargo build -p sonde` is the only build command anyone runs.
//! `scripts/bootstrap` installs what this needs (nightly rust-src, bpf-linker). It also lists
//! the SDK's files for `sonde plugin new` to vendor (`embed_sdk`).
//!
//! Our own, not aya-build: aya-build fixes RUSTFLAGS, and we need `-C target-cpu=v3` (BPF
//! atomic fetch-add for the per-connection stream positions).
use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

const EBPF_CRATE: &str = "sonde-ebpf";
const NIGHTLY: &str = "nightly";

fn main() -> anyhow::Result<()> {
    embed_sdk()?;
    build_plugins()?;
    build_ebpf()
}

/// Cargo with the outer build's settings removed: they must not leak into a nested build for
/// another target.
fn nested_cargo(mut cmd: Command) -> Command {
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !status.success() {
        bail!("building {what} failed ({status}); command: {cmd:?}");
    }
    Ok(())
}

/// The embedded components: the default fault tree and the HTTP parser (a Rust wasm32-wasip2
/// cdylib is a component already).
fn build_plugins() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("..");
    // Cargo.lock: the nested build is `--locked` to it (wit-bindgen's version is in there).
    for dir in [
        "plugins/fta-rules/src",
        "plugins/fta-rules/Cargo.toml",
        "plugins/http/src",
        "plugins/http/Cargo.toml",
        "plugins/dns/src",
        "plugins/dns/Cargo.toml",
        "plugins/mysql/src",
        "plugins/mysql/Cargo.toml",
        "sdk/src",
        "sdk/Cargo.toml",
        "sdk/wit",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=SONDE_WASM_SKIP");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let artifacts = [
        "sonde_fta_rules.wasm",
        "sonde_http_parser.wasm",
        "sonde_dns_parser.wasm",
        "sonde_mysql_parser.wasm",
    ];
    if env::var_os("SONDE_WASM_SKIP").is_some() {
        println!(
            "cargo:warning=SONDE_WASM_SKIP set: the daemon will have no default fault tree and no HTTP parser"
        );
        for a in artifacts {
            std::fs::write(out_dir.join(a), b"")?;
        }
        return Ok(());
    }
    let target_dir = out_dir.join("wasm-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = nested_cargo(Command::new(cargo));
    cmd.args([
        "build",
        "--package",
        "sonde-fta-rules",
        "--package",
        "sonde-http-parser",
        "--package",
        "sonde-dns-parser",
        "--package",
        "sonde-mysql-parser",
        "--lib",
        "--release",
        "--locked",
    ])
    .args(["--target", "wasm32-wasip2"])
    .arg("--target-dir")
    .arg(&target_dir)
    // Whole-program optimisation: these components are small, and every parser call runs
    // their code once per segment.
    .env("CARGO_PROFILE_RELEASE_LTO", "fat")
    .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
    .current_dir(&root);
    run(
        cmd,
        "the embedded components (is the wasm32-wasip2 target installed? scripts/bootstrap adds it)",
    )?;
    for a in artifacts {
        let built = target_dir.join("wasm32-wasip2/release").join(a);
        let out = out_dir.join(a);
        std::fs::copy(&built, &out)
            .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    }
    Ok(())
}

/// `$OUT_DIR/sdk_files.rs`: every file of `sdk/` a build of it reads (manifest, README,
/// `src/`, `wit/`), as `(path in the crate, contents)`, for `sonde plugin new` to vendor the
/// SDK into a new plugin (`src/scaffold/vendor.rs`). Listed here rather than by hand, so a
/// module added to the SDK is never left out of the copy.
fn embed_sdk() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let sdk = manifest_dir.join("../sdk").canonicalize()?;
    for f in ["src", "wit", "Cargo.toml", "README.md"] {
        println!("cargo:rerun-if-changed={}", sdk.join(f).display());
    }
    let mut files = vec!["Cargo.toml".to_string(), "README.md".to_string()];
    for dir in ["src", "wit"] {
        collect(&sdk, dir, &mut files)?;
    }
    files.sort();
    let mut out = String::from(
        "/// The SDK's files (see host/build.rs `embed_sdk`): path in the crate, contents.\n\
         pub(super) const SDK_FILES: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        let path = sdk.join(f);
        let path = path.to_str().context("the SDK's path is not UTF-8")?;
        out.push_str(&format!("    ({f:?}, include_str!({path:?})),\n"));
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("sdk_files.rs"), out)?;
    Ok(())
}

/// The files under `root/rel`, recursively, as `/`-separated paths relative to `root`.
fn collect(root: &std::path::Path, rel: &str, files: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root.join(rel)).with_context(|| format!("reading sdk/{rel}"))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().context("a file name in sdk/ is not UTF-8")?;
        let rel = format!("{rel}/{name}");
        if entry.file_type()?.is_dir() {
            collect(root, &rel, files)?;
        } else {
            files.push(rel);
        }
    }
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../host-ebpf");
    let common_dir = manifest_dir.join("../common");
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
