//! TLS plaintext through the libssl uprobes, end to end: `sonde run` first, then real
//! servers and clients from Debian started after it (nginx with `listen … ssl`, Python's `ssl`
//! module, curl), all linked to the system's OpenSSL 3. HTTPS must give the same
//! `http_server_request_duration_seconds` series as HTTP, counted exactly against nginx's
//! access log, and curl's side as an HTTP client; the TLS records on the sockets are counted
//! as ciphertext and never parsed (no series but the expected ones on the server's port).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use sonde_tests::httplab::{self, Daemon, Nginx, Sample, Scratch, Upstream, curl, sum};
use sonde_tests::wait_until;

const T: Duration = Duration::from_secs(90);
const SERVER: &str = "http_server_request_duration_seconds";
const CLIENT: &str = "http_client_request_duration_seconds";

/// Each test runs its own daemon; one at a time keeps CPU for the traffic.
static SERIAL: Mutex<()> = Mutex::new(());

/// Sonde's server-side counts on `port` in the series labelled `tls="true"`, by (method,
/// route, status).
fn observed(samples: &[Sample], port: u16) -> BTreeMap<(String, String, String), u64> {
    let port = port.to_string();
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.name == format!("{SERVER}_count")
            && s.label("server_port") == port
            && s.label("tls") == "true"
    }) {
        let key = (
            s.label("http_request_method").to_string(),
            s.label("http_route").to_string(),
            s.label("http_response_status_code").to_string(),
        );
        *m.entry(key).or_insert(0) += s.value as u64;
    }
    m
}

fn key(m: &str, r: &str, s: &str) -> (String, String, String) {
    (m.to_string(), r.to_string(), s.to_string())
}

/// The TLS programs run, and the system's libssl is attached.
fn tls_attached(daemon: &Daemon) {
    let samples = daemon.samples();
    let attached = samples
        .iter()
        .filter(|s| {
            s.name == "sonde_probe_info"
                && s.label("feature") == "tls"
                && s.label("state") == "attached"
        })
        .count();
    assert_eq!(
        attached,
        8,
        "the eight TLS programs attached (OpenSSL's 4, Go's 3, the exec tracepoint): {:?}",
        samples
            .iter()
            .filter(|s| s.name == "sonde_probe_info" && s.label("feature") == "tls")
            .collect::<Vec<_>>()
    );
}

/// curl with `-k --http1.1`, every URL in one invocation (one keep-alive connection).
fn curl_https(urls: &[String]) {
    let mut args: Vec<String> = vec!["-k".into(), "--http1.1".into()];
    for u in urls {
        args.extend(["-o".into(), "/dev/null".into(), u.clone()]);
    }
    curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
}

#[test]
fn https_through_nginx_gives_the_http_records() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The daemon first: nginx and curl start after it (their libssl attached from the
    // library directories at start, or by the /proc rescan).
    let daemon = Daemon::start("", "");
    tls_attached(&daemon);
    let upstream = Upstream::start().unwrap();
    let nginx = Nginx::start_tls(upstream.port).unwrap();
    let port = nginx.port;

    // One connection: 12 pages and 5 404s on ids (one route), keep-alive.
    let mut urls: Vec<String> = vec![nginx.https_url("/index.html"); 12];
    urls.extend((1..=5).map(|i| nginx.https_url(&format!("/users/{}", 2000 + i))));
    curl_https(&urls);
    // A second connection: 3 more 404s and 2 pages.
    let mut urls: Vec<String> = vec![nginx.https_url("/nope.html"); 3];
    urls.extend(vec![nginx.https_url("/index.html"); 2]);
    curl_https(&urls);

    let expected: BTreeMap<_, _> = [
        (key("GET", "/index.html", "200"), 14),
        (key("GET", "/users/{id}", "404"), 5),
        (key("GET", "/nope.html", "404"), 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        nginx.route_counts().unwrap(),
        expected,
        "nginx's access log"
    );
    let got = wait_until(T, "Sonde's server-side counts to match nginx's", || {
        let o = observed(&daemon.samples(), port);
        (o == expected).then_some(o)
    });
    let samples = daemon.samples();
    assert!(
        got.is_ok(),
        "server side over TLS: expected {expected:?}, got {:?}",
        observed(&samples, port)
    );

    // curl's own side, from its libssl: the same requests as an HTTP client.
    let p = port.to_string();
    let client = |route: &str, status: &str| {
        sum(
            &daemon.samples(),
            &format!("{CLIENT}_count"),
            &[
                ("service_name", "curl"),
                ("url_template", route),
                ("http_response_status_code", status),
                ("server_port", &p),
            ],
        )
    };
    wait_until(T, "curl's client-side counts", || {
        (client("/index.html", "200") == 14.0
            && client("/users/{id}", "404") == 5.0
            && client("/nope.html", "404") == 3.0)
            .then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "client side over TLS: /index.html {}, /users/{{id}} {}, /nope.html {}",
            client("/index.html", "200"),
            client("/users/{id}", "404"),
            client("/nope.html", "404")
        )
    });

    // The TLS records were seen and set aside, and plaintext came from the uprobes (the
    // health snapshot is published after the records of the same batch: polled too).
    let (ciphertext, plaintext, samples) = httplab::wait_tls_counters(&daemon, 2.0 * 24.0, T);
    // The records say they came from TLS plaintext (a label on records, not on RED series).
    let on_port = httplab::records_on_port(&daemon, port);
    let server_records: Vec<&serde_json::Value> = on_port
        .iter()
        .filter(|r| r["side"] == "server" && r["local"] == format!("127.0.0.1:{port}"))
        .collect();
    assert!(
        !server_records.is_empty(),
        "nginx's records in /api/records"
    );
    assert!(
        server_records.iter().all(|r| r["labels"]["tls"] == "true"),
        "every record of nginx's TLS port is labelled tls=true: {server_records:?}"
    );
    eprintln!(
        "tls: server {got:?}; ciphertext bytes {ciphertext}, plaintext events {plaintext}, \
         without conn {}",
        sum(&samples, "sonde_capture_tls_without_conn_total", &[])
    );
}

