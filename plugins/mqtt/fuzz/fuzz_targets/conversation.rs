//! Arbitrary bytes as a conversation: the first byte picks the role; the rest is fed by
//! `Harness::feed_arbitrary` (chunks with direction, length and gaps). Every record and every
//! bound the parser promises is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_mqtt_parser::{MAX_TOPIC, Mqtt};
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{ConnInfo, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let role = match first % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    };
    let mut h = Harness::<Mqtt>::new(ConnInfo { id: 1, role, ..Default::default() });
    h.feed_arbitrary(rest);
    h.close();
    for r in &h.result.records {
        assert_eq!(r.protocol, "mqtt");
        assert!(r.operation.len() <= 32, "operation is one of the names");
        for (_, v) in &r.attributes {
            assert!(v.len() <= MAX_TOPIC, "attribute bounded");
        }
        assert!(r.response_ts_ns == 0 || r.response_ts_ns >= r.request_ts_ns);
        // A status is a refusal's code, always with its error; an error without a status is
        // a request never answered.
        assert!(r.status == 0 || r.error.is_some());
        assert!(r.error.is_none() || r.status > 0 || r.response_ts_ns == 0);
    }
});
