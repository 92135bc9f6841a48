//! The map's bookkeeping on synthetic kernel events: what the kernel side would send for a
//! connect, an accept, a refused connect, a timeout, and per-socket counters. The real kernel
//! path is covered by tests/tests/netmap.rs (network namespaces, real nginx and curl).
use std::net::SocketAddr;
use std::sync::Arc;

use sonde_common::net::{DropKey, DropStats, FlowKey, FlowStats};
use sonde_sdk::protocol_parser::{ConnInfo, Endpoint, RequestRecord, Role, Transport};

use super::status::Status;
use super::*;
use sonde_capture::events::{ConnChange, ConnEventKind, Role as SockRole, TcpState};
use sonde_metrics::{Exposition, Format};
use sonde_parse::{Record, TaggedRecord};

const S: u64 = 1_000_000_000;

fn render(map: &NetMap, format: Format) -> String {
    let mut ex = Exposition::new(format);
    map.render(&mut ex);
    ex.finish()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ev(kind: ConnEventKind, sock: u64, ts: u64, local: &str, peer: &str) -> ConnChange {
    let mut c = ConnChange::synthetic(kind, sock, ts, addr(local), addr(peer));
    c.task.comm = "curl".into();
    c
}

fn state(sock: u64, ts: u64, old: u8, new: u8, local: &str, peer: &str) -> ConnChange {
    let mut c = ev(ConnEventKind::State, sock, ts, local, peer);
    c.old_state = TcpState(old);
    c.new_state = TcpState(new);
    if new != TcpState::SYN_SENT {
        c.task.comm = "swapper/0".into(); // softirq context: not the socket's process
    }
    c
}

fn flow_key(local: &str, remote: &str) -> FlowKey {
    let (l, r) = (addr(local), addr(remote));
    let v4 = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            b
        }
        std::net::IpAddr::V6(_) => unreachable!(),
    };
    FlowKey {
        family: libc::AF_INET as u16,
        sport: l.port(),
        dport: r.port(),
        _pad: 0,
        saddr: v4(l),
        daddr: v4(r),
    }
}

const CLIENT: &str = "10.0.0.2:40000";
const SERVER: &str = "10.0.0.1:80";

/// A client on this node connects to a server on this node (both sockets local).
fn connected(map: &mut NetMap) {
    map.on_conn(&state(
        1,
        S,
        TcpState::CLOSE,
        TcpState::SYN_SENT,
        "10.0.0.2:0",
        SERVER,
    ));
    let mut accept = ev(ConnEventKind::Open, 0, S, SERVER, CLIENT);
    accept.role = SockRole::Server;
    accept.task.comm = "nginx".into();
    map.on_conn(&accept);
    map.on_conn(&state(
        1,
        S + 2_000_000,
        TcpState::SYN_SENT,
        TcpState::ESTABLISHED,
        CLIENT,
        SERVER,
    ));
    map.on_conn(&state(
        2,
        S + 3_000_000,
        TcpState::SYN_RECV,
        TcpState::ESTABLISHED,
        SERVER,
        CLIENT,
    ));
}

fn reading(flows: Vec<(FlowKey, FlowStats)>, drops: Vec<(DropKey, DropStats)>) -> NetReading {
    NetReading {
        flows,
        drops,
        ..Default::default()
    }
}

fn only_edge(map: &NetMap) -> export::EdgeView {
    let t = map.topology();
    assert_eq!(t.edges.len(), 1, "{:#?}", t.edges);
    t.edges[0].clone()
}

