//! The MQTT parser end to end, against a throwaway `mosquitto` (Debian's broker, on free
//! loopback ports: one listener open to anonymous clients, one refusing them) and Debian's
//! clients `mosquitto_pub` / `mosquitto_sub`: MQTT 3.1.1 and 5, QoS 0, 1 and 2, a subscriber
//! receiving messages at each QoS, and refused connections. `sonde run` captures with eBPF,
//! parses in the embedded Wasm component and serves the RED metrics; the counts per operation
//! and status are checked against what the test sent, from both ends of each connection
//! (the clients' side and the broker's).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sonde_tests::httplab::{Daemon, Sample, Scratch, free_port, sum};
use sonde_tests::{require_root, wait_until};

const T: Duration = Duration::from_secs(90);

const DURATION: &str = "sonde_request_duration_seconds_count";
const UNANSWERED: &str = "sonde_requests_unanswered_total";

/// A `mosquitto` of the test's own: its config in a scratch directory, killed on drop.
struct Mosquitto {
    child: Child,
    /// Anonymous clients welcome.
    open: u16,
    /// Anonymous clients refused (`not authorised`).
    closed: u16,
    _dir: Scratch,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = Scratch::new("mosquitto");
        let (open, closed) = (free_port(), free_port());
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings true\n\
                 listener {open} 127.0.0.1\nallow_anonymous true\n\
                 listener {closed} 127.0.0.1\nallow_anonymous false\n"
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto (Debian package mosquitto)");
        let mut m = Mosquitto {
            child,
            open,
            closed,
            _dir: dir,
        };
        wait_until(Duration::from_secs(20), "mosquitto to listen", || {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("mosquitto exited: {st}");
            }
            [open, closed]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
                .then_some(())
        })
        .unwrap();
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub` on `port`, one message per line of `lines` (`-l`): whether it succeeded.
fn publish(port: u16, version: &str, qos: u8, topic: &str, lines: &[&str]) -> bool {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args(["-q", &qos.to_string(), "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running mosquitto_pub (Debian package mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    child.wait().unwrap().success()
}

/// The daemon; another test's daemon may hold the node for a while: retried until it starts.
fn daemon() -> Daemon {
    wait_until(
        Duration::from_secs(600),
        "a daemon of our own to start",
        || std::panic::catch_unwind(|| Daemon::start("", "")).ok(),
    )
    .unwrap()
}

#[test]
fn mqtt_connects_publishes_deliveries_and_refusals() {
    require_root();
    let broker = Mosquitto::start();
    let daemon = daemon();
    let (open, closed) = (broker.open.to_string(), broker.closed.to_string());

    // What the clients' side must count: (operation, status, broker port) → records.
    let count = |s: &[Sample], side: &str, op: &str, status: &str, port: &str| {
        sum(
            s,
            DURATION,
            &[
                ("protocol", "mqtt"),
                ("side", side),
                ("operation", op),
                ("status", status),
                ("server_port", port),
            ],
        ) as u64
    };

    // A subscriber first (MQTT 5, QoS 2, one stale unsubscribe), for three messages.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &open, "-V", "mqttv5", "-q", "2"])
        .args(["-t", "news", "-U", "old/news", "-C", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running mosquitto_sub (Debian package mosquitto-clients)");
    // Subscribed once Sonde has seen the SUBACK (the broker's side, where it is counted
    // first).
    wait_until(T, "the subscriber to be subscribed", || {
        let s = daemon.samples();
        (count(&s, "client", "subscribe", "", &open) == 1).then_some(())
    })
    .unwrap();

    // Publishers: MQTT 3.1.1 and 5 at QoS 0, 1 and 2; the lines are messages on one
    // connection, several in flight.
    for (version, qos, lines) in [
        ("mqttv311", 0, &["a"][..]),
        ("mqttv311", 1, &["a", "b", "c"]),
        ("mqttv311", 2, &["a"]),
        ("mqttv5", 0, &["a"]),
        ("mqttv5", 1, &["a", "b"]),
        ("mqttv5", 2, &["a", "b"]),
    ] {
        assert!(
            publish(broker.open, version, qos, "sensors", lines),
            "{version} q{qos}"
        );
    }
    // The subscriber's three messages, one per QoS.
    for qos in 0..3 {
        assert!(
            publish(broker.open, "mqttv311", qos, "news", &["hi"]),
            "news q{qos}"
        );
    }
    let out = sub.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    // Refused: anonymous on the closed listener, in each version.
    assert!(!publish(broker.closed, "mqttv311", 1, "x", &["y"]));
    assert!(!publish(broker.closed, "mqttv5", 1, "x", &["y"]));

    // Expected per (operation, status, port), from what was sent above.
    let expected: BTreeMap<(&str, &str, &str), u64> = [
        // 6 publishers, the subscriber, 3 publishers to it.
        (("connect", "", open.as_str()), 10),
        // 3.1.1 return code 5, 5.0 reason code 0x87: both "not authorised".
        (("connect", "5", closed.as_str()), 1),
        (("connect", "135", closed.as_str()), 1),
        (("publish qos0", "", open.as_str()), 3),
        // QoS 1 and 2: 3 + 1 + 2 + 2, and 2 to the subscriber.
        (("publish", "", open.as_str()), 10),
        (("publish release", "", open.as_str()), 4),
        (("subscribe", "", open.as_str()), 1),
        (("unsubscribe", "", open.as_str()), 1),
        (("deliver qos0", "", open.as_str()), 1),
        (("deliver", "", open.as_str()), 2),
        (("deliver release", "", open.as_str()), 1),
    ]
    .into_iter()
    .collect();
    let total: u64 = expected.values().sum();
    let all =
        |s: &[Sample], side: &str| sum(s, DURATION, &[("protocol", "mqtt"), ("side", side)]) as u64;
    for side in ["client", "server"] {
        let samples = wait_until(T, &format!("Sonde to count MQTT ({side} side)"), || {
            let s = daemon.samples();
            (all(&s, side) >= total).then_some(s)
        })
        .unwrap_or_else(|e| {
            let s = daemon.samples();
            let seen: Vec<_> = s
                .iter()
                .filter(|x| x.label("protocol") == "mqtt")
                .map(|x| (x.name.clone(), x.labels.clone(), x.value))
                .collect();
            panic!("{e}: expected {expected:?}, saw {seen:#?}")
        });
        for ((op, status, port), n) in &expected {
            assert_eq!(
                count(&samples, side, op, status, port),
                *n,
                "{side}: {op} status {status:?} on port {port}"
            );
        }
        assert_eq!(all(&samples, side), total, "{side}: nothing else");
        // A refusal is an error, named.
        assert_eq!(
            sum(
                &samples,
                DURATION,
                &[
                    ("protocol", "mqtt"),
                    ("side", side),
                    ("error_type", "not-authorized")
                ],
            ),
            2.0,
            "{side}"
        );
        // QoS 0 is one-way, not unanswered; everything else was answered.
        assert_eq!(
            sum(&samples, UNANSWERED, &[("protocol", "mqtt")]),
            0.0,
            "{side}"
        );
    }
}
