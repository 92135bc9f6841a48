//! Start-up of the real `sonde run`: one daemon per node (a second one stops before it
//! attaches anything, and leaves the first one's admin socket alone); bad values, a busy port
//! and a failing start fail at once with one line, leaving no programs, socket or lock; plugin
//! files that are FIFOs or too big are refused quickly and the daemon lives on. Root only.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sonde_tests::httplab::{Scratch, http_get};
use sonde_tests::{bpftool_progs, require_root, sonde_bin_path, target_dir, wait_until};

/// These tests count attached programs: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sonde_prog_ids() -> BTreeSet<u32> {
    bpftool_progs()
        .expect("bpftool")
        .into_iter()
        .filter(|p| p.name.as_deref().is_some_and(|n| n.starts_with("sonde_")))
        .map(|p| p.id)
        .collect()
}

/// A config in `dir`: metrics on `port`, the admin socket `dir/admin.sock`, no Kubernetes,
/// plus `more` (whole sections).
fn config(dir: &Path, port: u16, plugins: &str, more: &str) -> PathBuf {
    let text = format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[plugins]\ncache_dir = \"{}\"\nallow_unsigned_dirs = [\"{}\"]\n{plugins}\n\n[admin]\nsocket = \"{}\"\n\n[kubernetes]\nmode = \"off\"\n\n{more}\n",
        target_dir().join("plugin-cache").display(),
        dir.display(),
        dir.join("admin.sock").display(),
    );
    let path = dir.join(format!("sonde-{port}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `sonde --config <config> run` to its end, with how long it took.
fn run_to_end(config: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(sonde_bin_path())
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdout(Stdio::null())
        .output()
        .expect("spawn sonde");
    (out, started.elapsed())
}

/// A `sonde run` child, killed on drop.
struct Running(Child);

impl Running {
    fn start(config: &Path, port: u16) -> Running {
        let child = Command::new(sonde_bin_path())
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sonde");
        let mut d = Running(child);
        wait_until(
            Duration::from_secs(90),
            "sonde run to serve /metrics",
            || {
                assert!(
                    d.0.try_wait().unwrap().is_none(),
                    "sonde run exited during start-up"
                );
                http_get(port, "/metrics").ok()
            },
        )
        .unwrap();
        d
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own, not yet reaped child: a clean stop removes its files.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sonde plugin <args…> --socket <socket>`, with how long it took.
fn plugin(socket: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(sonde_bin_path())
        .arg("plugin")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("spawn sonde plugin");
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines of stderr that are not the log's (the log lines start with a timestamp).
fn error_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("sonde:") || l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_second_daemon_stops_before_attaching_and_leaves_the_first_alone() {
    require_root();
    let _g = serial();
    let dir = Scratch::new("startup-twice");
    let socket = dir.path().join("admin.sock");
    // A socket file nobody listens on (a daemon that died): proven stale, replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let port = free_port();
    let before = sonde_prog_ids();
    let mut first = Running::start(&config(dir.path(), port, "", ""), port);
    let with_first = sonde_prog_ids();
    let ours = with_first.difference(&before).count();
    assert!(ours >= 10, "the first daemon's programs: {ours}");
    let lock = std::fs::read_to_string(dir.path().join("sonde.lock")).unwrap();
    assert_eq!(lock.trim(), first.0.id().to_string());
    let (out, _) = plugin(&socket, &["list"]);
    assert!(out.status.success(), "plugin list: {}", stderr(&out));

    // The second one: its own metrics port, the same admin socket (and so the same lock).
    let port2 = free_port();
    let (out, took) = run_to_end(&config(dir.path(), port2, "", ""));
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        error_lines(&out),
        [format!("sonde: already running (pid {})", first.0.id())],
        "stderr: {}",
        stderr(&out)
    );
    // No second set of programs (other daemons on this machine may come and go: only new
    // ids count), nothing served on its port.
    let appeared: Vec<u32> = sonde_prog_ids().difference(&with_first).copied().collect();
    assert!(
        appeared.is_empty(),
        "programs attached by the second daemon: {appeared:?}"
    );
    assert!(http_get(port2, "/metrics").is_err());
    // The first one's socket still answers, and its lock is still its own.
    assert!(first.alive());
    let (out, _) = plugin(&socket, &["list"]);
    assert!(out.status.success(), "plugin list: {}", stderr(&out));
    let lock = std::fs::read_to_string(dir.path().join("sonde.lock")).unwrap();
    assert_eq!(lock.trim(), first.0.id().to_string());
    // A live admin socket without the lock (another build, another lock path) is not
    // removed either: the lock next to it is free, the socket answers.
    let other = Scratch::new("startup-other");
    let link = other.path().join("admin.sock");
    std::os::unix::fs::symlink(&socket, &link).unwrap();
    let cfg = config(other.path(), free_port(), "", "");
    let (out, _) = run_to_end(&cfg);
    assert!(!out.status.success());
    assert_eq!(
        error_lines(&out),
        [format!("sonde: already running (pid {})", first.0.id())],
        "stderr: {}",
        stderr(&out)
    );
    assert!(socket.exists() && link.exists());
    assert!(!other.path().join("sonde.lock").exists());
    assert!(plugin(&socket, &["list"]).0.status.success());

    // A clean stop removes the socket and the lock.
    drop(first);
    assert!(!socket.exists(), "admin socket left after a clean stop");
    assert!(!dir.path().join("sonde.lock").exists());
}

/// Runs `sonde run` with `config`, expects it to fail within ~1 s with one line containing
/// `says`, and nothing left behind: no programs, no admin socket, no lock.
fn fails_at_once(what: &str, dir: &Path, config: &Path, says: &str) {
    let before = sonde_prog_ids();
    let (out, took) = run_to_end(config);
    assert!(!out.status.success(), "{what}: sonde run succeeded");
    assert!(
        took < Duration::from_millis(1500),
        "{what}: failed only after {took:?}"
    );
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{what}: stderr: {}", stderr(&out));
    assert!(
        lines[0].contains(says),
        "{what}: {:?} does not name {says:?}",
        lines[0]
    );
    let new: Vec<u32> = sonde_prog_ids().difference(&before).copied().collect();
    assert!(new.is_empty(), "{what}: programs left attached: {new:?}");
    assert!(
        !dir.join("admin.sock").exists(),
        "{what}: admin socket left"
    );
    assert!(!dir.join("sonde.lock").exists(), "{what}: lock left");
}

#[test]
fn bad_values_and_a_busy_port_fail_at_once_and_leave_nothing() {
    require_root();
    let _g = serial();
    let dir = Scratch::new("startup-fail");
    let d = dir.path();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    fails_at_once(
        "busy port",
        d,
        &config(d, port, "", ""),
        &format!("127.0.0.1:{port}"),
    );
    drop(busy);
    let unroutable = config(d, free_port(), "", "");
    let text = std::fs::read_to_string(&unroutable)
        .unwrap()
        .replace("127.0.0.1:", "192.0.2.1:");
    std::fs::write(&unroutable, text).unwrap();
    fails_at_once("unroutable address", d, &unroutable, "192.0.2.1");
    for (section, key) in [
        ("[live]\nstep_ms = 0", "live.step_ms"),
        ("[capture]\ncapture_bytes = 0", "capture.capture_bytes"),
        ("[capture]\nring_bytes = 2147483648", "capture.ring_bytes"),
        ("[streams]\nmax_connections = 0", "streams.max_connections"),
        ("[network]\nmax_connections = 0", "network.max_connections"),
        ("[logs]\nsimilarity = 7.5", "logs.similarity"),
    ] {
        fails_at_once(key, d, &config(d, free_port(), "", section), key);
    }
    fails_at_once(
        "plugins.parser_queue_jobs",
        d,
        &config(d, free_port(), "parser_queue_jobs = 0", ""),
        "plugins.parser_queue_jobs",
    );
    // A failure after the listeners are bound (a parser directory that is not there): the
    // socket file and the lock go too.
    fails_at_once(
        "missing parser directory",
        d,
        &config(d, free_port(), "parser_dirs = [\"/nonexistent/sonde\"]", ""),
        "/nonexistent/sonde",
    );
}

#[test]
fn plugin_files_that_are_fifos_or_too_big_are_refused_quickly() {
    require_root();
    let _g = serial();
    let dir = Scratch::new("startup-plugin-files");
    let socket = dir.path().join("admin.sock");
    let port = free_port();
    let mut d = Running::start(
        &config(dir.path(), port, "max_component_bytes = 65536", ""),
        port,
    );
    let fifo = dir.path().join("fifo.wasm");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; 100_000]).unwrap();
    for (file, says) in [
        (&fifo, "a FIFO, not a regular file"),
        (&big, "100000 bytes, above the limit of 65536"),
        (&dir.path().to_path_buf(), "a directory"),
    ] {
        let (out, took) = plugin(&socket, &["load", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{}: loaded", file.display());
        assert!(
            took < Duration::from_secs(2),
            "{}: {took:?}",
            file.display()
        );
        assert!(stderr(&out).contains(says), "stderr: {}", stderr(&out));
    }
    assert!(d.alive());
    let (out, _) = plugin(&socket, &["list"]);
    assert!(out.status.success(), "plugin list: {}", stderr(&out));
    assert!(http_get(port, "/metrics").is_ok());
}
