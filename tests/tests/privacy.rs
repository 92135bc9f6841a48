//! Privacy end to end: a process writes a password and a card number to stdout, a real client
//! (curl) sends a secret in a URL path and query to a real server (python3 http.server, which
//! also logs the request line, secret included, to stderr); `sonde run` captures all of it.
//! By default no secret may appear in `/metrics` (Prometheus and OpenMetrics) or in any
//! `/api/*` answer — while the request is counted under its normalised route and the log
//! templates exist, so a broken capture fails the test rather than passing it. With
//! `[privacy] log_samples` and `raw_records` on, the raw line and the raw path do appear: the
//! switches work.
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use sonde_pipeline::records::RecordView;
use sonde_tests::httplab::{
    Daemon, Scratch, curl, free_port, http_body, http_get, parse_metrics, sum,
};
use sonde_tests::{require_root, wait_until};

const T: Duration = Duration::from_secs(60);
/// One test at a time: each runs its own daemon, server and writers.
static SERIAL: Mutex<()> = Mutex::new(());

const PASSWORD: &str = "Hunter2Secret";
const CARD: &str = "4111111111111111";
const PATH_SECRET: &str = "PATHSECRET42";
const QUERY_SECRET: &str = "QUERYSECRET";
const SECRETS: [&str; 4] = [PASSWORD, CARD, PATH_SECRET, QUERY_SECRET];
/// What the writer prints, and its template (variable parts masked).
const LINE: &str = "INFO user login password=Hunter2Secret card 4111111111111111";
const LINE_TEMPLATE: &str = "INFO user login password=<*> card <*>";
/// The secret request, and the route it must be counted under.
const REQUEST: &str = "/reset/x/PATHSECRET42?token=QUERYSECRET";
const ROUTE: &str = "/reset/x/{id}";
const SERVER: &str = "http_server_request_duration_seconds";

/// `python3 -m http.server` on a free loopback port, its stderr (one line per request, the
/// raw request line in it) into a file: a write on fd 2 the daemon captures.
struct PyServer {
    child: Child,
    port: u16,
    _dir: Scratch,
}

impl PyServer {
    fn start() -> PyServer {
        let dir = Scratch::new("privacy-py");
        let port = free_port();
        let err = File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir.path())
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("python3 http.server starts");
        let mut s = PyServer {
            child,
            port,
            _dir: dir,
        };
        wait_until(T, "python3 http.server to listen", || {
            assert!(s.child.try_wait().unwrap().is_none(), "http.server exited");
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap();
        s.port = port;
        s
    }

    /// The secret request (a 404), sent by curl.
    fn send_secret(&self) {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}{REQUEST}", self.port),
        ])
        .expect("curl runs");
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process writing the secret line to its stdout (a file), one write(2) per line.
fn write_secret_line(dir: &Scratch) {
    let out = File::create(dir.path().join("writer.log")).unwrap();
    let st = Command::new("sh")
        .args(["-c", &format!("echo '{LINE}'; echo '{LINE}'")])
        .stdout(Stdio::from(out))
        .status()
        .expect("sh runs");
    assert!(st.success());
}

/// A GET with extra head lines; the body of a 200.
fn get_with(port: u16, path: &str, head: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text:.200}");
    text
}

/// Every endpoint the daemon serves (host/src/metrics.rs), by path, with its answer:
/// /metrics in both formats, every /api/* list, and each incident's detail in both forms.
fn everything(port: u16) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in [
        "/metrics",
        "/api/health",
        "/api/series",
        "/api/map",
        "/api/records?limit=100000",
        "/api/containers",
        "/api/slow-queries",
        "/api/logs?minutes=600",
        "/api/logs?minutes=600&errors=1",
        "/api/incidents",
        "/api/live",
    ] {
        let body = http_get(port, path).unwrap_or_else(|e| panic!("{path}: {e:#}"));
        out.push((path.to_string(), body));
    }
    out.push((
        "/metrics (OpenMetrics)".into(),
        get_with(
            port,
            "/metrics",
            "Accept: application/openmetrics-text; version=1.0.0\r\n",
        ),
    ));
    let incidents: Value =
        serde_json::from_str(&http_body(port, "/api/incidents").unwrap()).unwrap();
    for id in incidents["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str())
    {
        for path in [
            format!("/api/incidents/{id}"),
            format!("/api/incidents/{id}?format=text"),
        ] {
            let body = http_get(port, &path).unwrap_or_else(|e| panic!("{path}: {e:#}"));
            out.push((path, body));
        }
    }
    out
}

