//! The web page in a real browser (Debian's headless Chromium, driven through chromedriver's
//! WebDriver JSON over plain HTTP) on real traffic: a `frontend` client calls `storefront`
//! (nginx), which proxies to an `inventory` server, each named by the link it runs as (so
//! another test's nginx on this machine is another service), and `sonde run` captures it.
//! The page must show the three services and their edges on the map, a non-zero request rate
//! on storefront's service page (refreshed without a reload), and, once `inventory` starts
//! failing, the incident in the list and a report whose first root cause is `inventory`;
//! then the plugins (parsers and fault-tree rules). Any SEVERE entry in the browser's console
//! fails the test. Screenshots of every view go to `target/web-page/` (docs/web/ holds
//! copies).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use sonde_tests::httplab::{Daemon, Nginx, Scratch, free_port, http_body};
use sonde_tests::{require_root, target_dir, wait_until};

const T: Duration = Duration::from_secs(90);

/// A step of one second, a short warm-up and analysis window: an incident within a minute.
const LIVE: &str = "[live]\nstep_ms = 1000\nwarmup_steps = 10\nwindow_steps = 3\n";

/// `inventory`: answers `/api/items` with a small JSON body, or, once the flag file exists,
/// with 503 and an error line on stderr (a log template for the report).
const INVENTORY: &str = r#"
import http.server, os, sys
port, flag = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        failing = os.path.exists(flag)
        body = b'{"error": "stock lookup timed out"}\n' if failing else b'{"items": 3}\n'
        self.send_response(503 if failing else 200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if failing:
            sys.stderr.write('ERROR stock lookup for %s timed out after 250 ms\n' % self.path)
            sys.stderr.flush()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', port), H).serve_forever()
"#;

/// `frontend`: about 25 requests a second through storefront (nginx) on one keep-alive connection; every
/// tenth to a missing page (a 404).
const FRONTEND: &str = r#"
import http.client, sys, time
port = int(sys.argv[1])
conn, i = None, 0
while True:
    i += 1
    path = '/missing/%d' % (i % 7) if i % 10 == 0 else '/api/items'
    try:
        if conn is None:
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
        conn.request('GET', path)
        conn.getresponse().read()
    except Exception:
        conn = None
    time.sleep(0.04)
"#;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/usr/bin/python3` run as `dir/<name>` (a link), so the kernel names the process `name`:
/// the service Sonde sees.
fn python_as(dir: &Path, name: &str, script: &str, args: &[String]) -> Proc {
    let link = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink("/usr/bin/python3", &link).unwrap();
    }
    let file = dir.join(format!("{name}.py"));
    std::fs::write(&file, script).unwrap();
    Proc(
        Command::new(&link)
            .arg(&file)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}")),
    )
}

// ---------- WebDriver over HTTP ----------

/// chromedriver on a free loopback port.
struct Driver {
    _child: Proc,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Proc(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver (Debian package chromium-driver)"),
        );
        let d = Driver {
            _child: child,
            port,
        };
        wait_until(T, "chromedriver to be ready", || {
            d.call("GET", "/status", None)
                .ok()
                .filter(|v| v["ready"] == true)
        })
        .unwrap();
        d
    }

    /// One WebDriver command: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        // chromedriver says `Connection: close` but keeps the socket open: read the head,
        // then the body by its length (or its chunks).
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 << 10];
        let (split, head) = loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                bail!("{method} {path}: the connection closed before the head ended");
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break (
                    split,
                    String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase(),
                );
            }
        };
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let chunked = head.contains("transfer-encoding: chunked")
            || head.contains("transfer-encoding:chunked");
        loop {
            let body = &raw[split + 4..];
            let done = match length {
                Some(len) => body.len() >= len,
                None if chunked => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let mut payload = raw[split + 4..].to_vec();
        if chunked {
            payload = dechunk(&payload)?;
        }
        let v: Value = serde_json::from_slice(&payload)
            .with_context(|| format!("{method} {path}: {}", String::from_utf8_lossy(&payload)))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if let Some(e) = value.get("error") {
            bail!("{method} {path}: {e}: {}", value["message"]);
        }
        Ok(value)
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..line]).trim(), 16)?;
        b = &b[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Standard base64 (a screenshot).
fn base64(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(val).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for q in digits.chunks(4) {
        let n = q
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | u32::from(*d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..q.len()]);
    }
    out
}

