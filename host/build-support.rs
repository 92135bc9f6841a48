// Shared by the build scripts of sonde-capture and sonde-sandbox (`include!`d: a build script
// cannot depend on a workspace crate without building it for the host first, and these two
// functions are all they share).

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

