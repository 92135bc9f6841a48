//! The `/metrics` exposition (Prometheus text or OpenMetrics, written through
//! [`sonde_metrics::Exposition`]): the RED metrics parsed from traffic
//! ([`sonde_pipeline::red`]) and the daemon's own health — capture counters (every drop has
//! one), stream reassembly, connection tracking, the parse pipeline and every plugin's sandbox
//! counters — and the [`State`] the HTTP API ([`crate::http`]) serves it and the JSON endpoints
//! from.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sonde_common::stat;
use sonde_metrics::{Exposition, Format, Kind, LabelText, Value};

use sonde_capture::CaptureStats;
use sonde_capture::conntrack::TrackerStats;
use sonde_parse::ParserStats;
use sonde_pipeline::red::Red;
use sonde_pipeline::router::RouterStats;

/// The daemon's health as `/metrics` shows it; the daemon loop replaces it on every tick.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub capture: CaptureStats,
    pub tracker: TrackerStats,
    pub connections_open: usize,
    pub stream_data_bytes: u64,
    pub stream_truncated_bytes: u64,
    pub stream_lost_bytes: u64,
    pub parsers: Vec<ParserStats>,
    pub router: RouterStats,
    /// Connections the parse pipeline routes now.
    pub routed_connections: usize,
    /// Skip-payload verdicts the kernel map refused (full, or an error).
    pub verdict_errors: u64,
    /// The libssl uprobes' attach state (None: TLS capture is not running).
    pub tls: Option<sonde_capture::tls::TlsStatus>,
}

/// What the endpoint serves: the health snapshot and the live RED aggregation (updated by the
/// daemon loop as records arrive, so it is never copied whole).
#[derive(Debug, Default)]
pub struct State {
    pub snapshot: Mutex<Snapshot>,
    pub red: Mutex<Red>,
    /// The network map as of its last read: topology (`/api/map`) and its Prometheus text.
    pub network: Mutex<NetworkView>,
    /// The latest records (`/api/records`).
    pub records: Mutex<sonde_pipeline::records::RecordLog>,
    /// Containers and their usage, Kubernetes watch status (`/api/containers`).
    pub correlator: Option<Arc<sonde_correlate::Correlator>>,
    /// Error-log templates mined from stdout/stderr (`/api/logs`).
    pub logs: Option<Arc<Mutex<sonde_logs::LogMiner>>>,
    /// Incidents and their reports (`/api/incidents`).
    pub live: Mutex<sonde_live::LiveBoard>,
    /// Panics caught in log mining, correlation scans and the live engine.
    pub task_panics: Arc<crate::isolation::TaskPanics>,
    /// What runs in the kernel: every program's state (`/api/health`), set at start and
    /// again when the TLS attach state changes (the TLS programs' detail lists the files).
    pub health: Mutex<Health>,
    /// The fault-tree rule components the live diagnosis loaded, as loaded (`/api/plugins`).
    pub rules: Vec<sonde_sandbox::PluginStats>,
    /// The HTTP API's own counters.
    pub api: ApiStats,
    /// Set when this is `sonde hub`: its counters, and `/metrics` is the hub's page.
    pub hub: Option<Mutex<sonde_hub::HubStats>>,
}

/// The API's own counters (in `/metrics`).
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Connections answered 503 because `[api] max_connections` were open.
    pub busy: AtomicU64,
    /// `/metrics` pages rendered (scrapes served from the shared page render none).
    pub renders: AtomicU64,
    /// The last page's length per format (Prometheus, OpenMetrics): the next render reserves
    /// it up front, so a ~110 MB page at the caps is not grown by doubling (which copies it
    /// and briefly holds the old and the new buffer).
    pub page_bytes: [AtomicUsize; 2],
    /// Requests refused by the access rule (off loopback without the token).
    pub refused: AtomicU64,
}

/// The capture's bring-up as `/api/health` and `sonde_probe_info` show it.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Health {
    pub kernel: String,
    pub socket_lookup: Option<sonde_capture::programs::SocketLookup>,
    pub probes: Vec<sonde_capture::programs::ProbeStatus>,
}

