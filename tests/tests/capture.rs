//! Capture end to end, for real: the eBPF programs load and attach in this process, and
//! `sonde-testpeer` children exchange known payloads over loopback, across a veth pair between
//! two network namespaces, and over UDP. Each test asserts what Sonde saw: the connection's
//! 4-tuple, role, pid, byte counts, and the reassembled streams against the bytes sent.
use std::time::Duration;

use sonde_capture::CaptureOptions;
use sonde_capture::events::{Direction, Event, Role};
use sonde_capture::reassembly::GapReason;
use sonde_tests::{Collector, NetnsPair, Peer, Seen, event_addr, pattern, require_root};

const SIZES: [usize; 3] = [10, 5 * 1024, 100 * 1024];
const CAP: u32 = 16 * 1024;
const T: Duration = Duration::from_secs(30);

fn sizes_arg(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The byte stream a peer sends: message k is `pattern(k, sizes[k])`.
fn expected_stream(sizes: &[usize]) -> Vec<u8> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(k, &n)| pattern(k as u64, n))
        .collect()
}

fn collector() -> Collector {
    require_root();
    Collector::start(CaptureOptions {
        capture_bytes: CAP,
        ..CaptureOptions::default()
    })
    .expect("capture starts")
}

/// Asserts one side of a TCP exchange: addresses, role, pid, byte totals, streams.
fn assert_side(seen: &Seen, role: Role, done: &serde_json::Value, sent: &[u8], received: &[u8]) {
    let c = &seen.conn;
    assert_eq!(c.role, role, "role of {c:?}");
    assert_eq!(
        Some(event_addr(done, "local").unwrap()),
        c.local,
        "local address"
    );
    assert_eq!(
        Some(event_addr(done, "peer").unwrap()),
        c.peer,
        "peer address"
    );
    assert_eq!(
        c.bytes[Direction::Egress.index()],
        sent.len() as u64,
        "egress bytes"
    );
    assert_eq!(
        c.bytes[Direction::Ingress.index()],
        received.len() as u64,
        "ingress bytes"
    );
    seen.check_stream(Direction::Egress, sent).unwrap();
    seen.check_stream(Direction::Ingress, received).unwrap();
    for dir in [Direction::Egress, Direction::Ingress] {
        assert_eq!(
            seen.gap_bytes(dir, GapReason::Lost),
            0,
            "{dir:?}: nothing lost"
        );
    }
}

/// Runs a server/client pair (optionally in namespaces) and checks both sides.
fn exchange(col: &Collector, send_mode: &str, recv_mode: &str, ns: Option<&NetnsPair>) {
    exchange_sizes(col, send_mode, recv_mode, ns, &SIZES);
}

/// [`exchange`] with messages of `sizes` bytes; returns (client side, server side).
fn exchange_sizes(
    col: &Collector,
    send_mode: &str,
    recv_mode: &str,
    ns: Option<&NetnsPair>,
    message_sizes: &[usize],
) -> (Seen, Seen) {
    let sizes = sizes_arg(message_sizes);
    let listen = match ns {
        Some(ns) => format!("{}:0", ns.addr_a()),
        None => "127.0.0.1:0".to_string(),
    };
    let server_args = [
        "tcp-server",
        "--listen",
        &listen,
        "--recv-mode",
        recv_mode,
        "--sizes",
        &sizes,
        "--reply",
    ];
    let mut server = match ns {
        Some(ns) => ns.spawn_peer(ns.ns_a(), &server_args).unwrap(),
        None => Peer::spawn(&server_args).unwrap(),
    };
    let addr = server.listening_addr(T).unwrap().to_string();
    let client_args = [
        "tcp-client",
        "--connect",
        &addr,
        "--send-mode",
        send_mode,
        "--sizes",
        &sizes,
        "--expect-reply",
    ];
    let mut client = match ns {
        Some(ns) => ns.spawn_peer(ns.ns_b(), &client_args).unwrap(),
        None => Peer::spawn(&client_args).unwrap(),
    };
    let client_done = client.finish(T).unwrap();
    let server_done = server.finish(T).unwrap();

    let stream = expected_stream(message_sizes);
    let client_side = col.finished_conns(client.pid(), 1, T).unwrap();
    let server_side = col.finished_conns(server.pid(), 1, T).unwrap();
    assert_eq!(client_side.len(), 1, "client connections: {client_side:#?}");
    assert_eq!(server_side.len(), 1, "server connections: {server_side:#?}");
    // Client sends the messages and reads the echo; the server the other way round.
    assert_side(
        &client_side[0],
        Role::Client,
        &client_done,
        &stream,
        &stream,
    );
    assert_side(
        &server_side[0],
        Role::Server,
        &server_done,
        &stream,
        &stream,
    );
    // The 100 KiB message moved in syscalls larger than the cap: the excess is a
    // truncation gap, never missing bytes.
    for side in [&client_side[0], &server_side[0]] {
        let dir = Direction::Egress;
        if message_sizes.iter().any(|&s| s > CAP as usize) {
            assert!(
                side.gap_bytes(dir, GapReason::Truncated) > 0,
                "{send_mode}/{recv_mode}: expected truncation gaps"
            );
        }
        assert_eq!(side.covered(dir), stream.len() as u64);
    }
    assert_eq!(client_side[0].conn.task.tgid, client.pid());
    assert_eq!(client_side[0].conn.task.comm, "sonde-testpeer");
    let mut client_side = client_side;
    let mut server_side = server_side;
    (client_side.remove(0), server_side.remove(0))
}

