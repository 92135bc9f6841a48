//! Arbitrary bytes as a conversation: the first byte picks the role; then each chunk is
//! `[control][len][bytes…]` where `control` picks the direction, and whether a gap comes
//! before it. Every record and every bound the parser promises is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{ConnInfo, Direction, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else { return };
    let role = match first % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    };
    let mut h = Harness::<sonde_mysql_parser::Mysql>::new(ConnInfo { id: 1, role, ..Default::default() });
    let mut ts = 1u64;
    while rest.len() >= 2 {
        let (control, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let take = len.min(rest.len());
        let direction = if control & 1 == 0 { Direction::Egress } else { Direction::Ingress };
        if control & 0x10 != 0 {
            h.gap(direction, u64::from(control >> 5) * 1000);
        }
        ts += 1;
        h.segment(direction, ts, &rest[..take]);
        rest = &rest[take..];
    }
    h.close();
    for r in &h.result.records {
        assert!(r.operation.len() <= 1024 + 64, "operation bounded");
        for (_, v) in &r.attributes {
            assert!(v.len() <= 4096, "attribute bounded");
        }
        assert!(r.response_ts_ns == 0 || r.response_ts_ns >= r.request_ts_ns || r.error.is_some());
    }
});