/// A headless Chromium session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
    /// Every console entry read so far.
    console: Vec<Value>,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver) -> Browser<'a> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--hide-scrollbars", "--force-device-scale-factor=1"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let v = driver
            .call("POST", "/session", Some(&caps))
            .expect("a Chromium session");
        Browser {
            driver,
            session: v["sessionId"].as_str().expect("a session id").to_string(),
            console: Vec::new(),
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })))
            .unwrap();
    }

    /// Runs `body` (a function body that `return`s) in the page.
    fn eval(&self, body: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": body, "args": [] })),
        )
        .unwrap()
    }

    /// Clicks the element `css` selects, as a user would (WebDriver's pointer click).
    fn click(&self, css: &str) -> Result<()> {
        let e = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        let id = e
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .context("an element reference")?
            .to_string();
        self.cmd("POST", &format!("/element/{id}/click"), Some(&json!({})))?;
        Ok(())
    }

    fn screenshot(&self, file: &Path) {
        let v = self.cmd("GET", "/screenshot", None).unwrap();
        let png = base64(v.as_str().expect("a base64 PNG"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(file, png).unwrap();
    }

    /// Reads the console entries logged since the last read; fails on any SEVERE one (an
    /// uncaught exception, a failed request).
    fn assert_console_clean(&mut self, view: &str) {
        let v = self
            .cmd("POST", "/se/log", Some(&json!({"type": "browser"})))
            .unwrap();
        let entries = v.as_array().cloned().unwrap_or_default();
        let severe: Vec<&Value> = entries.iter().filter(|e| e["level"] == "SEVERE").collect();
        assert!(
            severe.is_empty(),
            "console errors on the {view} view: {severe:#?}"
        );
        self.console.extend(entries);
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.cmd("DELETE", "", None);
    }
}

fn out_dir() -> PathBuf {
    let d = target_dir().join("web-page");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_page_shows_the_map_a_service_an_incident_and_the_plugins() {
    require_root();
    let out = out_dir();
    let scratch = Scratch::new("web-page");
    let flag = scratch.path().join("inventory-fails");

    let inventory_port = free_port();
    let _inventory = python_as(
        scratch.path(),
        "inventory",
        INVENTORY,
        &[inventory_port.to_string(), flag.display().to_string()],
    );
    wait_until(T, "inventory to listen", || {
        TcpStream::connect(("127.0.0.1", inventory_port)).ok()
    })
    .unwrap();
    // nginx under a name of its own: another test's nginx on this machine is another service.
    let storefront = scratch.path().join("storefront");
    std::os::unix::fs::symlink("/usr/sbin/nginx", &storefront).unwrap();
    let nginx = Nginx::start_as(inventory_port, "", &storefront).unwrap();
    let daemon = Daemon::start_when_free("", "", LIVE, Duration::from_secs(600));
    let _frontend = python_as(
        scratch.path(),
        "frontend",
        FRONTEND,
        &[nginx.port.to_string()],
    );

    let driver = Driver::start();
    let mut b = Browser::open(&driver);
    let base = format!("http://127.0.0.1:{}/", daemon.port);

    // The console check can fail: an error the page logs is read back as SEVERE.
    b.go(&base);
    b.eval("console.error('web_page self-check'); return null");
    let logged = b
        .cmd("POST", "/se/log", Some(&json!({"type": "browser"})))
        .unwrap();
    assert!(
        logged
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["level"] == "SEVERE"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("web_page self-check")))),
        "the browser's console is read: {logged}"
    );

    // The map: the three services, the two edges, with a request rate.
    let edges = wait_until(
        T,
        "the map to show frontend → storefront → inventory",
        || {
            let v = b.eval(
            "return {nodes: [...document.querySelectorAll('#map .node')].map(n => n.dataset.name),
                     edges: [...document.querySelectorAll('#map .edge')]
                        .map(e => [e.dataset.client, e.dataset.server, +e.dataset.rate])}",
        );
            let nodes: Vec<String> = serde_json::from_value(v["nodes"].clone()).unwrap_or_default();
            let edges: Vec<(String, String, f64)> =
                serde_json::from_value(v["edges"].clone()).unwrap_or_default();
            let has = |c: &str, s: &str| edges.iter().any(|e| e.0 == c && e.1 == s && e.2 > 0.0);
            (["frontend", "storefront", "inventory"]
                .iter()
                .all(|n| nodes.iter().any(|x| x == n))
                && has("frontend", "storefront")
                && has("storefront", "inventory"))
            .then_some(edges)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}; /api/map: {}",
            http_body(daemon.port, "/api/map").unwrap_or_default()
        )
    });
    eprintln!("map edges: {edges:?}");
    let title = b.eval(
        "return document.querySelector('#map .edge[data-client=\"storefront\"][data-server=\"inventory\"] title').textContent",
    );
    assert!(
        title.as_str().is_some_and(|t| t.contains("status: ")),
        "an edge explains its status on hover: {title}"
    );
    b.screenshot(&out.join("map.png"));
    b.assert_console_clean("map");

    // A click on storefront: its service page with a request rate.
    b.eval("window.sondeNotReloaded = true; return null");
    b.click("#map .node[data-name=\"storefront\"]").unwrap();
    let rate = wait_until(T, "storefront's service page with a request rate", || {
        let v = b.eval(
            "const r = document.getElementById('svc-rate');
             return {hash: location.hash, rate: r ? +r.dataset.value : 0,
                     charts: document.querySelectorAll('svg.chart polyline').length}",
        );
        (v["hash"] == "#/service/storefront"
            && v["rate"].as_f64().unwrap_or(0.0) > 0.0
            && v["charts"].as_u64().unwrap_or(0) > 0)
            .then(|| v["rate"].as_f64().unwrap())
    })
    .unwrap();
    eprintln!("storefront: {rate:.1} requests/s");
    let tables = b.eval(
        "return [...document.querySelectorAll('table.endpoints.server td.mono')].map(t => t.textContent)",
    );
    assert!(
        tables.to_string().contains("/api/items"),
        "storefront's endpoints: {tables}"
    );
    // It refreshes itself, without reloading: the charts grow.
    wait_until(T, "the request-rate chart to grow to 6 points", || {
        let v = b.eval(
            "const l = document.querySelector('#chart-rate polyline');
             return {points: l ? l.points.numberOfItems : 0, same: window.sondeNotReloaded === true}",
        );
        assert_eq!(v["same"], true, "the page reloaded");
        (v["points"].as_u64().unwrap_or(0) >= 6).then_some(())
    })
    .unwrap();
    b.screenshot(&out.join("service.png"));
    b.assert_console_clean("service");
    // A client only (frontend serves nothing): its calls' rate, by a pasted link.
    b.go(&format!("{base}#/service/frontend"));
    wait_until(T, "frontend's service page with its calls' rate", || {
        let v = b.eval(
            "const r = document.getElementById('svc-rate');
             return {rate: r ? +r.dataset.value : 0,
                     calls: document.querySelectorAll('table.endpoints.client tr').length}",
        );
        (v["rate"].as_f64().unwrap_or(0.0) > 0.0 && v["calls"].as_u64().unwrap_or(0) > 1)
            .then_some(())
    })
    .unwrap();
    b.assert_console_clean("client service");

    // The live engine learns the baseline; then inventory fails.
    wait_until(T, "the live diagnosis to warm up", || {
        let v: Value = serde_json::from_str(&http_body(daemon.port, "/api/live").ok()?).ok()?;
        (v["stats"]["steps"].as_u64()? >= 14).then_some(())
    })
    .unwrap();
    std::fs::write(&flag, "").unwrap();
    let incident = wait_until(T, "an incident with a report", || {
        let v: Value =
            serde_json::from_str(&http_body(daemon.port, "/api/incidents").ok()?).ok()?;
        v["incidents"]
            .as_array()?
            .iter()
            // Other sessions' daemons on this machine may open incidents of their own.
            .find(|i| i["entry"] == "storefront" && !i["top_cause"].is_null())
            .and_then(|i| i["id"].as_str().map(str::to_string))
    })
    .unwrap();
    let report = http_body(daemon.port, &format!("/api/incidents/{incident}")).unwrap();
    std::fs::write(out.join("incident.json"), &report).unwrap();

    // The incidents list, then the report.
    b.go(&format!("{base}#/incidents"));
    wait_until(T, "the incident in the list", || {
        let v =
            b.eval("return [...document.querySelectorAll('tr.incident')].map(r => r.dataset.id)");
        v.as_array()?
            .iter()
            .any(|id| id.as_str() == Some(&incident))
            .then_some(())
    })
    .unwrap();
    b.screenshot(&out.join("incidents.png"));
    b.assert_console_clean("incidents");
    b.click(&format!(
        "tr.incident[data-id=\"{incident}\"] td:nth-child(2) a"
    ))
    .unwrap();
    let first = wait_until(T, "the report's first root cause", || {
        let v = b.eval(
            "const c = document.querySelector('.cause[data-rank=\"1\"]');
             return c ? {element: c.dataset.element, path: !!document.getElementById('propagation'),
                         phenomenon: (document.getElementById('phenomenon') || {}).textContent}
                      : null",
        );
        (!v.is_null()).then_some(v)
    })
    .unwrap();
    eprintln!("first root cause: {first}");
    assert_eq!(
        first["element"], "inventory",
        "the injected service is the first root cause; report: {report}"
    );
    assert_eq!(first["path"], true, "the propagation path is drawn");
    let logs =
        b.eval("const t = document.getElementById('report-logs'); return t ? t.textContent : ''");
    assert!(
        logs.as_str().is_some_and(|t| t.contains("stock lookup")),
        "inventory's error-log template in the report: {logs}"
    );
    b.screenshot(&out.join("incident.png"));
    b.assert_console_clean("incident");

    // The plugins: the HTTP parser with its records.
    b.go(&format!("{base}#/plugins"));
    wait_until(
        T,
        "the HTTP parser and the default rules in the plugins",
        || {
            let v = b.eval(
            "return {parsers: [...document.querySelectorAll('tr.parser')].map(r => r.dataset.name),
                     rules: document.querySelectorAll('tr.rule').length}",
        );
            (v["parsers"]
                .as_array()?
                .iter()
                .any(|n| n.as_str().is_some_and(|n| n.contains("http")))
                && v["rules"].as_u64()? > 0)
                .then_some(())
        },
    )
    .unwrap();
    b.screenshot(&out.join("plugins.png"));
    b.assert_console_clean("plugins");
    eprintln!(
        "screenshots in {}; {} console entries, none severe",
        out.display(),
        b.console.len()
    );
}
