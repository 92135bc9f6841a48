//! Attribute keys, error strings, and the record a statement becomes.

use sonde_sdk::protocol_parser::RequestRecord;

/// The record's `protocol`, and `db.system.name`.
pub const PROTOCOL: &str = "postgresql";

/// Attribute keys (OpenTelemetry database semantic conventions); the ones the daemon reads are
/// the SDK's ([`sonde_sdk::attributes`]).
pub mod attr {
    use sonde_sdk::attributes as a;

    /// Always `postgresql`.
    pub const SYSTEM: &str = a::DB_SYSTEM_NAME;
    /// The statement kind (from the CommandComplete tag when there is one).
    pub const OPERATION: &str = a::DB_OPERATION_NAME;
    /// The normalised statement text.
    pub const QUERY_TEXT: &str = a::DB_QUERY_TEXT;
    /// The database of the connection, from the StartupMessage.
    pub const NAMESPACE: &str = a::DB_NAMESPACE;
    /// The SQLSTATE of an ErrorResponse.
    pub const STATUS_CODE: &str = a::DB_RESPONSE_STATUS_CODE;
    /// Rows a query returned (SELECT, FETCH, or DataRows of a statement with RETURNING).
    pub const RETURNED_ROWS: &str = a::DB_RESPONSE_RETURNED_ROWS;
    /// Rows an INSERT, UPDATE, DELETE, MERGE or COPY affected, from its CommandComplete tag.
    pub const AFFECTED_ROWS: &str = "db.response.affected_rows";
    /// The prepared statement's name, when it has one (extended protocol).
    pub const STATEMENT_NAME: &str = "db.statement.name";
}

/// Error strings other than a SQLSTATE.
pub mod error {
    /// The response was lost (a capture gap the parser cannot follow, or the connection closed
    /// before it).
    pub const TRUNCATED: &str = "truncated";
}

/// A statement executed, and what its response said.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exchange {
    pub operation: &'static str,
    pub text: Option<String>,
    pub statement: Option<String>,
    pub namespace: Option<String>,
    pub request_ts: u64,
    pub request_bytes: u64,
    pub response_ts: u64,
    pub response_bytes: u64,
    pub returned: Option<u64>,
    pub affected: Option<u64>,
    pub sqlstate: Option<String>,
}

impl Exchange {
    /// The record; `lost`: the response was lost (no status).
    pub(crate) fn record(self, lost: Option<&'static str>) -> RequestRecord {
        let mut attributes = Vec::with_capacity(8);
        let mut a = |k: &str, v: String| attributes.push((k.to_string(), v));
        a(attr::SYSTEM, PROTOCOL.into());
        a(attr::OPERATION, self.operation.into());
        if let Some(t) = self.text {
            a(attr::QUERY_TEXT, t);
        }
        if let Some(s) = self.statement.filter(|s| !s.is_empty()) {
            a(attr::STATEMENT_NAME, s);
        }
        if let Some(ns) = self.namespace {
            a(attr::NAMESPACE, ns);
        }
        let error = match (lost, &self.sqlstate) {
            (Some(e), _) => Some(e.to_string()),
            (None, Some(state)) => {
                a(attr::STATUS_CODE, state.clone());
                Some(state.clone())
            }
            (None, None) => {
                if let Some(n) = self.returned {
                    a(attr::RETURNED_ROWS, n.to_string());
                }
                if let Some(n) = self.affected {
                    a(attr::AFFECTED_ROWS, n.to_string());
                }
                None
            }
        };
        RequestRecord {
            conn: 0,
            protocol: PROTOCOL.into(),
            operation: self.operation.into(),
            status: 0,
            error,
            request_ts_ns: self.request_ts,
            response_ts_ns: self.response_ts,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            attributes,
        }
    }
}