#[test]
fn a_local_connection_is_one_edge_with_names_latency_and_both_directions() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    connected(&mut map);
    let client = FlowStats {
        rx_segments: 10,
        rx_bytes: 5000,
        tx_acked_bytes: 100,
        srtt_us: 200,
        ..Default::default()
    };
    let server = FlowStats {
        rx_segments: 4,
        rx_bytes: 100,
        tx_acked_bytes: 4000, // the last ACKs not in yet: the receiver's 5000 wins
        srtt_us: 300,
        ..Default::default()
    };
    map.on_reading(
        &reading(
            vec![
                (flow_key(CLIENT, SERVER), client),
                (flow_key(SERVER, CLIENT), server),
            ],
            vec![],
        ),
        2 * S,
    );
    let e = only_edge(&map);
    assert_eq!(e.client, "curl@10.0.0.2");
    assert_eq!(e.server, "nginx@10.0.0.1");
    assert_eq!(e.server_port, 80);
    assert_eq!(e.total.connects, 1);
    assert_eq!(e.total.accepts, 1);
    assert_eq!(e.total.bytes_c2s, 100);
    assert_eq!(e.total.bytes_s2c, 5000);
    assert_eq!(e.total.segments_c2s, 4);
    assert_eq!(e.total.segments_s2c, 10);
    assert_eq!(e.total.rtt_samples, 2);
    assert!((e.connect_ms.unwrap() - 2.0).abs() < 1e-9);
    // The next read adds only the growth.
    let client2 = FlowStats {
        rx_segments: 12,
        rx_bytes: 6000,
        ..client
    };
    map.on_reading(
        &reading(
            vec![
                (flow_key(CLIENT, SERVER), client2),
                (flow_key(SERVER, CLIENT), server),
            ],
            vec![],
        ),
        3 * S,
    );
    let e = only_edge(&map);
    assert_eq!(e.total.bytes_s2c, 6000);
    assert_eq!(e.total.segments_s2c, 12);
    assert_eq!(
        e.total.rtt_samples, 3,
        "server socket got no segment: no sample"
    );
    assert_eq!(e.status, Status::Ok, "{:?}", e.reasons);
}

#[test]
fn closed_sockets_are_read_once_more_then_deleted_and_forgotten_after_linger() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    connected(&mut map);
    map.on_conn(&state(
        1,
        2 * S,
        TcpState::ESTABLISHED,
        TcpState::CLOSE,
        CLIENT,
        SERVER,
    ));
    map.on_conn(&state(2, 2 * S, 9, TcpState::CLOSE, SERVER, CLIENT));
    let fs = FlowStats {
        rx_segments: 3,
        rx_bytes: 10,
        ..Default::default()
    };
    let r = map.on_reading(
        &reading(vec![(flow_key(CLIENT, SERVER), fs)], vec![]),
        3 * S,
    );
    assert_eq!(r.flows, vec![flow_key(CLIENT, SERVER)]);
    let e = only_edge(&map);
    assert_eq!(e.total.closes, 1, "one connection, two sockets: one close");
    assert_eq!(e.total.bytes_s2c, 10);
    assert_eq!(e.connections, 1, "lingers");
    map.on_reading(&reading(vec![], vec![]), 20 * S);
    assert_eq!(only_edge(&map).connections, 0);
}

