//! `sonde plugin new`: a plugin crate from the template.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::scaffold::{self, PluginKind, SdkSource};

#[derive(Args, Debug)]
pub struct PluginNewArgs {
    /// Directory to create (must not exist, or be empty).
    dir: PathBuf,
    /// `parser` (protocol-parser world) or `fault-rule`.
    #[arg(long, default_value = "parser")]
    kind: PluginKind,
    /// Crate name (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Depend on the SDK at this path (a Sonde checkout's `sdk/`) instead of a copy of this
    /// binary's SDK written into the crate (`sonde-sdk/`, the default: builds offline).
    #[arg(long, conflicts_with = "sdk_version")]
    sdk_path: Option<PathBuf>,
    /// Depend on this version requirement of `sonde-sdk` from a registry that has it (e.g.
    /// `0.1`) instead of the vendored copy.
    #[arg(long)]
    sdk_version: Option<String>,
}

pub fn run(args: PluginNewArgs) -> Result<()> {
    let name = match args.name {
        Some(n) => n,
        None => args
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{}: give --name", args.dir.display()))?
            .to_string(),
    };
    let sdk = match (args.sdk_path, args.sdk_version) {
        (Some(p), _) => SdkSource::Path(p),
        (None, Some(v)) => SdkSource::Version(v),
        (None, None) => SdkSource::default(),
    };
    let files = scaffold::new_plugin(&args.dir, &name, args.kind, sdk)?;
    for f in files {
        println!("created {}", f.display());
    }
    println!(
        "next: cd {} && cargo test && cargo build --release --target wasm32-wasip2",
        args.dir.display()
    );
    Ok(())
}
