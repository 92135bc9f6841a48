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
    /// Depend on the SDK at this path (a Sonde checkout's `sdk/`) instead of crates.io.
    #[arg(long)]
    sdk_path: Option<PathBuf>,
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
    let sdk = match args.sdk_path {
        Some(p) => SdkSource::Path(p),
        None => SdkSource::default(),
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
