//! Helpers shared by the integration tests.
#![allow(dead_code)]

use sonde_http_parser::Http;
use sonde_sdk::protocol_parser::harness::Harness;
use sonde_sdk::protocol_parser::{Claim, ConnInfo, RequestRecord, Role};

pub type H = Harness<Http>;

/// The fields of a record most tests compare, in one tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brief {
    pub operation: String,
    pub status: u32,
    pub error: Option<String>,
    pub request_ts: u64,
    pub response_ts: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

pub fn brief(r: &RequestRecord) -> Brief {
    Brief {
        operation: r.operation.clone(),
        status: r.status,
        error: r.error.clone(),
        request_ts: r.request_ts_ns,
        response_ts: r.response_ts_ns,
        request_bytes: r.request_bytes,
        response_bytes: r.response_bytes,
    }
}

/// `(operation, status, error)` of each record.
pub fn ops(h: &H) -> Vec<(String, u32, Option<String>)> {
    h.result
        .records
        .iter()
        .map(|r| (r.operation.clone(), r.status, r.error.clone()))
        .collect()
}

pub fn op(operation: &str, status: u32, error: Option<&str>) -> (String, u32, Option<String>) {
    (operation.to_string(), status, error.map(str::to_string))
}

pub fn attr<'a>(r: &'a RequestRecord, key: &str) -> Option<&'a str> {
    r.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub fn claims(h: &H) -> Vec<Claim> {
    h.result.claims.iter().map(|(_, c)| *c).collect()
}

pub fn unknown_role() -> H {
    H::new(ConnInfo {
        id: 1,
        role: Role::Unknown,
        ..Default::default()
    })
}

/// Every record must respect the parser's bounds, whatever the input.
pub fn assert_bounded(records: &[RequestRecord]) {
    for r in records {
        assert_eq!(r.protocol, "http");
        assert!(r.operation.len() <= 20 + 1 + 256, "{}", r.operation.len());
        for (k, v) in &r.attributes {
            assert!(v.len() <= 512, "{k} is {} bytes", v.len());
        }
    }
}
