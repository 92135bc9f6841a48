//! The SDK copied into a generated crate (`<plugin>/sonde-sdk/`), so `sonde plugin new` works
//! offline and with no crates.io release of `sonde-sdk`: the binary carries the sources of the
//! SDK it was built with (listed by `build.rs`), hence a plugin gets exactly the WIT this
//! daemon speaks.
//!
//! The SDK's own manifest takes its package fields, dependencies and lints from this
//! repository's workspace (`workspace = true`); the copy gets the concrete values instead, as
//! it builds in the plugin's workspace, not ours.

use anyhow::{Context as _, Result, bail};
use toml::{Table, Value};

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// Where the values `workspace = true` stands for come from.
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");

/// The SDK's directory in a generated crate, and the `path` of its dependency.
pub(super) const DIR: &str = "sonde-sdk";

/// The SDK's files, relative to [`DIR`], with a standalone `Cargo.toml`.
pub(super) fn files() -> Result<Vec<(&'static str, String)>> {
    SDK_FILES
        .iter()
        .map(|(rel, text)| {
            let text = if *rel == "Cargo.toml" {
                standalone_manifest(text, WORKSPACE_MANIFEST)
                    .context("making the SDK's Cargo.toml standalone")?
            } else {
                (*text).to_string()
            };
            Ok((*rel, text))
        })
        .collect()
}

/// `manifest` with every `workspace = true` replaced by the workspace's value. Line by line,
/// so the manifest's comments (why each feature exists) survive; only the shapes the SDK's
/// manifest uses are handled, and anything else that still inherits is an error, not a broken
/// copy.
fn standalone_manifest(manifest: &str, workspace: &str) -> Result<String> {
    let ws: Table = toml::from_str(workspace).context("the workspace manifest")?;
    let ws = ws
        .get("workspace")
        .and_then(Value::as_table)
        .context("no [workspace]")?;
    let section = |key: &str| ws.get(key).and_then(Value::as_table);
    let mut out = String::with_capacity(manifest.len() + 256);
    let mut table = String::new();
    let mut lines = manifest.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
            if table == "lints" && lines.peek().map(|l| l.trim()) == Some("workspace = true") {
                lines.next();
                out.push_str(&lint_tables(
                    section("lints").context("no [workspace.lints]")?,
                ));
                continue;
            }
        } else if let Some(key) = trimmed.strip_suffix(".workspace = true") {
            let value = section("package")
                .and_then(|p| p.get(key))
                .with_context(|| format!("no workspace.package.{key}"))?;
            out.push_str(&format!("{key} = {value}\n"));
            continue;
        } else if table.ends_with("dependencies") && trimmed.contains("workspace = true") {
            let (name, local) = parse_entry(trimmed)?;
            let inherited = section("dependencies")
                .and_then(|d| d.get(&name))
                .with_context(|| format!("no workspace.dependencies.{name}"))?;
            out.push_str(&format!("{name} = {}\n", inherit(inherited, &local)?));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let parsed: Table = toml::from_str(&out).context("the rewritten manifest")?;
    if inherits(&Value::Table(parsed)) {
        bail!("the SDK's manifest still inherits from the workspace after the rewrite");
    }
    Ok(out)
}

/// `name = { … }` → its name and table.
fn parse_entry(line: &str) -> Result<(String, Table)> {
    let t: Table = toml::from_str(line).with_context(|| format!("parsing {line:?}"))?;
    let (name, value) = t.into_iter().next().context("an empty dependency line")?;
    match value {
        Value::Table(local) => Ok((name, local)),
        _ => bail!("{name}: `workspace = true` outside an inline table"),
    }
}

