//! Compiled components on disk.
//!
//! `Component::deserialize` runs its input as native code, so only files this daemon wrote are
//! read back: the file name is the sha256 of the wasm plus the engine's
//! `precompile_compatibility_hash`, the directory must be owned by root and not writable by
//! others, and each file starts with the same key so a renamed or corrupted entry is recompiled
//! instead of loaded.

use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Compiled now (no cache, a miss, or a bad entry).
    Compiled,
    /// Loaded from our own precompiled artifact.
    Hit,
}

#[derive(Debug, Default)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries that failed the key check or deserialization and were recompiled.
    pub rejected: AtomicU64,
}

fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let engine_hash = h.finish();
    let digest = Sha256::digest(wasm);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{engine_hash:016x}")
}

fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// The directory must be root's (or ours) and writable only by its owner.
fn check_dir(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).with_context(|| format!("plugin cache {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid && meta.uid() != 0 {
        anyhow::bail!(
            "plugin cache {} is owned by uid {}, not by root or us",
            dir.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        anyhow::bail!(
            "plugin cache {} is writable by group or others",
            dir.display()
        );
    }
    Ok(())
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            ..Default::default()
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The cached artifact's path for this wasm (whether or not it exists).
    pub fn entry_path(&self, engine: &Engine, wasm: &[u8]) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.cwasm", key(engine, wasm))))
    }

    /// Compile `wasm`, or load our own precompiled artifact of exactly these bytes.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Ok((
                Component::new(engine, wasm)
                    .map_err(wasm_err)
                    .context("compiling component")?,
                CacheOutcome::Compiled,
            ));
        };
        let k = key(engine, wasm);
        let path = dir.join(format!("{k}.cwasm"));
        if let Ok(bytes) = fs::read(&path) {
            match bytes
                .strip_prefix(k.as_bytes())
                .filter(|_| check_dir(dir).is_ok())
            {
                Some(artifact) => {
                    // SAFETY: the file is in a directory only root (or we) can write, is named by
                    // the hash of exactly these wasm bytes and this engine, and starts with the
                    // same key: it is an artifact this code wrote with `precompile_component`.
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(c) => {
                            self.hits.fetch_add(1, Ordering::Relaxed);
                            return Ok((c, CacheOutcome::Hit));
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "bad plugin cache entry; recompiling")
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "plugin cache entry fails its key check; recompiling")
                }
            }
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let artifact = engine
            .precompile_component(wasm)
            .map_err(wasm_err)
            .context("compiling component")?;
        if let Err(e) = self.store(dir, &k, &artifact) {
            tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "cannot write the plugin cache; going on without it");
        }
        // SAFETY: `artifact` was produced by this engine a moment ago.
        let component = unsafe { Component::deserialize(engine, &artifact) }.map_err(wasm_err)?;
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(&self, dir: &Path, k: &str, artifact: &[u8]) -> Result<()> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        check_dir(dir)?;
        let tmp = dir.join(format!(".{k}.{}.tmp", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(&tmp)?;
        f.write_all(k.as_bytes())?;
        f.write_all(artifact)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(format!("{k}.cwasm")))?;
        Ok(())
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}
