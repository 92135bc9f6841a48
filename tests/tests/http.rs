//! The HTTP parser end to end: real nginx (static files, and `/api/` proxied to an upstream
//! whose sleep, errors and chunked bodies the test controls), real curl and wrk, raw pipelined
//! requests; `sonde run` captures with eBPF, parses in the Wasm HTTP plugin and serves RED
//! metrics. Counts are checked exactly against nginx's access log and against tshark's
//! dissection of the same loopback traffic; latencies against the upstream's known sleep.
//! A second test loads a looping, a trapping and a memory-hungry parser beside the HTTP one.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use sonde_tests::httplab::{
    self, Daemon, Nginx, Sample, Scratch, Tshark, Upstream, curl, pipelined, sum,
};
use sonde_tests::{require_root, sonde_bin_path, wait_until, wasm};

const T: Duration = Duration::from_secs(90);

/// Each test runs its own daemon and nginx; one at a time keeps CPU for the traffic.
static SERIAL: Mutex<()> = Mutex::new(());

const SERVER: &str = "http_server_request_duration_seconds";
const CLIENT: &str = "http_client_request_duration_seconds";

/// nginx's served requests, by (method, normalised route, status): the ground truth.
fn expected(nginx: &Nginx) -> BTreeMap<(String, String, String), u64> {
    nginx.route_counts().unwrap()
}

/// What Sonde counted on nginx's server side, same key.
fn observed(samples: &[Sample], nginx_port: u16) -> BTreeMap<(String, String, String), u64> {
    let port = nginx_port.to_string();
    let mut m = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == format!("{SERVER}_count") && s.label("server_port") == port)
    {
        let key = (
            s.label("http_request_method").to_string(),
            s.label("http_route").to_string(),
            s.label("http_response_status_code").to_string(),
        );
        *m.entry(key).or_insert(0) += s.value as u64;
    }
    m
}

fn server_total(samples: &[Sample], nginx_port: u16) -> u64 {
    sum(
        samples,
        &format!("{SERVER}_count"),
        &[("server_port", &nginx_port.to_string())],
    ) as u64
}

