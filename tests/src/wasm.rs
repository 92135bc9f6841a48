//! Building the Wasm test fixtures (tests/fixtures/*) for wasm32-wasip2, on demand and cached
//! in `target/wasm-fixtures` like any cargo build.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static BUILD: Mutex<()> = Mutex::new(());

/// The misbehaving fault rule built with `feature` (`spin`, `trap`, `membomb`, `snoop`, `fs`), copied to
/// `target/wasm-fixtures/bad-<feature>.wasm`.
pub fn bad_rule(feature: &str) -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = super::paths::target_dir().join("wasm-fixtures");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "sonde-bad-rule", "--release", "--locked", "--target", "wasm32-wasip2"])
        .args(["--features", feature])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&root)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo to build the bad-rule fixture");
    assert!(status.success(), "building the bad-rule fixture with feature {feature} failed");
    let out = target.join(format!("bad-{feature}.wasm"));
    std::fs::copy(target.join("wasm32-wasip2/release/sonde_bad_rule.wasm"), &out).expect("copying the fixture");
    out
}
