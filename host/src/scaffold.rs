//! `sonde plugin new`: a new plugin crate from a template, ready for `cargo test` and for
//! `cargo build --release --target wasm32-wasip2`.
//!
//! The templates are the files under `scaffold/`, compiled into the binary. Placeholders are
//! replaced by plain string substitution, in one pass (a value is never scanned again):
//! `{{name}}` (the crate name), `{{crate_ident}}` (the same with `_` for `-`, as Rust code and
//! the `.wasm` file spell it), `{{sdk_dep}}` (the TOML value of the `sonde-sdk` dependency),
//! `{{dev_dependencies}}` (the SDK again, with its test harness, for a parser's tests),
//! `{{description}}`. Any other `{{…}}` is left as it is.
//!
//! The generated `Cargo.toml` has an empty `[workspace]` table, so the crate builds on its own
//! wherever it is created, even inside another Cargo workspace (this repository's included).
//! By default the SDK is vendored into it (`sonde-sdk/`, see `vendor`): `sonde-sdk` is not on
//! crates.io, and a copy of the SDK this binary was built with speaks its WIT exactly.

mod vendor;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, Result, bail};

/// What kind of plugin to create, i.e. which WIT world it implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// A protocol parser (world `protocol-parser`): a toy line protocol, its harness tests and
    /// a recorded exchange.
    Parser,
    /// A fault-tree rule (world `fault-rule`): one example rule and its tests.
    FaultRule,
}

impl PluginKind {
    /// The SDK features the tests need besides [`Self::sdk_feature`].
    fn test_features(self) -> &'static [&'static str] {
        match self {
            PluginKind::Parser => &["harness"],
            PluginKind::FaultRule => &[],
        }
    }

    /// The `sonde-sdk` feature, which is also the WIT world's name.
    pub fn sdk_feature(self) -> &'static str {
        match self {
            PluginKind::Parser => "protocol-parser",
            PluginKind::FaultRule => "fault-rule",
        }
    }

    /// The generated files: path in the crate, template text.
    fn templates(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PluginKind::Parser => PARSER,
            PluginKind::FaultRule => FAULT_RULE,
        }
    }

    fn description(self) -> &'static str {
        match self {
            PluginKind::Parser => {
                "A Sonde protocol parser (WIT world sonde:plugin/protocol-parser)."
            }
            PluginKind::FaultRule => "A Sonde fault rule (WIT world sonde:plugin/fault-rule).",
        }
    }
}

/// `parser` (or `protocol-parser`), `fault-rule` (or `rule`): what a command line says.
impl FromStr for PluginKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "parser" | "protocol-parser" => Ok(PluginKind::Parser),
            "fault-rule" | "rule" => Ok(PluginKind::FaultRule),
            other => bail!("unknown plugin kind {other:?}: expected `parser` or `fault-rule`"),
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Parser => "parser",
            PluginKind::FaultRule => "fault-rule",
        })
    }
}

/// Where the generated crate gets `sonde-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SdkSource {
    /// A copy of the SDK this binary was built with, written into the crate (`sonde-sdk/`):
    /// builds offline, with no registry.
    #[default]
    Vendored,
    /// The `sdk/` directory of a Sonde checkout (for developing in the repository, and for its
    /// tests). A relative path is taken from the current directory, and written absolute.
    Path(PathBuf),
    /// A version requirement on a registry that has `sonde-sdk`, such as
    /// [`DEFAULT_SDK_VERSION`].
    Version(String),
}

/// The SDK version requirement of [`SdkSource::Version`] when none is given.
pub const DEFAULT_SDK_VERSION: &str = "0.1";

/// Files of every kind.
const COMMON: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("scaffold/Cargo.toml.tmpl")),
    (".gitignore", include_str!("scaffold/gitignore.tmpl")),
];

const PARSER: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("scaffold/parser_lib.rs.tmpl")),
    (
        "tests/harness.rs",
        include_str!("scaffold/parser_test.rs.tmpl"),
    ),
    (
        "tests/fixtures/example.rec",
        include_str!("scaffold/parser_example.rec.tmpl"),
    ),
    ("README.md", include_str!("scaffold/parser_README.md.tmpl")),
];

const FAULT_RULE: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("scaffold/rule_lib.rs.tmpl")),
    (
        "tests/harness.rs",
        include_str!("scaffold/rule_test.rs.tmpl"),
    ),
    ("README.md", include_str!("scaffold/rule_README.md.tmpl")),
];

