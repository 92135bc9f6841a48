//! Proves `sonde-testpeer` and [`NetnsPair`] work on their own, without Sonde, so a failure in
//! a capture test points at Sonde rather than at the test harness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use sonde_tests::{NetnsPair, Peer, VETH_A, event_addr, netns_list, pattern, require_root};

const TIMEOUT: Duration = Duration::from_secs(20);
const SIZES: &[usize] = &[10, 5120, 102_400];
const RECV_MODES: &[&str] = &["read", "recv", "recvmsg", "readv"];
const SEND_MODES: &[&str] = &["write", "send", "sendmsg", "writev"];
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn sizes_arg(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn count(ev: &Value, field: &str) -> u64 {
    ev[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric {field:?} in {ev}"))
}

/// Where each peer of a TCP or UDP exchange runs.
struct Placement<'a> {
    server_ns: Option<&'a str>,
    client_ns: Option<&'a str>,
    server_ip: IpAddr,
}

const ON_LOOPBACK: Placement<'static> = Placement {
    server_ns: None,
    client_ns: None,
    server_ip: LOOPBACK,
};

/// One echo exchange: server with `recv` mode replying, client with `send` mode expecting the
/// replies. Checks exit codes, byte counts, and that both sides agree on the 4-tuple.
fn tcp_echo(at: &Placement, recv: &str, send: &str) {
    let sizes = sizes_arg(SIZES);
    let listen = SocketAddr::new(at.server_ip, 0).to_string();
    let mut server = Peer::spawn_in(
        at.server_ns,
        &[
            "tcp-server",
            "--listen",
            &listen,
            "--recv-mode",
            recv,
            "--sizes",
            &sizes,
            "--reply",
        ],
    )
    .unwrap();
    let addr = server.listening_addr(TIMEOUT).unwrap().to_string();
    let mut client = Peer::spawn_in(
        at.client_ns,
        &[
            "tcp-client",
            "--connect",
            &addr,
            "--send-mode",
            send,
            "--sizes",
            &sizes,
            "--expect-reply",
        ],
    )
    .unwrap();

    let ctx = format!("recv={recv} send={send}");
    let c = client
        .finish(TIMEOUT)
        .unwrap_or_else(|e| panic!("client {ctx}: {e:#}"));
    let s = server
        .finish(TIMEOUT)
        .unwrap_or_else(|e| panic!("server {ctx}: {e:#}"));
    let total: u64 = SIZES.iter().map(|&n| n as u64).sum();
    assert_eq!(count(&s, "received"), total, "{ctx}: {s}");
    assert_eq!(count(&c, "sent"), total, "{ctx}: {c}");
    assert_eq!(count(&c, "received"), total, "{ctx}: {c}");
    assert_eq!(
        event_addr(&s, "peer").unwrap(),
        event_addr(&c, "local").unwrap(),
        "{ctx}"
    );
    assert_eq!(
        event_addr(&c, "peer").unwrap(),
        event_addr(&s, "local").unwrap(),
        "{ctx}"
    );
    assert_eq!(event_addr(&s, "local").unwrap().ip(), at.server_ip, "{ctx}");
    assert_eq!(
        count(&s, "pid"),
        u64::from(server.pid()),
        "pid in events is the peer's own"
    );
}

fn udp_echo(at: &Placement) {
    let sizes = [10, 1400, 5120, 60_000];
    let listen = SocketAddr::new(at.server_ip, 0).to_string();
    let n = sizes.len().to_string();
    let mut server = Peer::spawn_in(
        at.server_ns,
        &["udp-server", "--listen", &listen, "--count", &n],
    )
    .unwrap();
    let addr = server.listening_addr(TIMEOUT).unwrap().to_string();
    let mut client = Peer::spawn_in(
        at.client_ns,
        &[
            "udp-client",
            "--connect",
            &addr,
            "--sizes",
            &sizes_arg(&sizes),
        ],
    )
    .unwrap();

    let c = client.finish(TIMEOUT).expect("udp client");
    let s = server.finish(TIMEOUT).expect("udp server");
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!(count(&s, "received"), total, "{s}");
    assert_eq!(count(&c, "sent"), total, "{c}");
    assert_eq!(
        event_addr(&s, "peer").unwrap(),
        event_addr(&c, "local").unwrap()
    );
}

