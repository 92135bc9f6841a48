//! Cost of parsing in the sandbox, and of the whole user-space pipeline.
//!
//! 1. Parse cost per HTTP exchange through the Wasm component vs the same parser compiled
//!    natively, with 1 KiB and 16 KiB response bodies, in batches of 64 exchanges (one job =
//!    one call), same run; likewise for the Redis and PostgreSQL parsers (a client's GETs and
//!    simple-protocol SELECTs with one row each).
//! 2. Pipeline throughput from a recorded event file (ring-buffer records as the kernel writes
//!    them; no kernel): decode → connection tracking and reassembly → router → Wasm HTTP parser
//!    → RED aggregation, all on one thread.
//!
//! `cargo bench -p sonde --bench parsers [-- --quick] [--pipeline]` (`--pipeline`: only part 2).
//! The binary counts heap allocations (a counting global allocator) to report the pipeline's
//! allocations per exchange.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sonde_capture::conntrack::{ConnTracker, TrackerConfig};
use sonde_capture::events::{Decoder, encode_conn, encode_data};
use sonde_capture::recording::{self, Recorder};
use sonde_common::{self as abi, Addr, ConnEvent, DataEvent, EventKind};
use sonde_http_parser::Http;
use sonde_parse::{ConnInfo, Direction, ParseJob, ParserBackend, SegMeta, TaggedRecord};
use sonde_pipeline::dispatch::Dispatch;
use sonde_pipeline::native::NativeParser;
use sonde_pipeline::red::Red;
use sonde_pipeline::router::{Router, RouterConfig};
use sonde_pipeline::slot::ParserSlot;
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::parsers::{
    self, HTTP_PARSER_WASM, HTTP2_PARSER_WASM, MQTT_PARSER_WASM, POSTGRES_PARSER_WASM,
    REDIS_PARSER_WASM, WasmParser,
};
use sonde_sdk::protocol_parser::Role;

fn request(i: usize) -> Vec<u8> {
    format!(
        "GET /api/v1/users/{}/orders?page=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
        1000 + i
    )
    .into_bytes()
}

fn response(body: usize) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n").into_bytes();
    r.extend(std::iter::repeat_n(b'x', body));
    r
}

/// One job: `n` keep-alive exchanges on one server connection, request and response each one
/// segment.
fn job(conn: u64, n: usize, body: usize, first: bool) -> ParseJob {
    let mut j = ParseJob::default();
    if first {
        j.opened.push(Arc::new(ConnInfo {
            id: conn,
            role: Role::Server,
            ..Default::default()
        }));
    }
    let resp = response(body);
    for i in 0..n {
        let ts = (i as u64 + 1) * 1_000_000;
        j.push_segment(
            SegMeta {
                conn,
                direction: Direction::Ingress,
                ts_ns: ts,
                gap_before: 0,
            },
            &request(i),
        );
        j.push_segment(
            SegMeta {
                conn,
                direction: Direction::Egress,
                ts_ns: ts + 500_000,
                gap_before: 0,
            },
            &resp,
        );
    }
    j
}

/// A client's request/response exchange of a protocol other than HTTP.
/// A handshake: the client's bytes and the server's answer.
type Hello = (Vec<u8>, Vec<u8>);

struct Exchange {
    /// What opens a session before the first exchange (a handshake the parser claims the
    /// connection on), once per connection.
    hello: Option<fn() -> Hello>,
    request: fn(usize) -> Vec<u8>,
    response: fn(usize) -> Vec<u8>,
}

/// `GET user:<i>` answered with a 64-byte bulk string.
const REDIS: Exchange = Exchange {
    hello: None,
    request: |i| {
        let key = format!("user:{}", 1000 + i);
        format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
    },
    response: |_| {
        let mut r = b"$64\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'v', 64));
        r.extend(b"\r\n");
        r
    },
};

/// PostgreSQL message: type byte, length, body.
fn pg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend((body.len() as u32 + 4).to_be_bytes());
    m.extend(body);
    m
}

