//! The fault lab (`tests/lab/`, see its README): a small shop of services in network
//! namespaces under steady load, one injected fault per test, and Sonde's live incident report
//! scored against the ground truth. Each test runs `python3 tests/lab/lab.py run …` with
//! `--require-hit`, which builds the lab, starts `sonde run`, injects the fault, waits for the
//! report and tears everything down (also on failure), then checks the JSON it wrote.
//!
//! Each fault test takes about 90 s (lab build, 60 s baseline, report within seconds of the
//! injection, teardown); the quiet run 5 minutes. They share the machine's lab resources and
//! run one at a time (a static mutex). `bench/lab/run.sh` repeats them for the accuracy table
//! in BENCHMARKS.md. The `cluster_*` tests run the same shop as three nodes (`--cluster`: a
//! scoped daemon per node, a real Prometheus, `sonde hub`); their reports are the hub's, and
//! the node it names is checked too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;
use sonde_tests::{require_root, sonde_bin_path};

static SERIAL: Mutex<()> = Mutex::new(());

/// The workspace root: `tests/` is this crate's manifest directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn out_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("sonde-lab-results-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("creating the results directory");
    d
}

/// Runs `python3 tests/lab/lab.py ARGS…` from the workspace root with inherited output;
/// returns its exit code.
fn lab_py(args: &[&str]) -> i32 {
    let root = workspace_root();
    let status = Command::new("python3")
        .arg(root.join("tests/lab/lab.py"))
        .args(args)
        .current_dir(&root)
        .status()
        .expect("running python3 tests/lab/lab.py");
    status.code().unwrap_or(-1)
}

fn run_fault(fault: &str) -> Value {
    run_lab(fault, Monitor::Node)
}

/// Who watches the lab: one daemon on all of it, or the cluster (three daemons each scoped
/// to one node's namespaces, a real Prometheus scraping them, `sonde hub` reporting).
#[derive(Clone, Copy, PartialEq)]
enum Monitor {
    Node,
    Cluster,
}

fn run_lab(fault: &str, monitor: Monitor) -> Value {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let sonde = sonde_bin_path();
    let cluster = monitor == Monitor::Cluster;
    let out = out_dir().join(format!(
        "{fault}{}.json",
        if cluster { "-cluster" } else { "" }
    ));
    let mut args = vec![
        "run",
        "--fault",
        fault,
        "--sonde",
        sonde.to_str().expect("UTF-8 path"),
        "--baseline",
        "60",
        "--timeout",
        "120",
        "--out",
        out.to_str().expect("UTF-8 path"),
        "--require-hit",
        "--full-report",
    ];
    if cluster {
        args.push("--cluster");
    }
    let code = lab_py(&args);
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "lab.py wrote no result {} ({e}); exit {code}",
            out.display()
        )
    });
    let res: Value = serde_json::from_str(&text).expect("result JSON");
    let score = &res["score"];
    assert!(
        res["leftovers"].as_array().is_none_or(|l| l.is_empty()),
        "the lab left things behind: {}",
        res["leftovers"]
    );
    assert_eq!(
        code, 0,
        "lab.py run --fault {fault} exited {code}: error {}, score {score}, expected {} / {}",
        res["error"], res["expected"], res["expected_class"]
    );
    assert_eq!(
        score["rank"].as_u64(),
        Some(1),
        "{fault}: expected {} at rank 1, score {score}",
        res["expected"]
    );
    assert_eq!(
        score["class_ok"].as_bool(),
        Some(true),
        "{fault}: expected class {}, score {score}",
        res["expected_class"]
    );
    if cluster {
        assert_eq!(
            score["node_ok"].as_bool(),
            Some(true),
            "{fault}: the hub placed the cause on the wrong node: {}",
            res["report"]["root_causes"][0]
        );
    }
    // The terminal views of the same incident: `sonde incidents` lists it with its first
    // cause, `sonde report <id>` prints the report.
    let id = res["incident"]["id"].as_str().expect("incident id");
    let first = res["report"]["root_causes"][0]["category"]
        .as_str()
        .expect("first cause");
    let listing = res["incidents_text"].as_str().unwrap_or_default();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(id) && l.contains(first)),
        "`sonde incidents` output:\n{listing}"
    );
    let report = res["report_text"].as_str().unwrap_or_default();
    for part in ["Phenomenon:", "Root causes:", "Propagation:", first] {
        assert!(
            report.contains(part),
            "`sonde report {id}` lacks {part:?}:\n{report}"
        );
    }
    res
}

/// The report's error-log templates of `service` (mined from what it wrote to stderr).
fn templates_of<'a>(res: &'a Value, service: &str) -> Vec<&'a str> {
    res["log_templates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["service"] == service)
        .filter_map(|t| t["template"].as_str())
        .collect()
}

#[test]
fn lab_loss_on_cart_link() {
    run_fault("loss");
}

