//! Publishing plugins: publisher keys (`sonde plugin keygen`), signed packages (`sonde plugin
//! package`: the component, its signed manifest, optionally a tarball) and the operator's check
//! (`sonde plugin verify`). The manifest format and what is signed: [`super::manifest`].
//!
//! Key files: the secret key is one line, base64 of its 32 bytes (mode 0600); the public key
//! (`<secret>.pub`) is one line, `ed25519:<base64 of 32 bytes>`, what `[[plugins.trusted_keys]]`
//! takes. Keys come from the kernel's `getrandom`.
//!
//! The tarball `<name>-<version>.tar` (ustar) holds `<name>-<version>.wasm` and
//! `<name>-<version>.toml` at its root, mode 0644, owner 0, mtime `SOURCE_DATE_EPOCH` or 0: the
//! same inputs make the same bytes (ed25519 signatures are deterministic).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;

use super::manifest::{
    self, CAPABILITIES, KEY_PREFIX, Manifest, PluginSection, Trust, World, format_public_key,
};
use super::{EngineOptions, Limits, PluginEngine};
use crate::PluginsConfig;

/// 32 bytes from the kernel's CSPRNG (blocks only until it is seeded, at boot).
fn random_32() -> Result<[u8; 32]> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("getrandom");
        }
        filled += n as usize;
    }
    Ok(buf)
}

/// A fresh signing key.
pub fn generate_key() -> Result<SigningKey> {
    let mut seed = random_32()?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// Where the public key of the secret key file `secret` goes: `<secret>.pub`.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut p = secret.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// What `keygen` wrote.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub secret: PathBuf,
    pub public: PathBuf,
    /// `ed25519:<base64>`.
    pub public_key: String,
}

/// Write a new key pair: the secret key to `out` (mode 0600) and the public key to
/// `<out>.pub`. Refuses to overwrite either.
pub fn keygen(out: &Path) -> Result<KeyFiles> {
    let public = public_key_path(out);
    for p in [out, public.as_path()] {
        if p.symlink_metadata().is_ok() {
            bail!("{} exists: not overwriting a key", p.display());
        }
    }
    let key = generate_key()?;
    let public_key = format_public_key(&key.verifying_key());
    let write = |path: &Path, mode: u32, text: &str| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))
    };
    write(out, 0o600, &format!("{}\n", B64.encode(key.as_bytes())))?;
    write(&public, 0o644, &format!("{public_key}\n"))?;
    Ok(KeyFiles {
        secret: out.to_path_buf(),
        public,
        public_key,
    })
}

/// Read a secret key file written by [`keygen`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret key {}", path.display()))?;
    let text = text.trim();
    if text.starts_with(KEY_PREFIX) {
        bail!(
            "{} is a public key; --key takes the secret key file `sonde plugin keygen` wrote \
             (the one without .pub)",
            path.display()
        );
    }
    let bytes: [u8; 32] = B64
        .decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!(
                "{}: not a secret key (base64 of 32 bytes, as `sonde plugin keygen` writes)",
                path.display()
            )
        })?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            key = %path.display(),
            "the secret key is readable by others: chmod 600 it"
        );
    }
    Ok(SigningKey::from_bytes(&bytes))
}

/// What a component says it is, from its own `info` in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub world: World,
    pub name: String,
    pub version: String,
    /// A parser's protocols; empty for a rule.
    pub protocols: Vec<String>,
}