impl Health {
    pub fn of(capture: &sonde_capture::Capture) -> Health {
        Health {
            kernel: sonde_capture::doctor::kernel_release(),
            socket_lookup: Some(capture.socket_lookup()),
            probes: capture.probes().to_vec(),
        }
    }

    fn render(&self, ex: &mut Exposition) {
        if self.probes.is_empty() {
            return;
        }
        let mut g = ex.gauge(
            "sonde_probe_info",
            "Every eBPF program: the feature it serves and whether it runs.",
        );
        for p in &self.probes {
            g.sample(
                [
                    ("program", p.program.as_str()),
                    ("feature", p.feature.name()),
                    ("state", p.state.name()),
                ],
                1u64,
            );
        }
    }
}

/// What the daemon loop publishes of the network map after each read: the topology and its
/// series, rendered in both formats (each appended as it is to an exposition of its format).
#[derive(Debug, Clone)]
pub struct NetworkView {
    pub topology: sonde_netmap::export::Topology,
    prometheus: Exposition,
    openmetrics: Exposition,
}

impl NetworkView {
    pub fn of(netmap: &sonde_netmap::NetMap) -> NetworkView {
        let mut prometheus = Exposition::with_capacity(Format::Prometheus, 16 << 10);
        netmap.render(&mut prometheus);
        let mut openmetrics = Exposition::with_capacity(Format::OpenMetrics, 16 << 10);
        netmap.render(&mut openmetrics);
        NetworkView {
            topology: netmap.topology(),
            prometheus,
            openmetrics,
        }
    }

    /// The series in `format`.
    pub fn series(&self, format: Format) -> &Exposition {
        match format {
            Format::Prometheus => &self.prometheus,
            Format::OpenMetrics => &self.openmetrics,
        }
    }
}

impl Default for NetworkView {
    fn default() -> Self {
        NetworkView {
            topology: Default::default(),
            prometheus: Exposition::new(Format::Prometheus),
            openmetrics: Exposition::new(Format::OpenMetrics),
        }
    }
}

pub type Shared = Arc<State>;

/// The full exposition in the Prometheus text format.
pub fn render_all(state: &State) -> String {
    render_format(state, Format::Prometheus)
}

/// The full exposition: RED metrics, network, containers, then health; in the Prometheus text
/// format, or in OpenMetrics (with exemplars on the latency histograms, which the Prometheus
/// format cannot carry).
pub fn render_format(state: &State, format: Format) -> String {
    let hint = &state.api.page_bytes[usize::from(format == Format::OpenMetrics)];
    // The last length and a little more: series only grow between two scrapes (to the caps).
    let last = hint.load(Ordering::Relaxed);
    let mut ex = Exposition::with_capacity(format, (last + last / 16).max(16 << 10));
    if let Some(hub) = &state.hub {
        render_hub(&mut ex, state, hub);
        let page = ex.finish();
        hint.store(page.len(), Ordering::Relaxed);
        return page;
    }
    if let Ok(red) = state.red.lock() {
        red.render(&mut ex);
    }
    if let Ok(net) = state.network.lock() {
        ex.append(net.series(format));
    }
    if let Some(c) = &state.correlator {
        c.render(&mut ex);
    }
    let snap = state.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
    render(&mut ex, &snap);
    if let Ok(r) = state.records.lock() {
        ex.counter(
            "sonde_records_total",
            "Request records the parsers returned.",
        )
        .sample((), r.total);
    }
    if let Ok(b) = state.live.lock() {
        render_live(&mut ex, &b.stats);
        sonde_live::series::render(&b, &mut ex);
    }
    if let Some(stats) = state
        .logs
        .as_ref()
        .and_then(|l| l.lock().ok().map(|m| m.stats()))
    {
        render_logs(&mut ex, &stats);
    }
    state.task_panics.render(&mut ex);
    if let Ok(h) = state.health.lock() {
        h.render(&mut ex);
    }
    render_api(&mut ex, &state.api);
    let page = ex.finish();
    hint.store(page.len(), Ordering::Relaxed);
    page
}