/// Python's `ssl` module (SSL_read_ex/SSL_write_ex in OpenSSL 3) serving HTTPS, started after
/// the daemon in a mount namespace of its own where a copy of libssl is bind-mounted over the
/// system's path, as a container image brings its own: the same path in its maps, another
/// file (device+inode) the daemon has not seen, reachable only through /proc/<pid>/root. It is
/// found by reading the process again after its exec was reported, once Python has imported
/// `ssl`; curl, outside the namespace, is the client.
#[test]
fn https_through_python_ssl_gives_the_http_records() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = Daemon::start("", "");
    tls_attached(&daemon);
    let dir = Scratch::new("tls-python");
    httplab::make_certificate(dir.path()).unwrap();
    let port = httplab::free_port();
    let script = format!(
        r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code = 200 if self.path.startswith("/ok") else 404
        body = b"hello over tls\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", {port}), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("{d}/cert.pem", "{d}/key.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#,
        d = dir.path().display()
    );
    const SYSTEM_LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
    let copy = dir.path().join("libssl.so.3");
    std::fs::copy(SYSTEM_LIBSSL, &copy).unwrap();
    let script_file = dir.path().join("server.py");
    std::fs::write(&script_file, &script).unwrap();
    let files = || {
        sum(
            &daemon.samples(),
            "sonde_tls_libssl_files",
            &[("state", "attached")],
        )
    };
    let by_exec = || {
        sum(
            &daemon.samples(),
            "sonde_tls_discoveries_total",
            &[("via", "exec")],
        )
    };
    let before = files();
    let before_exec = by_exec();
    // unshare(1) makes the mount namespace private and execs (no fork): the child is Python.
    let mut server: Child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' {SYSTEM_LIBSSL} && exec /usr/bin/python3 '{}'",
            copy.display(),
            script_file.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Kill(&mut server);
    wait_until(Duration::from_secs(20), "python to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap();
    // The namespace's libssl is the copy, not the host's file at the same path.
    use std::os::unix::fs::MetadataExt;
    let ident = |p: &std::path::Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    };
    let inside = std::path::PathBuf::from(format!("/proc/{}/root{SYSTEM_LIBSSL}", server.0.id()));
    assert_eq!(ident(&inside), ident(&copy), "the namespace sees the copy");
    assert_ne!(
        ident(&copy),
        ident(std::path::Path::new(SYSTEM_LIBSSL)),
        "the host keeps its own libssl"
    );
    wait_until(T, "the rescan to attach the copy of libssl", || {
        (files() > before).then_some(())
    })
    .unwrap();
    // Found because Python's exec was reported (sched:sched_process_exec), not by the
    // 30-second read of all of /proc.
    assert!(
        by_exec() > before_exec,
        "the copy of libssl found through the exec tracepoint: {} before, {} now",
        before_exec,
        by_exec()
    );
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let mut urls: Vec<String> = vec![url("/ok"); 6];
    urls.extend(vec![url("/missing"); 4]);
    curl_https(&urls);
    let expected: BTreeMap<_, _> = [
        (key("GET", "/ok", "200"), 6),
        (key("GET", "/missing", "404"), 4),
    ]
    .into_iter()
    .collect();
    let got = wait_until(T, "Sonde's counts of the Python server", || {
        let o = observed(&daemon.samples(), port);
        (o == expected).then_some(o)
    });
    assert!(
        got.is_ok(),
        "python ssl server: expected {expected:?}, got {:?}",
        observed(&daemon.samples(), port)
    );
    drop(server);
}