/// Known traffic: keep-alive, 404s, HEAD, a large body, 100-continue POSTs, a slow upstream,
/// 500s, chunked bodies, and pipelined requests on one raw socket.
fn drive_known_traffic(nginx: &Nginx, scratch: &Scratch) -> Result<()> {
    let url = |p: &str| nginx.url(p);
    let many = |paths: &[String]| -> Result<()> {
        let mut args: Vec<String> = Vec::new();
        for p in paths {
            args.extend(["-o".into(), "/dev/null".into(), url(p)]);
        }
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(())
    };
    // One curl, one connection, 20 requests (keep-alive).
    many(&vec!["/index.html".to_string(); 20])?;
    // 404s on ids: one route after normalisation.
    many(
        &(1..=6)
            .map(|i| format!("/users/{}", 1000 + i))
            .collect::<Vec<_>>(),
    )?;
    for _ in 0..2 {
        curl(&["-I", "-o", "/dev/null", &url("/index.html")])?;
    }
    many(&vec!["/big.bin".to_string(); 2])?;
    let body = scratch.path().join("body.bin");
    std::fs::write(&body, sonde_tests::pattern(1, 2048))?;
    for _ in 0..3 {
        curl(&[
            "-o",
            "/dev/null",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "10",
            "--data-binary",
            &format!("@{}", body.display()),
            &url("/api/echo"),
        ])?;
    }
    many(&vec!["/api/slow".to_string(); 5])?;
    many(&vec!["/api/fail".to_string(); 4])?;
    many(&vec!["/api/chunked".to_string(); 3])?;
    let req = |m: &str, p: &str, last: bool| {
        format!(
            "{m} {p} HTTP/1.1\r\nHost: test\r\n{}\r\n",
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    // HEAD goes last: tshark, which the test compares against, reads a pipelined HEAD
    // response's Content-Length as a body and swallows the next response (Sonde does not).
    let answer = pipelined(
        nginx.port,
        &[
            req("GET", "/index.html", false),
            req("GET", "/users/99", false),
            req("GET", "/index.html", false),
            req("HEAD", "/index.html", true),
        ],
    )?;
    let text = String::from_utf8_lossy(&answer);
    anyhow::ensure!(
        text.matches("HTTP/1.1 ").count() == 4,
        "four pipelined answers: {text}"
    );
    Ok(())
}

/// wrk for a short burst: many requests on a few keep-alive connections (rate-limited by a
/// per-request delay so capture stays loss-free on a 2-core machine).
fn drive_wrk(nginx: &Nginx, scratch: &Scratch) -> Result<()> {
    let script = scratch.path().join("delay.lua");
    std::fs::write(&script, "function delay()\n  return 2\nend\n")?;
    let out = Command::new("wrk")
        .args(["-t1", "-c2", "-d1s", "-s"])
        .arg(&script)
        .arg(nginx.url("/index.html"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn red_metrics_match_nginx_access_log_and_tshark() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let scratch = Scratch::new("http-test");
    let upstream = Upstream::start().unwrap();
    let nginx = Nginx::start(upstream.port).unwrap();
    let daemon = Daemon::start("", "");
    let tshark = Tshark::start(nginx.port).unwrap();

    drive_known_traffic(&nginx, &scratch).unwrap();
    drive_wrk(&nginx, &scratch).unwrap();

    // `sonde top` while more traffic flows: the busiest endpoint shows with its rate.
    let top = Command::new(sonde_bin_path())
        .args([
            "top",
            "--once",
            "--interval",
            "1.5",
            "--endpoint",
            &format!("127.0.0.1:{}", daemon.port),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..10 {
        curl(&["-o", "/dev/null", &nginx.url("/index.html")]).unwrap();
    }
    let top = top.wait_with_output().unwrap();
    let top_text = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success(), "sonde top failed");
    assert!(
        top_text.lines().any(|l| l.starts_with("server")
            && l.contains("nginx")
            && l.contains("GET /index.html")),
        "sonde top shows nginx's GET /index.html:\n{top_text}"
    );

    let served = nginx.access_lines() as u64;
    let samples = wait_until(T, "sonde to count every request nginx served", || {
        let s = daemon.samples();
        (server_total(&s, nginx.port) >= served).then_some(s)
    })
    .unwrap();
    let want = expected(&nginx);
    let got = observed(&samples, nginx.port);
    assert_eq!(
        got, want,
        "Sonde's per-(method, route, status) counts equal nginx's access log"
    );

    // Hand-checked parts of the same truth, so a wrong normaliser cannot hide a miss.
    let get = |m: &str, r: &str, st: &str| {
        got.get(&(m.to_string(), r.to_string(), st.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(get("GET", "/users/{id}", "404"), 7);
    assert_eq!(get("HEAD", "/index.html", "200"), 3);
    assert_eq!(get("POST", "/api/echo", "200"), 3);
    assert_eq!(get("GET", "/api/chunked", "200"), 3);
    assert_eq!(get("GET", "/big.bin", "200"), 2);
    assert!(
        get("GET", "/index.html", "200") > 100,
        "wrk's requests are counted"
    );
    let port = nginx.port.to_string();
    assert_eq!(
        sum(
            &samples,
            &format!("{SERVER}_count"),
            &[
                ("server_port", &port),
                ("http_response_status_code", "500"),
                ("error_type", "500")
            ]
        ),
        4.0,
        "a 500 is a server-side error"
    );
    assert_eq!(
        sum(
            &samples,
            &format!("{SERVER}_count"),
            &[
                ("server_port", &port),
                ("http_response_status_code", "404"),
                ("error_type", "404")
            ]
        ),
        0.0,
        "a 404 is not a server-side error"
    );

    // Latency: the upstream sleeps SLOW_MS; nginx's answers to /api/slow take at least that,
    // and (on loopback) far less than 0.5 s more. Both sides: nginx as server, nginx as client
    // of the upstream.
    for (metric, filter) in [
        (
            SERVER,
            vec![
                ("server_port", port.clone()),
                ("http_route", "/api/slow".to_string()),
            ],
        ),
        (
            CLIENT,
            vec![
                ("service_name", "nginx".to_string()),
                ("server_port", upstream.port.to_string()),
                ("url_template", "/api/slow".to_string()),
            ],
        ),
    ] {
        let f: Vec<(&str, &str)> = filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let bucket = |le: &str| {
            let mut f = f.clone();
            f.push(("le", le));
            sum(&samples, &format!("{metric}_bucket"), &f)
        };
        assert_eq!(
            sum(&samples, &format!("{metric}_count"), &f),
            5.0,
            "{metric} /api/slow count"
        );
        assert_eq!(
            bucket("0.1"),
            0.0,
            "{metric}: no /api/slow answer under 100 ms"
        );
        assert_eq!(
            bucket("0.75"),
            5.0,
            "{metric}: every /api/slow answer under 750 ms"
        );
        let mean = sum(&samples, &format!("{metric}_sum"), &f) / 5.0;
        assert!(
            mean >= httplab::SLOW_MS as f64 / 1e3,
            "{metric}: mean {mean} s below the upstream's sleep"
        );
    }

    // Client side: curl's own view of its 404s.
    assert_eq!(
        sum(
            &samples,
            &format!("{CLIENT}_count"),
            &[
                ("service_name", "curl"),
                ("url_template", "/users/{id}"),
                ("http_response_status_code", "404"),
                ("server_port", &port)
            ]
        ),
        6.0,
        "curl as an HTTP client"
    );

    // tshark, dissecting the same packets independently.
    let (methods, statuses) = tshark.stop_and_count(nginx.port).unwrap();
    let mut our_methods: BTreeMap<String, u64> = BTreeMap::new();
    let mut our_statuses: BTreeMap<u32, u64> = BTreeMap::new();
    for ((m, _, st), n) in &got {
        *our_methods.entry(m.clone()).or_insert(0) += n;
        *our_statuses.entry(st.parse().unwrap()).or_insert(0) += n;
    }
    assert_eq!(our_methods, methods, "requests per method: Sonde vs tshark");
    assert_eq!(
        our_statuses, statuses,
        "final responses per status: Sonde vs tshark"
    );

    // A connection no parser wants (binary bytes both ways) gets a verdict: after it, the
    // kernel counts that connection's bytes without copying them.
    let skipped_before = sum(
        &samples,
        "sonde_capture_bytes_skipped_by_verdict_total",
        &[],
    );
    let verdicts_before = sum(&samples, "sonde_parse_verdicts_total", &[]);
    let binary = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let baddr = binary.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = binary.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        while total < (1 << 20) + 512 {
            let n = std::io::Read::read(&mut s, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let mut c = std::net::TcpStream::connect(baddr).unwrap();
    std::io::Write::write_all(&mut c, &[0x00, 0x01, 0xfe, 0xff].repeat(128)).unwrap();
    wait_until(T, "the binary connection's verdict", || {
        (sum(&daemon.samples(), "sonde_parse_verdicts_total", &[]) > verdicts_before).then_some(())
    })
    .unwrap();
    for _ in 0..16 {
        std::io::Write::write_all(&mut c, &sonde_tests::pattern(3, 64 << 10)).unwrap();
    }
    drop(c);
    assert_eq!(echo.join().unwrap(), (1 << 20) + 512);
    wait_until(T, "bytes skipped by verdict", || {
        let skipped = sum(
            &daemon.samples(),
            "sonde_capture_bytes_skipped_by_verdict_total",
            &[],
        ) - skipped_before;
        (skipped >= (1 << 20) as f64).then_some(())
    })
    .unwrap();
    let samples = daemon.samples();

    // The pipeline's own accounting: nothing lost on the way.
    let lost = sum(&samples, "sonde_capture_events_lost_total", &[]);
    assert_eq!(lost, 0.0, "no capture loss in this test");
    assert_eq!(sum(&samples, "sonde_parser_jobs_dropped_total", &[]), 0.0);
    assert_eq!(sum(&samples, "sonde_plugin_failures_total", &[]), 0.0);
}

#[test]
fn looping_trapping_and_memory_hungry_parsers_are_stopped_and_http_stays_exact() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let parsers = Scratch::new("bad-parsers");
    for f in ["spin", "trap", "membomb"] {
        std::fs::copy(
            wasm::bad_parser(f),
            parsers.path().join(format!("bad-parser-{f}.wasm")),
        )
        .unwrap();
    }
    let upstream = Upstream::start().unwrap();
    let nginx = Nginx::start(upstream.port).unwrap();
    let daemon = Daemon::start(
        "",
        &format!(
            // Unsigned fixtures: this test is about the sandbox, so their directory allows them.
            "parser_dirs = [\"{0}\"]\nallow_unsigned_dirs = [\"{0}\"]\n\n[plugins.limits]\ncall_deadline_ms = 100\nmemory_bytes = 33554432\nquarantine_after = 2\nquarantine_ms = 200\n",
            parsers.path().display()
        ),
    );
    let samples = daemon.samples();
    for f in ["spin", "trap", "membomb"] {
        assert_eq!(
            sum(
                &samples,
                "sonde_plugin_info",
                &[("plugin", &format!("bad-parser-{f}"))]
            ),
            1.0,
            "bad-parser-{f} loaded"
        );
    }

    // Many connections, so the bad parsers are called (and fail) again and again.
    for round in 0..8 {
        curl(&[
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &nginx.url("/index.html"),
            &nginx.url(&format!("/users/{round}")),
        ])
        .unwrap();
        curl(&["-o", "/dev/null", &nginx.url("/api/fail")]).unwrap();
    }
    let served = nginx.access_lines() as u64;
    let samples = wait_until(
        T,
        "sonde to count every request and every bad parser to fail",
        || {
            let s = daemon.samples();
            let failed = |plugin: &str, kind: &str| {
                sum(
                    &s,
                    "sonde_plugin_failures_total",
                    &[("plugin", plugin), ("kind", kind)],
                ) >= 1.0
            };
            (server_total(&s, nginx.port) >= served
                && failed("bad-parser-spin", "deadline")
                && failed("bad-parser-trap", "trap")
                && failed("bad-parser-membomb", "memory-cap"))
            .then_some(s)
        },
    )
    .unwrap();
    assert_eq!(
        observed(&samples, nginx.port),
        expected(&nginx),
        "HTTP counts stay exact beside misbehaving parsers"
    );
    // Stopped within their limits: the looping one at its 100 ms deadline (plus the epoch
    // tick), never anywhere near a second.
    let spin_max = sum(
        &samples,
        "sonde_plugin_call_seconds_max",
        &[("plugin", "bad-parser-spin")],
    );
    assert!(
        (0.1..0.5).contains(&spin_max),
        "the looping parser ran {spin_max} s in its longest call"
    );
    assert_eq!(
        sum(
            &samples,
            "sonde_plugin_failures_total",
            &[("plugin", "sonde-http")]
        ),
        0.0,
        "the HTTP parser never failed"
    );
    assert_eq!(
        sum(
            &samples,
            "sonde_parser_jobs_dropped_total",
            &[("plugin", "sonde-http")]
        ),
        0.0,
        "HTTP never fell behind"
    );
    assert!(
        sum(&samples, "sonde_plugin_quarantines_total", &[]) >= 1.0,
        "repeat offenders are quarantined"
    );
}
