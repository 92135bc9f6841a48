//! `sonde plugin new`: the generated crates work out of the box. A protocol parser and a fault
//! rule are generated against this checkout's SDK; each passes its own `cargo test`, and the
//! parser builds as a wasm32-wasip2 component. The same with no flags at all, by the `sonde`
//! binary (`cargo build -p sonde` first): the SDK is vendored into the crate, which builds
//! offline with no registry that has `sonde-sdk`.
//!
//! No root needed, but the toolchain's wasm32-wasip2 target and every dependency in Cargo's
//! local cache: the nested builds are `--offline` (the generated crates have no lock file;
//! `sonde-sdk` needs serde and wit-bindgen, which this workspace uses too). The crates are
//! generated and built under `target/scaffold-test/`, at fixed paths, so a repeated run only
//! rebuilds the two small crates.

use std::path::{Path, PathBuf};
use std::process::Command;

use sonde::scaffold::{PluginKind, SdkSource, new_plugin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// Runs cargo in a generated crate; returns its stdout, or fails the test with its stderr.
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target);
    // The outer build's settings must not leak into a standalone build for another target.
    for key in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(key);
    }
    let out = cmd.output().expect("running cargo");
    assert!(
        out.status.success(),
        "`cargo {}` in {} failed ({}):\n{}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files written, relative to the crate, sorted.
fn relative(dir: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut rel: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(dir)
                .expect("inside the crate")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    rel.sort();
    rel
}

#[test]
fn generated_parser_and_fault_rule_test_and_build() {
    let scratch = sonde_tests::target_dir().join("scaffold-test");
    let crates = scratch.join("crates");
    let _ = std::fs::remove_dir_all(&crates);
    let sdk = SdkSource::Path(repo().join("sdk"));

    let parser = crates.join("demo-parser");
    let files = new_plugin(&parser, "demo-parser", PluginKind::Parser, sdk.clone())
        .expect("generating the parser");
    assert_eq!(
        relative(&parser, &files),
        [
            ".gitignore",
            "Cargo.toml",
            "README.md",
            "src/lib.rs",
            "tests/fixtures/example.rec",
            "tests/harness.rs"
        ]
    );
    let rule = crates.join("demo-rule");
    let files =
        new_plugin(&rule, "demo-rule", PluginKind::FaultRule, sdk).expect("generating the rule");
    assert_eq!(
        relative(&rule, &files),
        [
            ".gitignore",
            "Cargo.toml",
            "README.md",
            "src/lib.rs",
            "tests/harness.rs"
        ]
    );

    // Their own tests run and pass (and there are some).
    let out = cargo(&parser, &scratch, &["test", "--offline"]);
    assert!(
        out.contains("test result: ok. 5 passed"),
        "parser tests:\n{out}"
    );
    let out = cargo(&rule, &scratch, &["test", "--offline"]);
    assert!(
        out.contains("test result: ok. 4 passed"),
        "rule tests:\n{out}"
    );

    assert_builds_a_component(&parser, &scratch, "demo_parser");
}

/// The parser's wasm32-wasip2 build: a component (the Wasm magic, then the component-model
/// version and layer).
fn assert_builds_a_component(dir: &Path, target: &Path, crate_ident: &str) {
    cargo(
        dir,
        target,
        &[
            "build",
            "--offline",
            "--release",
            "--target",
            "wasm32-wasip2",
        ],
    );
    let wasm = target.join(format!("wasm32-wasip2/release/{crate_ident}.wasm"));
    let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    assert_eq!(
        &bytes[..8],
        b"\0asm\x0d\x00\x01\x00",
        "{} is not a component",
        wasm.display()
    );
}

/// `sonde plugin new DIR [--kind K]`, as a user runs it: no SDK flag.
fn sonde_plugin_new(dir: &Path, kind: &str) {
    let out = Command::new(sonde_tests::sonde_bin_path())
        .args(["plugin", "new"])
        .arg(dir)
        .args(["--kind", kind])
        .output()
        .expect("running sonde");
    assert!(
        out.status.success(),
        "`sonde plugin new {} --kind {kind}` failed ({}):\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sonde-sdk"),
        "the SDK is vendored:\n{stdout}"
    );
}

#[test]
fn the_cli_default_vendors_the_sdk_and_builds_offline() {
    // Its own target directory: the vendored SDK is another package than `sdk/` (another
    // path), and the two tests run at once.
    let scratch = sonde_tests::target_dir().join("scaffold-test/vendored");
    let crates = scratch.join("crates");
    let _ = std::fs::remove_dir_all(&crates);

    let parser = crates.join("cli-parser");
    sonde_plugin_new(&parser, "parser");
    let manifest = std::fs::read_to_string(parser.join("Cargo.toml")).expect("the manifest");
    assert!(
        manifest.contains(r#"sonde-sdk = { path = "sonde-sdk""#),
        "{manifest}"
    );
    let sdk_manifest =
        std::fs::read_to_string(parser.join("sonde-sdk/Cargo.toml")).expect("the SDK's manifest");
    assert!(
        !sdk_manifest.contains("workspace"),
        "the vendored SDK inherits nothing:\n{sdk_manifest}"
    );
    assert!(parser.join("sonde-sdk/wit/sonde-plugin.wit").is_file());
    let rule = crates.join("cli-rule");
    sonde_plugin_new(&rule, "fault-rule");

    let out = cargo(&parser, &scratch, &["test", "--offline"]);
    assert!(
        out.contains("test result: ok. 5 passed"),
        "parser tests:\n{out}"
    );
    let out = cargo(&rule, &scratch, &["test", "--offline"]);
    assert!(
        out.contains("test result: ok. 4 passed"),
        "rule tests:\n{out}"
    );
    // The vendored SDK finds its own WIT (only a wasm32 build reads it).
    assert_builds_a_component(&parser, &scratch, "cli_parser");
}

#[test]
fn refuses_bad_names_and_non_empty_directories() {
    let dir = sonde_tests::target_dir().join("scaffold-test/refuse");
    let _ = std::fs::remove_dir_all(&dir);
    let sdk = SdkSource::Path(repo().join("sdk"));
    let err = new_plugin(&dir, "My_Parser", PluginKind::Parser, sdk.clone()).unwrap_err();
    assert!(err.to_string().contains("invalid plugin name"), "{err}");
    assert!(!dir.exists(), "nothing written for a bad name");
    new_plugin(&dir, "ok", PluginKind::FaultRule, sdk.clone()).unwrap();
    let err = new_plugin(&dir, "ok", PluginKind::FaultRule, sdk).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
