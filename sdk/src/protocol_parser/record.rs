//! What a parser produces: request records, and its own description.

use serde::{Deserialize, Serialize};

/// One exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestRecord {
    /// Set by the [`Driver`](super::Driver); parsers may leave it 0.
    pub conn: u64,
    pub protocol: String,
    pub operation: String,
    pub status: u32,
    pub error: Option<String>,
    pub request_ts_ns: u64,
    pub response_ts_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub attributes: Vec<(String, String)>,
}

impl RequestRecord {
    /// The value of attribute `key`, if the record has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParserInfo {
    pub name: String,
    pub version: String,
    pub protocols: Vec<String>,
}
