//! Lists the SDK's files for `sonde plugin new` to vendor into a new plugin (`embed_sdk`), so
//! the generated crate builds offline with no published SDK. (The eBPF object and the embedded
//! Wasm components are built by the build scripts of sonde-capture and sonde-sandbox.)
use std::{env, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    embed_sdk()
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