/// `sonde hub`'s page: its queries and steps, the engine's counters, the API's.
fn render_hub(ex: &mut Exposition, state: &State, hub: &Mutex<sonde_hub::HubStats>) {
    ex.gauge("sonde_build_info", "Sonde version.")
        .sample([("version", env!("CARGO_PKG_VERSION"))], 1u64);
    if let Ok(s) = hub.lock() {
        sonde_hub::render_stats(&s, ex);
    }
    if let Ok(b) = state.live.lock() {
        render_live(ex, &b.stats);
    }
    render_api(ex, &state.api);
}

/// Unlabelled series, one (name, kind, help, value) row each.
fn write_scalars<V: Value + Copy>(ex: &mut Exposition, rows: &[(&str, Kind, &str, V)]) {
    for &(name, kind, help, v) in rows {
        ex.family(kind, name, help).sample((), v);
    }
}

/// The HTTP API's own counters.
fn render_api(ex: &mut Exposition, s: &ApiStats) {
    let get = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let rows: [(&str, Kind, &str, u64); 3] = [
        (
            "sonde_api_busy_total",
            Kind::Counter,
            "API connections answered 503: [api] max_connections were open.",
            get(&s.busy),
        ),
        (
            "sonde_api_metrics_renders_total",
            Kind::Counter,
            "/metrics pages rendered (concurrent scrapers share one page per [api] metrics_cache_ms).",
            get(&s.renders),
        ),
        (
            "sonde_api_refused_total",
            Kind::Counter,
            "API requests refused: off loopback without the bearer token.",
            get(&s.refused),
        ),
    ];
    write_scalars(ex, &rows);
}

/// The log miner's counters.
fn render_logs(ex: &mut Exposition, s: &sonde_logs::LogStats) {
    let rows: [(&str, Kind, &str, u64); 7] = [
        (
            "sonde_log_lines_total",
            Kind::Counter,
            "stdout/stderr lines mined into templates.",
            s.lines,
        ),
        (
            "sonde_log_error_lines_total",
            Kind::Counter,
            "Lines classified as errors.",
            s.error_lines,
        ),
        (
            "sonde_log_templates",
            Kind::Gauge,
            "Templates held (all services).",
            s.templates,
        ),
        (
            "sonde_log_template_evictions_total",
            Kind::Counter,
            "Templates forgotten at the per-service bound.",
            s.template_evictions,
        ),
        (
            "sonde_log_service_evictions_total",
            Kind::Counter,
            "Services forgotten at the service bound.",
            s.service_evictions,
        ),
        (
            "sonde_log_lines_truncated_total",
            Kind::Counter,
            "Lines cut at max_line_bytes.",
            s.truncated_lines,
        ),
        (
            "sonde_log_stream_evictions_total",
            Kind::Counter,
            "Partial-line buffers dropped at the stream bound.",
            s.stream_evictions,
        ),
    ];
    write_scalars(ex, &rows);
}

/// The live diagnosis' counters.
fn render_live(ex: &mut Exposition, s: &sonde_live::LiveStats) {
    let rows: [(&str, Kind, &str, f64); 9] = [
        (
            "sonde_live_steps_total",
            Kind::Counter,
            "Steps the live history has taken.",
            s.steps as f64,
        ),
        (
            "sonde_live_series",
            Kind::Gauge,
            "Series in the live history (golden metrics, resources, edges, endpoint breakdowns).",
            s.series as f64,
        ),
        (
            "sonde_live_points",
            Kind::Gauge,
            "Points held by the live history (8 bytes each).",
            s.points as f64,
        ),
        (
            "sonde_live_series_refused_total",
            Kind::Counter,
            "Values refused because the history held live.max_series series.",
            s.series_refused as f64,
        ),
        (
            "sonde_incidents_opened_total",
            Kind::Counter,
            "Incidents opened.",
            s.incidents_opened as f64,
        ),
        (
            "sonde_incidents_merged_total",
            Kind::Counter,
            "Incidents folded into the open incident they arose under (same first root cause).",
            s.incidents_merged as f64,
        ),
        (
            "sonde_incidents_open",
            Kind::Gauge,
            "Incidents open now.",
            s.incidents_open as f64,
        ),
        (
            "sonde_incident_reports_total",
            Kind::Counter,
            "Incident reports written.",
            s.reports as f64,
        ),
        (
            "sonde_incident_analysis_errors_total",
            Kind::Counter,
            "Incident analyses that failed (the incident says why).",
            s.analysis_errors as f64,
        ),
    ];
    write_scalars(ex, &rows);
}