/// Creates the crate `name` of `kind` in the new directory `dir` (created, with its parents;
/// if it exists it must be an empty directory) and returns the files written, as
/// `dir.join(…)`.
pub fn new_plugin(
    dir: &Path,
    name: &str,
    kind: PluginKind,
    sdk: SdkSource,
) -> Result<Vec<PathBuf>> {
    check_name(name)?;
    let sdk_dep = sdk_dependency(&sdk, kind, &[])?;
    let dev_dependencies = match kind.test_features() {
        [] => String::new(),
        more => format!(
            "\n# The tests feed the plugin natively through the SDK's harness.\n\
             [dev-dependencies]\nsonde-sdk = {}\n",
            sdk_dependency(&sdk, kind, more)?
        ),
    };
    let vendored = match sdk {
        SdkSource::Vendored => vendor::files()?,
        _ => Vec::new(),
    };
    if dir.exists() {
        let mut entries = dir
            .read_dir()
            .with_context(|| format!("{} exists and is not a readable directory", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} exists and is not empty: choose a new directory for the plugin",
                dir.display()
            );
        }
    }
    let crate_ident = name.replace('-', "_");
    let vars = [
        ("name", name),
        ("crate_ident", crate_ident.as_str()),
        ("sdk_dep", sdk_dep.as_str()),
        ("dev_dependencies", dev_dependencies.as_str()),
        ("description", kind.description()),
    ];
    let mut written = Vec::new();
    for (rel, template) in COMMON.iter().chain(kind.templates()) {
        written.push(write(&dir.join(rel), &render(template, &vars))?);
    }
    // Copied as they are: SDK sources are not templates (`{{` may well occur in them).
    for (rel, text) in &vendored {
        written.push(write(&dir.join(vendor::DIR).join(rel), text)?);
    }
    Ok(written)
}

/// Writes `path`, creating its directory.
fn write(path: &Path, text: &str) -> Result<PathBuf> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A crate name Cargo and Rust both accept, kept simple: lowercase ASCII letters, digits and
/// `-`, starting with a letter; not a Rust keyword or a standard crate (the tests name the
/// crate in Rust code), not `sonde-sdk` (the dependency).
pub fn check_name(name: &str) -> Result<()> {
    let well_formed = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !well_formed {
        bail!(
            "invalid plugin name {name:?}: use lowercase ASCII letters, digits and '-', starting \
             with a letter, at most 64 characters (e.g. `redis-parser`)"
        );
    }
    if RESERVED.contains(&name) {
        bail!(
            "invalid plugin name {name:?}: it is reserved (a Rust keyword or crate); pick another"
        );
    }
    Ok(())
}

/// Names that pass the syntax check but break the generated code or its build.
const RESERVED: &[&str] = &[
    // Keywords, strict and reserved (`use {{crate_ident}}::…` must parse).
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    // Crates every build already has, and the dependency itself.
    "alloc",
    "core",
    "proc-macro",
    "std",
    "test",
    "sonde-sdk",
];

