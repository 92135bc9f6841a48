//! Plugin manifests and publisher signatures: what the daemon checks before it loads a
//! component from `parser_dirs` or `rule_dirs`.
//!
//! A component `<stem>.wasm` comes with its manifest `<stem>.toml` in the same directory:
//!
//! ```toml
//! [plugin]
//! name = "resp"
//! version = "0.1.0"
//! world = "sonde:plugin/protocol-parser@0.1.0"   # or "sonde:plugin/fault-rule@0.1.0"
//! protocols = ["redis"]        # what it parses (hints; a rule has none)
//! ports = [6379]               # hints
//! capabilities = []            # what it asks for beyond the sandbox: "clocks"; none by default
//!
//! [component]
//! file = "resp-0.1.0.wasm"     # the name its publisher gave it
//! sha256 = "…"                 # hex, of the .wasm's bytes
//!
//! [signature]
//! publisher = "acme"
//! key = "ed25519:<base64 of the 32-byte public key>"
//! value = "<base64 of the 64-byte ed25519 signature>"
//! ```
//!
//! **The signed message** is the domain separator [`DOMAIN`] (`sonde-plugin-manifest-v1\n`)
//! followed by compact JSON (no whitespace, serde_json's string escaping) of every field except
//! `signature.value`, in this order:
//! `{"plugin":{"name":…,"version":…,"world":…,"protocols":[…],"ports":[…],"capabilities":[…]},
//! "component":{"file":…,"sha256":…},"publisher":…,"key":…}` (absent lists are `[]`). The
//! signature is plain ed25519 (RFC 8032) over those bytes, checked with `verify_strict`.
//! Since the message holds the component's sha256, it signs the component too.
//!
//! [`verify`] reads the `.wasm` once, hashes and checks those bytes and hands them back for
//! loading (no window between check and use). It refuses, each time with a message naming the
//! file: a component without a manifest or without a signature (unless its directory is in
//! `allow_unsigned_dirs`), a component whose sha256 is not its manifest's (tampered), a
//! signature that does not verify (the manifest changed after signing), a key the operator has
//! not listed in `[[plugins.trusted_keys]]`, a world other than the directory's (a fault rule in
//! `parser_dirs`) or one this daemon does not implement, and an unknown or ungranted
//! capability. After loading, [`Verified::check_identity`] compares the component's own `info`
//! (name, version) with its manifest. The components embedded in the binary are not checked:
//! they are part of it.
//!
//! In an `allow_unsigned_dirs` directory a component may have no manifest, or an unsigned one;
//! a manifest that is there is still checked (sha256, world, capabilities), and so is a
//! signature (it must verify; an untrusted key is then only "unsigned").

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What the signed message starts with (see the module docs).
pub const DOMAIN: &[u8] = b"sonde-plugin-manifest-v1\n";

/// The WIT package every world belongs to, and the version this daemon implements; a
/// component built against any `0.1.x` loads.
pub const WIT_PACKAGE: &str = "sonde:plugin";
pub const WIT_VERSION: &str = "0.1.0";

/// Capabilities a manifest may ask for, and the `[plugins]` key that grants each.
pub const CAPABILITIES: &[(&str, &str)] = &[("clocks", "grant_clocks = true")];

/// How public keys are written: `ed25519:<base64 of the 32 bytes>`.
pub const KEY_PREFIX: &str = "ed25519:";

/// The WIT worlds a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    ProtocolParser,
    FaultRule,
}