/// The daemon's health: build, capture, streams, connections, the parse pipeline.
fn render(ex: &mut Exposition, s: &Snapshot) {
    ex.gauge("sonde_build_info", "Sonde version.")
        .sample([("version", env!("CARGO_PKG_VERSION"))], 1u64);
    counter_per_cpu(
        ex,
        "sonde_capture_events_lost_total",
        "Events the kernel could not put in the ring buffer (full), per CPU.",
        s,
        &[
            ("data", stat::DATA_LOST),
            ("conn", stat::CONN_LOST),
            ("log", stat::LOG_LOST),
        ],
    );
    counter_per_cpu(
        ex,
        "sonde_capture_events_total",
        "Events written to the ring buffer, per CPU.",
        s,
        &[
            ("data", stat::DATA_EVENTS),
            ("conn", stat::CONN_EVENTS),
            ("log", stat::LOG_EVENTS),
        ],
    );
    render_io_uring(ex, s);
    let totals: [(&str, &str, u64); 16] = [
        (
            "sonde_capture_tls_events_total",
            "TLS plaintext chunks from the libssl uprobes (SSL_read/SSL_write returns).",
            s.capture.total(stat::TLS_EVENTS),
        ),
        (
            "sonde_capture_tls_without_conn_total",
            "TLS plaintext not emitted: its SSL object was never seen on a socket.",
            s.capture.total(stat::TLS_WITHOUT_CONN),
        ),
        (
            "sonde_stream_tls_ciphertext_bytes_total",
            "Socket bytes of TLS connections (the records): dropped, never parsed.",
            s.tracker.bytes_tls_ciphertext,
        ),
        (
            "sonde_capture_bytes_spliced_total",
            "Bytes moved by sendfile/splice on sockets: never in user memory, passed on as gaps.",
            s.capture.total(stat::BYTES_SPLICED),
        ),
        (
            "sonde_capture_log_read_failed_total",
            "stdout/stderr writes whose bytes could not be copied from user memory.",
            s.capture.total(stat::LOG_READ_FAILED),
        ),
        (
            "sonde_capture_log_bytes_truncated_total",
            "stdout/stderr bytes beyond capture.stdio_bytes per write.",
            s.capture.total(stat::LOG_BYTES_TRUNCATED),
        ),
        (
            "sonde_capture_log_rate_limited_total",
            "stdout/stderr writes not captured: over capture.stdio_per_sec on their CPU.",
            s.capture.total(stat::LOG_RATE_LIMITED),
        ),
        (
            "sonde_capture_net_map_full_total",
            "Network-probe updates lost because a kernel map (flows, drops, devices) refused an entry.",
            s.capture.total(stat::NET_MAP_FULL),
        ),
        (
            "sonde_capture_drops_without_headers_total",
            "Dropped packets whose IP header was unreadable: counted by reason only, without a flow.",
            s.capture.total(stat::DROP_NO_HEADERS),
        ),
        (
            "sonde_capture_bytes_truncated_total",
            "Bytes moved by captured syscalls beyond the per-syscall cap.",
            s.capture.total(stat::BYTES_TRUNCATED),
        ),
        (
            "sonde_capture_bytes_skipped_by_verdict_total",
            "Bytes not copied because the daemon told the kernel to stop.",
            s.capture.total(stat::BYTES_SKIPPED_BY_VERDICT),
        ),
        (
            "sonde_capture_out_of_scope_total",
            "Syscalls, calls and kernel events left out by [capture.scope] (another namespace or cgroup).",
            s.capture.total(stat::OUT_OF_SCOPE),
        ),
        (
            "sonde_capture_inflight_full_total",
            "Syscalls not followed: in-flight table full.",
            s.capture.total(stat::INFLIGHT_FULL),
        ),
        (
            "sonde_capture_conn_table_full_total",
            "Connections not tracked: kernel connection table full.",
            s.capture.total(stat::CONN_TABLE_FULL),
        ),
        (
            "sonde_capture_read_failed_total",
            "Payload copies from user memory that failed.",
            s.capture.total(stat::READ_FAILED),
        ),
        (
            "sonde_capture_decode_errors_total",
            "Malformed ring-buffer records dropped by the daemon.",
            s.capture.decode_errors,
        ),
    ];
    for (name, help, v) in totals {
        ex.counter(name, help).sample((), v);
    }
    let mut c = ex.counter(
        "sonde_stream_bytes_total",
        "Reassembled stream bytes by outcome.",
    );
    for (kind, v) in [
        ("data", s.stream_data_bytes),
        ("truncated", s.stream_truncated_bytes),
        ("lost", s.stream_lost_bytes),
    ] {
        c.sample([("kind", kind)], v);
    }
    if let Some(t) = &s.tls {
        ex.gauge(
            "sonde_tls_libssl_files",
            "Distinct libssl files (device, inode) found, by whether the TLS uprobes attached.",
        )
        .sample([("state", "attached")], t.files_attached as u64)
        .sample([("state", "failed")], t.files_failed as u64);
        ex.gauge(
            "sonde_tls_go_binaries",
            "Distinct Go executables using crypto/tls found, by whether the TLS uprobes attached.",
        )
        .sample([("state", "attached")], t.go_attached as u64)
        .sample([("state", "failed")], t.go_failed as u64);
        ex.counter(
            "sonde_tls_discoveries_total",
            "TLS files (libssl, Go binaries) attached, by how they were found: exec (a new \
             process reported by sched:sched_process_exec) or scan (a read of all of /proc).",
        )
        .sample([("via", "exec")], t.found_by_exec)
        .sample([("via", "scan")], t.found_by_scan);
        ex.counter(
            "sonde_tls_detached_total",
            "TLS files detached because the last process using them exited.",
        )
        .sample((), t.detached);
        let mut c = ex.counter(
            "sonde_tls_attach_failures_total",
            "TLS uprobe attachments that failed, by reason (symbol-missing, file, target, attach; \
             go-stripped, go-version, go-arch, go-symbol for Go binaries).",
        );
        for (reason, n) in &t.failures {
            c.sample([("reason", *reason)], *n);
        }
    }
    ex.gauge("sonde_connections_open", "Connections tracked now.")
        .sample((), s.connections_open);
    let mut c = ex.counter(
        "sonde_connections_total",
        "Connections by lifecycle outcome.",
    );
    for (kind, v) in s.tracker.lifecycle_counters() {
        c.sample([("event", kind)], v);
    }
    render_parsers(ex, s);
}

