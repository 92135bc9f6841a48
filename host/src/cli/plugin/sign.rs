//! `sonde plugin keygen`, `package` and `verify`: publisher keys, signed components, and
//! the daemon's own checks run ahead of loading.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::manifest::World;
use sonde_sandbox::package::{self, PackageOptions};

#[derive(Args, Debug)]
pub struct PluginKeygenArgs {
    /// Secret key file to create (never overwritten); the public key goes to `<out>.pub`.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PluginPackageArgs {
    /// The component to sign.
    #[arg(long, required_unless_present = "build", conflicts_with = "build")]
    wasm: Option<PathBuf>,
    /// Build this plugin crate first (`cargo build --release --target wasm32-wasip2`) and
    /// sign what it made.
    #[arg(long)]
    build: Option<PathBuf>,
    /// The publisher's secret key (from `sonde plugin keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Publisher name written into the signature.
    #[arg(long)]
    publisher: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Plugin name (default: the component's own `info`; must agree with it).
    #[arg(long)]
    name: Option<String>,
    /// Plugin version (default: the component's own `info`; must agree with it).
    #[arg(long)]
    version: Option<String>,
    /// `protocol-parser` or `fault-rule` (default: whichever the component implements).
    #[arg(long)]
    world: Option<String>,
    /// Protocols it parses (default: a parser's own `info`); repeatable.
    #[arg(long)]
    protocol: Vec<String>,
    /// Ports its protocols usually use (a hint); repeatable.
    #[arg(long)]
    port: Vec<u16>,
    /// A capability it needs (`clocks`); repeatable. None by default.
    #[arg(long)]
    capability: Vec<String>,
    /// Also write `<name>-<version>.tar` holding both files.
    #[arg(long)]
    tar: bool,
}

#[derive(Args, Debug)]
pub struct PluginVerifyArgs {
    /// Components (*.wasm, with their manifests beside them) or directories of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also trust this key (`ed25519:<base64>`), besides the config's trusted_keys; repeatable.
    #[arg(long)]
    trusted_key: Vec<String>,
}

pub fn keygen(args: PluginKeygenArgs) -> Result<()> {
    let k = package::keygen(&args.out)?;
    // The paths to stderr, the public key alone to stdout: `$(sonde plugin keygen …)`.
    eprintln!(
        "secret key: {} (keep it secret)\npublic key: {}",
        k.secret.display(),
        k.public.display()
    );
    println!("{}", k.public_key);
    Ok(())
}

pub fn package(args: PluginPackageArgs) -> Result<()> {
    let world =
        match &args.world {
            Some(w) => Some(World::parse(w).ok_or_else(|| {
                anyhow::anyhow!("--world {w:?}: give protocol-parser or fault-rule")
            })?),
            None => None,
        };
    let p = package::package(&PackageOptions {
        wasm: args.wasm,
        build: args.build,
        key: args.key,
        publisher: args.publisher,
        out: args.out,
        name: args.name,
        version: args.version,
        world,
        protocols: args.protocol,
        ports: args.port,
        capabilities: args.capability,
        tar: args.tar,
    })?;
    let m = &p.manifest.plugin;
    println!(
        "packaged {} {} ({})\n  {}\n  {}",
        m.name,
        m.version,
        m.world,
        p.wasm.display(),
        p.manifest_path.display()
    );
    if let Some(tar) = &p.tar {
        println!("  {}", tar.display());
    }
    Ok(())
}

/// Every component's verdict; an error (exit status 1) when none was found or any refused.
pub fn verify(args: PluginVerifyArgs, plugins: &PluginsConfig) -> Result<()> {
    let checked = package::verify_paths(&args.paths, plugins, &args.trusted_key)?;
    anyhow::ensure!(!checked.is_empty(), "no *.wasm components found");
    for c in &checked {
        println!("{c}");
    }
    let refused = checked.iter().filter(|c| c.outcome.is_err()).count();
    anyhow::ensure!(
        refused == 0,
        "{refused} of {} components refused",
        checked.len()
    );
    Ok(())
}