impl World {
    /// The world's name in the WIT package (`protocol-parser`, `fault-rule`).
    pub fn name(self) -> &'static str {
        match self {
            World::ProtocolParser => "protocol-parser",
            World::FaultRule => "fault-rule",
        }
    }

    /// The fully qualified world this daemon implements, e.g.
    /// `sonde:plugin/protocol-parser@0.1.0`.
    pub fn qualified(self) -> String {
        format!("{WIT_PACKAGE}/{}@{WIT_VERSION}", self.name())
    }

    /// Which `[plugins]` key lists directories of this world's components.
    pub fn dirs_key(self) -> &'static str {
        match self {
            World::ProtocolParser => "parser_dirs",
            World::FaultRule => "rule_dirs",
        }
    }

    /// A world as the command line names it: `protocol-parser` (or `parser`), `fault-rule`
    /// (or `rule`), or qualified as in a manifest.
    pub fn parse(s: &str) -> Option<World> {
        match s {
            "protocol-parser" | "parser" => Some(World::ProtocolParser),
            "fault-rule" | "rule" => Some(World::FaultRule),
            _ => World::from_declared(s),
        }
    }

    /// A manifest's `world`: `sonde:plugin/<world>@0.1.<patch>` (semver-compatible with what
    /// this daemon implements); `None` for anything else.
    pub fn from_declared(s: &str) -> Option<World> {
        let rest = s.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
        let (name, version) = rest.split_once('@')?;
        let (major_minor, _) = WIT_VERSION.rsplit_once('.')?;
        let patch = version.strip_prefix(major_minor)?.strip_prefix('.')?;
        if patch.is_empty() || !patch.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        match name {
            "protocol-parser" => Some(World::ProtocolParser),
            "fault-rule" => Some(World::FaultRule),
            _ => None,
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A component's manifest (`<stem>.toml` next to `<stem>.wasm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub plugin: PluginSection,
    pub component: ComponentSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureSection>,
}

/// `[plugin]`: who the component is and what it asks for. The field order is part of the
/// signed message: do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// As the component's own `info` says.
    pub name: String,
    pub version: String,
    /// `sonde:plugin/protocol-parser@0.1.0` or `sonde:plugin/fault-rule@0.1.0`.
    pub world: String,
    /// Protocols a parser handles (hints, e.g. for an operator choosing parsers).
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Ports its protocols usually use (hints; a parser still sees every connection).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// What it asks for beyond the sandbox ([`CAPABILITIES`]); none by default.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// `[component]`: the `.wasm` the manifest is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSection {
    /// The file name its publisher gave it (the daemon finds a manifest by its own stem, so
    /// the pair may be renamed, e.g. to change the load order).
    pub file: String,
    /// sha256 of the component, hex.
    pub sha256: String,
}

/// `[signature]`: the publisher's ed25519 signature of everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureSection {
    /// The publisher's name for themselves (signed, but trust is by key).
    pub publisher: String,
    /// `ed25519:<base64>`: the public key that made the signature.
    pub key: String,
    /// base64 of the 64-byte signature.
    pub value: String,
}

/// The signed part of a manifest, in its canonical order.
#[derive(Serialize)]
struct Signed<'a> {
    plugin: &'a PluginSection,
    component: &'a ComponentSection,
    publisher: &'a str,
    key: &'a str,
}

impl Manifest {
    /// An unsigned manifest for `wasm` (its bytes), published as `file`.
    pub fn new(plugin: PluginSection, file: &str, wasm: &[u8]) -> Self {
        Manifest {
            plugin,
            component: ComponentSection {
                file: file.to_string(),
                sha256: sha256_hex(wasm),
            },
            signature: None,
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        m.check_syntax()?;
        Ok(m)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest serializes")
    }

    /// The bytes a signature by `publisher` with `key` (as written in `[signature]`) covers.
    pub fn signed_message(&self, publisher: &str, key: &str) -> Vec<u8> {
        let mut msg = DOMAIN.to_vec();
        serde_json::to_writer(
            &mut msg,
            &Signed {
                plugin: &self.plugin,
                component: &self.component,
                publisher,
                key,
            },
        )
        .expect("serializing to a Vec cannot fail");
        msg
    }

    /// Sign as `publisher`, replacing any signature.
    pub fn sign(&mut self, publisher: &str, key: &SigningKey) {
        let key_text = format_public_key(&key.verifying_key());
        let sig = key.sign(&self.signed_message(publisher, &key_text));
        self.signature = Some(SignatureSection {
            publisher: publisher.to_string(),
            key: key_text,
            value: B64.encode(sig.to_bytes()),
        });
    }

    /// Does the signature verify (whoever's key it is)? `Ok(key)` if so; `Err` says why not.
    pub fn check_signature(&self) -> Result<VerifyingKey, SignatureProblem> {
        let sig = self.signature.as_ref().ok_or(SignatureProblem::Missing)?;
        let key = parse_public_key(&sig.key).map_err(SignatureProblem::Malformed)?;
        let bytes: [u8; 64] = B64
            .decode(sig.value.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                SignatureProblem::Malformed("signature.value is not base64 of 64 bytes".to_string())
            })?;
        key.verify_strict(
            &self.signed_message(&sig.publisher, &sig.key),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| SignatureProblem::Invalid)?;
        Ok(key)
    }

