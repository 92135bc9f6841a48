//! Hot swap through the admin socket: the HTTP parser is replaced by a new version 100 times
//! while a steady load runs against nginx, and every request the load generator sent is
//! counted exactly once, on both ends; and the admin socket refuses a non-root user.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sonde::admin::{Request, Response};
use sonde_tests::httplab::{Daemon, Nginx, Scratch, http_get, parse_metrics, sum};
use sonde_tests::wait_until;

fn swaps() -> usize {
    std::env::var("SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

fn daemon_with_admin(socket: &Path) -> Daemon {
    // Components loaded from the socket's directory may be unsigned: these tests are about
    // swapping (tests/tests/plugin_signing.rs covers signatures, also for this path).
    let dir = socket.parent().unwrap().display().to_string();
    Daemon::start_with(
        "",
        &format!("allow_unsigned_dirs = [\"{dir}\"]\n"),
        &format!(
            "[admin]\nsocket = \"{}\"\ndrain_timeout_s = 30\n[kubernetes]\nmode = \"off\"\n",
            socket.display()
        ),
    )
}

/// One `GET /index.html` on a new connection (`Connection: close`); whether it got a 200.
fn one_request(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    body.starts_with(b"HTTP/1.1 200")
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn http_parser_swapped_100_times_under_load_loses_and_doubles_nothing() {
    let dir = Scratch::new("hotswap");
    let socket = dir.path().join("admin.sock");
    let d = daemon_with_admin(&socket);
    // The new version: the HTTP component as a file (the daemon's is embedded).
    let wasm = dir.path().join("sonde-http.wasm");
    std::fs::write(&wasm, sonde_sandbox::parsers::HTTP_PARSER_WASM).unwrap();
    let nginx = Nginx::start(1).expect("nginx");
    let port = nginx.port;

    // Steady load: one request at a time on fresh connections, paced (~400/s) so capture is
    // nowhere near its limits; the count is the ground truth.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if one_request(port) {
                    sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed += 1;
                }
                // Pacing, not synchronisation.
                std::thread::sleep(Duration::from_micros(2500));
            }
            failed
        })
    };
    wait_until(Duration::from_secs(10), "the load to start", || {
        (sent.load(Ordering::Relaxed) > 50).then_some(())
    })
    .unwrap();

    let (mut swap_ms, mut load_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
    let swaps_n = swaps();
    for i in 0..swaps_n {
        let t = Instant::now();
        let r: Response = sonde::admin::request(
            &socket,
            &Request::Reload {
                name: "sonde-http".into(),
                path: Some(wasm.clone()),
            },
        )
        .expect("admin request");
        assert!(r.ok, "swap {i}: {:?}", r.error);
        total_ms.push(t.elapsed().as_secs_f64() * 1e3);
        swap_ms.push(r.swap_ms.unwrap());
        load_ms.push(r.load_ms.unwrap());
    }
    // A little more load on the last version, then stop.
    let at_last_swap = sent.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(10), "load after the last swap", || {
        (sent.load(Ordering::Relaxed) > at_last_swap + 50).then_some(())
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let failed = load.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "every request of the load got its 200");

    // Every request exactly once: the server's view and the client's. Poll until the counts
    // reach `sent`, then check they never pass it.
    let port_s = port.to_string();
    let counts = |d: &Daemon| {
        let s = parse_metrics(&http_get(d.port, "/metrics").unwrap_or_default());
        let server = [
            ("server_port", port_s.as_str()),
            ("http_route", "/index.html"),
        ];
        let client = [
            ("server_port", port_s.as_str()),
            ("url_template", "/index.html"),
        ];
        (
            sum(&s, "http_server_request_duration_seconds_count", &server),
            sum(&s, "http_client_request_duration_seconds_count", &client),
        )
    };
    let got = wait_until(Duration::from_secs(30), "every request counted", || {
        let c = counts(&d);
        (c.0 >= sent as f64 && c.1 >= sent as f64).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e:#}: sent {sent}, counted {:?}", counts(&d)));
    assert_eq!(got, (sent as f64, sent as f64), "sent {sent}");
    // The swapped-out versions retire once their connections close.
    let list = wait_until(Duration::from_secs(30), "old versions to retire", || {
        let r = sonde::admin::request(&socket, &Request::List).ok()?;
        r.slots
            .iter()
            .filter(|s| s.name == "sonde-http")
            .all(|s| s.state != "draining")
            .then_some(r)
    })
    .unwrap();
    let http: Vec<_> = list
        .slots
        .iter()
        .filter(|s| s.name == "sonde-http")
        .collect();
    assert_eq!(http.len(), swaps_n + 1);
    assert_eq!(http.iter().filter(|s| s.state == "active").count(), 1);
    assert_eq!(
        counts(&d),
        (sent as f64, sent as f64),
        "nothing counted twice later"
    );
    let served = nginx.access_counts().unwrap();
    let logged: u64 = served
        .iter()
        .filter(|((_, uri, _), _)| uri == "/index.html")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(logged, sent, "nginx served what the load generator counted");
    // The version is visible in /metrics.
    let metrics = http_get(d.port, "/metrics").unwrap();
    assert!(metrics.contains(&format!(
        "plugin=\"sonde-http\",version=\"{}\"",
        http[swaps_n].version
    )));
    eprintln!(
        "hot swap: {swaps_n} swaps under {sent} requests; swap in the loop p50 {:.3} ms max {:.3} ms; load (cached compile) p50 {:.1} ms max {:.1} ms; request round trip p50 {:.1} ms max {:.1} ms",
        percentile(&mut swap_ms, 0.5),
        percentile(&mut swap_ms, 1.0),
        percentile(&mut load_ms, 0.5),
        percentile(&mut load_ms, 1.0),
        percentile(&mut total_ms, 0.5),
        percentile(&mut total_ms, 1.0),
    );
}

#[test]
fn admin_socket_refuses_non_root_users() {
    let dir = Scratch::new("admin-perm");
    let socket = dir.path().join("admin.sock");
    let d = daemon_with_admin(&socket);
    let mode = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!(mode.mode() & 0o777, 0o600, "socket mode");
    assert_eq!(mode.uid(), 0, "owned by root");
    let as_nobody = |socket: &Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(sonde_tests::sonde_bin_path())
            .args(["plugin", "list", "--socket"])
            .arg(socket)
            .output()
            .expect("setpriv runs")
    };
    // The file mode keeps nobody out…
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&socket);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // …and if the socket is opened up by mistake, the daemon checks the peer's uid itself.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&socket);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root only") && err.contains("65534"), "{err}");
    // Root is served.
    let r = sonde::admin::request(&socket, &Request::List).unwrap();
    assert!(r.ok && r.slots.iter().any(|s| s.name == "sonde-http"));
    // …and what it loads follows the signing rules: an unsigned component outside the
    // allowed directories is refused, and the running version stays.
    let elsewhere = Scratch::new("unsigned");
    let wasm = elsewhere.path().join("sonde-http.wasm");
    std::fs::write(&wasm, sonde_sandbox::parsers::HTTP_PARSER_WASM).unwrap();
    let r = sonde::admin::request(
        &socket,
        &Request::Reload {
            name: "sonde-http".into(),
            path: Some(wasm),
        },
    )
    .unwrap();
    assert!(!r.ok);
    let err = r.error.unwrap_or_default();
    assert!(err.contains("allow_unsigned_dirs"), "{err}");
    let r = sonde::admin::request(&socket, &Request::List).unwrap();
    assert_eq!(r.slots.iter().filter(|s| s.name == "sonde-http").count(), 1);
    drop(d);
}