#[test]
fn refused_timed_out_and_aborted_connects_are_told_apart() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    let closed_port = "10.0.0.1:81";
    // Refused: a reset arrives on the connecting socket, then it closes.
    map.on_conn(&state(
        5,
        S,
        TcpState::CLOSE,
        TcpState::SYN_SENT,
        "10.0.0.2:0",
        closed_port,
    ));
    let mut rst = ev(
        ConnEventKind::Reset,
        5,
        S + 100,
        "10.0.0.2:40001",
        closed_port,
    );
    rst.syscall = "rst_received";
    map.on_conn(&rst);
    map.on_conn(&state(
        5,
        S + 200,
        TcpState::SYN_SENT,
        TcpState::CLOSE,
        "10.0.0.2:40001",
        closed_port,
    ));
    // Timed out: no answer for 2 s.
    let hole = "10.0.0.200:80";
    map.on_conn(&state(
        6,
        S,
        TcpState::CLOSE,
        TcpState::SYN_SENT,
        "10.0.0.2:0",
        hole,
    ));
    map.on_conn(&state(
        6,
        3 * S,
        TcpState::SYN_SENT,
        TcpState::CLOSE,
        "10.0.0.2:40002",
        hole,
    ));
    // Aborted: the client gave up after 1 ms.
    map.on_conn(&state(
        7,
        S,
        TcpState::CLOSE,
        TcpState::SYN_SENT,
        "10.0.0.2:0",
        hole,
    ));
    map.on_conn(&state(
        7,
        S + 1_000_000,
        TcpState::SYN_SENT,
        TcpState::CLOSE,
        "10.0.0.2:40003",
        hole,
    ));
    map.on_reading(&reading(vec![], vec![]), 4 * S);
    let t = map.topology();
    let refused = t.edges.iter().find(|e| e.server_port == 81).unwrap();
    assert_eq!(refused.total.connect_refused, 1);
    assert_eq!(refused.total.connect_timeouts, 0);
    assert_eq!(refused.client, "curl@10.0.0.2");
    assert_eq!(refused.status, Status::Critical);
    let hole = t
        .edges
        .iter()
        .find(|e| e.server_ip == "10.0.0.200")
        .unwrap();
    assert_eq!(hole.total.connect_timeouts, 1);
    assert_eq!(hole.total.connect_aborted, 1);
    assert_eq!(hole.total.connect_refused, 0);
    let prom = render(&map, Format::Prometheus);
    assert!(
        prom.contains("sonde_tcp_connect_failures_total{client=\"curl@10.0.0.2\",server=\"10.0.0.1\",server_port=\"81\",reason=\"refused\"} 1"),
        "{prom}"
    );
}

#[test]
fn drops_go_to_the_edge_of_their_packet_either_way() {
    let names = [(12u32, "NETFILTER_DROP".to_string())]
        .into_iter()
        .collect();
    let mut map = NetMap::new(NetworkSettings::default(), names);
    connected(&mut map);
    let drop = |src: &str, dst: &str, n: u64| {
        (
            DropKey {
                reason: 12,
                l3_proto: 0x0800,
                l4_proto: 6,
                _pad: 0,
                flow: flow_key(src, dst),
            },
            DropStats {
                packets: n,
                bytes: n * 100,
            },
        )
    };
    let other = (
        DropKey {
            reason: 2,
            l3_proto: 0x0806,
            ..Default::default()
        },
        DropStats {
            packets: 4,
            bytes: 0,
        },
    );
    map.on_reading(
        &reading(
            vec![],
            vec![drop(CLIENT, SERVER, 2), drop(SERVER, CLIENT, 3), other],
        ),
        2 * S,
    );
    // Counts are cumulative in the kernel: only growth is added.
    let r = map.on_reading(
        &reading(
            vec![],
            vec![drop(CLIENT, SERVER, 2), drop(SERVER, CLIENT, 5), other],
        ),
        3 * S,
    );
    assert!(r.drops.is_empty(), "changed within two reads: kept");
    let e = only_edge(&map);
    assert_eq!(e.total.drops, 7);
    assert_eq!(e.drop_reasons["NETFILTER_DROP"], 7);
    let t = map.topology();
    let unattributed: u64 = t.drops.iter().map(|d| d.unattributed_packets).sum();
    assert_eq!(unattributed, 4);
    // Quiet entries are handed back for deletion.
    let r = map.on_reading(
        &reading(
            vec![],
            vec![drop(CLIENT, SERVER, 2), drop(SERVER, CLIENT, 5), other],
        ),
        6 * S,
    );
    assert_eq!(r.drops.len(), 3);
}

