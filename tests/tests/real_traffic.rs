//! Real traffic that broke earlier builds, each with real servers and clients:
//! - nginx as Debian configures it (`sendfile on`): heads through writev, bodies through
//!   sendfile (never in user memory), keep-alive, bodies of 100 B to 1 MiB, 404s, and
//!   pipelined responses larger than the capture cap arriving in one read; server- and
//!   client-side counts and statuses must equal nginx's access log and what the clients sent,
//!   at the smallest and the largest `capture_bytes`;
//! - meanwhile a process writes random bytes and non-ASCII text to stdout/stderr (captured
//!   for log mining): the daemon must keep running and keep counting exactly;
//! - a server whose worker threads name themselves is one service, named after its process.
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd as _;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use sonde_tests::httplab::{Daemon, Nginx, Sample, Upstream, curl, free_port, http_get, sum};
use sonde_tests::{require_root, wait_until};

const T: Duration = Duration::from_secs(90);
const SERVER: &str = "http_server_request_duration_seconds_count";
const CLIENT: &str = "http_client_request_duration_seconds_count";

/// One daemon and nginx at a time: CPU for the traffic.
static SERIAL: Mutex<()> = Mutex::new(());

const SIZES: [(&str, usize); 5] = [
    ("s100.bin", 100),
    ("s1k.bin", 1000),
    ("s20k.bin", 20_000),
    ("s100k.bin", 100_000),
    ("s1m.bin", 1 << 20),
];

/// A process that writes random bytes, a gzip-like stream and non-ASCII text to its stdout
/// and stderr until killed.
fn hostile_writer() -> Child {
    let script = r#"
import os, random, sys, time
r = random.Random(7)
lines = ["€12 paid for order 7", "überweisung fehlgeschlagen: 5 €", "注文 42 の支払いに失敗しました",
         "ошибка: нет связи", "\x1f\x8b\x08\x00garbage", ""]
end = time.time() + 600
while time.time() < end:
    os.write(1, bytes(r.getrandbits(8) for _ in range(r.randrange(1, 300))) + b"\n")
    os.write(2, (r.choice(lines) + "\n").encode("utf-8", "surrogateescape"))
    os.write(1, r.choice(lines).encode() + b" " + bytes([0xe2, 0x82]) + b"\n")  # cut mid-character
    time.sleep(0.002)
"#;
    Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

/// Pipelined requests in one write; the first read waits (SO_RCVLOWAT) until `lowat` bytes are
/// there, so several responses larger than the capture cap arrive in one read.
fn pipelined_one_read(port: u16, requests: &[String], lowat: i32) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // SAFETY: a valid socket and an int option.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const lowat).cast(),
            size_of::<i32>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_RCVLOWAT");
    s.write_all(requests.concat().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let n = s.read(&mut buf).unwrap();
    assert!(n >= lowat as usize, "one read of {n} bytes");
    buf.truncate(n);
    s.read_to_end(&mut buf).unwrap();
    buf
}

/// Server-side counts Sonde made for nginx, by (method, route, status).
fn server_counts(samples: &[Sample], port: u16) -> BTreeMap<(String, String, String), u64> {
    let port = port.to_string();
    let mut m = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == SERVER && s.label("server_port") == port)
    {
        *m.entry((
            s.label("http_request_method").to_string(),
            s.label("http_route").to_string(),
            s.label("http_response_status_code").to_string(),
        ))
        .or_insert(0) += s.value as u64;
    }
    m
}

/// Client-side counts toward nginx's port, by status (of one service, or all).
fn client_counts(samples: &[Sample], port: u16, service: Option<&str>) -> BTreeMap<String, u64> {
    let port = port.to_string();
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.name == CLIENT
            && s.label("server_port") == port
            && service.is_none_or(|n| s.label("service_name") == n)
    }) {
        *m.entry(s.label("http_response_status_code").to_string())
            .or_insert(0) += s.value as u64;
    }
    m
}

