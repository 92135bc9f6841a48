//! The capture scope (`[capture.scope]`, `--netns`/`--cgroup`): a `sonde trace` scoped to one
//! network namespace or one cgroup sees exactly that traffic and nothing of the rest, and
//! counts what it left out. Real TCP exchanges (sonde-testpeer) in two namespaces or two
//! cgroups, the trace in between. Without the kernel-side filter both checks fail: the other
//! namespace's (cgroup's) connections show up.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::Value;
use sonde_tests::httplab::{Daemon, sum};
use sonde_tests::{NetnsPair, Peer, require_root, sonde_bin_path, testpeer_path, wait_until};

const T: Duration = Duration::from_secs(60);
/// Connections made on each side.
const CLIENTS: usize = 3;

/// One capture at a time: two traces would each see the other's test traffic.
static SERIAL: Mutex<()> = Mutex::new(());

/// A running `sonde trace --json`: its lines, and its log (stderr) once stopped.
struct Trace {
    child: Child,
    lines: Receiver<Value>,
    log: std::sync::Arc<Mutex<String>>,
}

impl Trace {
    /// Starts the trace with `args` and waits until its programs are attached.
    fn start(args: &[&str]) -> Trace {
        require_root();
        let mut child = Command::new(sonde_bin_path())
            .args(["trace", "--json", "--states"])
            .args(args)
            .env("SONDE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sonde trace");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let log = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut trace = Trace { child, lines, log };
        wait_until(T, "the trace to attach", || {
            assert!(
                trace.child.try_wait().unwrap().is_none(),
                "sonde trace exited: {}",
                trace.log()
            );
            trace.log().contains("capture attached").then_some(())
        })
        .unwrap();
        trace
    }

    fn log(&self) -> String {
        strip_ansi(&self.log.lock().unwrap())
    }

