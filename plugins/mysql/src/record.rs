//! Attribute keys, error strings, and the record an exchange becomes.

use sonde_sdk::protocol_parser::RequestRecord;

/// The record's `protocol`.
pub const PROTOCOL: &str = "mysql";

/// Attribute keys (OpenTelemetry database semantic conventions). The ones the daemon reads too
/// are the SDK's ([`sonde_sdk::attributes`]).
pub mod attr {
    use sonde_sdk::attributes as a;

    /// Always `mysql`.
    pub const SYSTEM: &str = a::DB_SYSTEM_NAME;
    /// The statement kind, as the record's operation.
    pub const OPERATION: &str = a::DB_OPERATION_NAME;
    /// The normalised statement text.
    pub const QUERY_TEXT: &str = a::DB_QUERY_TEXT;
    /// The server-side prepared statement id.
    pub const STATEMENT_ID: &str = "db.statement.id";
    /// The default database (schema).
    pub const NAMESPACE: &str = a::DB_NAMESPACE;
    /// The MySQL error code, on ERR.
    pub const STATUS_CODE: &str = a::DB_RESPONSE_STATUS_CODE;
    /// The SQLSTATE of an ERR.
    pub const SQLSTATE: &str = "db.response.sqlstate";
    /// Rows of the result set(s).
    pub const RETURNED_ROWS: &str = a::DB_RESPONSE_RETURNED_ROWS;
    /// Affected rows of the final OK packet.
    pub const AFFECTED_ROWS: &str = "db.response.affected_rows";
}

/// Error strings other than the MySQL error code.
pub mod error {
    /// The response was lost or cut (a capture gap, or the connection closed mid-response).
    pub const TRUNCATED: &str = "truncated";
    /// The connection closed before the response started, or too many commands were waiting.
    pub const NO_RESPONSE: &str = "no-response";
}

/// A command and what its response said so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exchange {
    pub operation: &'static str,
    pub text: Option<String>,
    pub statement_id: Option<u32>,
    pub namespace: Option<String>,
    pub request_ts: u64,
    pub request_bytes: u64,
    /// The response's first packet was read.
    pub started: bool,
    /// Bytes of the response were lost and its row count with them (its end was still found).
    pub lossy: bool,
    pub response_ts: u64,
    pub response_bytes: u64,
    pub rows: Option<u64>,
    pub affected: Option<u64>,
    pub err: Option<(u16, Option<String>)>,
}

impl Exchange {
    /// The record; `lost`: the response was lost or cut (no status).
    pub(crate) fn record(self, lost: Option<&'static str>) -> RequestRecord {
        let mut attributes = Vec::with_capacity(8);
        let mut a = |k: &str, v: String| attributes.push((k.to_string(), v));
        a(attr::SYSTEM, PROTOCOL.into());
        a(attr::OPERATION, self.operation.into());
        if let Some(t) = self.text {
            a(attr::QUERY_TEXT, t);
        }
        if let Some(id) = self.statement_id {
            a(attr::STATEMENT_ID, id.to_string());
        }
        if let Some(ns) = self.namespace {
            a(attr::NAMESPACE, ns);
        }
        // Bytes lost inside a response whose end was found: an ERR there is still its status.
        let lost = lost.or((self.lossy && self.err.is_none()).then_some(error::TRUNCATED));
        let (status, error) = match (&self.err, lost) {
            (_, Some(e)) => (0, Some(e.to_string())),
            (Some((code, state)), None) => {
                a(attr::STATUS_CODE, code.to_string());
                if let Some(s) = state {
                    a(attr::SQLSTATE, s.clone());
                }
                (*code as u32, Some(code.to_string()))
            }
            (None, None) => (0, None),
        };
        if lost.is_none() {
            if let Some(r) = self.rows.filter(|_| !self.lossy) {
                a(attr::RETURNED_ROWS, r.to_string());
            }
            if let Some(n) = self.affected {
                a(attr::AFFECTED_ROWS, n.to_string());
            }
        }
        RequestRecord {
            conn: 0,
            protocol: PROTOCOL.into(),
            operation: self.operation.into(),
            status,
            error,
            request_ts_ns: self.request_ts,
            response_ts_ns: self.response_ts,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            attributes,
        }
    }
}