#[test]
fn records_count_once_per_side_and_prefer_the_server_view() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    connected(&mut map);
    let info = |role: Role, id: u64| {
        let ep = |ip: &str, port| {
            Some(Endpoint {
                ip: ip.into(),
                port,
            })
        };
        let (local, remote) = if role == Role::Server {
            (ep("10.0.0.1", 80), ep("10.0.0.2", 40000))
        } else {
            (ep("10.0.0.2", 40000), ep("10.0.0.1", 80))
        };
        Arc::new(ConnInfo {
            id,
            role,
            transport: Transport::Tcp,
            local,
            remote,
            ..Default::default()
        })
    };
    let rec = |status: u32| {
        Record::Owned(RequestRecord {
            protocol: "http".into(),
            operation: "GET /".into(),
            status,
            request_ts_ns: 10,
            response_ts_ns: 1_000_010,
            ..Default::default()
        })
    };
    let mut records = Vec::new();
    for status in [200, 200, 503, 404] {
        records.push(TaggedRecord {
            conn: info(Role::Server, 1),
            record: rec(status),
        });
        records.push(TaggedRecord {
            conn: info(Role::Client, 2),
            record: rec(status),
        });
    }
    map.on_records(&records, 2 * S);
    let e = only_edge(&map);
    assert_eq!(e.total.server_requests, 4);
    assert_eq!(e.total.server_errors, 1, "404 is not a server error");
    assert_eq!(e.total.client_requests, 4);
    assert_eq!(
        e.total.client_errors, 2,
        "the client sees 404 and 503 as errors"
    );
    assert_eq!(e.total.requests(), (4, 1, 4_000_000));
}

#[test]
fn unknown_connections_are_oriented_by_listening_port_then_lower_port() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    // Established before Sonde started: only their flow entries are seen.
    let fs = FlowStats {
        rx_segments: 1,
        ..Default::default()
    };
    map.on_reading(
        &reading(
            vec![(flow_key("10.0.0.5:45000", "10.0.0.6:5432"), fs)],
            vec![],
        ),
        S,
    );
    let e = only_edge(&map);
    assert_eq!(e.server_ip, "10.0.0.6");
    assert_eq!(e.server_port, 5432);
    assert_eq!(map.stats().conns_inferred, 1);
}

#[test]
fn edges_beyond_the_limit_go_to_one_overflow_edge() {
    let settings = NetworkSettings {
        max_edges: 2,
        ..Default::default()
    };
    let mut map = NetMap::new(settings, Default::default());
    for (i, port) in [80u16, 81, 82, 83].iter().enumerate() {
        let sock = 100 + i as u64;
        let server = format!("10.0.0.1:{port}");
        map.on_conn(&state(
            sock,
            S,
            TcpState::CLOSE,
            TcpState::SYN_SENT,
            "10.0.0.2:0",
            &server,
        ));
        map.on_conn(&state(
            sock,
            S + 1,
            TcpState::SYN_SENT,
            TcpState::ESTABLISHED,
            &format!("10.0.0.2:{}", 40000 + i),
            &server,
        ));
    }
    let t = map.topology();
    assert_eq!(t.edges.len(), 3, "two edges and the overflow edge");
    assert_eq!(map.stats().edges_overflow, 2);
    let other = t.edges.iter().find(|e| e.client_name == "(other)").unwrap();
    assert_eq!(other.total.connects, 2);
}

#[test]
fn the_window_forgets_old_trouble() {
    let settings = NetworkSettings {
        window_s: 5,
        ..Default::default()
    };
    let mut map = NetMap::new(settings, Default::default());
    connected(&mut map);
    let lossy = FlowStats {
        rx_segments: 100,
        retransmits: 20,
        ..Default::default()
    };
    map.on_reading(
        &reading(vec![(flow_key(CLIENT, SERVER), lossy)], vec![]),
        2 * S,
    );
    assert_eq!(only_edge(&map).status, Status::Critical);
    let quiet = FlowStats {
        rx_segments: 200,
        ..lossy
    };
    for t in 3..12 {
        map.on_reading(
            &reading(vec![(flow_key(CLIENT, SERVER), quiet)], vec![]),
            t * S,
        );
    }
    let e = only_edge(&map);
    assert_eq!(e.status, Status::Ok, "{:?}", e.reasons);
    assert_eq!(e.total.retransmits, 20);
    assert_eq!(e.window.retransmits, 0);
}