/// The parse pipeline: routing, verdicts, and per parser its work, drops and sandbox health.
fn render_parsers(ex: &mut Exposition, s: &Snapshot) {
    let r = &s.router;
    ex.counter(
        "sonde_parse_segments_total",
        "Stream segments handed to parsers (routed) or to none (unrouted: their connection was decided).",
    )
    .sample([("outcome", "routed")], r.segments_routed)
    .sample([("outcome", "unrouted")], r.segments_unrouted);
    let gauges_and_counters: [(&str, Kind, &str, u64); 6] = [
        (
            "sonde_parse_connections_relabeled_total",
            Kind::Counter,
            "Connections labelled again because Kubernetes metadata arrived after them.",
            r.relabeled,
        ),
        (
            "sonde_parse_verdicts_total",
            Kind::Counter,
            "Connections whose payload the kernel was told to stop copying: no parser wants them, or their parser has what it needs.",
            r.verdicts_skip,
        ),
        (
            "sonde_parse_verdict_errors_total",
            Kind::Counter,
            "Verdicts the kernel map refused.",
            s.verdict_errors,
        ),
        (
            "sonde_parse_connections_claimed_total",
            Kind::Counter,
            "Connections a parser claimed.",
            r.connections_claimed,
        ),
        (
            "sonde_parse_records_total",
            Kind::Counter,
            "Request records produced by parsers.",
            r.records,
        ),
        (
            "sonde_parse_connections",
            Kind::Gauge,
            "Connections the parse pipeline routes now.",
            s.routed_connections as u64,
        ),
    ];
    write_scalars(ex, &gauges_and_counters);
    if s.parsers.is_empty() {
        return;
    }
    type Get = fn(&ParserStats) -> f64;
    let c = Kind::Counter;
    let per_parser: [(&str, Kind, &str, Get); 12] = [
        (
            "sonde_parser_jobs_total",
            c,
            "Batches a parser was given.",
            |p| p.counters.jobs as f64,
        ),
        (
            "sonde_parser_jobs_held_total",
            c,
            "Batches a full queue refused and that were held and offered again (nothing lost).",
            |p| p.counters.jobs_held as f64,
        ),
        (
            "sonde_parser_jobs_dropped_total",
            c,
            "Batches dropped: the parser's queue stayed full until the held batch reached its bound.",
            |p| p.counters.jobs_dropped as f64,
        ),
        (
            "sonde_parser_segments_total",
            c,
            "Segments a parser was given.",
            |p| p.counters.segments as f64,
        ),
        (
            "sonde_parser_bytes_total",
            c,
            "Payload bytes a parser was given.",
            |p| p.counters.bytes as f64,
        ),
        (
            "sonde_parser_records_total",
            c,
            "Records a parser produced.",
            |p| p.counters.records as f64,
        ),
        (
            "sonde_parser_connections_claimed_total",
            c,
            "Connections a parser claimed.",
            |p| p.counters.claimed as f64,
        ),
        (
            "sonde_parser_connections_abandoned_total",
            c,
            "Connections whose parsing state a failure or a dropped batch destroyed.",
            |p| p.counters.abandoned as f64,
        ),
        (
            "sonde_plugin_calls_total",
            c,
            "Sandbox calls made to a plugin.",
            |p| p.health.calls as f64,
        ),
        (
            "sonde_plugin_calls_skipped_total",
            c,
            "Calls refused while the plugin was quarantined.",
            |p| p.health.skipped as f64,
        ),
        (
            "sonde_plugin_quarantines_total",
            c,
            "Times a plugin was quarantined after failures in a row.",
            |p| f64::from(p.health.quarantines),
        ),
        (
            "sonde_plugin_call_seconds_max",
            Kind::Gauge,
            "The longest sandbox call of a plugin (a stopped plugin: its deadline plus the stop latency).",
            |p| p.health.max_call_us as f64 / 1e6,
        ),
    ];
    for (name, kind, help, get) in per_parser {
        let mut f = ex.family(kind, name, help);
        for p in &s.parsers {
            f.sample(
                [("world", "protocol-parser"), ("plugin", p.name.as_str())],
                get(p),
            );
        }
    }
    let mut c = ex.counter(
        "sonde_plugin_failures_total",
        "Failed plugin calls by kind: the call was stopped and the instance dropped.",
    );
    for p in &s.parsers {
        let h = &p.health;
        for (kind, v) in [
            ("deadline", h.deadline_exceeded),
            ("fuel", h.fuel_exhausted),
            ("memory-cap", h.memory_cap_hits),
            ("trap", h.traps),
            ("bad-output", h.bad_output),
        ] {
            c.sample(
                [
                    ("world", "protocol-parser"),
                    ("plugin", p.name.as_str()),
                    ("kind", kind),
                ],
                v,
            );
        }
    }
    let mut g = ex.gauge("sonde_plugin_info", "Loaded plugins.");
    for p in &s.parsers {
        g.sample(
            [
                ("world", "protocol-parser"),
                ("plugin", p.name.as_str()),
                ("version", p.version.as_str()),
                ("source", p.source.as_str()),
            ],
            1u64,
        );
    }
}

