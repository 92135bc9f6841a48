//! The `sonde` binary as a user runs it: `sonde trace --json` shows connections and data;
//! `sonde run` detaches every program when stopped or killed; a flooded ring buffer counts
//! its losses and the daemon lives on. These tests run the real binary as a child process.
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result};
use sonde_tests::{Peer, bpftool_progs, require_root, sonde_bin_path, wait_until};

const T: Duration = Duration::from_secs(60);

/// The tests of this binary each start their own daemon and one of them counts attached
/// programs: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A `sonde` child, killed on drop.
struct Daemon(Child);

impl Daemon {
    fn spawn(args: &[&str], stdout: Stdio) -> Daemon {
        require_root();
        let child = Command::new(sonde_bin_path())
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sonde");
        Daemon(child)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, sig) }, 0);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        wait_until(T, "sonde to exit", || self.0.try_wait().ok().flatten()).unwrap()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ids of loaded BPF programs whose names say they are Sonde's.
fn sonde_prog_ids() -> BTreeSet<u32> {
    bpftool_progs()
        .expect("bpftool")
        .into_iter()
        .filter(|p| p.name.as_deref().is_some_and(|n| n.starts_with("sonde_")))
        .map(|p| p.id)
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> Result<String> {
    sonde_tests::httplab::http_get(port, "/metrics")
}

/// Sum of a counter's samples whose label set contains `filter`.
fn metric_sum(text: &str, name: &str, filter: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn run_daemon(extra: &[&str]) -> (Daemon, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["run", "--metrics-listen", &listen];
    args.extend_from_slice(extra);
    let mut d = Daemon::spawn(&args, Stdio::null());
    wait_until(T, "sonde run to serve /metrics", || {
        assert!(d.alive(), "sonde run exited during start-up");
        scrape(port).ok()
    })
    .unwrap();
    (d, port)
}

#[test]
fn stopping_or_killing_the_daemon_detaches_every_program() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (how, sig) in [("SIGINT", libc::SIGINT), ("SIGKILL", libc::SIGKILL)] {
        let before = sonde_prog_ids();
        let (mut d, _) = run_daemon(&[]);
        let ours: BTreeSet<u32> = sonde_prog_ids().difference(&before).copied().collect();
        assert!(
            ours.len() >= 15,
            "{how}: expected the daemon's programs in bpftool, found {ours:?}"
        );
        d.signal(sig);
        let status = d.wait_exit();
        if sig == libc::SIGINT {
            assert!(status.success(), "clean stop on SIGINT: {status}");
        }
        // Program teardown after the last fd closes is asynchronous in the kernel: poll.
        wait_until(T, "the daemon's programs to disappear", || {
            let left: Vec<u32> = sonde_prog_ids().intersection(&ours).copied().collect();
            left.is_empty().then_some(())
        })
        .with_context(|| format!("after {how}"))
        .unwrap();
    }
}

#[test]
fn flooded_ring_buffer_counts_lost_events_and_the_daemon_lives_on() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A 64 KiB ring against 16 KiB events from two writers: it must overflow.
    let (mut d, port) = run_daemon(&["--ring-bytes", "65536", "--capture-bytes", "16384"]);
    let mut sink = Peer::spawn(&["sink", "--listen", "127.0.0.1:0"]).unwrap();
    let addr = sink.listening_addr(T).unwrap().to_string();
    let mut flood = Peer::spawn(&[
        "flood",
        "--connect",
        &addr,
        "--threads",
        "2",
        "--seconds",
        "2",
        "--size",
        "16384",
    ])
    .unwrap();
    flood.finish(T).unwrap();
    sink.terminate().unwrap();
    sink.finish(T).unwrap();

    let text = wait_until(T, "lost events in /metrics", || {
        let t = scrape(port).ok()?;
        (metric_sum(&t, "sonde_capture_events_lost_total", "kind=\"data\"") > 0).then_some(t)
    })
    .unwrap();
    assert!(
        metric_sum(&text, "sonde_capture_events_total", "kind=\"data\"") > 0,
        "some events got through"
    );
    assert!(d.alive(), "daemon died under the flood");
    // And it still works afterwards: another scrape, and a clean stop.
    scrape(port).unwrap();
    d.signal(libc::SIGINT);
    assert!(d.wait_exit().success());
}

#[test]
fn trace_json_shows_connections_and_data_of_a_port() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = Peer::spawn(&["sink", "--listen", "127.0.0.1:0"]).unwrap();
    let addr = server.listening_addr(T).unwrap();
    let port = addr.port().to_string();
    let mut trace = Daemon::spawn(
        &["trace", "--json", "--port", &port, "--payload-bytes", "16"],
        Stdio::piped(),
    );
    let stdout = trace.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    // The trace attaches asynchronously: run exchanges until one shows up whole.
    let mut lines = Vec::new();
    let mut clients = Vec::new();
    // Paced, so the clients outlast the attach (a few seconds in a debug build).
    let mut last_client = std::time::Instant::now() - Duration::from_secs(1);
    let client_pid = wait_until(T, "trace lines for an exchange", || {
        lines.extend(rx.try_iter());
        let complete = |pid: &u32| {
            let of = |ev: &str| {
                lines
                    .iter()
                    .filter(|l| l["event"] == ev && l["task"]["tgid"] == *pid)
                    .count()
            };
            of("data") >= 2 && of("close") >= 1
        };
        if let Some(pid) = clients.iter().find(|p| complete(p)) {
            return Some(*pid);
        }
        if clients.len() < 200 && last_client.elapsed() >= Duration::from_millis(200) {
            last_client = std::time::Instant::now();
            let mut c = Peer::spawn(&[
                "tcp-client",
                "--connect",
                &addr.to_string(),
                "--send-mode",
                "write",
                "--sizes",
                "10,64",
            ])
            .ok()?;
            c.finish(T).ok()?;
            clients.push(c.pid());
        }
        None
    })
    .unwrap();
    server.terminate().unwrap();
    server.finish(T).unwrap();
    let first = lines
        .iter()
        .find(|l| {
            l["event"] == "data" && l["task"]["tgid"] == client_pid && l["direction"] == "egress"
        })
        .unwrap();
    assert_eq!(first["peer"], addr.to_string());
    assert_eq!(first["role"], "client");
    assert_eq!(first["len"], 10);
    assert_eq!(
        first["payload_hex"].as_str().unwrap(),
        sonde_tests::pattern(0, 10)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let open = lines
        .iter()
        .find(|l| l["event"] == "open" && l["task"]["tgid"] == client_pid)
        .expect("connect line");
    assert_eq!(open["syscall"], "connect");
    // Filtered: nothing from other ports.
    assert!(lines.iter().filter(|l| l["event"] == "data").all(|l| {
        l["local"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!(":{port}"))
            || l["peer"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!(":{port}"))
    }));
    trace.signal(libc::SIGINT);
    assert!(trace.wait_exit().success());
}

#[test]
fn not_root_is_a_clear_error() {
    use std::os::unix::process::CommandExt as _;
    require_root(); // to drop privileges we must have them
    // A copy nobody can execute, wherever the build tree is (it may be under /root).
    let dir = std::env::temp_dir().join(format!("sonde-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("sonde");
    std::fs::copy(sonde_bin_path(), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&bin)
        .args(["run", "--metrics-listen", "none"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("spawn sonde as nobody");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "sonde run as nobody must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must run as root"), "stderr: {stderr}");
}