/// MariaDB over TLS: the protocol starts in cleartext (the server's greeting, the client's
/// SSLRequest), then TLS begins inside the connection. The records are set aside from the
/// ClientHello on, and the plaintext from both processes' libssl continues the MySQL stream,
/// so the queries are counted on both sides as in cleartext, with their error codes.
#[test]
fn mariadb_over_tls_gives_the_mysql_records_on_both_sides() {
    use sonde_tests::dblab::MariaDb;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = Daemon::start("", "");
    tls_attached(&daemon);
    let db = MariaDb::start_tls().unwrap();
    // Three sessions, each: the cipher in use (proof that the session is TLS), a query, and a
    // query that fails with 1046 (no database selected).
    const SESSIONS: usize = 3;
    for _ in 0..SESSIONS {
        let out = db
            .client_tls(
                "SHOW STATUS LIKE 'Ssl_cipher'; SELECT 1; SELECT * FROM nosuch",
                true,
            )
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("TLS_") || stdout.contains("ECDHE"),
            "the session uses TLS: {stdout}"
        );
    }
    // Each session: SHOW and SELECT answered, SELECT failed with 1046.
    let status = |r: &serde_json::Value| r["status"].to_string();
    db_records_on_both_sides(
        &daemon,
        db.port,
        "mysql",
        &[("SHOW", "0"), ("SELECT", "0"), ("SELECT", "1046")],
        SESSIONS,
        &status,
    );
}

/// PostgreSQL over TLS: psql's SSLRequest and the server's `S` in cleartext, then TLS inside
/// the connection; the startup, the queries and an error (SQLSTATE) come as plaintext from
/// libpq's and the server's libssl and continue the PostgreSQL stream.
#[test]
fn postgres_over_tls_gives_the_postgresql_records_on_both_sides() {
    use sonde_tests::dblab::Postgres;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = Daemon::start("", "");
    tls_attached(&daemon);
    let db = Postgres::start_tls().unwrap();
    const SESSIONS: usize = 3;
    for _ in 0..SESSIONS {
        let out = db
            .psql_tls(
                &[
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    "SELECT * FROM nosuch",
                ],
                true,
            )
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().any(|l| l.trim() == "t"),
            "the session uses TLS: {stdout}"
        );
    }
    // Attributes are [key, value] pairs; a failed statement has its SQLSTATE.
    let sqlstate = |r: &serde_json::Value| {
        r["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|kv| kv[0] == "db.response.status_code")
            .and_then(|kv| kv[1].as_str())
            .unwrap_or("")
            .to_string()
    };
    db_records_on_both_sides(
        &daemon,
        db.port,
        "postgresql",
        &[("SELECT", ""), ("SELECT", "42P01")],
        SESSIONS,
        &sqlstate,
    );
}

/// Waits until the records on `port` are exactly `per_session` × `sessions` on each side
/// (server and client), keyed by (side, operation, `status` of the record), all of
/// `protocol`; TLS plaintext must have been counted first.
fn db_records_on_both_sides(
    daemon: &Daemon,
    port: u16,
    protocol: &str,
    per_session: &[(&str, &str)],
    sessions: usize,
    status: &dyn Fn(&serde_json::Value) -> String,
) {
    httplab::wait_tls_counters(daemon, 4.0 * sessions as f64, T);
    let mut expected: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for side in ["server", "client"] {
        for (op, st) in per_session {
            *expected
                .entry((side.to_string(), op.to_string(), st.to_string()))
                .or_insert(0) += sessions;
        }
    }
    let seen = || {
        let mut m = BTreeMap::new();
        for r in httplab::records_on_port(daemon, port) {
            assert_eq!(r["protocol"], protocol, "{r}");
            let key = (
                r["side"].as_str().unwrap_or("").to_string(),
                r["operation"].as_str().unwrap_or("").to_string(),
                status(&r),
            );
            *m.entry(key).or_insert(0) += 1;
        }
        m
    };
    let got = wait_until(T, "the records of the TLS sessions", || {
        let m = seen();
        (m == expected).then_some(m)
    });
    assert!(
        got.is_ok(),
        "{protocol} over TLS: expected {expected:?}, got {:?}",
        seen()
    );
}