#[test]
fn syn_retransmits_read_before_the_timeout_land_on_the_connects_edge() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    let hole = "10.0.0.200:80";
    let local = "10.0.0.2:40002";
    map.on_conn(&state(
        6,
        S,
        TcpState::CLOSE,
        TcpState::SYN_SENT,
        "10.0.0.2:0",
        hole,
    ));
    let syn = FlowStats {
        syn_retransmits: 1,
        ..Default::default()
    };
    // The read comes after the first SYN retransmission, before curl gives up.
    map.on_reading(&reading(vec![(flow_key(local, hole), syn)], vec![]), 2 * S);
    map.on_conn(&state(
        6,
        3 * S,
        TcpState::SYN_SENT,
        TcpState::CLOSE,
        local,
        hole,
    ));
    let r = map.on_reading(&reading(vec![(flow_key(local, hole), syn)], vec![]), 4 * S);
    assert_eq!(
        r.flows,
        vec![flow_key(local, hole)],
        "read once more, then deleted"
    );
    let e = only_edge(&map);
    assert_eq!(e.client, "curl@10.0.0.2");
    assert_eq!(e.total.syn_retransmits, 1);
    assert_eq!(e.total.connect_timeouts, 1);
    assert_eq!(e.total.closes, 0, "a failed connect is not a close");
    map.on_reading(&reading(vec![], vec![]), 20 * S);
    assert_eq!(only_edge(&map).connections, 0, "forgotten after the linger");
}

#[test]
fn the_anomaly_detector_flags_what_is_unusual_for_an_edge_below_the_thresholds() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    connected(&mut map);
    let mut fs = FlowStats::default();
    let mut read = |map: &mut NetMap, t: u64, srtt_us: u32| {
        fs.rx_segments += 50;
        fs.srtt_us = srtt_us;
        map.on_reading(
            &reading(vec![(flow_key(CLIENT, SERVER), fs)], vec![]),
            t * S,
        );
    };
    // 30 reads at 2 ms, with a little jitter: normal for this edge.
    for t in 2..32 {
        read(&mut map, t, 2000 + (t as u32 % 3) * 100);
    }
    assert_eq!(only_edge(&map).status, Status::Ok);
    // 20 ms: far below the 50 ms warning threshold, but ten times this edge's usual.
    read(&mut map, 32, 20_000);
    assert_eq!(
        only_edge(&map).status,
        Status::Ok,
        "one odd read is not reported"
    );
    read(&mut map, 33, 20_000);
    let e = only_edge(&map);
    assert_eq!(e.status, Status::Warning, "{:?}", e.reasons);
    assert!(
        e.reasons
            .iter()
            .any(|r| r.contains("RTT") && r.contains("anomaly")),
        "{:?}",
        e.reasons
    );
}

/// `curl` on `client` connects to `server` (socket `sock`), established at `ts`.
fn curl_connects(map: &mut NetMap, sock: u64, ts: u64, client: &str, server: &str) {
    let ip = addr(client).ip();
    map.on_conn(&state(
        sock,
        ts,
        TcpState::CLOSE,
        TcpState::SYN_SENT,
        &format!("{ip}:0"),
        server,
    ));
    map.on_conn(&state(
        sock,
        ts + 1,
        TcpState::SYN_SENT,
        TcpState::ESTABLISHED,
        client,
        server,
    ));
}

fn edge_clients(map: &NetMap) -> Vec<String> {
    let mut v: Vec<String> = map.topology().edges.into_iter().map(|e| e.client).collect();
    v.sort();
    v
}

#[test]
fn clients_nothing_names_are_gathered_by_subnet() {
    let mut map = NetMap::new(NetworkSettings::default(), Default::default());
    let fs = FlowStats {
        rx_segments: 1,
        ..Default::default()
    };
    // 400 clients in four /24s, seen only by their flow entries (no process, no labels).
    let flows: Vec<_> = (0..400u32)
        .map(|i| {
            let client = format!("10.9.{}.{}:45000", i / 100, 1 + i % 100);
            (flow_key("10.0.0.6:5432", &client), fs)
        })
        .collect();
    map.on_reading(&reading(flows, vec![]), S);
    assert_eq!(
        edge_clients(&map),
        ["10.9.0.0/24", "10.9.1.0/24", "10.9.2.0/24", "10.9.3.0/24"]
    );
    let t = map.topology();
    assert!(t.edges.iter().all(|e| e.client_labels.is_empty()));
    assert_eq!(t.edges[0].connections, 100);
    assert_eq!(map.stats().clients_aggregated, 400);
    assert_eq!(
        map.connections(),
        400,
        "connections are still followed one by one"
    );
    let mut ex = sonde_metrics::Exposition::new(sonde_metrics::Format::Prometheus);
    map.render(&mut ex);
    let o = ex.finish();
    assert!(o.contains("sonde_netmap_lost_total{kind=\"clients_aggregated\"} 400"));
    assert!(o.contains("sonde_netmap_edges 4"), "{o}");
}

