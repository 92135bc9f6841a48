//! One daemon per node: `sonde run` takes an exclusive lock (flock(2) on `sonde.lock`, next to
//! the admin socket) before it touches anything else, and a second one stops there with
//! "already running (pid N)". The lock goes with the process however it ends (the kernel
//! releases a flock when its file closes); a clean stop or a failed start also removes the file.
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};

/// Where the lock lives when there is no admin socket to put it next to.
pub const DEFAULT_LOCK: &str = "/run/sonde/sonde.lock";

/// Another daemon holds the lock or answers on the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyRunning {
    /// Its pid, when it could be learnt.
    pub pid: Option<u32>,
}

impl std::fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "already running (pid {pid})"),
            None => write!(f, "already running (pid unknown)"),
        }
    }
}

impl std::error::Error for AlreadyRunning {}

/// The lock file for a daemon whose admin socket is `socket` (`None` or empty: none).
pub fn lock_path(socket: Option<&Path>) -> PathBuf {
    match socket
        .filter(|s| !s.as_os_str().is_empty())
        .and_then(Path::parent)
    {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("sonde.lock"),
        _ => PathBuf::from(DEFAULT_LOCK),
    }
}

/// The held lock; dropping it removes the file (still holding it), then releases it.
#[derive(Debug)]
pub struct InstanceLock {
    /// Holds the flock: it goes when this closes.
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Take the lock at `path` (creating its directory, mode 0700, and the file, 0600) and
    /// write our pid into it; [`AlreadyRunning`] when another process holds it.
    pub fn acquire(path: &Path) -> Result<InstanceLock> {
        use std::os::unix::fs::DirBuilderExt as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        // A holder that stops removes the file before it lets the lock go: a lock taken on a
        // file no longer at `path` is worth nothing, so open again.
        for _ in 0..100 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .with_context(|| format!("opening the instance lock {}", path.display()))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(AlreadyRunning {
                        pid: holder_pid(&mut file),
                    }
                    .into());
                }
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
            let ours = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {}
                _ => continue,
            }
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(InstanceLock {
                _file: file,
                path: path.to_path_buf(),
            });
        }
        anyhow::bail!("{}: the lock file keeps changing", path.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Removed while held, so nobody locks the file we are about to leave (see `acquire`).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid written in a held lock file (the holder writes it right after locking: wait a
/// little for it).
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if file.rewind().is_ok()
            && file.read_to_string(&mut text).is_ok()
            && let Ok(pid) = text.trim().parse()
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_next_to_the_admin_socket() {
        assert_eq!(
            lock_path(Some(Path::new("/run/sonde/admin.sock"))),
            PathBuf::from("/run/sonde/sonde.lock")
        );
        assert_eq!(
            lock_path(Some(Path::new("/tmp/x/a.sock"))),
            PathBuf::from("/tmp/x/sonde.lock")
        );
        assert_eq!(lock_path(None), PathBuf::from(DEFAULT_LOCK));
        assert_eq!(lock_path(Some(Path::new(""))), PathBuf::from(DEFAULT_LOCK));
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_file_goes_on_drop() {
        let dir = std::env::temp_dir().join(format!("sonde-lock-{}", std::process::id()));
        let path = dir.join("sonde.lock");
        let first = InstanceLock::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock locks belong to open files: a second open in this process is refused too.
        let e = InstanceLock::acquire(&path).unwrap_err();
        let running = e.downcast_ref::<AlreadyRunning>().expect("AlreadyRunning");
        assert_eq!(running.pid, Some(std::process::id()));
        assert_eq!(
            e.to_string(),
            format!("already running (pid {})", std::process::id())
        );
        drop(first);
        assert!(!path.exists());
        let again = InstanceLock::acquire(&path).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
