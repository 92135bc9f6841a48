//! Cost of a parser hot swap, and of the call deadline every sandbox call pays.
//!
//! 1. Loading the HTTP parser component (`WasmParser::load`: compile or cache load, link,
//!    instantiate, `info`): compile included (no disk cache), and compile excluded (a warm
//!    disk cache: our own precompiled artifact is deserialized).
//! 2. The swap in the router (`Router::replace_parser` with an already loaded parser), in a
//!    router with no connections and in one with 10 000 connections owned by the parser.
//! 3. The deadline mechanism (wasmtime epoch interruption: checks compiled into the plugin's
//!    code, and arming the store's deadline before each call): the same calls with an engine
//!    built with it and one built without (`EngineOptions::no_epoch_deadlines`, benchmarks
//!    only).
//!
//! `cargo bench -p sonde --bench hotswap [-- --quick]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sonde_capture::conntrack::{ConnTracker, StreamEvent, TrackerConfig};
use sonde_capture::events::Direction as CapDirection;
use sonde_capture::reassembly::{Segment, SegmentBody};
use sonde_parse::{ConnInfo, Direction, ParseJob, ParserBackend, SegMeta};
use sonde_pipeline::dispatch::Dispatch;
use sonde_pipeline::router::{Router, RouterConfig};
use sonde_pipeline::slot::ParserSlot;
use sonde_sandbox::PluginsConfig;
use sonde_sandbox::parsers::{self, HTTP_PARSER_WASM, WasmParser};
use sonde_sandbox::{EngineOptions, Limits, PluginEngine};
use sonde_sdk::protocol_parser::Role;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

