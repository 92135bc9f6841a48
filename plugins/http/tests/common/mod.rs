//! Helpers shared by the integration tests.
#![allow(dead_code)]

use sonde_http_parser::Http;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, ConnInfo, RequestRecord, Role};

pub(crate) type H = Harness<Http>;

#[allow(unused_imports)] // not every test binary compares ops
pub(crate) use sonde_sdk::protocol_parser::harness::{Brief, op};

// The SDK harness has these; the short free-function names keep the tests readable.
pub(crate) fn brief(r: &RequestRecord) -> Brief {
    Brief::from(r)
}

pub(crate) fn ops(h: &H) -> Vec<(String, u32, Option<String>)> {
    h.ops()
}

pub(crate) fn attr<'a>(r: &'a RequestRecord, key: &str) -> Option<&'a str> {
    r.attr(key)
}

pub(crate) fn claims(h: &H) -> Vec<Claim> {
    h.claims()
}

pub(crate) fn unknown_role() -> H {
    H::new(ConnInfo {
        id: 1,
        role: Role::Unknown,
        ..Default::default()
    })
}

/// Every record must respect the parser's bounds, whatever the input.
pub(crate) fn assert_bounded(records: &[RequestRecord]) {
    for r in records {
        assert_eq!(r.protocol, "http");
        assert!(r.operation.len() <= 20 + 1 + 256, "{}", r.operation.len());
        for (k, v) in &r.attributes {
            assert!(v.len() <= 512, "{k} is {} bytes", v.len());
        }
    }
}
