//! Building the Wasm test fixtures (tests/fixtures/*) for wasm32-wasip2, on demand and cached
//! in `target/wasm-fixtures` like any cargo build.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static BUILD: Mutex<()> = Mutex::new(());

/// The misbehaving fault rule built with `feature` (`spin`, `trap`, `membomb`, `snoop`, `fs`), copied to
/// `target/wasm-fixtures/bad-<feature>.wasm`.
pub fn bad_rule(feature: &str) -> PathBuf {
    build_fixture(
        "sonde-bad-rule",
        "sonde_bad_rule",
        feature,
        &format!("bad-{feature}.wasm"),
    )
}

/// The misbehaving protocol parser built with `feature` (`spin`, `trap`, `membomb`, `escape`),
/// copied to `target/wasm-fixtures/bad-parser-<feature>.wasm`.
pub fn bad_parser(feature: &str) -> PathBuf {
    build_fixture(
        "sonde-bad-parser",
        "sonde_bad_parser",
        feature,
        &format!("bad-parser-{feature}.wasm"),
    )
}

/// The Redis parser (`plugins/redis`, embedded in the daemon and the SDK's worked example) built
/// on its own, as a third party would publish a parser, copied to
/// `target/wasm-fixtures/resp-parser.wasm`.
pub fn resp_parser() -> PathBuf {
    build_fixture(
        "sonde-redis-parser",
        "sonde_redis_parser",
        "",
        "resp-parser.wasm",
    )
}

/// `feature` may be empty (default features).
fn build_fixture(package: &str, artifact: &str, feature: &str, name: &str) -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = super::paths::target_dir().join("wasm-fixtures");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-p",
            package,
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .args(if feature.is_empty() {
            vec![]
        } else {
            vec!["--features", feature]
        })
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&root)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo to build a Wasm fixture");
    assert!(
        status.success(),
        "building the {package} fixture with features {feature:?} failed"
    );
    let out = target.join(name);
    std::fs::copy(
        target.join(format!("wasm32-wasip2/release/{artifact}.wasm")),
        &out,
    )
    .expect("copying the fixture");
    out
}