/// A simple-protocol `SELECT` answered with one row (RowDescription, DataRow, CommandComplete,
/// ReadyForQuery), as psql sends it.
const POSTGRES: Exchange = Exchange {
    hello: None,
    request: |i| {
        pg(
            b'Q',
            format!(
                "SELECT id, name, email FROM users WHERE id = {}\0",
                1000 + i
            )
            .as_bytes(),
        )
    },
    response: |i| {
        let mut fields = 3u16.to_be_bytes().to_vec();
        for name in ["id", "name", "email"] {
            fields.extend(name.as_bytes());
            fields.push(0);
            fields.extend([0u8; 18]); // table oid, column, type oid, size, modifier, format
        }
        let mut row = 3u16.to_be_bytes().to_vec();
        for v in [
            format!("{}", 1000 + i),
            "Ada Lovelace".into(),
            "ada@example.org".into(),
        ] {
            row.extend((v.len() as u32).to_be_bytes());
            row.extend(v.as_bytes());
        }
        let mut r = pg(b'T', &fields);
        r.extend(pg(b'D', &row));
        r.extend(pg(b'C', b"SELECT 1\0"));
        r.extend(pg(b'Z', b"I"));
        r
    },
};

/// MQTT 3.1.1 packet: type and flags, remaining length (one byte here), body.
fn mqtt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first, body.len() as u8];
    p.extend(body);
    p
}