#[test]
fn a_named_client_keeps_a_few_addresses_then_its_subnets_then_its_name() {
    let settings = NetworkSettings {
        max_addrs_per_client: 2,
        ..Default::default()
    };
    let mut map = NetMap::new(settings, Default::default());
    let clients = [
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.1.1", "10.0.2.1", "10.0.3.1",
    ];
    for (i, ip) in clients.iter().enumerate() {
        let sock = 100 + i as u64;
        curl_connects(
            &mut map,
            sock,
            S + 10 * i as u64,
            &format!("{ip}:40000"),
            SERVER,
        );
    }
    assert_eq!(
        edge_clients(&map),
        [
            "curl",
            "curl@10.0.0.0/24",
            "curl@10.0.0.1",
            "curl@10.0.0.2",
            "curl@10.0.1.0/24"
        ]
    );
    let t = map.topology();
    let by = |c: &str| {
        t.edges
            .iter()
            .find(|e| e.client == c)
            .unwrap()
            .total
            .connects
    };
    assert_eq!(
        (by("curl@10.0.0.0/24"), by("curl"), by("curl@10.0.0.1")),
        (2, 2, 1)
    );
    assert_eq!(map.stats().clients_aggregated, 5);
    // Another process is another name: it has addresses of its own.
    let mut c = state(
        200,
        2 * S,
        TcpState::CLOSE,
        TcpState::SYN_SENT,
        "10.0.3.1:0",
        SERVER,
    );
    c.task.comm = "wget".into();
    map.on_conn(&c);
    map.on_conn(&state(
        200,
        2 * S + 1,
        TcpState::SYN_SENT,
        TcpState::ESTABLISHED,
        "10.0.3.1:40001",
        SERVER,
    ));
    assert!(edge_clients(&map).contains(&"wget@10.0.3.1".to_string()));
}

#[test]
fn a_workload_the_labels_name_is_a_named_client() {
    let settings = NetworkSettings {
        max_addrs_per_client: 1,
        ..Default::default()
    };
    let mut map = NetMap::new(settings, Default::default());
    map.set_ip_labeler(Box::new(|ip| {
        if ip.to_string().starts_with("10.7.") {
            vec![("service_name".into(), "checkout".into())]
        } else {
            vec![]
        }
    }));
    let fs = FlowStats {
        rx_segments: 1,
        ..Default::default()
    };
    let flows: Vec<_> = ["10.7.0.1", "10.7.0.2", "10.7.1.1", "10.7.2.1", "10.8.0.1"]
        .iter()
        .map(|ip| (flow_key("10.0.0.6:5432", &format!("{ip}:45000")), fs))
        .collect();
    map.on_reading(&reading(flows, vec![]), S);
    // One address of its own (labelled), one /24, then the workload's name; the unnamed
    // client is its /24.
    assert_eq!(
        edge_clients(&map),
        ["10.7.0.0/24", "10.7.0.1", "10.8.0.0/24", "checkout"]
    );
    let t = map.topology();
    let own = t.edges.iter().find(|e| e.client == "10.7.0.1").unwrap();
    assert_eq!(own.client_labels["service_name"], "checkout");
    let named = t.edges.iter().find(|e| e.client == "checkout").unwrap();
    assert_eq!(
        (named.connections, named.client_ip.as_str()),
        (2, "0.0.0.0/0")
    );
}