    /// SIGTERM, wait for the exit; returns the trace's `out_of_scope` total (its last log line).
    fn stop(&mut self) -> u64 {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_until(T, "sonde trace to exit", || {
            self.child.try_wait().ok().flatten()
        })
        .unwrap();
        assert!(status.success(), "sonde trace: {status}: {}", self.log());
        let log = wait_until(T, "the trace's last log line", || {
            let l = self.log();
            l.contains("trace stopped").then_some(l)
        })
        .unwrap();
        let (_, rest) = log
            .split_once("out_of_scope=")
            .unwrap_or_else(|| panic!("no out_of_scope in the trace's log: {log}"));
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log lines without their colour escapes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `CLIENTS` tcp-clients to `server` (each through `wrap`, a command prefix such as
/// `ip netns exec NS`), each writing 10 then 64 bytes; returns their pids.
fn run_clients(wrap: &[String], server: SocketAddr) -> Vec<u32> {
    run_clients_writing(wrap, server, "10,64")
}

/// The same, each client writing `sizes` (comma-separated byte counts).
fn run_clients_writing(wrap: &[String], server: SocketAddr, sizes: &str) -> Vec<u32> {
    (0..CLIENTS)
        .map(|_| {
            let mut child = Command::new(&wrap[0])
                .args(&wrap[1..])
                .arg(testpeer_path())
                .args([
                    "tcp-client",
                    "--connect",
                    &server.to_string(),
                    "--send-mode",
                    "write",
                    "--sizes",
                    sizes,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn tcp-client");
            let pid = child.id();
            let status = wait_until(T, "a tcp-client to finish", || {
                child.try_wait().ok().flatten()
            })
            .unwrap();
            assert!(status.success(), "tcp-client to {server}: {status}");
            pid
        })
        .collect()
}

/// Trace lines until `done` says the wanted ones are all in (the ring is read in order, so
/// everything before them is in too).
fn collect_until(trace: &Trace, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut lines = Vec::new();
    wait_until(T, what, || {
        lines.extend(trace.lines.try_iter());
        done(&lines).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; lines: {lines:#?}"));
    lines
}

fn tgid(l: &Value) -> u32 {
    l["task"]["tgid"].as_u64().unwrap_or(0) as u32
}

fn count(lines: &[Value], f: impl Fn(&Value) -> bool) -> usize {
    lines.iter().filter(|l| f(l)).count()
}

/// Every line that names `ip` (local or peer address) or one of `pids`.
fn mentioning<'a>(lines: &'a [Value], ip: &str, pids: &BTreeSet<u32>) -> Vec<&'a Value> {
    let has_ip = |v: &Value| v.as_str().is_some_and(|a| a.starts_with(&format!("{ip}:")));
    lines
        .iter()
        .filter(|l| {
            let by_pid = l["event"] != "state" && l["event"] != "reset" && pids.contains(&tgid(l));
            has_ip(&l["local"]) || has_ip(&l["peer"]) || by_pid
        })
        .collect()
}

/// Scoped to namespace A: A's connections appear, each once; B's never, not even as TCP state
/// changes (judged by the socket's namespace in softirq).
#[test]
fn netns_scope_sees_one_namespace_only() {
    two_namespaces(|pair| vec!["--netns".into(), format!("/run/netns/{}", pair.ns_a())]);
}

/// `--scope-exclude` with namespace B: everything but B, so A's connections appear and B's
/// never.
#[test]
fn netns_exclude_leaves_one_namespace_out() {
    two_namespaces(|pair| {
        vec![
            "--netns".into(),
            format!("/run/netns/{}", pair.ns_b()),
            "--scope-exclude".into(),
        ]
    });
}

/// Real exchanges in namespaces A and B under a trace whose scope (`scope_args`) keeps A and
/// leaves B out: A's exact, B's absent, the filtered counted.
fn two_namespaces(scope_args: impl Fn(&NetnsPair) -> Vec<String>) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pair = NetnsPair::new().unwrap();
    let (a, b) = (pair.addr_a().to_string(), pair.addr_b().to_string());
    let mut server_a = pair
        .spawn_peer(pair.ns_a(), &["sink", "--listen", &format!("{a}:0")])
        .unwrap();
    let mut server_b = pair
        .spawn_peer(pair.ns_b(), &["sink", "--listen", &format!("{b}:0")])
        .unwrap();
    let (addr_a, addr_b) = (
        server_a.listening_addr(T).unwrap(),
        server_b.listening_addr(T).unwrap(),
    );
    let args = scope_args(&pair);
    let mut trace = Trace::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let exec_in = |ns: &str| -> Vec<String> {
        ["ip", "netns", "exec", ns]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    // B first: once A's later connections are all in, B's would have been too.
    let clients_b = run_clients(&exec_in(pair.ns_b()), addr_b);
    let clients_a = run_clients(&exec_in(pair.ns_a()), addr_a);
    let a_pids: BTreeSet<u32> = clients_a.iter().copied().collect();
    let lines = collect_until(&trace, "A's clients' closes", |lines| {
        count(lines, |l| {
            l["event"] == "close" && a_pids.contains(&tgid(l))
        }) == CLIENTS
    });
    let out_of_scope = trace.stop();
    for s in [&server_a, &server_b] {
        s.terminate().unwrap();
    }
    server_a.finish(T).unwrap();
    server_b.finish(T).unwrap();

    let client_opens = count(&lines, |l| {
        l["event"] == "open" && l["role"] == "client" && l["peer"] == addr_a.to_string()
    });
    assert_eq!(client_opens, CLIENTS, "one open per A client: {lines:#?}");
    let b_clients: BTreeSet<u32> = clients_b.iter().copied().collect();
    // Other processes on the node may connect too when the scope only leaves B out.
    let opened_by: BTreeSet<u32> = lines
        .iter()
        .filter(|l| l["event"] == "open" && l["role"] == "client")
        .map(tgid)
        .filter(|p| a_pids.contains(p) || b_clients.contains(p))
        .collect();
    assert_eq!(opened_by, a_pids, "only A's clients connect in scope");
    assert_eq!(
        count(&lines, |l| l["event"] == "data"
            && l["direction"] == "egress"
            && a_pids.contains(&tgid(l))),
        2 * CLIENTS,
        "two writes per A client"
    );
    assert!(
        count(&lines, |l| l["event"] == "state"
            && l["local"].as_str().is_some_and(|s| s.starts_with(&a)))
            > 0,
        "A's TCP state changes are in scope: {lines:#?}"
    );
    let b_pids: BTreeSet<u32> = clients_b.iter().copied().chain([server_b.pid()]).collect();
    // TCP state changes run wherever the softirq lands (any process): B's show by address.
    let leaked = mentioning(&lines, &b, &b_pids);
    assert!(leaked.is_empty(), "namespace B leaked in: {leaked:#?}");
    assert!(out_of_scope > 0, "the filtered are counted");
}

/// A cgroup v2 directory made for one test, removed (after its processes are gone) on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create(tag: &str) -> TestCgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mountinfo
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                let mount = pre.split(' ').nth(4)?;
                (post.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mount))
            })
            .expect("a cgroup v2 hierarchy (the scope's cgroups are cgroup v2)");
        let dir = root.join(format!("sonde-t-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TestCgroup(dir)
    }

    /// `sh -c 'echo $$ > cgroup.procs; exec "$@"' sh`: the rest runs inside.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo $$ > '{}' || exit 97; exec \"$@\"",
                self.0.join("cgroup.procs").display()
            ),
            "sh".into(),
        ]
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let procs = self.0.join("cgroup.procs");
        let _ = wait_until(Duration::from_secs(10), "the test cgroup to empty", || {
            let left = std::fs::read_to_string(&procs).unwrap_or_default();
            for p in left
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) on a process this test placed in its own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            left.trim().is_empty().then_some(())
        });
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("warning: removing {}: {e}", self.0.display());
        }
    }
}

