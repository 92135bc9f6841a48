//! The label schema: which metric family a record lands in, its OpenTelemetry name and
//! help, and the label keys of each (identity labels first).

use sonde_sdk::protocol_parser::ConnInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Family {
    HttpServer,
    HttpClient,
    RpcServer,
    RpcClient,
    DbClient,
    Dns,
    Other,
}

impl Family {
    pub(super) const ALL: [Family; 7] = [
        Family::HttpServer,
        Family::HttpClient,
        Family::RpcServer,
        Family::RpcClient,
        Family::DbClient,
        Family::Dns,
        Family::Other,
    ];

    /// Index into a [`PerFamily`].
    fn index(self) -> usize {
        self as usize
    }

    pub(super) fn metric(self) -> &'static str {
        match self {
            Family::HttpServer => "http_server_request_duration_seconds",
            Family::HttpClient => "http_client_request_duration_seconds",
            Family::RpcServer => "rpc_server_duration_seconds",
            Family::RpcClient => "rpc_client_duration_seconds",
            Family::DbClient => "db_client_operation_duration_seconds",
            Family::Dns => "dns_lookup_duration_seconds",
            Family::Other => "sonde_request_duration_seconds",
        }
    }

    pub(super) fn help(self) -> &'static str {
        match self {
            Family::HttpServer => {
                "Duration of HTTP server requests (observed by eBPF, parsed in Wasm)."
            }
            Family::HttpClient => {
                "Duration of HTTP client requests (observed by eBPF, parsed in Wasm)."
            }
            Family::RpcServer => {
                "Duration of RPCs served (gRPC; any parser that sets rpc.system), request to the end of the response."
            }
            Family::RpcClient => {
                "Duration of RPCs made (gRPC; any parser that sets rpc.system), request to the end of the response."
            }
            Family::DbClient => {
                "Duration of database operations, client side (any parser that sets db.system.name)."
            }
            Family::Dns => {
                "Duration of DNS lookups, query to response (timeouts are in sonde_requests_unanswered_total)."
            }
            Family::Other => "Duration of requests of other protocols, by parser.",
        }
    }
}

/// One value per family, found by index: no hashing on the record path.
#[derive(Debug)]
pub(super) struct PerFamily<V>([Option<V>; Family::ALL.len()]);

impl<V> Default for PerFamily<V> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| None))
    }
}

impl<V> PerFamily<V> {
    pub(super) fn get(&self, family: &Family) -> Option<&V> {
        self.0[family.index()].as_ref()
    }

    /// The family's value, created empty on first use.
    pub(super) fn get_or_default(&mut self, family: Family) -> &mut V
    where
        V: Default,
    {
        self.0[family.index()].get_or_insert_with(V::default)
    }

    /// The families' values that exist, in [`Family::ALL`] order.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().flatten()
    }

    pub(super) fn len(&self) -> usize {
        self.values().count()
    }
}

/// Who made or served the request: the correlation layer's labels of the observed process,
/// and the service and namespace of the other end (bounded: no peer pod names).
pub const IDENTITY_KEYS: [&str; ID] = [
    "service_name",
    "k8s_namespace_name",
    "k8s_pod_name",
    "k8s_pod_uid",
    "k8s_node_name",
    "k8s_container_name",
    "container_id",
    "k8s_deployment_name",
    "k8s_statefulset_name",
    "k8s_daemonset_name",
    "k8s_replicaset_name",
    "k8s_job_name",
    "k8s_cronjob_name",
    "peer_service_name",
    "peer_k8s_namespace_name",
];
pub(super) const ID: usize = 15;

/// A metric's own keys followed by [`IDENTITY_KEYS`].
const fn with_identity<const N: usize, const M: usize>(
    own: [&'static str; N],
) -> [&'static str; M] {
    assert!(M == N + ID);
    let mut out = [""; M];
    let mut i = 0;
    while i < N {
        out[i] = own[i];
        i += 1;
    }
    while i < M {
        out[i] = IDENTITY_KEYS[i - N];
        i += 1;
    }
    out
}

/// `tls`: "true" when the records came from TLS plaintext (uprobes), "false" for cleartext.
pub(super) const HTTP_SERVER_KEYS: [&str; 7 + ID] = with_identity([
    "http_request_method",
    "http_route",
    "http_response_status_code",
    "error_type",
    "server_address",
    "server_port",
    TLS_KEY,
]);
pub(super) const HTTP_CLIENT_KEYS: [&str; 7 + ID] = with_identity([
    "http_request_method",
    "url_template",
    "http_response_status_code",
    "error_type",
    "server_address",
    "server_port",
    TLS_KEY,
]);
/// The HTTP series' label, and the connection label (set by the router on records of a
/// connection parsed from TLS plaintext) it comes from.
pub(super) const TLS_KEY: &str = "tls";
/// OTel's RPC metrics (`rpc.server.duration`, `rpc.client.duration`), in seconds.
pub(super) const RPC_KEYS: [&str; 7 + ID] = with_identity([
    "rpc_system",
    "rpc_service",
    "rpc_method",
    "rpc_grpc_status_code",
    "error_type",
    "server_address",
    "server_port",
]);
pub(super) const OTHER_KEYS: [&str; 7 + ID] = with_identity([
    "protocol",
    "side",
    "operation",
    "status",
    "error_type",
    "server_address",
    "server_port",
]);
pub(super) const DB_CLIENT_KEYS: [&str; 6 + ID] = with_identity([
    "db_system_name",
    "db_operation_name",
    "db_response_status_code",
    "error_type",
    "server_address",
    "server_port",
]);
pub(super) const DNS_KEYS: [&str; 6 + ID] = with_identity([
    "dns_question_type",
    "dns_response_code",
    "error_type",
    "side",
    "server_address",
    "server_port",
]);
pub(super) const UNANSWERED_KEYS: [&str; 6] = [
    "protocol",
    "side",
    "operation",
    "error_type",
    "service_name",
    "k8s_namespace_name",
];

/// The identity label values of a connection (one pass over its labels); `service_name`
/// falls back to the process name.
pub(super) fn identity_values(conn: &ConnInfo) -> [&str; ID] {
    let mut v = [""; ID];
    for (k, val) in &conn.labels {
        if let Some(i) = IDENTITY_KEYS.iter().position(|x| x == k) {
            v[i] = val.as_str();
        }
    }
    if v[0].is_empty() {
        v[0] = &conn.comm;
    }
    v
}