    /// Field checks that need no file: non-empty names, a hex sha256.
    fn check_syntax(&self) -> Result<(), String> {
        let p = &self.plugin;
        if p.name.trim().is_empty() || p.version.trim().is_empty() {
            return Err("plugin.name and plugin.version must not be empty".into());
        }
        let h = &self.component.sha256;
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("component.sha256 must be 64 hex digits, not {h:?}"));
        }
        Ok(())
    }
}

/// Why a manifest's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    Missing,
    Malformed(String),
    Invalid,
}

/// The manifest of a component: `<stem>.toml` next to `<stem>.wasm`.
pub fn manifest_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `ed25519:<base64>` of a public key.
pub fn format_public_key(key: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", B64.encode(key.as_bytes()))
}

/// Parse `ed25519:<base64 of 32 bytes>`; weak (small-order) keys are refused.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let s = s.trim();
    let b64 = s
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| format!("{s:?} is not an `{KEY_PREFIX}<base64>` public key"))?;
    let bytes: [u8; 32] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{s:?}: not base64 of a 32-byte ed25519 public key"))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| format!("{s:?}: not a valid ed25519 public key"))?;
    if key.is_weak() {
        return Err(format!("{s:?}: a weak ed25519 key"));
    }
    Ok(key)
}

/// A publisher key the operator trusts (`[[plugins.trusted_keys]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Who it belongs to, for the logs (need not match the manifest's `publisher`).
    pub name: String,
    /// `ed25519:<base64>`, as `sonde plugin keygen` wrote it to `<key>.pub`.
    pub key: String,
}

/// What [`verify`] accepts: trusted keys, directories allowed to hold unsigned components, the
/// world expected and the capabilities granted.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<(String, VerifyingKey)>,
    /// As configured, and canonicalized where possible.
    unsigned_dirs: Vec<(PathBuf, PathBuf)>,
    /// The world components must declare; `None` accepts either.
    pub world: Option<World>,
    /// Capabilities the daemon grants (from [`CAPABILITIES`]).
    pub granted: Vec<String>,
    /// The largest component read (`[plugins] max_component_bytes`); `None`: the default.
    pub max_component_bytes: Option<u64>,
}

impl Trust {
    /// `[plugins]`'s trusted keys, unsigned directories and grants, for components of `world`.
    pub fn from_config(
        cfg: &crate::PluginsConfig,
        world: Option<World>,
    ) -> Result<Self, VerifyError> {
        let mut t = Trust {
            world,
            max_component_bytes: Some(cfg.max_component_bytes),
            ..Trust::default()
        };
        for k in &cfg.trusted_keys {
            t.add_key(&k.name, &k.key)?;
        }
        for d in &cfg.allow_unsigned_dirs {
            t.allow_unsigned(d);
        }
        if cfg.grant_clocks {
            t.granted.push("clocks".into());
        }
        Ok(t)
    }

    /// Trust `key` (`ed25519:<base64>`), known as `name`.
    pub fn add_key(&mut self, name: &str, key: &str) -> Result<(), VerifyError> {
        let parsed = parse_public_key(key).map_err(|reason| VerifyError::BadTrustedKey {
            name: name.to_string(),
            reason,
        })?;
        self.keys.push((name.to_string(), parsed));
        Ok(())
    }

    /// Let components in `dir` (not its subdirectories) be unsigned.
    pub fn allow_unsigned(&mut self, dir: &Path) {
        let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        self.unsigned_dirs.push((dir.to_path_buf(), canon));
    }

    /// The operator's name for `key`, if trusted.
    pub fn trusted(&self, key: &VerifyingKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, k)| k.as_bytes() == key.as_bytes())
            .map(|(n, _)| n.as_str())
    }

    /// Does `dir` allow unsigned components?
    pub fn allows_unsigned(&self, dir: &Path) -> bool {
        let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        self.unsigned_dirs
            .iter()
            .any(|(raw, c)| *c == canon || raw == dir)
    }
}

/// A component that passed [`verify`]: the bytes to load, and what vouches for them.
#[derive(Debug, Clone)]
pub struct Verified {
    pub path: PathBuf,
    /// `None`: an unsigned component without a manifest, from an `allow_unsigned_dirs` dir.
    pub manifest: Option<Manifest>,
    /// The component's bytes, as hashed and checked: load these, not the file again.
    pub wasm: Vec<u8>,
    pub sha256: String,
    /// The operator's name of the trusted key that signed it; `None` when unsigned (allowed).
    pub signed_by: Option<String>,
}