#[test]
fn tables_give_their_memory_back_after_a_wave() {
    let settings = NetworkSettings {
        conn_idle_s: 5,
        edge_idle_s: 5,
        ..Default::default()
    };
    let mut map = NetMap::new(settings, Default::default());
    let fs = FlowStats {
        rx_segments: 1,
        ..Default::default()
    };
    let flows: Vec<_> = (0..20_000u32)
        .map(|i| {
            let client = format!(
                "10.{}.{}.{}:45000",
                1 + i / 60_000,
                (i / 250) % 240,
                1 + i % 250
            );
            (flow_key("10.0.0.6:5432", &client), fs)
        })
        .collect();
    map.on_reading(&reading(flows, vec![]), S);
    assert_eq!(map.connections(), 20_000);
    let peak = map.table_capacity();
    assert!(peak >= 20_000, "{peak}");
    // Nothing more is heard of them: past the idle timeout they are forgotten, the tables
    // shrink.
    map.on_reading(&reading(vec![], vec![]), 10 * S);
    assert_eq!(map.connections(), 0);
    assert!(
        map.table_capacity() < peak / 16,
        "capacity {} after a wave that peaked at {peak}",
        map.table_capacity()
    );
    map.on_reading(&reading(vec![], vec![]), 20 * S);
    assert!(map.topology().edges.is_empty(), "idle edges go too");
}

#[test]
fn max_addrs_per_client_is_validated() {
    let with = |n| NetworkSettings {
        max_addrs_per_client: n,
        ..Default::default()
    };
    assert!(with(0).validate().is_err());
    assert!(with(65_537).validate().is_err());
    assert!(with(1).validate().is_ok() && with(65_536).validate().is_ok());
    assert!(NetworkSettings::default().validate().is_ok());
}

/// The series of a map with an edge (flows, a drop on it and one unattributed), interfaces,
/// softirq histograms and a missing probe, in both formats, byte for byte.
#[test]
fn exposition_matches_golden() {
    let names = [(12u32, "NETFILTER_DROP".to_string())]
        .into_iter()
        .collect();
    let mut map = NetMap::new(NetworkSettings::default(), names);
    map.set_probes_missing(vec!["skb:kfree_skb".into()]);
    connected(&mut map);
    let client = FlowStats {
        rx_segments: 10,
        rx_bytes: 5000,
        tx_acked_bytes: 100,
        srtt_us: 200,
        ..Default::default()
    };
    let drop = DropKey {
        reason: 12,
        l3_proto: 0x0800,
        l4_proto: 6,
        _pad: 0,
        flow: flow_key(CLIENT, SERVER),
    };
    let other = DropKey {
        reason: 2,
        l3_proto: 0x0806,
        ..Default::default()
    };
    let mut iface = sonde_common::net::IfaceStats {
        rx_packets: 3,
        rx_bytes: 300,
        tx_packets: 4,
        tx_bytes: 400,
        ifindex: 2,
        netns: 4026531840,
        ..Default::default()
    };
    iface.name[..7].copy_from_slice(b"eth\"0\\x");
    let mut softirq = vec![0u64; sonde_common::net::softirq::HIST_ENTRIES as usize];
    softirq[3] = 5;
    softirq[sonde_common::net::softirq::sum_index(0) as usize] = 60;
    let r = NetReading {
        flows: vec![(flow_key(CLIENT, SERVER), client)],
        drops: vec![
            (
                drop,
                DropStats {
                    packets: 2,
                    bytes: 200,
                },
            ),
            (
                other,
                DropStats {
                    packets: 4,
                    bytes: 0,
                },
            ),
        ],
        ifaces: vec![(1, iface)],
        softirq,
        read_errors: 1,
    };
    map.on_reading(&r, 2 * S);
    let prom = render(&map, Format::Prometheus);
    let om = render(&map, Format::OpenMetrics);
    for (file, got) in [("netmap.prom", &prom), ("netmap.om", &om)] {
        let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("SONDE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert!(&want == got, "{path} differs:\n{got}");
    }
}
