//! The slow-query log's entries (`/api/slow-queries`).

use serde::{Deserialize, Serialize};

/// A database operation slower than `slow_query_ms`, as `/api/slow-queries` serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlowQuery {
    /// Kernel monotonic time of the request.
    pub request_ts_ns: u64,
    pub duration_seconds: f64,
    /// `db.system.name`: mysql, redis…
    pub system: String,
    pub operation: String,
    /// The normalised statement (`db.query.text`), when the parser gives one.
    pub statement: String,
    pub rows: Option<u64>,
    pub error: Option<String>,
    /// `client` (the application's view) or `server` (the database's).
    pub side: String,
    pub pid: u32,
    pub service: String,
    pub namespace: String,
    pub pod: String,
    /// The database's address.
    pub server: String,
}