/// The `sonde-sdk = …` value: only the feature of this kind's world, so the component carries
/// no other world's glue, and `more` features.
fn sdk_dependency(sdk: &SdkSource, kind: PluginKind, more: &[&str]) -> Result<String> {
    let source = match sdk {
        SdkSource::Vendored => format!("path = {}", toml_string(vendor::DIR)),
        SdkSource::Path(path) => {
            let path = std::path::absolute(path)
                .with_context(|| format!("resolving {}", path.display()))?;
            let manifest = path.join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).with_context(|| {
                format!(
                    "{} is not the sonde-sdk crate: no {}",
                    path.display(),
                    manifest.display()
                )
            })?;
            if !text.lines().any(|l| l.trim() == r#"name = "sonde-sdk""#) {
                bail!(
                    "{} is not the sonde-sdk crate (its Cargo.toml names another package)",
                    path.display()
                );
            }
            let path = path
                .to_str()
                .with_context(|| format!("{} is not UTF-8", path.display()))?;
            format!("path = {}", toml_string(path))
        }
        SdkSource::Version(req) => {
            let req = req.trim();
            if req.is_empty() {
                bail!("empty sonde-sdk version requirement");
            }
            format!("version = {}", toml_string(req))
        }
    };
    let features: Vec<String> = std::iter::once(kind.sdk_feature())
        .chain(more.iter().copied())
        .map(toml_string)
        .collect();
    Ok(format!(
        "{{ {source}, default-features = false, features = [{}] }}",
        features.join(", ")
    ))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Replaces each `{{key}}` of `vars` in one pass; other `{{…}}` stay.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let found = after.find("}}").and_then(|end| {
            vars.iter()
                .find(|(key, _)| *key == &after[..end])
                .map(|(_, value)| (end, value))
        });
        match found {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("sonde-scaffold-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sdk() -> SdkSource {
        SdkSource::Path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"))
    }

    #[test]
    fn names() {
        for ok in ["redis-parser", "a", "x9", "my-rule-2"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "9lives",
            "-x",
            "Redis",
            "my_parser",
            "my parser",
            "é",
            "fn",
            "std",
            "sonde-sdk",
        ] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid plugin name"), "{bad}: {err}");
        }
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn kinds_parse_and_print() {
        for kind in [PluginKind::Parser, PluginKind::FaultRule] {
            assert_eq!(kind.to_string().parse::<PluginKind>().unwrap(), kind);
        }
        assert_eq!("rule".parse::<PluginKind>().unwrap(), PluginKind::FaultRule);
        assert!("parsers".parse::<PluginKind>().is_err());
        assert_eq!(SdkSource::default(), SdkSource::Vendored);
    }

    #[test]
    fn render_is_one_pass() {
        let vars = [("a", "{{b}}"), ("b", "B")];
        assert_eq!(render("x{{a}}y{{b}}z{{c}}{{", &vars), "x{{b}}yBz{{c}}{{");
        assert_eq!(render("format!(\"{{}}\")", &vars), "format!(\"{{}}\")");
    }

    #[test]
    fn writes_every_file_with_every_placeholder_replaced() {
        for (kind, feature, count) in [
            (PluginKind::Parser, "protocol-parser", 6),
            (PluginKind::FaultRule, "fault-rule", 5),
        ] {
            let tmp = TempDir::new("files");
            let dir = tmp.0.join("nested/my-plugin");
            let files = new_plugin(&dir, "my-plugin", kind, sdk()).unwrap();
            assert_eq!(files.len(), count);
            for f in &files {
                assert!(f.starts_with(&dir), "{}", f.display());
                let text = std::fs::read_to_string(f).unwrap();
                for key in [
                    "{{name}}",
                    "{{crate_ident}}",
                    "{{sdk_dep}}",
                    "{{description}}",
                ] {
                    assert!(!text.contains(key), "{} still has {key}", f.display());
                }
            }
            let manifest: toml::Table =
                toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
            assert_eq!(manifest["package"]["name"].as_str(), Some("my-plugin"));
            assert!(manifest["workspace"].as_table().unwrap().is_empty());
            let types: Vec<_> = manifest["lib"]["crate-type"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(types, ["cdylib", "rlib"]);
            let dep = manifest["dependencies"]["sonde-sdk"].as_table().unwrap();
            assert_eq!(dep["default-features"].as_bool(), Some(false));
            assert_eq!(
                dep["features"].as_array().unwrap()[0].as_str(),
                Some(feature)
            );
            assert!(
                Path::new(dep["path"].as_str().unwrap())
                    .join("Cargo.toml")
                    .is_file()
            );
            let test = std::fs::read_to_string(dir.join("tests/harness.rs")).unwrap();
            assert!(test.contains("use my_plugin::"), "the test names the crate");
        }
    }

    #[test]
    fn vendors_the_sdk_by_default() {
        for (kind, harness) in [(PluginKind::Parser, true), (PluginKind::FaultRule, false)] {
            let tmp = TempDir::new("vendored");
            let files = new_plugin(&tmp.0, "v", kind, SdkSource::default()).unwrap();
            for rel in ["Cargo.toml", "src/lib.rs", "wit/sonde-plugin.wit"] {
                let path = tmp.0.join("sonde-sdk").join(rel);
                assert!(files.contains(&path), "{} not written", path.display());
            }
            let manifest: toml::Table =
                toml::from_str(&std::fs::read_to_string(tmp.0.join("Cargo.toml")).unwrap())
                    .unwrap();
            let dep = &manifest["dependencies"]["sonde-sdk"];
            assert_eq!(dep["path"].as_str(), Some("sonde-sdk"));
            let dev = manifest
                .get("dev-dependencies")
                .map(|d| d["sonde-sdk"]["features"].as_array().unwrap().clone());
            assert_eq!(
                dev.is_some_and(|f| f.iter().any(|f| f.as_str() == Some("harness"))),
                harness,
                "{kind}"
            );
        }
    }

    #[test]
    fn version_source() {
        let tmp = TempDir::new("version");
        let version = SdkSource::Version(DEFAULT_SDK_VERSION.into());
        new_plugin(&tmp.0, "r", PluginKind::FaultRule, version).unwrap();
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(tmp.0.join("Cargo.toml")).unwrap()).unwrap();
        assert_eq!(
            manifest["dependencies"]["sonde-sdk"]["version"].as_str(),
            Some(DEFAULT_SDK_VERSION)
        );
        assert!(!tmp.0.join("sonde-sdk").exists(), "nothing vendored");
        assert!(toml_string("a\"b\\c\n").eq(r#""a\"b\\c\u000A""#));
    }

    #[test]
    fn refuses_a_non_empty_directory_and_a_wrong_sdk() {
        let tmp = TempDir::new("refuse");
        // An empty existing directory is fine.
        std::fs::create_dir_all(&tmp.0).unwrap();
        new_plugin(&tmp.0, "p", PluginKind::Parser, sdk()).unwrap();
        let err = new_plugin(&tmp.0, "p", PluginKind::Parser, sdk())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not empty"), "{err}");
        let file = tmp.0.join("README.md");
        assert!(new_plugin(&file, "p", PluginKind::Parser, sdk()).is_err());
        let other = TempDir::new("other");
        let err = new_plugin(
            &other.0,
            "p",
            PluginKind::Parser,
            SdkSource::Path(tmp.0.join("src")),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("is not the sonde-sdk crate"),
            "{err}"
        );
        assert!(!other.0.exists(), "nothing written on error");
        assert!(new_plugin(&other.0, "P", PluginKind::Parser, sdk()).is_err());
    }
}