impl Verified {
    /// The world its manifest declares.
    pub fn world(&self) -> Option<World> {
        self.manifest
            .as_ref()
            .and_then(|m| World::from_declared(&m.plugin.world))
    }

    /// After loading: does the component's own `info` say what its manifest says?
    pub fn check_identity(&self, name: &str, version: &str) -> Result<(), VerifyError> {
        let Some(m) = &self.manifest else {
            return Ok(());
        };
        if m.plugin.name != name || m.plugin.version != version {
            return Err(VerifyError::IdentityMismatch {
                wasm: self.path.clone(),
                component: format!("{name} {version}"),
                manifest: format!("{} {}", m.plugin.name, m.plugin.version),
            });
        }
        Ok(())
    }

    /// For logs and `sonde plugin verify`: who vouches for the component.
    pub fn provenance(&self) -> String {
        let publisher = self
            .manifest
            .as_ref()
            .and_then(|m| m.signature.as_ref())
            .map(|s| (s.publisher.as_str(), s.key.as_str()));
        match (&self.signed_by, publisher) {
            (Some(trusted), Some((p, key))) => {
                format!("signed by {p:?} with {key} (trusted as {trusted:?})")
            }
            (_, Some((p, key))) => {
                format!("unsigned (allowed): signed by {p:?} with untrusted key {key}")
            }
            (_, None) if self.manifest.is_some() => "unsigned manifest (allowed)".into(),
            _ => "unsigned, no manifest (allowed)".into(),
        }
    }
}

/// Why a component is refused. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: refused: unsigned (no manifest {}). Install the component with the signed manifest \
         its publisher ships (`sonde plugin package` writes one), or allow unsigned components \
         from this directory: [plugins] allow_unsigned_dirs = [\"{}\"]",
        .wasm.display(), .manifest.display(), .dir.display()
    )]
    NoManifest {
        wasm: PathBuf,
        manifest: PathBuf,
        dir: PathBuf,
    },
    #[error(
        "{}: refused: unsigned (its manifest {} has no [signature]). Sign it with \
         `sonde plugin package`, or allow unsigned components from this directory: \
         [plugins] allow_unsigned_dirs = [\"{}\"]",
        .wasm.display(), .manifest.display(), .dir.display()
    )]
    NoSignature {
        wasm: PathBuf,
        manifest: PathBuf,
        dir: PathBuf,
    },
    #[error("{}: refused: its manifest {} is not valid: {reason}", .wasm.display(), .manifest.display())]
    BadManifest {
        wasm: PathBuf,
        manifest: PathBuf,
        reason: String,
    },
    #[error(
        "{}: refused: tampered: the component's sha256 is {actual}, its manifest {} says {expected}",
        .wasm.display(), .manifest.display()
    )]
    Tampered {
        wasm: PathBuf,
        manifest: PathBuf,
        actual: String,
        expected: String,
    },
    #[error(
        "{}: refused: signature invalid: the manifest {} does not match the signature of {publisher:?} \
         (key {key}); it was changed after signing",
        .wasm.display(), .manifest.display()
    )]
    BadSignature {
        wasm: PathBuf,
        manifest: PathBuf,
        publisher: String,
        key: String,
    },
    #[error(
        "{}: refused: signed by {publisher:?} with key {key}, which is not trusted. If you trust \
         this publisher, add to the config: [[plugins.trusted_keys]] name = \"{publisher}\" key = \"{key}\"",
        .wasm.display()
    )]
    UntrustedKey {
        wasm: PathBuf,
        publisher: String,
        key: String,
    },
    #[error(
        "{}: refused: its manifest declares the world {declared}, but this is a {} directory \
         ({}): put it in {}",
        .wasm.display(), .expected.name(), .expected.dirs_key(), .declared_world.dirs_key()
    )]
    WorldMismatch {
        wasm: PathBuf,
        declared: String,
        declared_world: World,
        expected: World,
    },
    #[error(
        "{}: refused: its manifest declares the world {declared:?}, which this sonde does not \
         implement ({} or {}, or another 0.1.x)",
        .wasm.display(), World::ProtocolParser.qualified(), World::FaultRule.qualified()
    )]
    UnsupportedWorld { wasm: PathBuf, declared: String },
    #[error(
        "{}: refused: it asks for the capability {capability:?}, which sonde does not know \
         (known: {})",
        .wasm.display(), known_capabilities()
    )]
    UnknownCapability { wasm: PathBuf, capability: String },
    #[error(
        "{}: refused: it asks for the capability {capability:?}, which this daemon does not grant \
         ([plugins] {grant} grants it)",
        .wasm.display()
    )]
    NotGranted {
        wasm: PathBuf,
        capability: String,
        grant: &'static str,
    },
    #[error(
        "{}: refused: the component calls itself {component}, its manifest says {manifest}",
        .wasm.display()
    )]
    IdentityMismatch {
        wasm: PathBuf,
        component: String,
        manifest: String,
    },
    #[error("[[plugins.trusted_keys]] {name:?}: {reason}")]
    BadTrustedKey { name: String, reason: String },
}