/// Load `wasm` in the sandbox (default limits, no cache) as `world`, or as either world when
/// `None`, and ask it who it is.
pub fn identify(wasm: &[u8], world: Option<World>) -> Result<Identity> {
    let engine = || PluginEngine::with_options(&EngineOptions::default());
    let as_parser = || -> Result<Identity> {
        let p = super::parsers::WasmParser::load(
            Arc::new(engine()?),
            Limits::default(),
            wasm,
            "sonde plugin",
        )?;
        Ok(Identity {
            world: World::ProtocolParser,
            name: p.name.clone(),
            version: p.version.clone(),
            protocols: p.protocols.clone(),
        })
    };
    let as_rule = || -> Result<Identity> {
        let mut e = super::fault_rules::WasmRuleEngine::new(engine()?, Limits::default());
        e.add(wasm, "sonde plugin")?;
        let p = &e.plugins[0];
        Ok(Identity {
            world: World::FaultRule,
            name: p.name.clone(),
            version: p.version.clone(),
            protocols: Vec::new(),
        })
    };
    match world {
        Some(World::ProtocolParser) => as_parser(),
        Some(World::FaultRule) => as_rule(),
        None => as_parser().or_else(|p| {
            as_rule().map_err(|r| {
                anyhow::anyhow!(
                    "neither a protocol-parser nor a fault-rule component: as a parser: {p:#}; \
                     as a rule: {r:#}"
                )
            })
        }),
    }
}

/// `cargo build --release --target wasm32-wasip2` the crate in `dir`; the component it made.
pub fn build_crate(dir: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = dir.join("Cargo.toml");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(&manifest)
        .status()
        .context("running cargo")?;
    anyhow::ensure!(status.success(), "cargo build of {} failed", dir.display());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata of {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let want = std::fs::canonicalize(&manifest).unwrap_or(manifest.clone());
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .is_some_and(|m| std::fs::canonicalize(m).is_ok_and(|m| m == want))
        })
        .with_context(|| format!("cargo metadata lists no package for {}", manifest.display()))?;
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .with_context(|| {
            format!(
                "{}: no cdylib target (a plugin crate has crate-type = [\"cdylib\", …])",
                manifest.display()
            )
        })?;
    let target_dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let wasm = Path::new(target_dir)
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", lib.replace('-', "_")));
    anyhow::ensure!(wasm.is_file(), "the build made no {}", wasm.display());
    Ok(wasm)
}

/// `sonde plugin package`.
#[derive(Debug, Clone, Default)]
pub struct PackageOptions {
    /// The component; or, with `build`, made by building that crate first.
    pub wasm: Option<PathBuf>,
    pub build: Option<PathBuf>,
    /// The publisher's secret key file.
    pub key: PathBuf,
    pub publisher: String,
    /// Directory to write `<name>-<version>.{wasm,toml}` (and `.tar`) into.
    pub out: PathBuf,
    /// Defaults from the component's own `info`; when given, they must agree with it.
    pub name: Option<String>,
    pub version: Option<String>,
    pub world: Option<World>,
    /// Default: the parser's own `info` protocols.
    pub protocols: Vec<String>,
    pub ports: Vec<u16>,
    pub capabilities: Vec<String>,
    /// Also write `<name>-<version>.tar`.
    pub tar: bool,
}

/// What `package` wrote.
#[derive(Debug, Clone)]
pub struct Packaged {
    pub wasm: PathBuf,
    pub manifest_path: PathBuf,
    pub tar: Option<PathBuf>,
    pub manifest: Manifest,
}

/// A name or version that is safe as part of a file name.
fn check_file_part(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    anyhow::ensure!(
        ok,
        "{what} {s:?} is not usable in a file name (ASCII letters, digits, `._+-`, at most 64)"
    );
    Ok(())
}

