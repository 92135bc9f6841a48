//! The pieces of a cluster test: a real Prometheus (Debian's `prometheus`) scraping the
//! daemons' `/metrics`, `sonde hub` reading it, and two small Python services (a backend whose
//! latency a file controls, and a client at a steady rate). Each is a child process killed on
//! drop, its files in a scratch directory (Prometheus' TSDB too).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};

use std::io::{Read as _, Write as _};

use crate::httplab::{Scratch, free_port};
use crate::wait_until;

/// The body of a 200 answer to `GET path` on loopback. HTTP/1.0, so the server closes the
/// connection and sends the body unchunked (Prometheus chunks larger HTTP/1.1 answers).
pub fn get(port: u16, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(
        answer.split(' ').nth(1) == Some("200"),
        "GET {path}: {answer:.200}"
    );
    let (_, body) = answer
        .split_once("\r\n\r\n")
        .context("no end of the head")?;
    Ok(body.to_string())
}

/// Kills and reaps a child on drop.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus on loopback scraping `targets` (`host:port` of `/metrics`) every second.
pub struct Prometheus {
    pub port: u16,
    child: Owned,
    dir: Scratch,
}

impl Prometheus {
    pub fn start(targets: &[String]) -> Result<Prometheus> {
        let dir = Scratch::new("prometheus");
        let port = free_port();
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sonde\n    static_configs:\n      - targets: [{list}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting prometheus (Debian package `prometheus`, see scripts/bootstrap)")?;
        let mut p = Prometheus {
            port,
            child: Owned(child),
            dir,
        };
        wait_until(Duration::from_secs(60), "prometheus to be ready", || {
            if let Ok(Some(status)) = p.child.0.try_wait() {
                panic!("prometheus exited ({status}): {}", p.log());
            }
            get(port, "/-/ready").ok().map(drop)
        })?;
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result list (`data.result`).
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let encoded: String = expr
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let body = get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Wait until every target has been scraped up (`up == 1`).
    pub fn wait_targets_up(&self, n: usize, within: Duration) -> Result<()> {
        wait_until(within, "prometheus to scrape every target", || {
            let up = self.query("up == 1").ok()?;
            (up.len() >= n).then_some(())
        })
    }
}

/// `sonde hub` against a Prometheus, with a config file (`[live]` settings; the plugin cache
/// of the other tests), its API on a free loopback port.
pub struct Hub {
    pub port: u16,
    child: Owned,
    dir: Scratch,
}

impl Hub {
    pub fn start(prometheus_url: &str, live_toml: &str, step_s: u64) -> Result<Hub> {
        let dir = Scratch::new("hub");
        let port = free_port();
        let cache = crate::target_dir().join("plugin-cache");
        let config = format!(
            "[live]\n{live_toml}\n\n[plugins]\ncache_dir = \"{}\"\n",
            cache.display()
        );
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.path().join("hub.log"))?;
        let child = Command::new(crate::sonde_bin_path())
            .arg("--config")
            .arg(&path)
            .args(["hub", "--prometheus", prometheus_url, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--step")
            .arg(step_s.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting sonde hub")?;
        let mut h = Hub {
            port,
            child: Owned(child),
            dir,
        };
        wait_until(
            Duration::from_secs(90),
            "sonde hub to serve /metrics",
            || {
                if let Ok(Some(status)) = h.child.0.try_wait() {
                    panic!("sonde hub exited ({status}): {}", h.log());
                }
                get(port, "/metrics").ok().map(drop)
            },
        )?;
        Ok(h)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// A JSON endpoint of the hub's API.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&get(self.port, path)?)?)
    }

    pub fn metrics(&self) -> Result<String> {
        get(self.port, "/metrics")
    }

    /// The incidents' summaries (`/api/incidents`).
    pub fn incidents(&self) -> Result<Vec<serde_json::Value>> {
        Ok(self.get_json("/api/incidents")?["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// A Python program started under its own name: the daemon names a service by its process'
/// `comm`, which the kernel takes from the name the program was executed by (a symlink to
/// python3 here).
fn python_as(dir: &Path, name: &str, script: &str, args: &[String]) -> Result<Owned> {
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(
        std::fs::canonicalize("/usr/bin/python3").context("python3")?,
        &link,
    )?;
    let script_path: PathBuf = dir.join(format!("{name}.py"));
    std::fs::write(&script_path, script)?;
    let child = Command::new(&link)
        .arg(&script_path)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Owned(child))
}

const BACKEND: &str = r#"
import http.server, os, sys, time
port, fault = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        try:
            delay = float(open(fault).read().strip() or "0")
        except OSError:
            delay = 0.0
        if delay > 0:
            time.sleep(delay)
        body = b"item"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

const CLIENT: &str = r#"
import http.client, sys, threading, time
port, rate, threads, path = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def run():
    c = None
    while True:
        t = time.time()
        try:
            if c is None:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            c.getresponse().read()
        except Exception:
            c = None
        time.sleep(max(0.0, 1.0 / rate - (time.time() - t)))
for _ in range(threads):
    threading.Thread(target=run, daemon=True).start()
while True:
    time.sleep(3600)
"#;

/// An HTTP backend named `name`: answers every GET after the delay (seconds) written in its
/// fault file ([`Backend::set_delay`]), at once while the file is absent or empty.
pub struct Backend {
    pub port: u16,
    fault: PathBuf,
    _child: Owned,
    _dir: Scratch,
}

impl Backend {
    pub fn start(name: &str) -> Result<Backend> {
        let dir = Scratch::new("backend");
        let port = free_port();
        let fault = dir.path().join("delay");
        let child = python_as(
            dir.path(),
            name,
            BACKEND,
            &[port.to_string(), fault.display().to_string()],
        )?;
        wait_until(Duration::from_secs(20), "the backend to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        })?;
        Ok(Backend {
            port,
            fault,
            _child: child,
            _dir: dir,
        })
    }

    /// Every answer from now on waits `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) -> Result<()> {
        Ok(std::fs::write(
            &self.fault,
            format!("{}", delay.as_secs_f64()),
        )?)
    }
}

/// A client named `name`: `threads` keep-alive connections each asking `GET path` of
/// `127.0.0.1:port` at `rate` requests a second.
pub struct Client {
    _child: Owned,
    _dir: Scratch,
}

impl Client {
    pub fn start(name: &str, port: u16, path: &str, rate: f64, threads: u32) -> Result<Client> {
        let dir = Scratch::new("client");
        let child = python_as(
            dir.path(),
            name,
            CLIENT,
            &[
                port.to_string(),
                rate.to_string(),
                threads.to_string(),
                path.to_string(),
            ],
        )?;
        Ok(Client {
            _child: child,
            _dir: dir,
        })
    }
}

/// [`wait_until`] at a gentler pace, for checks that query a server (Prometheus, the hub).
pub fn poll<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let mut last = std::time::Instant::now() - Duration::from_secs(1);
    wait_until(deadline, what, || {
        if last.elapsed() < Duration::from_millis(250) {
            return None;
        }
        last = std::time::Instant::now();
        f()
    })
}