#[test]
fn tcp_all_mode_pairs_over_loopback() {
    for recv in RECV_MODES {
        for send in SEND_MODES {
            tcp_echo(&ON_LOOPBACK, recv, send);
        }
    }
}

#[test]
fn tcp_all_mode_pairs_across_netns_pair() {
    require_root();
    let pair = NetnsPair::new().unwrap();
    let at = Placement {
        server_ns: Some(pair.ns_a()),
        client_ns: Some(pair.ns_b()),
        server_ip: pair.addr_a().into(),
    };
    for recv in RECV_MODES {
        for send in SEND_MODES {
            tcp_echo(&at, recv, send);
        }
    }
}

#[test]
fn udp_echo_over_loopback_and_netns_pair() {
    udp_echo(&ON_LOOPBACK);
    require_root();
    let pair = NetnsPair::new().unwrap();
    udp_echo(&Placement {
        server_ns: Some(pair.ns_a()),
        client_ns: Some(pair.ns_b()),
        server_ip: pair.addr_a().into(),
    });
}

#[test]
fn file_io_writes_the_pattern() {
    let path = std::env::temp_dir().join(format!("sonde-t-file-io-{}", std::process::id()));
    let size = 100_000;
    let mut peer = Peer::spawn(&[
        "file-io",
        "--path",
        path.to_str().unwrap(),
        "--size",
        &size.to_string(),
    ])
    .unwrap();
    let done = peer.finish(TIMEOUT).unwrap();
    let written = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(count(&done, "bytes"), size as u64);
    assert!(
        written == pattern(0, size),
        "file content differs from pattern(0, {size})"
    );
}

#[test]
fn flood_into_sink_stops_on_time_and_sink_exits_on_sigterm() {
    let mut sink = Peer::spawn(&["sink", "--listen", "127.0.0.1:0"]).unwrap();
    let addr = sink.listening_addr(TIMEOUT).unwrap().to_string();
    let mut flood = Peer::spawn(&[
        "flood",
        "--connect",
        &addr,
        "--threads",
        "2",
        "--seconds",
        "0.5",
        "--size",
        "4096",
    ])
    .unwrap();
    let connected = flood.expect_event("connected", TIMEOUT).unwrap();
    assert_eq!(
        connected["locals"].as_array().map(Vec::len),
        Some(2),
        "{connected}"
    );
    let done = flood.finish(TIMEOUT).unwrap();
    let sent = count(&done, "sent");
    assert!(sent > 0 && sent.is_multiple_of(4096), "{done}");

    // The flood has exited, so its connections are closed: the sink drains them to EOF
    // before reporting, and its total must match exactly.
    sink.terminate().unwrap();
    let sunk = sink.finish(TIMEOUT).unwrap();
    assert_eq!(count(&sunk, "connections"), 2, "{sunk}");
    assert_eq!(count(&sunk, "received"), sent, "{sunk}");
}

#[test]
fn netns_pair_drop_removes_namespaces() {
    require_root();
    let pair = NetnsPair::new().unwrap();
    let (a, b) = (pair.ns_a().to_owned(), pair.ns_b().to_owned());
    let listed = netns_list().unwrap();
    assert!(listed.contains(&a) && listed.contains(&b), "{listed:?}");
    let shown = pair
        .exec(&a, &["ip", "-br", "addr", "show", "dev", VETH_A])
        .unwrap();
    assert!(shown.contains(&format!("{}/24", pair.addr_a())), "{shown}");
    drop(pair);
    let listed = netns_list().unwrap();
    assert!(
        !listed.contains(&a) && !listed.contains(&b),
        "still present: {listed:?}"
    );
}