#[test]
fn lab_bandwidth_limit_on_config() {
    run_fault("bandwidth");
}

#[test]
fn lab_cpu_quota_on_product() {
    run_fault("cpu");
}

#[test]
fn lab_checkout_errors_in_cart() {
    let res = run_fault("errors");
    // The report carries what cart wrote to stderr, as templates.
    let cart = templates_of(&res, "cart");
    assert!(
        cart.iter().any(|t| t.contains("checkout")),
        "cart's error-log templates in the report: {cart:?} (all: {})",
        res["log_templates"]
    );
}

#[test]
fn lab_slow_cart() {
    run_fault("slow");
}

#[test]
fn lab_slow_sql_in_mariadb() {
    let res = run_fault("slow-sql");
    // The report names the slow statement, as product sent it.
    let slow = res["slow_queries"].as_array().cloned().unwrap_or_default();
    assert!(
        slow.iter().any(|q| q["service"] == "product"
            && q["statement"]
                .as_str()
                .is_some_and(|s| s.contains("shop.products"))
            && q["max_ms"].as_f64().is_some_and(|d| d >= 200.0)
            && q["count"].as_u64().is_some_and(|n| n >= 2)),
        "slow SQL in the report: {slow:?}"
    );
}

#[test]
fn lab_dns_nxdomain_for_config() {
    let res = run_fault("dns");
    let gateway = templates_of(&res, "gateway");
    assert!(
        gateway.iter().any(|t| t.contains("lookup")),
        "gateway's error-log templates in the report: {gateway:?} (all: {})",
        res["log_templates"]
    );
}

#[test]
fn quiet_lab_opens_no_incident() {
    quiet(Monitor::Node, "300");
}

// The cluster (three scoped daemons, a real Prometheus, the hub), issue 21's test: the faults
// on node B and C and on the link between A and B, each diagnosed by the hub entered from the
// gateway on A and scored on element, class and node; a quiet run.

#[test]
fn cluster_loss_on_the_link_from_node_a_to_node_b() {
    run_lab("loss", Monitor::Cluster);
}

#[test]
fn cluster_cpu_quota_on_node_b() {
    run_lab("cpu", Monitor::Cluster);
}

#[test]
fn cluster_slow_sql_on_node_c() {
    run_lab("slow-sql", Monitor::Cluster);
}

#[test]
fn quiet_cluster_lab_opens_no_incident() {
    quiet(Monitor::Cluster, "180");
}

fn quiet(monitor: Monitor, seconds: &str) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let sonde = sonde_bin_path();
    let cluster = monitor == Monitor::Cluster;
    let out = out_dir().join(if cluster {
        "quiet-cluster.json"
    } else {
        "quiet.json"
    });
    let mut args = vec![
        "quiet",
        "--sonde",
        sonde.to_str().expect("UTF-8 path"),
        "--duration",
        seconds,
        "--out",
        out.to_str().expect("UTF-8 path"),
    ];
    if cluster {
        args.push("--cluster");
    }
    let code = lab_py(&args);
    let res: Value = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    assert_eq!(
        code, 0,
        "lab.py quiet exited {code}; incidents: {}",
        res["incidents"]
    );
}

/// What a lab named `name` (`sl` + 4 hex) may leave behind: namespaces, /etc/netns dirs,
/// cgroups in any hierarchy, processes whose command line names its directory.
fn leftovers(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = format!("{name}-");
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if line.starts_with(&prefix) {
                out.push(format!("netns {line}"));
            }
        }
    }
    for dir in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if dir.file_name().to_string_lossy().starts_with(&prefix) {
            out.push(format!("{}", dir.path().display()));
        }
    }
    let mut hierarchies = vec![PathBuf::from("/sys/fs/cgroup")];
    hierarchies.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    for h in hierarchies {
        if h.join(name).exists() {
            out.push(format!("cgroup {}", h.join(name).display()));
        }
    }
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&format!("/{name}")) && !cmdline.contains("lab.py") {
            out.push(format!(
                "process {}: {cmdline}",
                p.file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// `lab.py ARGS…` with its stdout or stderr read to its end on a thread, as a terminal would
/// (closing the pipe early would make lab.py's next write fail with EPIPE and turn a Ctrl-C
/// into a different error): each line goes to `on_line`, which sends the test what it waits
/// for.
fn spawn_lab_reading<T: Send + 'static>(
    args: &[&std::ffi::OsStr],
    from_stderr: bool,
    mut on_line: impl FnMut(&str, &std::sync::mpsc::Sender<T>) + Send + 'static,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<T>,
    std::thread::JoinHandle<()>,
) {
    use std::io::{BufRead as _, BufReader, Read};
    use std::process::Stdio;
    let root = workspace_root();
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("tests/lab/lab.py"))
        .args(args)
        .current_dir(&root);
    if from_stderr {
        cmd.stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("running lab.py");
    let pipe: Box<dyn Read + Send> = if from_stderr {
        Box::new(child.stderr.take().expect("piped stderr"))
    } else {
        Box::new(child.stdout.take().expect("piped stdout"))
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            on_line(&line, &tx);
        }
    });
    (child, rx, reader)
}

