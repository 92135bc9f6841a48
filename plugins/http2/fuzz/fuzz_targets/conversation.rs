//! Arbitrary bytes as a conversation: the first byte picks the role; the rest is fed by
//! `Harness::feed_arbitrary` (chunks with direction, length and gaps). Every record and every
//! bound the parser promises is checked; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{ConnInfo, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let role = match first % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    };
    let mut h = Harness::<sonde_http2_parser::Http2>::new(ConnInfo { id: 1, role, ..Default::default() });
    h.feed_arbitrary(rest);
    h.close();
    assert!(h.result.records.len() <= rest.len(), "no record without bytes");
    for r in &h.result.records {
        assert!(r.operation.len() <= 512, "operation bounded");
        for (_, v) in &r.attributes {
            assert!(v.len() <= 1024, "attribute bounded");
        }
        // A desynchronised stream never carries a status it could not read.
        if r.error.as_deref() == Some(sonde_http2_parser::error::HPACK_DESYNC) {
            assert_eq!(r.status, 0);
        }
    }
});
