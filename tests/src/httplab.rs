//! A small HTTP lab on loopback for the parser tests: nginx from Debian serving static files and
//! proxying `/api/` to an upstream in this process whose behaviour the test controls (a known
//! sleep, a 500, a chunked body, an echo), plus tshark as an independent dissector, and
//! helpers to read Prometheus text.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::wait_until;

/// How long the upstream's `/api/slow` sleeps.
pub const SLOW_MS: u64 = 200;

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sonde-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The upstream: one thread per connection, all named `sonde-upstream` (the `comm` the daemon
/// sees). Routes: `/api/slow` sleeps [`SLOW_MS`] then 200; `/api/fail` 500; `/api/chunked` a
/// chunked 200; `POST /api/echo` echoes the body; anything else 404. Keep-alive unless the
/// request says `Connection: close`.
pub struct Upstream {
    pub port: u16,
}

impl Upstream {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::Builder::new()
            .name("sonde-upstream".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = std::thread::Builder::new()
                        .name("sonde-upstream".into())
                        .spawn(move || {
                            let _ = serve_upstream(conn);
                        });
                }
            })?;
        Ok(Self { port })
    }
}

fn serve_upstream(conn: TcpStream) -> Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        r.read_exact(&mut body)?;
        let conn_hdr = if close { "Connection: close\r\n" } else { "" };
        match (method.as_str(), path.as_str()) {
            (_, "/api/slow") => {
                std::thread::sleep(Duration::from_millis(SLOW_MS));
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n{conn_hdr}\r\nslow"
                )?;
            }
            (_, "/api/fail") => write!(
                w,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n{conn_hdr}\r\nfail"
            )?,
            (_, "/api/chunked") => {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{conn_hdr}\r\n"
                )?;
                for piece in ["first ", "second ", "third"] {
                    write!(w, "{:x}\r\n{piece}\r\n", piece.len())?;
                    w.flush()?;
                }
                write!(w, "0\r\n\r\n")?;
            }
            ("POST", "/api/echo") => {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                    body.len()
                )?;
                w.write_all(&body)?;
            }
            _ => write!(
                w,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n{conn_hdr}\r\n"
            )?,
        }
        w.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// nginx (Debian's `nginx-light`) in the foreground, as root, with its files in a scratch
/// directory: static files under `/`, `/api/` proxied to the upstream over HTTP/1.1, an access
/// log of `METHOD URI STATUS` lines (the ground truth of what it served).
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: Scratch,
}

impl Nginx {
    pub fn start(upstream: u16) -> Result<Self> {
        Nginx::start_with(upstream, "")
    }

    /// Like [`Nginx::start`], with more `http {}` directives (e.g. `sendfile on;`, as Debian's
    /// default nginx.conf has it) and static files `www/<name>` of the given sizes.
    pub fn start_with(upstream: u16, http_extra: &str) -> Result<Self> {
        Nginx::start_inner(upstream, http_extra, Path::new("nginx"), false)
    }

    /// Like [`Nginx::start_with`], running `program` (e.g. a link to nginx under another
    /// name, so the process and the service Sonde names after it are this test's own).
    pub fn start_as(upstream: u16, http_extra: &str, program: &Path) -> Result<Self> {
        Nginx::start_inner(upstream, http_extra, program, false)
    }

    /// Like [`Nginx::start`], serving HTTPS (TLS through the system's libssl) with a
    /// self-signed certificate made by `openssl req -x509` in its directory.
    pub fn start_tls(upstream: u16) -> Result<Self> {
        Nginx::start_inner(upstream, "", Path::new("nginx"), true)
    }