/// Build (optionally), identify, sign and write a component's package.
pub fn package(opts: &PackageOptions) -> Result<Packaged> {
    let key = read_signing_key(&opts.key)?;
    anyhow::ensure!(!opts.publisher.trim().is_empty(), "--publisher is empty");
    for cap in &opts.capabilities {
        anyhow::ensure!(
            CAPABILITIES.iter().any(|(c, _)| c == cap),
            "unknown capability {cap:?} (known: {})",
            CAPABILITIES
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let src = match (&opts.wasm, &opts.build) {
        (Some(w), None) => w.clone(),
        (None, Some(dir)) => build_crate(dir)?,
        _ => bail!("give either --wasm FILE or --build CRATE_DIR"),
    };
    let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    let id = identify(&bytes, opts.world)
        .with_context(|| format!("{}: loading the component to read its info", src.display()))?;
    for (what, given, own) in [
        ("--name", &opts.name, &id.name),
        ("--version", &opts.version, &id.version),
    ] {
        if let Some(given) = given
            && given != own
        {
            bail!(
                "{what} {given:?}, but the component's own info says {own:?} (the daemon refuses \
                 a manifest that disagrees with its component)"
            );
        }
    }
    check_file_part("name", &id.name)?;
    check_file_part("version", &id.version)?;
    let stem = format!("{}-{}", id.name, id.version);
    let file = format!("{stem}.wasm");
    let plugin = PluginSection {
        name: id.name.clone(),
        version: id.version.clone(),
        world: id.world.qualified(),
        protocols: if opts.protocols.is_empty() {
            id.protocols.clone()
        } else {
            opts.protocols.clone()
        },
        ports: opts.ports.clone(),
        capabilities: opts.capabilities.clone(),
    };
    let mut m = Manifest::new(plugin, &file, &bytes);
    m.sign(&opts.publisher, &key);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let wasm_out = opts.out.join(&file);
    let manifest_out = manifest::manifest_path(&wasm_out);
    let toml = m.to_toml();
    std::fs::write(&wasm_out, &bytes).with_context(|| format!("writing {}", wasm_out.display()))?;
    std::fs::write(&manifest_out, &toml)
        .with_context(|| format!("writing {}", manifest_out.display()))?;
    // What an operator trusting this key will see.
    let mut trust = Trust::default();
    trust.world = Some(id.world);
    trust.granted = opts.capabilities.clone();
    trust.add_key(&opts.publisher, &format_public_key(&key.verifying_key()))?;
    manifest::verify(&wasm_out, &trust).context("checking the package just written")?;
    let tar = if opts.tar {
        let path = opts.out.join(format!("{stem}.tar"));
        write_tar(
            &path,
            &[
                (file.as_str(), bytes.as_slice()),
                (&format!("{stem}.toml"), toml.as_bytes()),
            ],
        )?;
        Some(path)
    } else {
        None
    };
    Ok(Packaged {
        wasm: wasm_out,
        manifest_path: manifest_out,
        tar,
        manifest: m,
    })
}

/// A ustar archive of regular files at its root.
pub fn write_tar(path: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let mtime: u64 = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    for (name, data) in files {
        anyhow::ensure!(
            name.len() < 100 && !name.contains('/'),
            "{name:?}: too long for a tar entry"
        );
        let mut h = [0u8; 512];
        let field = |h: &mut [u8; 512], at: usize, len: usize, value: &[u8]| {
            h[at..at + value.len().min(len)].copy_from_slice(&value[..value.len().min(len)]);
        };
        let octal = |v: u64, len: usize| format!("{v:0width$o}\0", width = len - 1).into_bytes();
        field(&mut h, 0, 100, name.as_bytes());
        field(&mut h, 100, 8, &octal(0o644, 8));
        field(&mut h, 108, 8, &octal(0, 8));
        field(&mut h, 116, 8, &octal(0, 8));
        field(&mut h, 124, 12, &octal(data.len() as u64, 12));
        field(&mut h, 136, 12, &octal(mtime, 12));
        h[148..156].fill(b' ');
        h[156] = b'0';
        field(&mut h, 257, 6, b"ustar\0");
        field(&mut h, 263, 2, b"00");
        field(&mut h, 265, 32, b"root");
        field(&mut h, 297, 32, b"root");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        field(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// One component as `sonde plugin verify` judged it.
#[derive(Debug)]
pub struct Checked {
    pub path: PathBuf,
    pub outcome: Result<CheckedOk, String>,
}

#[derive(Debug)]
pub struct CheckedOk {
    pub identity: Identity,
    /// Who vouches for it ([`manifest::Verified::provenance`]).
    pub provenance: String,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(ok) => write!(
                f,
                "OK       {}: {} {} ({}), {}",
                self.path.display(),
                ok.identity.name,
                ok.identity.version,
                ok.identity.world.qualified(),
                ok.provenance
            ),
            Err(e) => write!(f, "REFUSED  {e}"),
        }
    }
}

/// The world the daemon expects of components in `dir`, if it is one of its plugin dirs.
fn configured_world(cfg: &PluginsConfig, dir: &Path) -> Option<World> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let dir = canon(dir);
    if cfg.parser_dirs.iter().any(|d| canon(d) == dir) {
        Some(World::ProtocolParser)
    } else if cfg.rule_dirs.iter().any(|d| canon(d) == dir) {
        Some(World::FaultRule)
    } else {
        None
    }
}

/// Check components (files, or every `*.wasm` of directories) as the daemon would load them:
/// [`manifest::verify`] under `[plugins]`'s trust plus `extra_keys` (`ed25519:<base64>`), then
/// a load in the sandbox and the identity check. A component in one of `cfg`'s `parser_dirs`
/// or `rule_dirs` must be of that world.
pub fn verify_paths(
    paths: &[PathBuf],
    cfg: &PluginsConfig,
    extra_keys: &[String],
) -> Result<Vec<Checked>> {
    let mut trust = Trust::from_config(cfg, None)?;
    for k in extra_keys {
        trust
            .add_key("command line", k)
            .map_err(|e| anyhow::anyhow!("--trusted-key {k:?}: {e}"))?;
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(super::wasm_files(std::slice::from_ref(p), "plugin")?);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files
        .into_iter()
        .map(|path| {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let mut trust = trust.clone();
            trust.world = configured_world(cfg, &dir);
            let outcome = check_one(&path, &trust);
            Checked { path, outcome }
        })
        .collect())
}

fn check_one(path: &Path, trust: &Trust) -> Result<CheckedOk, String> {
    let v = manifest::verify(path, trust).map_err(|e| e.to_string())?;
    let identity = identify(&v.wasm, v.world().or(trust.world))
        .map_err(|e| format!("{}: refused: does not load: {e:#}", path.display()))?;
    v.check_identity(&identity.name, &identity.version)
        .map_err(|e| e.to_string())?;
    Ok(CheckedOk {
        identity,
        provenance: v.provenance(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_secret_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("sonde-keygen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acme.key");
        let k = keygen(&path).unwrap();
        assert_eq!(k.public, dir.join("acme.key.pub"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let secret = read_signing_key(&path).unwrap();
        assert_eq!(format_public_key(&secret.verifying_key()), k.public_key);
        assert_eq!(
            std::fs::read_to_string(&k.public).unwrap().trim(),
            k.public_key
        );
        let err = keygen(&path).unwrap_err().to_string();
        assert!(err.contains("not overwriting"), "{err}");
        let err = read_signing_key(&k.public).unwrap_err().to_string();
        assert!(err.contains("is a public key"), "{err}");
        // Two keys are different keys.
        let other = keygen(&dir.join("other.key")).unwrap();
        assert_ne!(other.public_key, k.public_key);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tar_is_ustar_with_files_at_the_root() {
        let dir = std::env::temp_dir().join(format!("sonde-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a-1.tar");
        write_tar(&path, &[("a-1.wasm", b"\0asm"), ("a-1.toml", b"x = 1\n")]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 512 * 4 + 1024);
        assert_eq!(&bytes[257..263], b"ustar\0");
        assert_eq!(&bytes[..8], b"a-1.wasm");
        // The checksum is the sum of the header with its own field as spaces.
        let mut h = bytes[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].fill(b' ');
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&bytes[512..516], b"\0asm");
        assert_eq!(&bytes[1024..1032], b"a-1.toml");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
