//! The HTTP/2 parser end to end, against real servers and clients from Debian: `nghttpd`
//! (`--no-tls`: h2c with prior knowledge) with `nghttp` (several interleaved GETs on one
//! connection, a 404) and `h2load` (many streams in flight on each connection), and a Python
//! gRPC server and client (python3-grpcio, generic handlers: a unary RPC, a server-streaming
//! RPC, a NOT_FOUND). `sonde run` captures with eBPF, parses in the embedded Wasm component and
//! serves the RED metrics: the counts per operation and status must be exactly what was sent,
//! on both the server's and the clients' side.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sonde_tests::httplab::{Daemon, Sample, Scratch, free_port, sum};
use sonde_tests::{require_root, wait_until};

const T: Duration = Duration::from_secs(90);

const HTTP_SERVER: &str = "http_server_request_duration_seconds_count";
const HTTP_CLIENT: &str = "http_client_request_duration_seconds_count";
const RPC_SERVER: &str = "rpc_server_duration_seconds_count";
const RPC_CLIENT: &str = "rpc_client_duration_seconds_count";
const UNANSWERED: &str = "sonde_requests_unanswered_total";

/// A child process killed on drop, with the directory it serves.
struct Server {
    child: Child,
    port: u16,
    _dir: Scratch,
}