    fn start_inner(upstream: u16, http_extra: &str, program: &Path, tls: bool) -> Result<Self> {
        let dir = Scratch::new("nginx");
        let port = free_port();
        let listen = if tls {
            make_certificate(dir.path())?;
            let d = dir.path().display();
            format!(
                "listen 127.0.0.1:{port} ssl;\n        ssl_certificate {d}/cert.pem;\n        ssl_certificate_key {d}/key.pem;"
            )
        } else {
            format!("listen 127.0.0.1:{port};")
        };
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("index.html"), "<html>sonde test page</html>\n")?;
        // Large enough to span many segments and reads.
        std::fs::write(root.join("big.bin"), crate::pattern(7, 300 << 10))?;
        let d = dir.path().display();
        let conf = format!(
            r#"
user root;
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format sonde '$request_method $uri $status';
    access_log {d}/access.log sonde;
    client_body_temp_path {d}/tmp_body;
    proxy_temp_path {d}/tmp_proxy;
    fastcgi_temp_path {d}/tmp_fcgi;
    uwsgi_temp_path {d}/tmp_uwsgi;
    scgi_temp_path {d}/tmp_scgi;
    keepalive_requests 100000;
    {http_extra}
    server {{
        {listen}
        root {d}/www;
        location /api/ {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_buffering off;
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx (Debian package nginx-light)")?;
        let mut n = Nginx { child, port, dir };
        wait_until(Duration::from_secs(20), "nginx to listen", || {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!(
                    "nginx exited: {st}; {}",
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        Ok(n)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The URL of `path` on a server started with [`Nginx::start_tls`].
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The document root (static files served at `/`).
    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// `(method, uri, status)` → count, from the access log.
    pub fn access_counts(&self) -> Result<BTreeMap<(String, String, u32), u64>> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log"))?;
        let mut m = BTreeMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() == 3 {
                *m.entry((
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].parse().unwrap_or(0),
                ))
                .or_insert(0) += 1;
            }
        }
        Ok(m)
    }

    /// `(method, normalised route, status)` → count: the access log keyed as Sonde's
    /// `http_server_request_duration_seconds` series are.
    pub fn route_counts(&self) -> Result<BTreeMap<(String, String, String), u64>> {
        let mut m = BTreeMap::new();
        for ((method, uri, status), n) in self.access_counts()? {
            *m.entry((
                method,
                sonde_http_parser::route::normalise(&uri),
                status.to_string(),
            ))
            .or_insert(0) += n;
        }
        Ok(m)
    }

    pub fn access_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log")).map_or(0, |t| t.lines().count())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1/localhost: `cert.pem` and `key.pem` in `dir`.
pub fn make_certificate(dir: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .context("running openssl req")?;
    if !out.status.success() {
        bail!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Run curl with `args`; fails on a non-zero exit (HTTP errors are not curl errors).
pub fn curl(args: &[&str]) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!(
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Send `requests` back to back in one write on one connection (pipelining), then read until
/// the server closes (the last request should say `Connection: close`).
pub fn pipelined(port: u16, requests: &[String]) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(requests.concat().as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// tshark capturing one TCP port on loopback into a pcap file.
pub struct Tshark {
    child: Child,
    pub pcap: PathBuf,
    _dir: Scratch,
}

impl Tshark {
    /// Start capturing; returns once tshark has written the capture file header (it is live).
    pub fn start(port: u16) -> Result<Self> {
        let dir = Scratch::new("tshark");
        let pcap = dir.path().join("cap.pcapng");
        let child = Command::new("tshark")
            .args(["-i", "lo", "-q", "-f", &format!("tcp port {port}"), "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tshark (Debian package tshark)")?;
        let mut t = Tshark {
            child,
            pcap,
            _dir: dir,
        };
        wait_until(Duration::from_secs(30), "tshark to start capturing", || {
            if let Ok(Some(st)) = t.child.try_wait() {
                panic!("tshark exited: {st}");
            }
            std::fs::metadata(&t.pcap).ok().filter(|m| m.len() > 0)
        })?;
        Ok(t)
    }

    /// Stop capturing (SIGINT flushes the file).
    pub fn stop(&mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        wait_until(Duration::from_secs(30), "tshark to stop", || {
            self.child.try_wait().ok().flatten()
        })?;
        Ok(())
    }

    /// Every occurrence of `field` in the packets matching `filter`, with TCP port `port`
    /// decoded as `protocol` (tshark's dissector name: http, mysql…).
    pub fn fields(
        &self,
        port: u16,
        protocol: &str,
        filter: &str,
        field: &str,
    ) -> Result<Vec<String>> {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&self.pcap)
            .args([
                "-d",
                &format!("tcp.port=={port},{protocol}"),
                "-Y",
                filter,
                "-T",
                "fields",
                "-E",
                "occurrence=a",
                "-E",
                "aggregator=,",
                "-e",
                field,
            ])
            .output()
            .context("running tshark -r")?;
        if !out.status.success() {
            bail!("tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .collect())
    }

    /// Stop and dissect as HTTP: requests per method and final responses per status code.
    pub fn stop_and_count(
        mut self,
        port: u16,
    ) -> Result<(BTreeMap<String, u64>, BTreeMap<u32, u64>)> {
        self.stop()?;
        let field = |filter: &str, field: &str| self.fields(port, "http", filter, field);
        let mut methods = BTreeMap::new();
        for m in field("http.request", "http.request.method")? {
            *methods.entry(m).or_insert(0) += 1;
        }
        let mut statuses = BTreeMap::new();
        for s in field("http.response", "http.response.code")? {
            let code: u32 = s.parse().unwrap_or(0);
            if code >= 200 {
                *statuses.entry(code).or_insert(0) += 1;
            }
        }
        Ok((methods, statuses))
    }
}

impl Drop for Tshark {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read `/metrics` (or another path) from a daemon on loopback.
/// The body of a 200 answer to `GET {path}` (what [`http_get`] returns, without the head).
pub fn http_body(port: u16, path: &str) -> Result<String> {
    let response = http_get(port, path)?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("a response without the end of its head")?;
    Ok(body.to_string())
}

pub fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    anyhow::ensure!(
        body.starts_with("HTTP/1.1 200"),
        "bad response: {body:.100}"
    );
    Ok(body)
}

/// One sample of Prometheus text: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }
}

/// Parse Prometheus text exposition (the subset Sonde writes: no timestamps).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#')
            || line.trim().is_empty()
            || line.starts_with("HTTP/")
            || line.contains(": ") && !line.contains('{')
        {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
            None => (head.to_string(), BTreeMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => v.push(c),
            }
        }
        m.insert(k.trim_start_matches(',').to_string(), v);
        rest = &after[end..];
    }
    m
}

/// Sum of the samples named `name` whose labels include every `(k, v)` of `filter`.
/// Waits until the daemon has set TLS records on the sockets aside as ciphertext and counted
/// at least `min_plaintext` TLS plaintext events from the uprobes; returns (ciphertext bytes,
/// plaintext events, the samples read). Panics with both counters at the deadline.
pub fn wait_tls_counters(
    daemon: &Daemon,
    min_plaintext: f64,
    timeout: Duration,
) -> (f64, f64, Vec<Sample>) {
    let counts = || {
        let samples = daemon.samples();
        (
            sum(&samples, "sonde_stream_tls_ciphertext_bytes_total", &[]),
            sum(&samples, "sonde_capture_tls_events_total", &[]),
            samples,
        )
    };
    wait_until(timeout, "the TLS counters", || {
        let c = counts();
        (c.0 > 0.0 && c.1 >= min_plaintext).then_some(c)
    })
    .unwrap_or_else(|_| {
        let c = counts();
        panic!(
            "TLS records counted as ciphertext: {}, plaintext events: {} (want >= {min_plaintext})",
            c.0, c.1
        )
    })
}

/// The daemon's latest records (`/api/records`, up to 1000) with `127.0.0.1:port` at either end.
pub fn records_on_port(daemon: &Daemon, port: u16) -> Vec<serde_json::Value> {
    let body = http_body(daemon.port, "/api/records?limit=1000").expect("/api/records");
    let records: Vec<serde_json::Value> = serde_json::from_str(&body).expect("records JSON");
    let end = format!("127.0.0.1:{port}");
    records
        .into_iter()
        .filter(|r| r["local"] == end.as_str() || r["remote"] == end.as_str())
        .collect()
}

pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
        .sum()
}

/// `sonde run` as a child process with a config file: metrics on a free loopback port, plugin
/// code cached under `target/` (so repeated runs skip compiling the components), plus the
/// caller's `[metrics]` and `[plugins]` lines. Killed on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
    _dir: Scratch,
    stderr_log: Option<PathBuf>,
}

impl Daemon {
    pub fn start(metrics_toml: &str, plugins_toml: &str) -> Daemon {
        Daemon::start_with(metrics_toml, plugins_toml, "")
    }

    /// Like [`Daemon::start`], with further config sections (e.g. `[network]`) appended.
    pub fn start_with(metrics_toml: &str, plugins_toml: &str, more_toml: &str) -> Daemon {
        Daemon::spawn(metrics_toml, plugins_toml, more_toml, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Daemon::start_with`], but another daemon on this node (one per node: "already
    /// running") is waited for, up to `wait`, instead of failing the test. The daemon's
    /// stderr goes to a file ([`Daemon::stderr`]) to tell that answer from a failure.
    pub fn start_when_free(
        metrics_toml: &str,
        plugins_toml: &str,
        more_toml: &str,
        wait: Duration,
    ) -> Daemon {
        let end = std::time::Instant::now() + wait;
        loop {
            let log = crate::target_dir().join(format!("daemon-stderr-{}.log", std::process::id()));
            match Daemon::spawn(metrics_toml, plugins_toml, more_toml, Some(log)) {
                Ok(d) => return d,
                Err(e) if e.contains("already running") && std::time::Instant::now() < end => {
                    eprintln!("another sonde runs on this node; waiting for it: {e}");
                    // "already running (pid N)": poll until that process is gone (or a few
                    // seconds, when the pid is unknown), then try again.
                    let pid = e
                        .split("(pid ")
                        .nth(1)
                        .and_then(|r| r.split(')').next())
                        .and_then(|p| p.parse::<u32>().ok());
                    let left = end.saturating_duration_since(std::time::Instant::now());
                    let _ = wait_until(
                        left.min(Duration::from_secs(5)),
                        "the other daemon to stop",
                        || {
                            pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
                                .then_some(())
                        },
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The daemon's stderr so far, when [`Daemon::start_when_free`] sent it to a file.
    pub fn stderr(&self) -> String {
        self.stderr_log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    fn spawn(
        metrics_toml: &str,
        plugins_toml: &str,
        more_toml: &str,
        stderr_log: Option<PathBuf>,
    ) -> Result<Daemon, String> {
        crate::require_root();
        let dir = Scratch::new("daemon");
        let port = free_port();
        let cache = crate::target_dir().join("plugin-cache");
        // An admin socket of its own (the default path would be shared by parallel tests).
        let admin = if more_toml.contains("[admin]") {
            String::new()
        } else {
            format!(
                "[admin]\nsocket = \"{}\"\n",
                dir.path().join("admin.sock").display()
            )
        };
        let config = format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n{metrics_toml}\n\n[plugins]\ncache_dir = \"{}\"\n{plugins_toml}\n\n{more_toml}\n{admin}",
            cache.display()
        );
        let path = dir.path().join("sonde.toml");
        std::fs::write(&path, config).unwrap();
        let stderr = match &stderr_log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("creating the stderr log")),
            None => Stdio::inherit(),
        };
        let child = Command::new(crate::sonde_bin_path())
            .arg("--config")
            .arg(&path)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn sonde");
        let mut d = Daemon {
            child,
            port,
            _dir: dir,
            stderr_log,
        };
        let mut exited = false;
        wait_until(
            Duration::from_secs(90),
            "sonde run to serve /metrics",
            || {
                if d.child.try_wait().unwrap().is_some() {
                    exited = true;
                    return Some(());
                }
                http_get(port, "/metrics").ok().map(drop)
            },
        )
        .unwrap();
        if exited {
            return Err(format!("sonde run exited during start-up: {}", d.stderr()));
        }
        Ok(d)
    }

    /// The daemon's process id (for its `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One scrape of `/metrics`.
    pub fn samples(&self) -> Vec<Sample> {
        parse_metrics(&http_get(self.port, "/metrics").expect("scraping /metrics"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes() {
        let s =
            parse_metrics("# HELP x y\nx_count{a=\"1\",b=\"q\\\"uote\",le=\"+Inf\"} 3\ny 2.5\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label("b"), "q\"uote");
        assert_eq!(s[0].label("le"), "+Inf");
        assert_eq!(sum(&s, "x_count", &[("a", "1")]), 3.0);
        assert_eq!(s[1].value, 2.5);
    }
}
