//! Builds the embedded Wasm components (the default fault tree, plugins/fta-rules, and the
//! HTTP, DNS, MySQL, PostgreSQL, Redis, MQTT and HTTP/2 parsers) for wasm32-wasip2, so `cargo build -p sonde` is the only build
//! command anyone runs. `scripts/bootstrap` adds the target.
use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

include!("../build-support.rs");

fn main() -> anyhow::Result<()> {
    build_plugins()
}

/// The embedded components: the default fault tree and the protocol parsers (a Rust wasm32-wasip2
/// cdylib is a component already).
fn build_plugins() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../..");
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
        "plugins/redis/src",
        "plugins/redis/Cargo.toml",
        "plugins/postgres/src",
        "plugins/postgres/Cargo.toml",
        "plugins/mqtt/src",
        "plugins/mqtt/Cargo.toml",
        "plugins/http2/src",
        "plugins/http2/Cargo.toml",
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
        "sonde_redis_parser.wasm",
        "sonde_postgres_parser.wasm",
        "sonde_mqtt_parser.wasm",
        "sonde_http2_parser.wasm",
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
        "--package",
        "sonde-redis-parser",
        "--package",
        "sonde-postgres-parser",
        "--package",
        "sonde-mqtt-parser",
        "--package",
        "sonde-http2-parser",
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