/// Ctrl-C to a running lab.py: it exits 130 and lab `name` leaves nothing behind.
fn interrupt_and_check(
    mut child: std::process::Child,
    reader: std::thread::JoinHandle<()>,
    name: &str,
) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("waiting for lab.py");
    reader.join().expect("lab.py's output reader");
    assert_eq!(
        status.code(),
        Some(130),
        "lab.py exits 130 on SIGINT: {status:?}"
    );
    let left = leftovers(name);
    assert!(
        left.is_empty(),
        "after Ctrl-C the lab {name} left: {left:?}"
    );
}

/// Ctrl-C while the lab is up (the load running, every server started) tears it all down.
#[test]
fn lab_tears_down_on_ctrl_c() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let mut name = None;
    let (child, rx, reader) = spawn_lab_reading(
        &["up".as_ref(), "--no-sonde".as_ref()],
        false,
        move |line, tx| {
            // "lab slXXXX is up (dir …):" once every service answers and the load runs, then
            // the banner, whose last line comes just before lab.py waits for Ctrl-C.
            if let Some(rest) = line.strip_prefix("lab ")
                && let Some((n, _)) = rest.split_once(" is up")
            {
                name = Some(n.to_string());
            }
            if line.starts_with("Ctrl-C to tear down")
                && let Some(n) = name.take()
            {
                let _ = tx.send(n);
            }
        },
    );
    // Err when lab.py exits (the sender drops) without having said it is up.
    let name = rx.recv().expect("lab.py up never said the lab is up");
    assert!(
        !leftovers(&name).is_empty(),
        "the lab {name} should exist while up"
    );
    interrupt_and_check(child, reader, &name);
}

/// Ctrl-C while the cluster is up (three daemons, Prometheus and the hub all started) stops
/// every one of those processes and tears the lab down.
#[test]
fn cluster_lab_tears_down_on_ctrl_c() {
    use std::io::Write as _;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let sonde = sonde_bin_path();
    let out = out_dir().join("ctrl-c-cluster.json");
    let args: [&std::ffi::OsStr; 8] = [
        "quiet".as_ref(),
        "--cluster".as_ref(),
        "--duration".as_ref(),
        "600".as_ref(),
        "--sonde".as_ref(),
        sonde.as_ref(),
        "--out".as_ref(),
        out.as_ref(),
    ];
    // The log (passed on): the lab's name, then each started process' pid; "started the hub"
    // is the last start.
    let (mut name, mut pids) = (None, Vec::new());
    let (child, rx, reader) = spawn_lab_reading(&args, true, move |line, tx| {
        let _ = writeln!(std::io::stderr(), "{line}");
        if let Some((_, rest)) = line.split_once("building lab ") {
            name = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some((_, rest)) = line.split_once("(pid ")
            && let Some(pid) = rest.split(')').next().and_then(|p| p.parse::<i32>().ok())
        {
            pids.push(pid);
        }
        if line.contains("started the hub") {
            let _ = tx.send((name.take(), std::mem::take(&mut pids)));
        }
    });
    let (name, pids) = rx
        .recv()
        .expect("lab.py quiet --cluster never started the hub");
    let name = name.expect("lab.py named no lab");
    assert_eq!(
        pids.len(),
        5,
        "three daemons, Prometheus and the hub: {pids:?}"
    );
    // SAFETY: kill(2) with signal 0 only probes whether a pid exists.
    let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
    assert!(pids.iter().all(|p| alive(*p)), "all five run before Ctrl-C");
    interrupt_and_check(child, reader, &name);
    let running: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        running.is_empty(),
        "still running after Ctrl-C: {running:?}"
    );
}

/// A run whose Sonde cannot start fails clearly and still tears the lab down.
#[test]
fn lab_tears_down_when_sonde_fails() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let out = out_dir().join("failing-sonde.json");
    let code = lab_py(&[
        "run",
        "--fault",
        "slow",
        "--sonde",
        "/bin/false",
        "--baseline",
        "5",
        "--out",
        out.to_str().expect("UTF-8 path"),
    ]);
    let res: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("lab.py wrote its result"))
            .expect("result JSON");
    assert_ne!(code, 0, "a Sonde that exits at once is a failed run");
    assert!(
        res["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the result says why: {res}"
    );
    let name = res["lab"]
        .as_str()
        .expect("the result names the lab")
        .to_string();
    let left = leftovers(&name);
    assert!(
        left.is_empty(),
        "after the failure the lab {name} left: {left:?}"
    );
    assert!(
        res["leftovers"].as_array().is_some_and(|l| l.is_empty()),
        "lab.py's own check: {}",
        res["leftovers"]
    );
}