fn run_sendfile_traffic(capture_bytes: u32) {
    let upstream = Upstream::start().unwrap();
    let nginx = Nginx::start_with(upstream.port, "sendfile on;\n    tcp_nopush on;").unwrap();
    for (name, size) in SIZES {
        std::fs::write(
            nginx.www().join(name),
            sonde_tests::pattern(size as u64, size),
        )
        .unwrap();
    }
    let daemon = Daemon::start_with(
        "",
        "",
        &format!("[capture]\ncapture_bytes = {capture_bytes}\nsendfile = true\n"),
    );
    let mut writer = hostile_writer();

    // Keep-alive: one curl, one connection, every size and some 404s, three rounds.
    let mut urls: Vec<String> = Vec::new();
    for round in 0..3 {
        for (name, _) in SIZES {
            urls.push(nginx.url(&format!("/{name}")));
        }
        urls.push(nginx.url(&format!("/missing-{round}.bin")));
    }
    let mut args: Vec<String> = Vec::new();
    for u in &urls {
        args.extend(["-o".into(), "/dev/null".into(), u.clone()]);
    }
    curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let mut curl_sent: BTreeMap<String, u64> = BTreeMap::new();
    *curl_sent.entry("200".into()).or_default() += 3 * SIZES.len() as u64;
    *curl_sent.entry("404".into()).or_default() += 3;

    // Pipelined: four responses (three of 20 kB) in one read of ~61 kB, beyond either cap.
    let req = |p: &str, last: bool| {
        format!(
            "GET {p} HTTP/1.1\r\nHost: t\r\n{}\r\n",
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    let answer = pipelined_one_read(
        nginx.port,
        &[
            req("/s20k.bin", false),
            req("/nope.bin", false),
            req("/s20k.bin", false),
            req("/s20k.bin", true),
        ],
        60_000,
    );
    assert_eq!(
        String::from_utf8_lossy(&answer)
            .matches("HTTP/1.1 ")
            .count(),
        4,
        "four pipelined answers"
    );
    let pipelined_statuses = [200, 404, 200, 200];

    // Server side: nginx wrote every head with writev and every body with sendfile; each
    // request lands with its own status, exactly as nginx logged it (nginx logs a request
    // after answering it: wait for the log to have them all).
    let total = curl_sent.values().sum::<u64>() + pipelined_statuses.len() as u64;
    wait_until(T, "nginx to log every request", || {
        (nginx.access_lines() as u64 >= total).then_some(())
    })
    .unwrap();
    let expected = nginx.route_counts().unwrap();
    assert_eq!(
        expected.values().sum::<u64>(),
        total,
        "nginx logged every request"
    );
    let mine = format!("127.0.0.1:{}", nginx.port);
    let client_records = || -> Vec<serde_json::Value> {
        let body = sonde_tests::httplab::http_body(daemon.port, "/api/records?limit=5000")
            .unwrap_or_default();
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["side"] == "client" && r["remote"].as_str() == Some(mine.as_str()))
            .collect()
    };
    let last = Mutex::new(String::new());
    let converged = wait_until(
        T,
        "server side exact, every client request recorded",
        || {
            let samples = daemon.samples();
            let server = server_counts(&samples, nginx.port);
            let curl_seen = client_counts(&samples, nginx.port, Some("curl"));
            let records = client_records();
            *last.lock().unwrap() = format!(
                "server side: {server:#?}\nnginx: {expected:#?}\ncurl's side: {curl_seen:#?}\n\
             curl sent: {curl_sent:#?}\nclient-side records: {}",
                records
                    .iter()
                    .map(|r| format!(
                        "{} {} {} {}",
                        r["comm"], r["operation"], r["status"], r["error"]
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            (server == expected && curl_seen == curl_sent && records.len() as u64 == total)
                .then_some(records)
        },
    );
    let records = converged.unwrap_or_else(|e| panic!("{e}\n{}", last.lock().unwrap()));
    // The pipelined connection: four records in request order. The first response lies
    // inside the cap either way; a response whose bytes fell in the read's uncaptured tail has
    // no status to give (0, "truncated"), and never another request's.
    let piped: Vec<_> = records.iter().filter(|r| r["comm"] != "curl").collect();
    assert_eq!(piped.len(), 4, "{}", last.lock().unwrap());
    assert_eq!(piped[0]["status"], 200, "{}", last.lock().unwrap());
    for (r, want) in piped.iter().zip(pipelined_statuses) {
        let got = r["status"].as_u64().unwrap_or(u64::MAX);
        assert!(
            got == want || (got == 0 && r["error"] == "truncated"),
            "a status on the wrong request: {r} (want {want})\n{}",
            last.lock().unwrap()
        );
    }
    // The capture counters reach /metrics on the daemon's next tick, after the records.
    let bodies: usize = 3 * SIZES.iter().map(|(_, n)| n).sum::<usize>() + 3 * 20_000;
    let samples = wait_until(T, "the sendfile bodies followed as gaps", || {
        let samples = daemon.samples();
        (sum(&samples, "sonde_capture_bytes_spliced_total", &[]) >= bodies as f64)
            .then_some(samples)
    })
    .unwrap();
    assert!(
        writer.try_wait().unwrap().is_none(),
        "the hostile writer ran throughout"
    );
    assert!(
        sum(&samples, "sonde_capture_events_total", &[("kind", "log")]) > 0.0,
        "its output was captured"
    );
    assert!(
        sum(&samples, "sonde_log_lines_total", &[]) > 0.0,
        "and mined"
    );
    assert_eq!(
        sum(&samples, "sonde_task_panics_total", &[]),
        0.0,
        "the log miner took every byte without a panic (none caught either)"
    );
    let _ = writer.kill();
    let _ = writer.wait();
    // The daemon is alive: it answers after all of it.
    http_get(daemon.port, "/metrics").expect("the daemon survived the hostile output");
}

#[test]
fn nginx_sendfile_keepalive_and_pipelining_at_the_smallest_cap() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    run_sendfile_traffic(sonde_common::MIN_CAPTURE_BYTES);
}

#[test]
fn nginx_sendfile_keepalive_and_pipelining_at_the_largest_cap() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    run_sendfile_traffic(sonde_common::MAX_CAPTURE as u32);
}

/// A Python server whose handler threads rename themselves (prctl PR_SET_NAME): its records
/// and series carry the process name, one service, however its threads are called.
#[test]
fn a_server_with_named_threads_is_one_service_named_after_its_process() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let daemon = Daemon::start("", "");
    let port = free_port();
    let script = format!(
        r#"
import ctypes, http.server, itertools
libc = ctypes.CDLL(None)
n = itertools.count()
class H(http.server.BaseHTTPRequestHandler):
    def handle(self):
        # Named before the connection's first read: every byte is moved by "hworker-N".
        libc.prctl(15, b"hworker-%d" % next(n), 0, 0, 0)
        super().handle()
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#
    );
    let mut server = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(T, "the python server to listen", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap();
    for i in 0..6 {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/item/{i}"),
        ])
        .unwrap();
    }
    let services = wait_until(T, "six server-side requests", || {
        let samples = daemon.samples();
        let mine: Vec<_> = samples
            .iter()
            .filter(|s| s.name == SERVER && s.label("server_port") == port.to_string())
            .cloned()
            .collect();
        (mine.iter().map(|s| s.value).sum::<f64>() >= 6.0).then_some(mine)
    })
    .unwrap();
    let names: std::collections::BTreeSet<_> = services
        .iter()
        .map(|s| s.label("service_name").to_string())
        .collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["python3"],
        "one service, the process's name, not the threads'"
    );
    let records: Vec<serde_json::Value> = serde_json::from_str(
        &sonde_tests::httplab::http_body(daemon.port, "/api/records?limit=500").unwrap(),
    )
    .unwrap();
    let served: Vec<_> = records
        .iter()
        .filter(|r| r["side"] == "server" && r["local"] == format!("127.0.0.1:{port}"))
        .collect();
    assert_eq!(served.len(), 6, "{records:#?}");
    for r in served {
        assert_eq!(r["comm"], "python3", "the process's name: {r}");
        assert!(
            r["labels"]["thread_name"]
                .as_str()
                .is_some_and(|t| t.starts_with("hworker-")),
            "the thread's name kept beside it: {r}"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