impl Server {
    /// `command(port)` started on a free port until it listens there: a port taken between
    /// [`free_port`] and the server's bind (a parallel test's connection can hold it) makes
    /// the server exit, and another port is tried.
    fn start(what: &str, dir: Scratch, command: impl Fn(u16) -> Command) -> Server {
        for _ in 0..5 {
            let port = free_port();
            let mut child = command(port)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {what}: {e}"));
            match wait_listening(&mut child, port, what) {
                Ok(()) => {
                    return Server {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                Err(exit) => eprintln!("{what} on port {port}: {exit}; trying another port"),
            }
        }
        panic!("{what}: no port it could listen on in five attempts");
    }
}

/// Ok once `child` accepts on `port`; Err with its exit status if it exited first.
fn wait_listening(child: &mut Child, port: u16, what: &str) -> Result<(), String> {
    wait_until(T, what, || {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(Err(format!("exited with {st}")));
        }
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(()))
    })
    .unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nghttpd serving a scratch directory: `/index.html`, `/data/{id}` files and a 16 KB body.
fn nghttpd() -> Server {
    let dir = Scratch::new("nghttpd");
    let www = dir.path().to_path_buf();
    std::fs::write(www.join("index.html"), "<html>sonde h2 test</html>\n").unwrap();
    std::fs::create_dir_all(www.join("data")).unwrap();
    std::fs::write(www.join("data/12345"), "{\"id\":12345}\n").unwrap();
    std::fs::write(www.join("body.txt"), "x".repeat(16 * 1024)).unwrap();
    Server::start("nghttpd (Debian package nghttp2-server)", dir, |port| {
        let mut c = Command::new("nghttpd");
        // Loopback only: without an address it also binds [::], and keeps running there
        // when 127.0.0.1:port is taken, where the test connects.
        c.args(["--no-tls", "-a", "127.0.0.1", "-d"])
            .arg(&www)
            .arg(port.to_string());
        c
    })
}

/// The samples a failure message shows: the protocol's metrics and what went unanswered.
fn shown(s: &[Sample], prefixes: &[&str]) -> String {
    s.iter()
        .filter(|x| prefixes.iter().any(|p| x.name.starts_with(p)) || x.name == UNANSWERED)
        .map(|x| format!("{} {:?} {}\n", x.name, x.labels, x.value))
        .collect()
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn http(s: &[Sample], metric: &str, route_key: &str, route: &str, status: &str, port: u16) -> u64 {
    sum(
        s,
        metric,
        &[
            ("http_request_method", "GET"),
            (route_key, route),
            ("http_response_status_code", status),
            ("server_port", &port.to_string()),
        ],
    ) as u64
}

/// Requests of the test's own processes left without a response, by error.
fn unanswered(s: &[Sample], protocol: &str, comms: &[&str], error: Option<&str>) -> u64 {
    s.iter()
        .filter(|x| {
            x.name == UNANSWERED
                && x.label("protocol") == protocol
                && comms.contains(&x.label("service_name"))
                && error.is_none_or(|e| x.label("error_type") == e)
        })
        .map(|x| x.value as u64)
        .sum()
}

/// h2load: requests per run, connections, streams in flight per connection.
const H2LOAD_N: u64 = 400;

#[test]
fn http2_nghttp_and_h2load_are_counted_exactly() {
    require_root();
    let server = nghttpd();
    // A write longer than `capture_bytes` loses its tail to a gap; for HTTP/2 that tail can
    // hold other streams' frames (nghttpd writes the 16 KB body and the 404 together), which
    // the parser then reports `truncated` rather than guess. The largest copy keeps this
    // session's writes whole, so the counts can be exact.
    let daemon = Daemon::start_with("", "", "[capture]\ncapture_bytes = 32768\n");
    let base = format!("http://127.0.0.1:{}", server.port);

    // One connection, four streams interleaved: three 200s (one with a 16 KB body) and a 404.
    let out = run(
        Command::new("nghttp").args([
            "-n",
            "-s",
            &format!("{base}/index.html"),
            &format!("{base}/data/12345"),
            &format!("{base}/body.txt"),
            &format!("{base}/missing"),
        ]),
        "nghttp (Debian package nghttp2-client)",
    );
    assert!(out.contains("404") || !out.is_empty(), "{out}");
    // Many streams in flight: 2 connections, 10 concurrent streams each.
    let load = run(
        Command::new("h2load").args([
            "-n",
            &H2LOAD_N.to_string(),
            "-c",
            "2",
            "-m",
            "10",
            &format!("{base}/index.html"),
        ]),
        "h2load (Debian package nghttp2-client)",
    );
    assert!(
        load.contains(&format!("{H2LOAD_N} succeeded")),
        "h2load: {load}"
    );

    let p = server.port;
    let expected = [
        ("/index.html", "200", 1 + H2LOAD_N),
        ("/data/{id}", "200", 1),
        ("/body.txt", "200", 1),
        ("/missing", "404", 1),
    ];
    let counted = |s: &[Sample], metric: &str, key: &str| {
        expected
            .iter()
            .map(|(route, status, _)| http(s, metric, key, route, status, p))
            .collect::<Vec<_>>()
    };
    let want: Vec<u64> = expected.iter().map(|e| e.2).collect();
    let samples = wait_until(
        T,
        "Sonde to count the HTTP/2 requests on both sides",
        || {
            let s = daemon.samples();
            (counted(&s, HTTP_SERVER, "http_route") == want
                && counted(&s, HTTP_CLIENT, "url_template") == want)
                .then_some(s)
        },
    )
    .unwrap_or_else(|e| {
        let s = daemon.samples();
        panic!(
            "{e}: sent {want:?}; server side {:?}, client side {:?}, unanswered {}\n{}",
            counted(&s, HTTP_SERVER, "http_route"),
            counted(&s, HTTP_CLIENT, "url_template"),
            unanswered(&s, "http", &["nghttpd", "nghttp", "h2load"], None),
            shown(
                &s,
                &[
                    "http_server_request_duration_seconds_count",
                    "http_client_request_duration_seconds_count"
                ]
            )
        )
    });
    // Nothing else on that port: no other route, no status, nothing refused.
    let all = |metric: &str| sum(&samples, metric, &[("server_port", &p.to_string())]) as u64;
    let total: u64 = want.iter().sum();
    assert_eq!(all(HTTP_SERVER), total);
    assert_eq!(all(HTTP_CLIENT), total);
    assert_eq!(
        unanswered(&samples, "http", &["nghttpd", "nghttp", "h2load"], None),
        0,
        "every stream answered, no hpack-desync"
    );
    // The 404 is an error on the client's side (its error_type), not on the server's.
    let errors = |metric: &str, route_key: &str| {
        sum(
            &samples,
            metric,
            &[(route_key, "/missing"), ("error_type", "404")],
        ) as u64
    };
    assert_eq!(errors(HTTP_CLIENT, "url_template"), 1);
    assert_eq!(errors(HTTP_SERVER, "http_route"), 0);
}

fn h2c_upgrade_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/http2/tests/fixtures/h2c_upgrade.py")
}

/// h2c by `Upgrade: h2c` (RFC 7540 §3.2): `nghttp -u` against nghttpd behind
/// `h2c_upgrade.py` (nghttpd speaks h2c with prior knowledge only; the script answers the
/// upgrade with a 101 and relays nghttpd's frames). The upgrade request is stream 1 and is
/// counted once, by the HTTP/2 parser, with the status of its HTTP/2 response: no HTTP/1
/// record (status 101) of it.
#[test]
fn http2_upgrade_from_http1_is_counted_exactly() {
    require_root();
    let upstream = nghttpd();
    let front = Server::start("h2c_upgrade.py", Scratch::new("h2c-upgrade"), |port| {
        let mut c = Command::new(PYTHON);
        c.arg(h2c_upgrade_script())
            .args([port.to_string(), upstream.port.to_string()]);
        c
    });
    let port = front.port;
    let daemon = Daemon::start("", "");
    let base = format!("http://127.0.0.1:{port}");
    let runs = 3u64;
    for _ in 0..runs {
        let out = run(
            Command::new("nghttp").args([
                "-n",
                "-u",
                "-v",
                &format!("{base}/index.html"),
                &format!("{base}/data/12345"),
                &format!("{base}/missing"),
            ]),
            "nghttp -u (Debian package nghttp2-client)",
        );
        assert!(out.contains("HTTP Upgrade success"), "{out}");
    }

    // The upgraded connections: nghttp the client, the script (python3) the server.
    let expected = [
        ("/index.html", "200", runs),
        ("/data/{id}", "200", runs),
        ("/missing", "404", runs),
    ];
    let counted = |s: &[Sample], metric: &str, key: &str, service: &str| {
        expected
            .iter()
            .map(|(route, status, _)| {
                sum(
                    s,
                    metric,
                    &[
                        ("http_request_method", "GET"),
                        (key, route),
                        ("http_response_status_code", status),
                        ("server_port", &port.to_string()),
                        ("service_name", service),
                    ],
                ) as u64
            })
            .collect::<Vec<_>>()
    };
    let want: Vec<u64> = expected.iter().map(|e| e.2).collect();
    let samples = wait_until(
        T,
        "Sonde to count the upgraded streams on both sides",
        || {
            let s = daemon.samples();
            (counted(&s, HTTP_CLIENT, "url_template", "nghttp") == want
                && counted(&s, HTTP_SERVER, "http_route", "python3") == want)
                .then_some(s)
        },
    )
    .unwrap_or_else(|e| {
        let s = daemon.samples();
        panic!(
            "{e}: sent {want:?}; client side {:?}, server side {:?}\n{}",
            counted(&s, HTTP_CLIENT, "url_template", "nghttp"),
            counted(&s, HTTP_SERVER, "http_route", "python3"),
            shown(
                &s,
                &[
                    "http_server_request_duration_seconds_count",
                    "http_client_request_duration_seconds_count"
                ]
            )
        )
    });
    // Exactly those on the upgraded connections: no HTTP/1 record of the upgrade request
    // (it would be status 101), nothing else.
    let total: u64 = want.iter().sum();
    for (metric, service) in [(HTTP_CLIENT, "nghttp"), (HTTP_SERVER, "python3")] {
        let at = |extra: &[(&str, &str)]| {
            let port = port.to_string();
            let mut f = vec![("server_port", port.as_str()), ("service_name", service)];
            f.extend_from_slice(extra);
            sum(&samples, metric, &f) as u64
        };
        assert_eq!(at(&[]), total, "{metric} {service}");
        assert_eq!(
            at(&[("http_response_status_code", "101")]),
            0,
            "{metric} {service}"
        );
    }
    assert_eq!(
        unanswered(&samples, "http", &["nghttp", "python3"], None),
        0,
        "every stream answered"
    );
}

fn grpc_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/http2/tests/fixtures/grpc_session.py")
}

