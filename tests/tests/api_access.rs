//! Who may read the daemon's API, with the real daemon and curl: `/metrics` is open to
//! anyone who reaches the listener; `/api/*` answers loopback clients, and clients off
//! loopback only with the bearer token of `--api-token-file`.
//!
//! "Off loopback" is the peer's address, not the interface: the test adds one address outside
//! 127.0.0.0/8 (from TEST-NET-2, never routed) to `lo` and removes it on drop. curl binds its
//! source to it (`--interface`), so the daemon sees a client off loopback, as it would a pod
//! on the node.
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sonde_tests::{require_root, sonde_bin_path, wait_until};

const T: Duration = Duration::from_secs(60);
/// TEST-NET-2 (RFC 5737): never routed, so nothing else on the machine uses it.
const OFF_LOOPBACK: &str = "198.51.100.7";

/// `OFF_LOOPBACK` on `lo`, removed on drop.
struct ExtraAddress;

impl ExtraAddress {
    fn add() -> ExtraAddress {
        let cidr = format!("{OFF_LOOPBACK}/32");
        // Left behind by a crashed run: remove first.
        let _ = ip(&["addr", "del", &cidr, "dev", "lo"]);
        ip(&["addr", "add", &cidr, "dev", "lo"]).expect("ip addr add");
        ExtraAddress
    }
}

impl Drop for ExtraAddress {
    fn drop(&mut self) {
        let _ = ip(&["addr", "del", &format!("{OFF_LOOPBACK}/32"), "dev", "lo"]);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A `sonde run` child, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Status code and body of a GET by curl from `source`, with an optional bearer token.
fn get(source: &str, port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "5", "--interface", source])
        .args(["-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    // The daemon listens on every address; the request goes to the source's own address.
    let out = cmd
        .arg(format!("http://{source}:{port}{path}"))
        .output()
        .expect("curl (scripts/bootstrap installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_api_answers_loopback_and_token_holders_metrics_answers_everyone() {
    require_root();
    let _address = ExtraAddress::add();
    let dir = std::env::temp_dir().join(format!("sonde-api-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    let token = "t0ken-from-a-secret";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("0.0.0.0:{port}");
    let mut daemon = Daemon(
        Command::new(sonde_bin_path())
            .args(["run", "--metrics-listen", &listen, "--no-kubernetes"])
            .arg("--api-token-file")
            .arg(&token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sonde"),
    );
    wait_until(T, "sonde run to serve /metrics", || {
        assert!(
            matches!(daemon.0.try_wait(), Ok(None)),
            "sonde run exited during start-up"
        );
        (get("127.0.0.1", port, "/metrics", None).0 == 200).then_some(())
    })
    .unwrap();

    // Loopback: everything, no token needed.
    let (code, body) = get("127.0.0.1", port, "/api/health", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"kernel\""), "{body}");

    // Off loopback: /metrics yes; the API only with the token.
    let (code, body) = get(OFF_LOOPBACK, port, "/metrics", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("sonde_build_info"), "{body}");
    for path in ["/api/health", "/api/logs", "/api/records", "/api/map"] {
        let (code, _) = get(OFF_LOOPBACK, port, path, None);
        assert_eq!(code, 401, "{path} without a token");
        let (code, _) = get(OFF_LOOPBACK, port, path, Some("not-the-token"));
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, body) = get(OFF_LOOPBACK, port, path, Some(token));
        assert_eq!(code, 200, "{path} with the token: {body}");
    }
    let refused = || {
        let (_, metrics) = get("127.0.0.1", port, "/metrics", None);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("sonde_api_refused_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    // No page interval by default: the scrape after the refusals counts them all.
    assert_eq!(refused(), Some(8), "sonde_api_refused_total");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_token_file_that_is_no_token_stops_the_start_before_the_kernel() {
    require_root();
    let dir = std::env::temp_dir().join(format!("sonde-api-token-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = Command::new(sonde_bin_path())
        .args(["run", "--metrics-listen", "127.0.0.1:0", "--no-kubernetes"])
        .arg("--api-token-file")
        .arg(&empty)
        .output()
        .expect("run sonde");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token_file") && err.contains("empty"), "{err}");
    // Refused before anything started: no info line (a started capture or parser set logs
    // at info first), the error as one last line.
    assert!(!err.contains("INFO"), "{err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("sonde: ") && last.contains("empty"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