/// A sendmsg of 40 iovecs (more than the 16 an unrolled walk reaches; gRPC's C core writes 29)
/// is copied whole when it fits in the cap: the `bpf_loop` walk visits every iovec.
#[test]
fn sendmsg_of_many_iovecs_is_captured_whole() {
    let col = collector();
    let sizes = [10, 5 * 1024, 12 * 1024];
    let (client, _) = exchange_sizes(&col, "sendmsg-many", "read", None, &sizes);
    assert_eq!(
        client.gap_bytes(Direction::Egress, GapReason::Truncated),
        0,
        "every iovec of each sendmsg copied"
    );
}

/// Every send and receive syscall class, as `sonde-testpeer` modes.
const MODES: [(&str, &str); 4] = [
    ("write", "read"),
    ("send", "recv"),
    ("sendmsg", "recvmsg"),
    ("writev", "readv"),
];

#[test]
fn tcp_loopback_every_send_and_recv_syscall() {
    let col = collector();
    for (send, recv) in MODES {
        exchange(&col, send, recv, None);
    }
}

/// The file-table walk that kernels without `sock:sock_*_length` (< 6.3) use, forced on this
/// one: every syscall class, every byte, the same as with the tracepoints.
#[test]
fn tcp_loopback_with_sockets_found_through_the_file_table() {
    require_root();
    let col = Collector::start(CaptureOptions {
        capture_bytes: CAP,
        socket_lookup: sonde_capture::programs::SocketLookup::FdTable,
        ..CaptureOptions::default()
    })
    .expect("capture starts");
    let sock_programs: Vec<_> = col.with(|c| {
        c.probes
            .iter()
            .filter(|p| p.program.starts_with("sonde_sock_") && p.program != "sonde_sock_state")
            .map(|p| p.state.clone())
            .collect()
    });
    assert_eq!(
        sock_programs,
        [
            sonde_capture::programs::ProbeState::Off,
            sonde_capture::programs::ProbeState::Off
        ],
        "the sock_*_length programs are not used in this mode"
    );
    for (send, recv) in MODES {
        exchange(&col, send, recv, None);
    }
}

#[test]
fn tcp_across_veth_between_namespaces() {
    let col = collector();
    let ns = NetnsPair::new().expect("network namespaces");
    exchange(&col, "writev", "recvmsg", Some(&ns));
    exchange(&col, "sendmsg", "readv", Some(&ns));
}

#[test]
fn udp_sendto_recvfrom_with_addresses() {
    let col = collector();
    let sizes = [64usize, 512, 1200];
    let sizes_arg = sizes.map(|s| s.to_string()).join(",");
    let mut server =
        Peer::spawn(&["udp-server", "--listen", "127.0.0.1:0", "--count", "3"]).unwrap();
    let server_addr = server.listening_addr(T).unwrap();
    let mut client = Peer::spawn(&[
        "udp-client",
        "--connect",
        &server_addr.to_string(),
        "--sizes",
        &sizes_arg,
    ])
    .unwrap();
    let client_done = client.finish(T).unwrap();
    server.finish(T).unwrap();
    let client_port = event_addr(&client_done, "local").unwrap().port();

    // Every datagram, both ways, with the peer address from the syscall's own arguments.
    let chunks = col
        .wait_for(T, "6 UDP datagrams", |c| {
            let v: Vec<_> = c
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Data(d)
                        if d.datagram
                            && (d.task.tgid == client.pid() || d.task.tgid == server.pid()) =>
                    {
                        Some(d.clone())
                    }
                    _ => None,
                })
                .collect();
            (v.len() >= 6).then_some(v)
        })
        .unwrap();
    for (k, &n) in sizes.iter().enumerate() {
        let want = pattern(k as u64, n);
        let sent = chunks
            .iter()
            .find(|d| {
                d.task.tgid == client.pid()
                    && d.direction == Direction::Egress
                    && d.payload.as_ref() == want
            })
            .unwrap_or_else(|| panic!("client sendto #{k} not captured"));
        assert_eq!(sent.syscall, "sendto");
        assert_eq!(sent.peer, Some(server_addr), "sendto peer");
        assert!(sent.peer_from_args);
        let got = chunks
            .iter()
            .find(|d| {
                d.task.tgid == server.pid()
                    && d.direction == Direction::Ingress
                    && d.payload.as_ref() == want
            })
            .unwrap_or_else(|| panic!("server recvfrom #{k} not captured"));
        assert_eq!(got.syscall, "recvfrom");
        assert_eq!(
            got.peer.map(|a| a.port()),
            Some(client_port),
            "recvfrom peer port"
        );
        assert_eq!(got.local, Some(server_addr), "server local address");
        assert_eq!(got.len, n as u64);
    }
}

#[test]
fn file_and_pipe_io_is_not_captured() {
    let col = collector();
    let dir = std::env::temp_dir().join(format!("sonde-fileio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Peer::spawn(&[
        "file-io",
        "--path",
        dir.join("f").to_str().unwrap(),
        "--size",
        "65536",
    ])
    .unwrap();
    files.finish(T).unwrap();
    // A socket exchange after the file I/O, by another peer: once its events are in, the
    // file peer's would be too, had they been captured.
    let (server, _client) = Peer::loopback_exchange("10", false, T).unwrap();
    col.finished_conns(server.pid(), 1, T).unwrap();
    let file_events = col.with(|c| c.data_tgids.get(&files.pid()).copied().unwrap_or(0));
    assert_eq!(
        file_events,
        0,
        "file/pipe I/O of pid {} produced events",
        files.pid()
    );
    let _ = std::fs::remove_dir_all(dir);
}