/// Debian's Python (python3-grpcio is installed for it, not for a pyenv `python3` on PATH).
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn grpc_unary_streaming_and_errors_are_counted_exactly() {
    require_root();
    let server = Server::start(
        "the gRPC server (python3-grpcio)",
        Scratch::new("grpc"),
        |port| {
            let mut c = Command::new(PYTHON);
            c.arg(grpc_script()).args(["server", &port.to_string()]);
            c
        },
    );
    let port = server.port;
    let daemon = Daemon::start("", "");

    let (unary, streams, missing) = (7u64, 4u64, 3u64);
    let out = run(
        Command::new(PYTHON).arg(grpc_script()).args([
            "client",
            &port.to_string(),
            &unary.to_string(),
            &streams.to_string(),
            &missing.to_string(),
        ]),
        "the gRPC client",
    );
    assert_eq!(
        out.trim(),
        format!("unary {unary} messages {} not_found {missing}", streams * 3)
    );

    let p = port.to_string();
    let rpc = |s: &[Sample], metric: &str, method: &str, code: &str| {
        sum(
            s,
            metric,
            &[
                ("rpc_system", "grpc"),
                ("rpc_service", "sonde.test.Greeter"),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
                ("server_port", &p),
            ],
        ) as u64
    };
    let expected = [
        ("SayHello", "0", unary),
        ("Count", "0", streams),
        ("SayHello", "5", missing),
    ];
    let counted = |s: &[Sample], metric: &str| {
        expected
            .iter()
            .map(|(m, c, _)| rpc(s, metric, m, c))
            .collect::<Vec<_>>()
    };
    let want: Vec<u64> = expected.iter().map(|e| e.2).collect();
    let sent: u64 = want.iter().sum();
    // The client's side too: gRPC's C core writes its preface, settings and first request in
    // one sendmsg of 29 iovecs. The kernel side walks every iovec (bpf_loop); when it copied
    // only the first 16, the first request's headers, which fill the HPACK dynamic table, were
    // lost and every later request on that connection was refused as hpack-desync.
    let refused = |s: &[Sample]| {
        s.iter()
            .filter(|x| {
                x.name == UNANSWERED
                    && x.label("service_name") == "python3"
                    && ["hpack-desync", "truncated"].contains(&x.label("error_type"))
            })
            .map(|x| x.value as u64)
            .sum::<u64>()
    };
    let samples = wait_until(T, "Sonde to count the RPCs on both sides", || {
        let s = daemon.samples();
        (counted(&s, RPC_SERVER) == want && counted(&s, RPC_CLIENT) == want).then_some(s)
    })
    .unwrap_or_else(|e| {
        let s = daemon.samples();
        panic!(
            "{e}: sent {want:?}; server side {:?}, client side {:?}, refused {}\n{}",
            counted(&s, RPC_SERVER),
            counted(&s, RPC_CLIENT),
            refused(&s),
            shown(&s, &["rpc_"])
        )
    });
    // Nothing refused, nothing counted on the client's side beyond what was sent.
    assert_eq!(refused(&samples), 0, "{}", shown(&samples, &["rpc_"]));
    assert_eq!(
        sum(&samples, RPC_CLIENT, &[("server_port", &p)]) as u64,
        sent
    );
    assert_eq!(
        sum(
            &samples,
            RPC_CLIENT,
            &[("error_type", "NOT_FOUND"), ("server_port", &p)]
        ) as u64,
        missing
    );
    // The server's side is exact: nothing else on that port, and the errors named.
    assert_eq!(
        sum(&samples, RPC_SERVER, &[("server_port", &p)]) as u64,
        sent
    );
    assert_eq!(
        sum(
            &samples,
            RPC_SERVER,
            &[("error_type", "NOT_FOUND"), ("server_port", &p)]
        ) as u64,
        missing
    );
    // gRPC is not counted as plain HTTP.
    assert_eq!(
        sum(&samples, HTTP_SERVER, &[("server_port", &p)]) as u64
            + sum(&samples, HTTP_CLIENT, &[("server_port", &p)]) as u64,
        0
    );
    assert_eq!(
        unanswered(&samples, "grpc", &["python3"], None),
        0,
        "every RPC whose request was read got its response"
    );
}