/// Scoped to one cgroup: the clients in it appear, the same clients outside it and the server
/// (outside too) do not.
#[test]
fn cgroup_scope_sees_one_cgroup_only() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cgroup = TestCgroup::create("scope");
    let mut server = Peer::spawn(&["sink", "--listen", "127.0.0.1:0"]).unwrap();
    let addr = server.listening_addr(T).unwrap();
    let mut trace = Trace::start(&["--cgroup", &cgroup.0.display().to_string()]);
    let outside = run_clients(&["env".to_string()], addr);
    let inside = run_clients(&cgroup.wrapper(), addr);
    let in_pids: BTreeSet<u32> = inside.iter().copied().collect();
    let lines = collect_until(&trace, "the cgroup's clients' closes", |lines| {
        count(lines, |l| {
            l["event"] == "close" && in_pids.contains(&tgid(l))
        }) == CLIENTS
    });
    let out_of_scope = trace.stop();
    server.terminate().unwrap();
    server.finish(T).unwrap();

    assert_eq!(
        count(&lines, |l| l["event"] == "open"
            && l["role"] == "client"
            && l["peer"] == addr.to_string()),
        CLIENTS,
        "one open per client in the cgroup: {lines:#?}"
    );
    assert_eq!(
        count(&lines, |l| l["event"] == "data"
            && l["direction"] == "egress"
            && in_pids.contains(&tgid(l))),
        2 * CLIENTS,
        "two writes per client in the cgroup"
    );
    let out_pids: BTreeSet<u32> = outside.iter().copied().chain([server.pid()]).collect();
    let leaked: Vec<&Value> = lines
        .iter()
        // TCP state changes have no process context, so no cgroup to judge: node-wide.
        .filter(|l| l["event"] != "state" && l["event"] != "reset" && out_pids.contains(&tgid(l)))
        .collect();
    assert!(
        leaked.is_empty(),
        "processes outside the cgroup leaked in: {leaked:#?}"
    );
    assert!(out_of_scope > 0, "the filtered are counted");
}

/// A scope that does not resolve stops the start with one line that names the entry.
#[test]
fn bad_scope_is_a_one_line_error() {
    require_root();
    let out = Command::new(sonde_bin_path())
        .args(["trace", "--netns", "/run/netns/sonde-no-such-namespace"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    let line = err
        .lines()
        .find(|l| l.contains("capture.scope.netns"))
        .unwrap_or_else(|| panic!("no scope error in: {err}"));
    assert!(
        line.contains("/run/netns/sonde-no-such-namespace") && line.contains("no such file"),
        "{line}"
    );
}

/// `sonde run` with `[capture.scope]` from its config file: the daemon's /metrics counts what
/// the scope left out (here, a real exchange in the root namespace, outside the scope), and its
/// network map has an edge for the namespace inside the scope and none for the root's.
#[test]
fn daemon_counts_out_of_scope_on_metrics() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pair = NetnsPair::new().unwrap();
    let scope = format!(
        "[capture.scope]\nnetns = [\"/run/netns/{}\"]\n",
        pair.ns_a()
    );
    let daemon = Daemon::start_when_free("", "", &scope, T);
    let mut server = Peer::spawn(&["sink", "--listen", "127.0.0.1:0"]).unwrap();
    let addr = server.listening_addr(T).unwrap();
    let mut clients = 0;
    let left_out = wait_until(T, "sonde_capture_out_of_scope_total > 0", || {
        // The daemon attaches after /metrics answers: exchanges until one is counted. Large
        // writes: many segments, each one a tcp_probe hit on the receiving socket.
        run_clients_writing(&["env".to_string()], addr, "10,300000");
        clients += CLIENTS;
        let v = sum(&daemon.samples(), "sonde_capture_out_of_scope_total", &[]);
        (v > 0.0).then_some(v)
    })
    .unwrap();
    // Then an exchange inside the scope: once its edge is on the map, the map has read the
    // kernel's flows since the root namespace's exchanges, which must have made no edge (the
    // segment probe, tcp_probe, has no process to judge: it checks the socket's namespace).
    let mut server_a = pair
        .spawn_peer(
            pair.ns_a(),
            &["sink", "--listen", &format!("{}:0", pair.addr_a())],
        )
        .unwrap();
    let addr_a = server_a.listening_addr(T).unwrap();
    let exec_in_a: Vec<String> = ["ip", "netns", "exec", pair.ns_a()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let edge_on = |port: u16| {
        let port = port.to_string();
        daemon
            .samples()
            .iter()
            .any(|s| s.name.starts_with("sonde_tcp_") && s.label("server_port") == port)
    };
    wait_until(T, "namespace A's edge on /metrics", || {
        run_clients(&exec_in_a, addr_a);
        edge_on(addr_a.port()).then_some(())
    })
    .unwrap();
    // Every loopback connection here is the root namespace's: these exchanges and the test's
    // own scrapes of /metrics.
    let leaked: Vec<String> = daemon
        .samples()
        .iter()
        .filter(|s| s.name.starts_with("sonde_tcp_"))
        .filter(|s| {
            s.label("client").contains("127.0.0.") || s.label("server").contains("127.0.0.")
        })
        .map(|s| format!("{s:?}"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the root namespace's connections made edges on a daemon scoped to namespace A: {leaked:#?}"
    );
    for s in [&server, &server_a] {
        s.terminate().unwrap();
    }
    server.finish(T).unwrap();
    server_a.finish(T).unwrap();
    assert!(left_out > 0.0, "{clients} clients outside the scope");
}