fn templates(port: u16) -> Vec<Value> {
    http_body(port, "/api/logs?minutes=600")
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

fn records(port: u16) -> Vec<RecordView> {
    http_body(port, "/api/records?limit=100000")
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

/// The server-side records of the secret request to `server_port`.
fn secret_records(port: u16, server_port: u16) -> Vec<RecordView> {
    let local = format!("127.0.0.1:{server_port}");
    records(port)
        .into_iter()
        .filter(|r| r.side == "server" && r.local.as_deref() == Some(local.as_str()))
        .collect()
}

/// Drives the secret traffic and log lines until the daemon has seen them: the request
/// counted under [`ROUTE`] in /metrics, its server-side record, the writer's template and
/// the server's request-line template. Returns the records.
fn drive_until_seen(daemon: &Daemon, server: &PyServer, scratch: &Scratch) -> Vec<RecordView> {
    let port = server.port.to_string();
    wait_until(
        T,
        "the secret request counted and the log templates mined",
        || {
            server.send_secret();
            write_secret_line(scratch);
            let samples = parse_metrics(&http_get(daemon.port, "/metrics").ok()?);
            let counted = sum(
                &samples,
                &format!("{SERVER}_count"),
                &[("server_port", &port), ("http_route", ROUTE)],
            );
            let logs = templates(daemon.port);
            let has = |t: &str| logs.iter().any(|l| l["template"] == t);
            let recs = secret_records(daemon.port, server.port);
            (counted >= 1.0
                && has(LINE_TEMPLATE)
                && logs.iter().any(|l| {
                    l["template"]
                        .as_str()
                        .is_some_and(|t| t.contains("\"GET /reset/x/<*>?token=<*> HTTP/1.1\""))
                })
                && !recs.is_empty())
            .then_some(recs)
        },
    )
    .unwrap()
}

#[test]
fn secrets_never_leave_by_default() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let daemon = Daemon::start("", "");
    let server = PyServer::start();
    let scratch = Scratch::new("privacy-writer");
    let recs = drive_until_seen(&daemon, &server, &scratch);

    // The request is there, under its route, without its raw path.
    let r = &recs[0];
    assert_eq!(r.protocol, "http");
    assert_eq!(r.operation, format!("GET {ROUTE}"), "{r:#?}");
    assert!(r.attributes.iter().all(|(k, _)| k != "url.path"), "{r:#?}");
    // The templates are there, with empty samples.
    for t in templates(daemon.port) {
        assert_eq!(t["sample"], "", "{t}");
    }

    // No secret anywhere the daemon answers.
    let answers = everything(daemon.port);
    assert!(answers.len() >= 12);
    for (path, body) in &answers {
        for secret in SECRETS {
            assert!(
                !body.contains(secret),
                "{secret} leaked through {path}:\n{body:.4000}"
            );
        }
    }
}

#[test]
fn raw_values_are_opt_in() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let daemon = Daemon::start_with(
        "",
        "",
        "[privacy]\nlog_samples = true\nraw_records = true\n",
    );
    let server = PyServer::start();
    let scratch = Scratch::new("privacy-writer");
    let recs = drive_until_seen(&daemon, &server, &scratch);

    // The raw path is in the record (the HTTP parser never keeps a query string) …
    let raw_path = REQUEST.split('?').next().unwrap();
    assert!(
        recs.iter().any(|r| r
            .attributes
            .iter()
            .any(|(k, v)| k == "url.path" && v == raw_path)),
        "{recs:#?}"
    );
    // … and the raw lines are the templates' samples: the writer's, and the server's
    // request line with the path and query.
    let logs = templates(daemon.port);
    let line = logs
        .iter()
        .find(|t| t["template"] == LINE_TEMPLATE)
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert_eq!(line["sample"], LINE);
    assert!(
        logs.iter()
            .any(|t| t["sample"].as_str().is_some_and(|s| s.contains(REQUEST))),
        "{logs:#?}"
    );
    // Metrics carry routes either way.
    let metrics = http_get(daemon.port, "/metrics").unwrap();
    for secret in SECRETS {
        assert!(!metrics.contains(secret), "{secret} in /metrics");
    }
}