/// Milliseconds of each of `n` runs of `f`.
fn runs_ms(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn load(engine: &Arc<PluginEngine>, limits: Limits) -> WasmParser {
    WasmParser::load(engine.clone(), limits, HTTP_PARSER_WASM, "embedded").unwrap()
}

/// An engine with or without epoch deadlines (and a disk cache).
fn engine(deadlines: bool, cache_dir: Option<&Path>) -> Arc<PluginEngine> {
    Arc::new(
        PluginEngine::with_options(&EngineOptions {
            cache_dir: cache_dir.map(Path::to_path_buf),
            no_epoch_deadlines: !deadlines,
            ..EngineOptions::from_config(&PluginsConfig::default())
        })
        .unwrap(),
    )
}

/// Microseconds of each of `n` swaps in `router`, each to a parser loaded beforehand; the
/// active parser is `active` before and after.
fn swaps_us(router: &mut Router, active: &mut usize, next: Vec<WasmParser>) -> Vec<f64> {
    let mut took = Vec::with_capacity(next.len());
    for p in next {
        let backend: Box<dyn ParserBackend> = Box::new(p);
        let t = Instant::now();
        let new = router.replace_parser(*active, backend).unwrap();
        took.push(t.elapsed().as_secs_f64() * 1e6);
        *active = new;
        // What the daemon does after a swap (untimed): a drained parser is retired.
        router.retire_drained(Duration::from_secs(60));
    }
    took
}

/// One job: `seg` on connection 1 (announced when `open`).
fn tiny_job(open: bool, seg: &[u8]) -> ParseJob {
    let mut j = ParseJob::default();
    if open {
        j.opened.push(Arc::new(ConnInfo {
            id: 1,
            role: Role::Server,
            ..Default::default()
        }));
    }
    j.push_segment(
        SegMeta {
            conn: 1,
            direction: Direction::Ingress,
            ts_ns: 1,
            gap_before: 0,
        },
        seg,
    );
    j
}

/// One job of `n` keep-alive HTTP exchanges (1 KiB responses) on connection 1.
fn http_job(n: usize, open: bool) -> ParseJob {
    let mut j = ParseJob::default();
    if open {
        j.opened.push(Arc::new(ConnInfo {
            id: 1,
            role: Role::Server,
            ..Default::default()
        }));
    }
    let mut resp =
        b"HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n".to_vec();
    resp.extend(std::iter::repeat_n(b'x', 1024));
    for i in 0..n {
        let ts = (i as u64 + 1) * 1_000_000;
        let req = format!(
            "GET /api/v1/users/{}/orders?page=2 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n\r\n",
            1000 + i
        );
        for (direction, ts_ns, data) in [
            (Direction::Ingress, ts, req.as_bytes()),
            (Direction::Egress, ts + 500_000, &resp[..]),
        ] {
            j.push_segment(
                SegMeta {
                    conn: 1,
                    direction,
                    ts_ns,
                    gap_before: 0,
                },
                data,
            );
        }
    }
    j
}

/// Nanoseconds per call of `job` over `calls` calls (after one warm-up call).
fn ns_per_call(p: &mut WasmParser, job: &mut ParseJob, calls: usize) -> f64 {
    std::hint::black_box(p.run(job).unwrap());
    let t = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(p.run(job).unwrap());
    }
    t.elapsed().as_secs_f64() * 1e9 / calls as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let limits = PluginsConfig::default().limits;
    assert!(
        !HTTP_PARSER_WASM.is_empty(),
        "built with SONDE_WASM_SKIP: no HTTP parser"
    );

    // 1a. Compile included: no disk cache, every load compiles.
    let cold_engine = engine(true, None);
    let mut cold = runs_ms(if quick { 3 } else { 5 }, || {
        std::hint::black_box(load(&cold_engine, limits));
    });
    drop(cold_engine);

    // 1b. Compile excluded: a warm disk cache.
    let cache = std::env::temp_dir().join(format!("sonde-bench-hotswap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let cached = parsers::engine(&PluginsConfig {
        cache_dir: Some(cache.clone()),
        ..Default::default()
    })
    .unwrap();
    drop(load(&cached, limits)); // warms the cache
    let hits = cached
        .cache()
        .hits
        .load(std::sync::atomic::Ordering::Relaxed);
    let warm_n = if quick { 5 } else { 20 };
    let mut warm = runs_ms(warm_n, || {
        std::hint::black_box(load(&cached, limits));
    });
    assert_eq!(
        cached
            .cache()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed)
            - hits,
        warm_n as u64,
        "every timed load was a cache hit"
    );

    // 2. The swap, 100 times, each to a parser loaded beforehand.
    let swaps = if quick { 20 } else { 100 };
    let mut router = Router::new(
        Dispatch::inline(vec![ParserSlot::new(0, Box::new(load(&cached, limits)))]),
        RouterConfig::default(),
    );
    let mut active = 0;
    let next: Vec<WasmParser> = (0..swaps).map(|_| load(&cached, limits)).collect();
    let mut swap_empty = swaps_us(&mut router, &mut active, next);
    drop(router);

    // The same in a router with 10 000 connections the parser owns (a request each, no
    // response yet): the swap walks every route and adds the new parser to each. The max is
    // a swap where every route's per-parser vectors outgrow their capacity at once (swaps
    // 1, 8, 16, 32, 64: one more parser slot than ever before).
    let conns = 10_000u64;
    let mut router = Router::new(
        Dispatch::inline(vec![ParserSlot::new(0, Box::new(load(&cached, limits)))]),
        RouterConfig::default(),
    );
    let tracker = ConnTracker::new(TrackerConfig::default());
    for conn_id in 1..=conns {
        router.on_stream_event(
            &StreamEvent::Segment {
                conn_id,
                direction: CapDirection::Ingress,
                segment: Segment {
                    pos: 0,
                    ts_ns: 1,
                    body: SegmentBody::Data(bytes::Bytes::from_static(
                        b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
                    )),
                },
            },
            &tracker,
        );
    }
    router.flush();
    assert!(router.settle(Duration::from_secs(30)));
    let owned = router.slots()[0].connections;
    assert_eq!(owned as u64, conns, "the parser owns every connection");
    let mut active = 0;
    let next: Vec<WasmParser> = (0..swaps).map(|_| load(&cached, limits)).collect();
    let mut swap_busy = swaps_us(&mut router, &mut active, next);
    drop(router);
    drop(cached);

    println!(
        "| HTTP parser ({} KiB of wasm) | runs | median | max |\n|---|---:|---:|---:|",
        HTTP_PARSER_WASM.len() / 1024
    );
    println!(
        "| `WasmParser::load`, compile included (no disk cache) | {} | {:.1} ms | {:.1} ms |",
        cold.len(),
        median(&mut cold),
        max(&cold)
    );
    println!(
        "| `WasmParser::load`, compile excluded (warm disk cache) | {} | {:.2} ms | {:.2} ms |",
        warm.len(),
        median(&mut warm),
        max(&warm)
    );
    println!(
        "| `Router::replace_parser`, no connections | {} | {:.2} µs | {:.2} µs |",
        swap_empty.len(),
        median(&mut swap_empty),
        max(&swap_empty)
    );
    println!(
        "| `Router::replace_parser`, {conns} connections | {} | {:.1} µs | {:.1} µs |",
        swap_busy.len(),
        median(&mut swap_busy),
        max(&swap_busy)
    );

    // 3. Epoch deadlines on and off. The machine may be shared: many short runs, alternating,
    // and both the median and the fastest run of each are shown. Both engines share the temp
    // cache (its keys include the engine's configuration).
    let reps = if quick { 3 } else { 11 };
    let calls = if quick { 20_000 } else { 100_000 };
    let http_calls = if quick { 200 } else { 2_000 };
    let on = engine(true, Some(&cache));
    let off = engine(false, Some(&cache));
    // (row, calls, the first job (announces connection 1), the job timed)
    type Case = (&'static str, usize, ParseJob, ParseJob);
    let cases: [Case; 3] = [
        (
            "empty job (nothing enters the plugin)",
            calls,
            ParseJob::default(),
            ParseJob::default(),
        ),
        // The HTTP parser declines connection 1 at its first byte; later segments of it are
        // looked up and dropped: the cheapest call that enters the plugin.
        (
            "one 1-byte segment (enters `feed`)",
            calls,
            tiny_job(true, b"\0"),
            tiny_job(false, b"x"),
        ),
        (
            "64 HTTP exchanges, 1 KiB responses",
            http_calls,
            http_job(64, true),
            http_job(64, false),
        ),
    ];
    println!(
        "\n| call ({reps} runs of each, interleaved) | calls per run | deadlines on, ns/call (median / fastest run) | off, ns/call (median / fastest) | on − off, medians | on − off, fastest runs |\n|---|---:|---:|---:|---:|---:|"
    );
    for (what, n, first, job) in cases {
        let mut parsers = [load(&on, limits), load(&off, limits)];
        for p in &mut parsers {
            let out = p.run(&mut first.clone()).unwrap();
            let expected = if what.starts_with("64 HTTP") { 64 } else { 0 };
            assert_eq!(out.records.len(), expected, "{what}");
        }
        let mut t: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for r in 0..reps {
            // On first in even runs, off first in odd ones.
            for i in [r % 2, 1 - r % 2] {
                t[i].push(ns_per_call(&mut parsers[i], &mut job.clone(), n));
            }
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
        let (amin, bmin) = (min(&t[0]), min(&t[1]));
        let (a, b) = (median(&mut t[0]), median(&mut t[1]));
        println!(
            "| {what} | {n} | {a:.0} / {amin:.0} | {b:.0} / {bmin:.0} | {:+.0} ns ({:+.1}%) | {:+.0} ns ({:+.1}%) |",
            a - b,
            (a - b) / b * 100.0,
            amin - bmin,
            (amin - bmin) / bmin * 100.0
        );
    }
    drop((on, off));
    let _ = std::fs::remove_dir_all(&cache);
}