fn known_capabilities() -> String {
    CAPABILITIES
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

/// For a parser loaded while the daemon runs (the admin socket, a watched `parser_dirs`):
/// [`verify`] under `[plugins]`'s trust as a protocol parser. Load `.wasm` of the result, then
/// call [`Verified::check_identity`] with the loaded parser's name and version.
pub fn verify_parser_file(
    path: &Path,
    cfg: &crate::PluginsConfig,
) -> Result<Verified, VerifyError> {
    verify(path, &Trust::from_config(cfg, Some(World::ProtocolParser))?)
}

/// Check the component at `wasm_path` against its manifest and `trust` (see the module docs),
/// and return its bytes to load.
pub fn verify(wasm_path: &Path, trust: &Trust) -> Result<Verified, VerifyError> {
    let max = trust
        .max_component_bytes
        .unwrap_or(crate::DEFAULT_MAX_COMPONENT_BYTES);
    let wasm = crate::read_plugin_file(wasm_path, max, "[plugins] max_component_bytes").map_err(
        |source| VerifyError::Read {
            path: wasm_path.to_path_buf(),
            source,
        },
    )?;
    let sha256 = sha256_hex(&wasm);
    let manifest_path = manifest_path(wasm_path);
    let dir = match wasm_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let allowed = trust.allows_unsigned(&dir);
    let unverified = |manifest| Verified {
        path: wasm_path.to_path_buf(),
        manifest,
        wasm: Vec::new(),
        sha256: sha256.clone(),
        signed_by: None,
    };
    let manifest_text = crate::read_plugin_file(
        &manifest_path,
        crate::MAX_MANIFEST_BYTES,
        "the manifest size limit",
    )
    .and_then(|b| {
        String::from_utf8(b)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"))
    });
    let text = match manifest_text {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if allowed {
                return Ok(Verified {
                    wasm,
                    ..unverified(None)
                });
            }
            return Err(VerifyError::NoManifest {
                wasm: wasm_path.to_path_buf(),
                manifest: manifest_path,
                dir,
            });
        }
        Err(source) => {
            return Err(VerifyError::Read {
                path: manifest_path,
                source,
            });
        }
    };
    let bad = |reason: String| VerifyError::BadManifest {
        wasm: wasm_path.to_path_buf(),
        manifest: manifest_path.clone(),
        reason,
    };
    let manifest = Manifest::from_toml(&text).map_err(bad)?;
    if !manifest.component.sha256.eq_ignore_ascii_case(&sha256) {
        return Err(VerifyError::Tampered {
            wasm: wasm_path.to_path_buf(),
            manifest: manifest_path,
            actual: sha256,
            expected: manifest.component.sha256.to_ascii_lowercase(),
        });
    }
    let signed_by = match manifest.check_signature() {
        Ok(key) => match trust.trusted(&key) {
            Some(name) => Some(name.to_string()),
            None if allowed => None,
            None => {
                let sig = manifest.signature.as_ref().expect("checked");
                return Err(VerifyError::UntrustedKey {
                    wasm: wasm_path.to_path_buf(),
                    publisher: sig.publisher.clone(),
                    key: format_public_key(&key),
                });
            }
        },
        Err(SignatureProblem::Missing) if allowed => None,
        Err(SignatureProblem::Missing) => {
            return Err(VerifyError::NoSignature {
                wasm: wasm_path.to_path_buf(),
                manifest: manifest_path,
                dir,
            });
        }
        Err(SignatureProblem::Malformed(reason)) => return Err(bad(reason)),
        Err(SignatureProblem::Invalid) => {
            let sig = manifest.signature.as_ref().expect("checked");
            return Err(VerifyError::BadSignature {
                wasm: wasm_path.to_path_buf(),
                manifest: manifest_path,
                publisher: sig.publisher.clone(),
                key: sig.key.clone(),
            });
        }
    };
    let declared = &manifest.plugin.world;
    let Some(world) = World::from_declared(declared) else {
        return Err(VerifyError::UnsupportedWorld {
            wasm: wasm_path.to_path_buf(),
            declared: declared.clone(),
        });
    };
    if let Some(expected) = trust.world
        && expected != world
    {
        return Err(VerifyError::WorldMismatch {
            wasm: wasm_path.to_path_buf(),
            declared: declared.clone(),
            declared_world: world,
            expected,
        });
    }
    for cap in &manifest.plugin.capabilities {
        let Some((_, grant)) = CAPABILITIES.iter().find(|(c, _)| c == cap) else {
            return Err(VerifyError::UnknownCapability {
                wasm: wasm_path.to_path_buf(),
                capability: cap.clone(),
            });
        };
        if !trust.granted.iter().any(|g| g == cap) {
            return Err(VerifyError::NotGranted {
                wasm: wasm_path.to_path_buf(),
                capability: cap.clone(),
                grant,
            });
        }
    }
    Ok(Verified {
        wasm,
        signed_by,
        ..unverified(Some(manifest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn plugin(world: World) -> PluginSection {
        PluginSection {
            name: "resp".into(),
            version: "0.1.0".into(),
            world: world.qualified(),
            protocols: vec!["redis".into()],
            ports: vec![6379],
            capabilities: vec![],
        }
    }

    /// A scratch directory with `x.wasm` (and its manifest signed by `signer`, if any).
    struct Dir(PathBuf);

    impl Dir {
        fn new(what: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let d = std::env::temp_dir().join(format!(
                "sonde-manifest-{what}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn wasm(&self) -> PathBuf {
            self.0.join("x.wasm")
        }

        fn write(&self, wasm: &[u8], manifest: Option<&Manifest>) {
            std::fs::write(self.wasm(), wasm).unwrap();
            if let Some(m) = manifest {
                std::fs::write(manifest_path(&self.wasm()), m.to_toml()).unwrap();
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const WASM: &[u8] = b"\0asm not really a component";

    fn signed(world: World, signer: &SigningKey) -> Manifest {
        let mut m = Manifest::new(plugin(world), "x.wasm", WASM);
        m.sign("acme", signer);
        m
    }

    fn trusting(k: &SigningKey) -> Trust {
        let mut t = Trust::default();
        t.add_key("acme-ops", &format_public_key(&k.verifying_key()))
            .unwrap();
        t
    }

    #[test]
    fn signed_message_is_domain_separated_canonical_json() {
        let m = Manifest::new(plugin(World::ProtocolParser), "x.wasm", b"abc");
        let msg = m.signed_message("acme", "ed25519:K");
        let text = String::from_utf8(msg).unwrap();
        assert_eq!(
            text,
            "sonde-plugin-manifest-v1\n{\"plugin\":{\"name\":\"resp\",\"version\":\"0.1.0\",\
             \"world\":\"sonde:plugin/protocol-parser@0.1.0\",\"protocols\":[\"redis\"],\
             \"ports\":[6379],\"capabilities\":[]},\"component\":{\"file\":\"x.wasm\",\
             \"sha256\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"},\
             \"publisher\":\"acme\",\"key\":\"ed25519:K\"}"
        );
    }

    #[test]
    fn manifest_round_trips_and_refuses_unknown_fields() {
        let m = signed(World::FaultRule, &key(1));
        let text = m.to_toml();
        assert_eq!(Manifest::from_toml(&text).unwrap(), m);
        assert!(m.check_signature().is_ok());
        let err = Manifest::from_toml(&text.replace("[plugin]\n", "[plugin]\nlicense = \"x\"\n"))
            .unwrap_err();
        assert!(err.contains("unknown field `license`"), "{err}");
        // Lists default to empty: a hand-written minimal manifest parses.
        let minimal = format!(
            "[plugin]\nname = \"a\"\nversion = \"1\"\nworld = \"{}\"\n[component]\nfile = \"a.wasm\"\nsha256 = \"{}\"\n",
            World::FaultRule.qualified(),
            sha256_hex(b"")
        );
        let m = Manifest::from_toml(&minimal).unwrap();
        assert!(m.plugin.capabilities.is_empty() && m.signature.is_none());
        assert!(
            Manifest::from_toml(&minimal.replace(&sha256_hex(b""), "abc"))
                .unwrap_err()
                .contains("64 hex digits")
        );
    }

    #[test]
    fn worlds_are_matched_by_semver() {
        assert_eq!(
            World::from_declared("sonde:plugin/protocol-parser@0.1.0"),
            Some(World::ProtocolParser)
        );
        assert_eq!(
            World::from_declared("sonde:plugin/fault-rule@0.1.7"),
            Some(World::FaultRule)
        );
        for bad in [
            "sonde:plugin/fault-rule@0.2.0",
            "sonde:plugin/fault-rule",
            "sonde:plugin/fault-rule@0.1.",
            "acme:plugin/fault-rule@0.1.0",
            "sonde:plugin/exporter@0.1.0",
        ] {
            assert_eq!(World::from_declared(bad), None, "{bad}");
        }
        assert_eq!(World::parse("parser"), Some(World::ProtocolParser));
    }

    #[test]
    fn keys_parse_and_bad_ones_are_refused() {
        let k = key(7).verifying_key();
        assert_eq!(parse_public_key(&format_public_key(&k)).unwrap(), k);
        assert!(parse_public_key("ssh-ed25519 AAAA").is_err());
        assert!(parse_public_key("ed25519:AAAA").is_err());
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = format!("ed25519:{}", B64.encode(identity));
        assert!(parse_public_key(&weak).unwrap_err().contains("weak"));
        let mut t = Trust::default();
        let err = t.add_key("ops", "ed25519:nope").unwrap_err().to_string();
        assert!(err.contains("\"ops\""), "{err}");
    }

    #[test]
    fn trust_comes_from_the_config() {
        let k = format_public_key(&key(3).verifying_key());
        // The `[plugins]` table as the daemon's configuration file has it.
        #[derive(serde::Deserialize)]
        struct Config {
            plugins: crate::PluginsConfig,
        }
        let cfg: Config = toml::from_str(&format!(
            "[plugins]\ngrant_clocks = true\nallow_unsigned_dirs = [\"/nonexistent/dev\"]\n\n\
             [[plugins.trusted_keys]]\nname = \"acme\"\nkey = \"{k}\"\n"
        ))
        .unwrap();
        let t = Trust::from_config(&cfg.plugins, Some(World::FaultRule)).unwrap();
        assert_eq!(t.trusted(&key(3).verifying_key()), Some("acme"));
        assert_eq!(t.trusted(&key(4).verifying_key()), None);
        assert!(t.allows_unsigned(Path::new("/nonexistent/dev")));
        assert!(!t.allows_unsigned(Path::new("/nonexistent")));
        assert_eq!(t.granted, ["clocks"]);
        // A key that is not one is an error naming its entry.
        let mut bad = cfg.plugins.clone();
        bad.trusted_keys[0].key = "ed25519:AAAA".into();
        let err = Trust::from_config(&bad, None).unwrap_err().to_string();
        assert!(
            err.contains("trusted_keys") && err.contains("\"acme\""),
            "{err}"
        );
        assert!(
            toml::from_str::<Config>("[[plugins.trusted_keys]]\nkey = \"x\"\nowner = \"y\"\n")
                .is_err()
        );
    }

    #[test]
    fn a_signed_component_verifies_and_every_change_is_refused() {
        let k = key(1);
        let d = Dir::new("signed");
        let trust = trusting(&k);
        d.write(WASM, Some(&signed(World::ProtocolParser, &k)));
        let v = verify(&d.wasm(), &trust).unwrap();
        assert_eq!(v.wasm, WASM);
        assert_eq!(v.signed_by.as_deref(), Some("acme-ops"));
        assert!(v.check_identity("resp", "0.1.0").is_ok());
        let err = v.check_identity("resp", "0.2.0").unwrap_err().to_string();
        assert!(
            err.contains("calls itself resp 0.2.0, its manifest says resp 0.1.0"),
            "{err}"
        );

        // One byte of the component changed: tampered, with both hashes.
        let mut tampered = WASM.to_vec();
        tampered[3] ^= 1;
        std::fs::write(d.wasm(), &tampered).unwrap();
        let err = verify(&d.wasm(), &trust).unwrap_err();
        assert!(matches!(err, VerifyError::Tampered { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "tampered: the component's sha256 is {}",
                sha256_hex(&tampered)
            )) && msg.contains(&sha256_hex(WASM))
                && msg.contains("x.wasm"),
            "{msg}"
        );

        // The manifest edited after signing.
        let mut m = signed(World::ProtocolParser, &k);
        m.plugin.version = "0.1.1".into();
        d.write(WASM, Some(&m));
        let err = verify(&d.wasm(), &trust).unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
        assert!(err.to_string().contains("signature invalid"), "{err}");

        // Signed by someone else: the message gives the key to trust.
        let other = key(2);
        d.write(WASM, Some(&signed(World::ProtocolParser, &other)));
        let err = verify(&d.wasm(), &trust).unwrap_err().to_string();
        let other_key = format_public_key(&other.verifying_key());
        assert!(
            err.contains(&format!("key = \"{other_key}\"")) && err.contains("not trusted"),
            "{err}"
        );

        // A fault rule where parsers are expected.
        d.write(WASM, Some(&signed(World::FaultRule, &k)));
        let parsers = Trust {
            world: Some(World::ProtocolParser),
            ..trust.clone()
        };
        let err = verify(&d.wasm(), &parsers).unwrap_err().to_string();
        assert!(
            err.contains("declares the world sonde:plugin/fault-rule@0.1.0")
                && err.contains("put it in rule_dirs"),
            "{err}"
        );

        // Capabilities: unknown ones refused, known ones only when granted.
        for (cap, granted, expect) in [
            ("network", true, Some("does not know")),
            ("clocks", false, Some("grant_clocks = true")),
            ("clocks", true, None),
        ] {
            let mut m = Manifest::new(plugin(World::ProtocolParser), "x.wasm", WASM);
            m.plugin.capabilities = vec![cap.into()];
            m.sign("acme", &k);
            d.write(WASM, Some(&m));
            let mut t = trust.clone();
            if granted {
                t.granted.push("clocks".into());
            }
            match (verify(&d.wasm(), &t), expect) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => assert!(e.to_string().contains(want), "{e}"),
                (r, _) => panic!("{cap} granted={granted}: {r:?}"),
            }
        }
    }

    #[test]
    fn unsigned_components_need_an_allowed_directory() {
        let k = key(1);
        let d = Dir::new("unsigned");
        d.write(WASM, None);
        let trust = trusting(&k);
        let err = verify(&d.wasm(), &trust).unwrap_err().to_string();
        assert!(
            err.contains("refused: unsigned (no manifest") && err.contains("allow_unsigned_dirs"),
            "{err}"
        );
        let mut allowed = trust.clone();
        allowed.allow_unsigned(&d.0);
        let v = verify(&d.wasm(), &allowed).unwrap();
        assert!(v.manifest.is_none() && v.signed_by.is_none());
        assert!(v.check_identity("anything", "1").is_ok());

        // An unsigned manifest: refused, unless allowed; then its sha256 still counts.
        let m = Manifest::new(plugin(World::FaultRule), "x.wasm", WASM);
        d.write(WASM, Some(&m));
        let err = verify(&d.wasm(), &trust).unwrap_err().to_string();
        assert!(err.contains("has no [signature]"), "{err}");
        assert!(verify(&d.wasm(), &allowed).is_ok());
        std::fs::write(d.wasm(), b"other bytes").unwrap();
        let err = verify(&d.wasm(), &allowed).unwrap_err().to_string();
        assert!(err.contains("tampered"), "{err}");

        // Allowed, an untrusted signature is as good as none, but a broken one is refused.
        d.write(WASM, Some(&signed(World::FaultRule, &key(9))));
        let v = verify(&d.wasm(), &allowed).unwrap();
        assert!(v.signed_by.is_none());
        assert!(
            v.provenance().contains("untrusted key"),
            "{}",
            v.provenance()
        );
        let mut m = signed(World::FaultRule, &key(9));
        m.plugin.name = "other".into();
        d.write(WASM, Some(&m));
        assert!(matches!(
            verify(&d.wasm(), &allowed),
            Err(VerifyError::BadSignature { .. })
        ));
    }
}