#[test]
fn a_component_written_to_the_watched_directory_is_swapped_in_and_removed_again() {
    let dir = Scratch::new("watched");
    let parsers = dir.path().join("parsers");
    std::fs::create_dir_all(&parsers).unwrap();
    let socket = dir.path().join("admin.sock");
    let d = Daemon::start_with(
        "",
        // Unsigned on purpose: this test is about the watch, not about signatures.
        &format!(
            "parser_dirs = [\"{p}\"]\nallow_unsigned_dirs = [\"{p}\"]\n",
            p = parsers.display()
        ),
        &format!("[admin]\nsocket = \"{}\"\n", socket.display()),
    );
    let active_source = || -> Option<String> {
        let r = sonde::admin::request(&socket, &Request::List).ok()?;
        r.slots
            .into_iter()
            .find(|s| s.name == "sonde-http" && s.state == "active")
            .map(|s| s.source)
    };
    assert_eq!(active_source().as_deref(), Some("embedded"));
    // Written elsewhere and moved in, as deployment tools do (a half-written file is never
    // seen).
    let staged = dir.path().join("sonde-http.wasm.tmp");
    std::fs::write(&staged, sonde_sandbox::parsers::HTTP_PARSER_WASM).unwrap();
    let target = parsers.join("sonde-http.wasm");
    std::fs::rename(&staged, &target).unwrap();
    let want = target.display().to_string();
    wait_until(
        Duration::from_secs(30),
        "the watched component to be swapped in",
        || (active_source().as_deref() == Some(want.as_str())).then_some(()),
    )
    .unwrap();
    // A broken component written over it changes nothing (rollback: the running one stays).
    std::fs::write(parsers.join("broken.wasm"), b"\0asm not really").unwrap();
    std::fs::remove_file(&target).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the removed component to be unloaded",
        || active_source().is_none().then_some(()),
    )
    .unwrap();
    let r = sonde::admin::request(&socket, &Request::List).unwrap();
    assert!(r.slots.iter().all(|s| s.name != "broken"));
    drop(d);
}