/// Processes using io_uring: their sockets bypass the traced syscalls and are not captured.
fn render_io_uring(ex: &mut Exposition, s: &Snapshot) {
    let mut c = ex.counter(
        "sonde_io_uring_requests_total",
        "io_uring requests per process (kind=socket: socket operations, which Sonde cannot see).",
    );
    // By process name: pids come and go, names bound the series.
    let mut by_name: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for u in &s.capture.io_uring {
        let e = by_name.entry(u.comm.as_str()).or_default();
        e.0 += u.requests;
        e.1 += u.socket_requests;
    }
    for (comm, (all, socket)) in by_name {
        for (kind, v) in [("all", all), ("socket", socket)] {
            c.sample([("process", comm), ("kind", kind)], v);
        }
    }
}

fn counter_per_cpu(
    ex: &mut Exposition,
    name: &str,
    help: &str,
    s: &Snapshot,
    kinds: &[(&str, u32)],
) {
    let mut c = ex.counter(name, help);
    let mut labels = LabelText::new();
    for (cpu, slots) in s.capture.per_cpu.iter().enumerate() {
        for (kind, slot) in kinds {
            labels.clear();
            labels.push_display("cpu", cpu).push("kind", kind);
            c.sample(&labels, slots[*slot as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sonde_parse::Record;
    use sonde_sdk::protocol_parser::{ConnInfo, Endpoint, RequestRecord, Role};

    /// A `State` with something in every part that writes series.
    fn populated() -> super::State {
        let mut red = sonde_pipeline::red::Red::default();
        let conn = |role, comm: &str| {
            Arc::new(ConnInfo {
                id: 1,
                comm: comm.into(),
                role,
                local: Some(Endpoint {
                    ip: "10.0.0.1".into(),
                    port: 8080,
                }),
                remote: Some(Endpoint {
                    ip: "10.0.0.2".into(),
                    port: 40000,
                }),
                ..Default::default()
            })
        };
        let rec = |protocol: &str, op: &str, status: u32, ms: u64, traced: bool| {
            let mut attributes = vec![(
                "url.path".to_string(),
                op.split(' ').nth(1).unwrap_or("/").to_string(),
            )];
            if traced {
                attributes.push((
                    "traceparent".into(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                ));
            }
            Record::Owned(RequestRecord {
                conn: 1,
                protocol: protocol.into(),
                operation: op.into(),
                status,
                error: (status >= 500).then(|| "server-error".into()),
                request_ts_ns: 1_000_000,
                response_ts_ns: 1_000_000 + ms * 1_000_000,
                attributes,
                ..Default::default()
            })
        };
        let server = conn(Role::Server, "web \"front\"\\x");
        red.record(&server, &rec("http", "GET /users/{id}", 200, 30, true));
        red.record(&server, &rec("http", "GET /users/{id}", 200, 3, false));
        red.record(&server, &rec("http", "POST /orders", 503, 700, false));
        red.record(
            &conn(Role::Client, "curl"),
            &rec("http", "GET /x", 404, 1, false),
        );
        red.record(&conn(Role::Client, "app"), &rec("redis", "GET", 0, 2, true));
        let mut netmap = sonde_netmap::NetMap::new(Default::default(), Default::default());
        netmap.set_probes_missing(vec!["tcp:tcp_probe".into(), "skb:kfree_skb".into()]);
        let network = super::NetworkView::of(&netmap);
        let mut snapshot = super::Snapshot {
            connections_open: 3,
            stream_data_bytes: 1000,
            stream_truncated_bytes: 10,
            stream_lost_bytes: 1,
            routed_connections: 2,
            verdict_errors: 1,
            ..Default::default()
        };
        snapshot.capture.per_cpu = vec![[1; sonde_common::stat::COUNT as usize]; 2];
        snapshot.capture.per_cpu[1][sonde_common::stat::DATA_LOST as usize] = 7;
        snapshot.capture.decode_errors = 4;
        snapshot.capture.io_uring = vec![sonde_capture::IoUringUser {
            tgid: 9,
            comm: "io\"uring".into(),
            requests: 5,
            socket_requests: 2,
        }];
        snapshot.router.segments_routed = 11;
        snapshot.parsers = vec![sonde_parse::ParserStats {
            name: "http".into(),
            version: "1.2.0".into(),
            source: "C:\\plugins\\\"http\".wasm".into(),
            health: sonde_parse::Health {
                calls: 40,
                traps: 1,
                max_call_us: 1500,
                ..Default::default()
            },
            counters: sonde_parse::ParserCounters {
                jobs: 10,
                records: 8,
                ..Default::default()
            },
        }];
        let mut logs = sonde_logs::LogMiner::new(Default::default());
        logs.observe("web", sonde_logs::Stream::Stderr, 1, "ERROR: boom 42");
        let correlator = sonde_correlate::Correlator::new(Default::default(), "n1".into(), None);
        let state = super::State {
            snapshot: Mutex::new(snapshot),
            red: Mutex::new(red),
            network: Mutex::new(network),
            correlator: Some(Arc::new(correlator)),
            logs: Some(Arc::new(Mutex::new(logs))),
            health: Mutex::new(super::Health {
                kernel: "6.8".into(),
                socket_lookup: None,
                probes: vec![sonde_capture::programs::ProbeStatus {
                    program: "tcp_rtt".into(),
                    feature: sonde_capture::programs::Feature::TcpRtt,
                    state: sonde_capture::programs::ProbeState::Failed,
                    detail: "no BTF".into(),
                    tracepoints: vec![],
                    cost: None,
                }],
            }),
            ..Default::default()
        };
        state.records.lock().unwrap().total = 8;
        state.live.lock().unwrap().stats.incidents_opened = 2;
        let mut live = crate::isolation::Isolated::new(
            crate::isolation::Task::Live,
            Some(()),
            state.task_panics.clone(),
        );
        live.run(|_| panic!("golden"));
        state
    }

    /// Exemplar timestamps are wall-clock: replaced by `T`.
    fn stable(text: &str) -> String {
        text.lines()
            .map(|l| match l.find(" # {") {
                Some(_) => format!("{} T\n", &l[..l.rfind(' ').unwrap()]),
                None => format!("{l}\n"),
            })
            .collect()
    }

    fn golden(file: &str, got: &str) {
        let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("SONDE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert!(want == got, "{path} differs:\n{got}");
    }

    /// The exposition of every part, in both formats, byte for byte.
    #[test]
    fn exposition_matches_golden() {
        let state = populated();
        golden("metrics.prom", &stable(&super::render_all(&state)));
        let om = super::render_format(&state, super::Format::OpenMetrics);
        golden("metrics.om", &stable(&om));
        strict_openmetrics(&om);
    }

    /// Parse with the Prometheus client library's strict OpenMetrics parser (Debian's
    /// python3-prometheus-client, which scripts/bootstrap installs): missing, the test fails
    /// and says so rather than passing unchecked.
    fn strict_openmetrics(text: &str) {
        use std::io::Write as _;
        let mut p = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nsum(1 for _ in p(sys.stdin.read()))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 (scripts/bootstrap installs it)");
        let _ = p.stdin.take().unwrap().write_all(text.as_bytes());
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "OpenMetrics parser rejected the exposition (or python3-prometheus-client is missing: run scripts/bootstrap): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn panics_reach_metrics() {
        let state = super::State::default();
        let mut live = crate::isolation::Isolated::new(
            crate::isolation::Task::Live,
            Some(()),
            state.task_panics.clone(),
        );
        live.run(|_| panic!("index out of bounds"));
        let text = super::render_all(&state);
        assert!(
            text.contains("sonde_task_panics_total{task=\"live\"} 1\n"),
            "{text}"
        );
        let om = super::render_format(&state, super::Format::OpenMetrics);
        assert!(om.contains("# TYPE sonde_task_panics counter\n"), "{om}");
    }
}