/// A QoS 1 PUBLISH of a 64-byte reading, answered by its PUBACK, after a CONNECT/CONNACK.
const MQTT: Exchange = Exchange {
    hello: Some(|| {
        let connect = mqtt(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x05bench");
        (connect, mqtt(0x20, &[0, 0]))
    }),
    request: |i| {
        let id = (i % 65_535 + 1) as u16;
        let topic = format!("sensors/room-{}/temperature", i % 50);
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend(topic.as_bytes());
        body.extend(id.to_be_bytes());
        body.extend([b'7'; 64]);
        mqtt(0x32, &body)
    },
    response: |i| mqtt(0x40, &((i % 65_535 + 1) as u16).to_be_bytes()),
};

/// HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// HTTP/2 stream of the `i`-th request of a job (client streams are odd).
fn h2_stream(i: usize) -> u32 {
    2 * i as u32 + 1
}

/// A GET (HEADERS with END_STREAM: `:method GET`, `:scheme http` from the static table,
/// `:path` and `:authority` as literals without indexing, as a client with a small table
/// sends them) answered by HEADERS `:status 200` and a 64-byte DATA with END_STREAM; after the
/// client preface and both SETTINGS. Stream ids restart at 1 in every job: the parser pairs
/// by id and forgets a stream once answered.
const HTTP2: Exchange = Exchange {
    hello: Some(|| {
        let mut client = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        client.extend(h2_frame(4, 0, 0, &[]));
        (client, h2_frame(4, 0, 0, &[]))
    }),
    request: |i| {
        let path = format!("/api/v1/users/{}/orders", 1000 + i);
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend(path.as_bytes());
        block.extend([0x01, 12]);
        block.extend(b"shop.example");
        h2_frame(1, 0x5, h2_stream(i), &block) // END_STREAM | END_HEADERS
    },
    response: |i| {
        let mut r = h2_frame(1, 0x4, h2_stream(i), &[0x88]); // END_HEADERS, :status 200
        r.extend(h2_frame(0, 0x1, h2_stream(i), &[b'x'; 64])); // END_STREAM
        r
    },
};

/// One job: `n` exchanges on one client connection.
fn client_job(x: &Exchange, conn: u64, n: usize, first: bool) -> ParseJob {
    let mut j = ParseJob::default();
    if first {
        j.opened.push(Arc::new(ConnInfo {
            id: conn,
            role: Role::Client,
            ..Default::default()
        }));
    }
    let meta = |direction, ts_ns| SegMeta {
        conn,
        direction,
        ts_ns,
        gap_before: 0,
    };
    if let (true, Some(hello)) = (first, x.hello) {
        let (request, response) = hello();
        j.push_segment(meta(Direction::Egress, 1), &request);
        j.push_segment(meta(Direction::Ingress, 2), &response);
    }
    for i in 0..n {
        let ts = (i as u64 + 1) * 1_000_000;
        j.push_segment(meta(Direction::Egress, ts), &(x.request)(i));
        j.push_segment(meta(Direction::Ingress, ts + 300_000), &(x.response)(i));
    }
    j
}

/// µs per exchange of `x` over `rounds` jobs of 64.
fn per_client_exchange(backend: &mut dyn ParserBackend, x: &Exchange, rounds: usize) -> f64 {
    let (first, next) = (client_job(x, 1, 64, true), client_job(x, 1, 64, false));
    per_job_exchange(backend, first, next, rounds)
}

/// µs per exchange over `rounds` jobs of 64.
fn per_exchange(backend: &mut dyn ParserBackend, body: usize, rounds: usize) -> f64 {
    let (first, next) = (job(1, 64, body, true), job(1, 64, body, false));
    per_job_exchange(backend, first, next, rounds)
}

/// `first` (which opens the connection, maybe with a handshake) once, then `next` timed
/// `rounds` times; both carry 64 exchanges, each of which must come back as a record.
fn per_job_exchange(
    backend: &mut dyn ParserBackend,
    mut first: ParseJob,
    mut next: ParseJob,
    rounds: usize,
) -> f64 {
    let out = backend.run(&mut first).unwrap();
    assert!(
        (64..=65).contains(&out.records.len()),
        "{}: every exchange parsed ({} records)",
        backend.name(),
        out.records.len()
    );
    let t = Instant::now();
    for _ in 0..rounds {
        let out = backend.run(&mut next).unwrap();
        assert_eq!(out.records.len(), 64);
        std::hint::black_box(out);
    }
    t.elapsed().as_secs_f64() * 1e6 / (rounds * 64) as f64
}

/// The system allocator, counting allocations (and reallocations, which may move).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time of the calling thread: the pipeline runs on one thread, and unlike the wall clock
/// this leaves out the time it waited for a CPU on a shared machine.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn addr(port: u16) -> Addr {
    Addr {
        family: libc::AF_INET as u16,
        port,
        addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

fn comm(name: &str) -> [u8; abi::TASK_COMM_LEN] {
    let mut c = [0u8; abi::TASK_COMM_LEN];
    c[..name.len()].copy_from_slice(name.as_bytes());
    c
}

/// A recording of `conns` server connections with `per_conn` keep-alive exchanges each, the
/// way the kernel reports nginx's side: accept, read request, write response, …, close.
fn write_recording(path: &PathBuf, conns: u64, per_conn: usize, body: usize) -> usize {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rec = Recorder::new(file).unwrap();
    let resp = response(body);
    let mut ts = 1_000u64;
    let conn_ev = |kind: EventKind, id: u64, ts: u64, tx: u64, rx: u64| ConnEvent {
        kind: kind as u32,
        tgid: 100,
        tid: 100,
        fd: 10 + id as i32,
        conn_id: id,
        sock: 0xffff_0000 + id,
        ts_ns: ts,
        tx_bytes: tx,
        rx_bytes: rx,
        ret: 0,
        role: abi::role::SERVER,
        syscall: abi::syscall::ACCEPT4,
        old_state: 0,
        new_state: 0,
        protocol: 6,
        cgroup_id: 0,
        _pad: [0; 3],
        local: addr(8080),
        peer: addr(40000 + id as u16),
        comm: comm("nginx"),
    };
    let mut total = 0;
    for id in 1..=conns {
        rec.record(&encode_conn(&conn_ev(EventKind::ConnOpen, id, ts, 0, 0)))
            .unwrap();
        let (mut tx, mut rx) = (0u64, 0u64);
        for i in 0..per_conn {
            for (dir, payload) in [
                (abi::direction::INGRESS, request(i)),
                (abi::direction::EGRESS, resp.clone()),
            ] {
                ts += 10_000;
                let pos = if dir == abi::direction::INGRESS {
                    &mut rx
                } else {
                    &mut tx
                };
                let ev = DataEvent {
                    kind: EventKind::Data as u32,
                    tgid: 100,
                    tid: 100,
                    fd: 10 + id as i32,
                    conn_id: id,
                    sock: 0xffff_0000 + id,
                    ts_enter_ns: ts - 1000,
                    ts_exit_ns: ts,
                    pos: *pos,
                    len: payload.len() as u64,
                    captured: payload.len() as u32,
                    direction: dir,
                    role: abi::role::SERVER,
                    syscall: if dir == abi::direction::INGRESS {
                        abi::syscall::READ
                    } else {
                        abi::syscall::WRITEV
                    },
                    flags: 0,
                    local: addr(8080),
                    peer: addr(40000 + id as u16),
                    comm: comm("nginx"),
                    thread: comm("nginx"),
                };
                *pos += payload.len() as u64;
                rec.record(&encode_data(&ev, &payload)).unwrap();
            }
            total += 1;
        }
        ts += 10_000;
        rec.record(&encode_conn(&conn_ev(EventKind::ConnClose, id, ts, tx, rx)))
            .unwrap();
    }
    rec.finish().unwrap();
    total
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let pipeline_only = std::env::args().any(|a| a == "--pipeline");
    let rounds = if quick { 200 } else { 2000 };
    let engine = parsers::engine(&PluginsConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let limits = PluginsConfig::default().limits;
    if !pipeline_only {
        per_parser(&engine, limits, rounds);
    }
    pipeline(&engine, limits, quick);
}

/// Part 1: each parser's cost per exchange, Wasm beside native.
fn per_parser(
    engine: &Arc<sonde_sandbox::PluginEngine>,
    limits: sonde_sandbox::Limits,
    rounds: usize,
) {
    println!(
        "| body | native µs/exchange | Wasm µs/exchange | Wasm / native |\n|---|---:|---:|---:|"
    );
    for body in [1024usize, 16 << 10] {
        let mut native = NativeParser::<Http>::new();
        let mut wasm =
            WasmParser::load(engine.clone(), limits, HTTP_PARSER_WASM, "embedded").unwrap();
        let n = per_exchange(&mut native, body, rounds);
        let w = per_exchange(&mut wasm, body, rounds);
        println!("| {} KiB | {n:.3} | {w:.3} | {:.2}× |", body / 1024, w / n);
    }

    println!(
        "\n| protocol | native µs/exchange | Wasm µs/exchange | Wasm / native |\n|---|---:|---:|---:|"
    );
    // (what, exchange, the native build, the embedded component)
    type Case<'a> = (&'a str, &'a Exchange, Box<dyn ParserBackend>, &'a [u8]);
    let others: [Case; 4] = [
        (
            "Redis GET, 64 B value",
            &REDIS,
            Box::new(NativeParser::<sonde_redis_parser::Resp>::new()),
            REDIS_PARSER_WASM,
        ),
        (
            "PostgreSQL simple SELECT, one row",
            &POSTGRES,
            Box::new(NativeParser::<sonde_postgres_parser::Postgres>::new()),
            POSTGRES_PARSER_WASM,
        ),
        (
            "HTTP/2 GET, 64 B body",
            &HTTP2,
            Box::new(NativeParser::<sonde_http2_parser::Http2>::new()),
            HTTP2_PARSER_WASM,
        ),
        (
            "MQTT QoS 1 PUBLISH, 64 B payload",
            &MQTT,
            Box::new(NativeParser::<sonde_mqtt_parser::Mqtt>::new()),
            MQTT_PARSER_WASM,
        ),
    ];
    for (name, x, mut native, component) in others {
        let mut wasm = WasmParser::load(engine.clone(), limits, component, "embedded").unwrap();
        let n = per_client_exchange(native.as_mut(), x, rounds);
        let w = per_client_exchange(&mut wasm, x, rounds);
        println!("| {name} | {n:.3} | {w:.3} | {:.2}× |", w / n);
    }

    // Where the Wasm time goes: the same batches when the parser declines the connection at
    // its first byte (the bytes still cross into the sandbox, nothing is parsed or returned).
    println!("\n| body | Wasm µs/exchange, payload crossing only |\n|---|---:|");
    for body in [1024usize, 16 << 10] {
        let mut wasm =
            WasmParser::load(engine.clone(), limits, HTTP_PARSER_WASM, "embedded").unwrap();
        let mut j = job(1, 64, body, true);
        j.data[0] = 0; // not HTTP
        let out = wasm.run(&mut j).unwrap();
        assert!(out.records.is_empty());
        let mut j = job(1, 64, body, false);
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(wasm.run(&mut j).unwrap());
        }
        println!(
            "| {} KiB | {:.3} |",
            body / 1024,
            t.elapsed().as_secs_f64() * 1e6 / (rounds * 64) as f64
        );
    }
}

/// Part 2: the pipeline from a recording.
fn pipeline(engine: &Arc<sonde_sandbox::PluginEngine>, limits: sonde_sandbox::Limits, quick: bool) {
    let path = std::env::temp_dir().join(format!("sonde-bench-events-{}.rec", std::process::id()));
    let (conns, per_conn) = if quick { (64, 200) } else { (256, 500) };
    let exchanges = write_recording(&path, conns, per_conn, 256);
    let records = recording::read(&path).unwrap();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let _ = std::fs::remove_file(&path);
    println!("\n| pipeline (one thread) | value |\n|---|---:|");
    println!(
        "| recording | {} records, {:.1} MiB, {exchanges} exchanges on {conns} connections |",
        records.len(),
        bytes as f64 / (1 << 20) as f64
    );
    for (name, backend) in [
        (
            "Wasm HTTP parser",
            Box::new(
                WasmParser::load(engine.clone(), limits, HTTP_PARSER_WASM, "embedded").unwrap(),
            ) as Box<dyn ParserBackend>,
        ),
        (
            "native HTTP parser",
            Box::new(NativeParser::<Http>::new()) as Box<dyn ParserBackend>,
        ),
    ] {
        let mut router = Router::new(
            Dispatch::inline(vec![ParserSlot::new(0, backend)]),
            RouterConfig::default(),
        );
        let mut tracker = ConnTracker::new(TrackerConfig::default());
        let mut red = Red::default();
        let mut out = Vec::new();
        let mut tagged: Vec<TaggedRecord> = Vec::new();
        let mut parsed = 0usize;
        let mut decoder = Decoder::new();
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        let cpu = thread_cpu_ns();
        let t = Instant::now();
        for chunk in records.chunks(4096) {
            for raw in chunk {
                let ev = decoder.decode(raw).unwrap();
                tracker.on_event(&ev, &mut out);
                for se in out.drain(..) {
                    router.on_stream_event(&se, &tracker);
                }
            }
            router.flush();
            router.collect();
            router.take_records(&mut tagged);
            parsed += tagged.len();
            red.record_all(&tagged);
            tagged.clear();
            let _ = tracker.take_finished();
        }
        router.settle(std::time::Duration::from_secs(10));
        router.take_records(&mut tagged);
        parsed += tagged.len();
        red.record_all(&tagged);
        let secs = t.elapsed().as_secs_f64();
        let cpu_ns = thread_cpu_ns() - cpu;
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
        assert_eq!(parsed, exchanges, "{name}: every exchange became a record");
        println!("| {name}: exchanges/s | {:.0} |", exchanges as f64 / secs);
        println!(
            "| {name}: CPU µs / exchange (thread CPU time) | {:.3} |",
            cpu_ns as f64 / 1e3 / exchanges as f64
        );
        println!(
            "| {name}: heap allocations / exchange | {:.2} |",
            allocations as f64 / exchanges as f64
        );
    }
}
