//! The log miner over arbitrary bytes: what any process on the node may write to stdout or
//! stderr (capture is on for all of them by default). The first byte picks the miner's caps;
//! the rest is cut into writes, each led by one byte that picks its length, process, stream,
//! whether the capture cap cut it, and how far the clock moves. Every query runs at the end.
//! Nothing may panic, and the bounds the miner promises hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_capture::events::{LogChunk, StdStream, Task};
use sonde_logs::{LogMiner, LogMinerConfig, Stream, drain, is_error_line, level};

const SERVICES: [&str; 4] = ["a", "b", "c", "d"];

fuzz_target!(|data: &[u8]| {
    let Some((&caps, mut rest)) = data.split_first() else {
        return;
    };
    // Small caps, so that cuts inside characters and evictions happen in short inputs.
    let max_sample_bytes = (caps >> 4) as usize;
    let mut miner = LogMiner::new(LogMinerConfig {
        max_line_bytes: 16 + (caps & 0x0f) as usize * 4,
        max_sample_bytes,
        max_templates_per_service: 8,
        max_services: 3,
        max_streams: 4,
        flush_after_ms: 500,
        ..LogMinerConfig::default()
    })
    .keep_samples(caps & 1 == 1);
    let text = String::from_utf8_lossy(rest);
    level(&text);
    is_error_line(&text);
    drain::tokenize(&text, 1 + caps as usize % 70);

    let mut now_ms = 1_700_000_000_000u64;
    let mut writes = 0usize;
    while let Some((&head, tail)) = rest.split_first() {
        let len = 1 + (head & 0x3f) as usize;
        let (payload, tail) = tail.split_at(len.min(tail.len()));
        let fd = 1 + (head >> 6 & 1) as i32;
        let cut = head & 0x80 != 0;
        let chunk = LogChunk {
            task: Task {
                tgid: (writes % 5) as u32,
                tid: 0,
                comm: "fuzz".into(),
                thread: Default::default(),
            },
            fd,
            stream: StdStream::from_fd(fd).expect("1 or 2"),
            cgroup_id: 0,
            ts_ns: 0,
            len: payload.len() as u64 + cut as u64,
            syscall: "write",
            unix_socket: false,
            read_failed: false,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        miner.observe_chunk(SERVICES[writes % SERVICES.len()], &chunk, now_ms);
        // Time moves (partial lines time out, minutes leave the window), sometimes backwards.
        now_ms = now_ms
            .wrapping_add(head as u64 * 997)
            .wrapping_sub(head as u64 % 7 * 1000);
        if head % 8 == 0 {
            miner.tick(now_ms);
        }
        writes += 1;
        rest = tail;
    }
    miner.observe("a", Stream::File, now_ms, &text);
    miner.tick(now_ms + 60_000);

    for t in miner.templates(None, 0, u64::MAX) {
        assert!(t.sample.len() <= max_sample_bytes, "sample bounded");
        assert!(t.count > 0);
    }
    miner.error_summary(Some("a"), 0, u64::MAX, 10);
    miner.error_summary_of(&["b".to_string(), "c".to_string()], 0, u64::MAX, 10);
    let s = miner.stats();
    assert!(
        s.services <= 3 && s.templates <= 3 * 8,
        "bounds hold: {s:?}"
    );
    assert!(s.pending_streams <= 4);
});
