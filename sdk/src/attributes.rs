//! Attribute keys of [`RequestRecord`](crate::protocol_parser::RequestRecord)s that more than
//! one side reads: the parsers write them, the daemon's RED metrics, database and DNS views and
//! trace correlation look them up. One spelling here, so a typo is a compile error instead of a
//! silently empty label.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists (so exported spans and
//! metrics mean what an OTel user expects); the W3C trace-context headers keep their header
//! names. Keys only one parser writes and nothing else reads stay in that parser.

// HTTP (OTel `http.*`, `url.*`).

/// Request method as sent, e.g. `GET`.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// The route template, e.g. `/users/{id}`, when the parser could tell one.
pub const HTTP_ROUTE: &str = "http.route";
/// The request path, without the query.
pub const URL_PATH: &str = "url.path";

// The peer the client addressed (OTel `server.*`, e.g. from HTTP `Host`).

pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";

/// `tcp` or `udp` (OTel `network.transport`).
pub const NETWORK_TRANSPORT: &str = "network.transport";

// Databases (OTel `db.*`).

/// The database system, e.g. `mysql`, `redis`: what marks a record as a database call.
pub const DB_SYSTEM_NAME: &str = "db.system.name";
/// The command or statement kind, e.g. `SELECT`, `GET`.
pub const DB_OPERATION_NAME: &str = "db.operation.name";
/// The statement, normalised (literals replaced), never with its parameters.
pub const DB_QUERY_TEXT: &str = "db.query.text";
/// The database (schema) the statement ran in.
pub const DB_NAMESPACE: &str = "db.namespace";
/// The server's error code, as the database spells it; absent on success.
pub const DB_RESPONSE_STATUS_CODE: &str = "db.response.status_code";
/// Rows a query returned.
pub const DB_RESPONSE_RETURNED_ROWS: &str = "db.response.returned_rows";

// DNS (OTel `dns.*`).

/// The name asked for.
pub const DNS_QUESTION_NAME: &str = "dns.question.name";
/// The response code by name, e.g. `NXDOMAIN`.
pub const DNS_RESPONSE_CODE: &str = "dns.response.code";

// Trace context (W3C Trace Context headers, as a request carried them).

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

// What the daemon derives from the trace context and attaches to what it exports.

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";

/// The protocol's version, e.g. `2` for HTTP/2 (OTel `network.protocol.version`).
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";

// RPC (OTel `rpc.*`): what marks a record as a remote procedure call.

/// The RPC system, e.g. `grpc`.
pub const RPC_SYSTEM: &str = "rpc.system";
/// The full service name, e.g. `helloworld.Greeter`.
pub const RPC_SERVICE: &str = "rpc.service";
/// The method name, e.g. `SayHello`.
pub const RPC_METHOD: &str = "rpc.method";
/// The gRPC status code as a number, e.g. `5`.
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