/// A workspace dependency with the member's additions: features add up, other keys
/// (`optional`, `default-features`) are the member's.
fn inherit(inherited: &Value, local: &Table) -> Result<Value> {
    let mut dep = match inherited {
        Value::String(version) => Table::from_iter([("version".into(), version.clone().into())]),
        Value::Table(t) => t.clone(),
        other => bail!("unexpected workspace dependency {other}"),
    };
    if dep.contains_key("path") {
        // A crate of this repository: the plugin's build could not find it.
        bail!("the SDK depends on a path crate of the workspace; it cannot be vendored alone");
    }
    for (key, value) in local {
        match (key.as_str(), value, dep.get_mut("features")) {
            ("workspace", ..) => {}
            ("features", Value::Array(more), Some(Value::Array(features))) => {
                features.extend(more.iter().cloned())
            }
            _ => {
                dep.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Value::Table(dep))
}

/// `[lints.<tool>]` tables with the workspace's levels.
fn lint_tables(lints: &Table) -> String {
    let mut out = String::new();
    for (tool, levels) in lints {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("[lints.{tool}]\n"));
        for (lint, level) in levels.as_table().into_iter().flatten() {
            out.push_str(&format!("{lint} = {level}\n"));
        }
    }
    out
}

/// Whether any table has a `workspace` key (`x.workspace = true` is one too).
fn inherits(v: &Value) -> bool {
    match v {
        Value::Table(t) => t.iter().any(|(k, v)| k == "workspace" || inherits(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_manifest_is_standalone_with_the_workspace_values() {
        let text = files()
            .unwrap()
            .into_iter()
            .find(|(rel, _)| *rel == "Cargo.toml")
            .unwrap()
            .1;
        let m: Table = toml::from_str(&text).unwrap();
        assert!(!inherits(&Value::Table(m.clone())), "{text}");
        let ws: Table = toml::from_str(WORKSPACE_MANIFEST).unwrap();
        let package = &ws["workspace"]["package"];
        assert_eq!(m["package"]["name"].as_str(), Some("sonde-sdk"));
        for key in ["version", "edition", "rust-version", "license"] {
            assert_eq!(m["package"].get(key), package.get(key), "{key}");
        }
        let serde = &m["dependencies"]["serde"];
        assert_eq!(
            serde["version"],
            ws["workspace"]["dependencies"]["serde"]["version"]
        );
        assert!(m["features"]["harness"].as_array().is_some());
        assert_eq!(
            m["lints"]["rust"]["unsafe_op_in_unsafe_fn"].as_str(),
            Some("deny")
        );
        // The features' comments are kept.
        assert!(text.contains("# One feature per WIT world"), "{text}");
    }

    #[test]
    fn inheriting_merges_features_and_refuses_path_crates() {
        let ws = r#"
[workspace.package]
version = "1.2.3"
[workspace.dependencies]
a = "1"
b = { version = "2", features = ["x"] }
c = { path = "c" }
[workspace.lints.rust]
unsafe_code = "forbid"
"#;
        let m = "[package]\nname = \"p\"\nversion.workspace = true\n\n[dependencies]\n\
                 a = { workspace = true }\nb = { workspace = true, features = [\"y\"], optional = true }\n\n\
                 [lints]\nworkspace = true\n";
        let out = standalone_manifest(m, ws).unwrap();
        let t: Table = toml::from_str(&out).unwrap();
        assert_eq!(t["package"]["version"].as_str(), Some("1.2.3"));
        assert_eq!(t["dependencies"]["a"]["version"].as_str(), Some("1"));
        let b = &t["dependencies"]["b"];
        assert_eq!(b["features"].as_array().unwrap().len(), 2);
        assert_eq!(b["optional"].as_bool(), Some(true));
        assert_eq!(t["lints"]["rust"]["unsafe_code"].as_str(), Some("forbid"));
        let err = standalone_manifest("[dependencies]\nc = { workspace = true }\n", ws)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be vendored"), "{err}");
        assert!(standalone_manifest("[package]\nedition.workspace = true\n", ws).is_err());
    }

    /// The list build.rs made is every file of the SDK a build reads: nothing missing (a module
    /// added since would not compile in the copy), nothing stale.
    #[test]
    fn every_sdk_file_is_embedded() {
        fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
            for e in std::fs::read_dir(root.join(rel)).unwrap() {
                let e = e.unwrap();
                let rel = format!("{rel}/{}", e.file_name().to_str().unwrap());
                if e.file_type().unwrap().is_dir() {
                    walk(root, &rel, out);
                } else {
                    out.push(rel);
                }
            }
        }
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let mut on_disk = vec!["Cargo.toml".to_string(), "README.md".to_string()];
        walk(&sdk, "src", &mut on_disk);
        walk(&sdk, "wit", &mut on_disk);
        on_disk.sort();
        let embedded: Vec<&str> = SDK_FILES.iter().map(|(rel, _)| *rel).collect();
        assert_eq!(embedded, on_disk);
        assert!(embedded.contains(&"wit/sonde-plugin.wit"));
        for (rel, text) in SDK_FILES {
            if *rel != "Cargo.toml" {
                assert_eq!(
                    std::fs::read_to_string(sdk.join(rel)).unwrap(),
                    *text,
                    "{rel}"
                );
            }
        }
    }
}
