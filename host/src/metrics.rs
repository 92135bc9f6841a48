//! Prometheus text exposition: the RED metrics parsed from traffic ([`sonde_pipeline::red`]) and the
//! daemon's own health — capture counters (every drop has one), stream reassembly, connection
//! tracking, the parse pipeline and every plugin's sandbox counters — and the [`State`] the HTTP
//! API ([`crate::http`]) serves it and the JSON endpoints from.
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use sonde_common::stat;

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
    /// What runs in the kernel: every program's state, set once at start (`/api/health`).
    pub health: Health,
    /// The HTTP API's own counters.
    pub api: ApiStats,
}

/// The API's own counters (in `/metrics`).
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Connections answered 503 because `[api] max_connections` were open.
    pub busy: AtomicU64,
    /// `/metrics` pages rendered (scrapes served from the shared page render none).
    pub renders: AtomicU64,
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

    fn render_prometheus(&self, o: &mut String) {
        if self.probes.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "# HELP sonde_probe_info Every eBPF program: the feature it serves and whether it runs.\n# TYPE sonde_probe_info gauge"
        );
        for p in &self.probes {
            let _ = writeln!(
                o,
                "sonde_probe_info{{program=\"{}\",feature=\"{}\",state=\"{}\"}} 1",
                p.program,
                p.feature.name(),
                p.state.name()
            );
        }
    }
}

/// What the daemon loop publishes of the network map after each read.
#[derive(Debug, Default, Clone)]
pub struct NetworkView {
    pub topology: sonde_netmap::export::Topology,
    pub prometheus: String,
}

pub type Shared = Arc<State>;

/// The full exposition: RED metrics, network, containers, then health.
pub fn render_all(state: &State) -> String {
    render_format(state, false)
}

/// The exposition in the Prometheus text format, or in OpenMetrics (with exemplars on the
/// latency histograms, which the Prometheus format cannot carry).
pub fn render_format(state: &State, openmetrics: bool) -> String {
    let mut o = String::with_capacity(16 << 10);
    if let Ok(red) = state.red.lock() {
        red.render_with(&mut o, openmetrics);
    }
    if let Ok(net) = state.network.lock() {
        o.push_str(&net.prometheus);
    }
    if let Some(c) = &state.correlator {
        c.render_prometheus(&mut o);
    }
    let snap = state.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
    o.push_str(&render(&snap));
    if let Ok(r) = state.records.lock() {
        let _ = writeln!(
            o,
            "# HELP sonde_records_total Request records the parsers returned.\n# TYPE sonde_records_total counter\nsonde_records_total {}",
            r.total
        );
    }
    if let Ok(b) = state.live.lock() {
        render_live(&mut o, &b.stats);
    }
    if let Some(stats) = state
        .logs
        .as_ref()
        .and_then(|l| l.lock().ok().map(|m| m.stats()))
    {
        render_logs(&mut o, &stats);
    }
    state.task_panics.render_prometheus(&mut o);
    state.health.render_prometheus(&mut o);
    render_api(&mut o, &state.api);
    if openmetrics {
        sonde_metrics::to_openmetrics(&o)
    } else {
        o
    }
}

/// Unlabelled series, one (name, type, help, value) row each.
fn write_scalars<V: std::fmt::Display>(o: &mut String, rows: &[(&str, &str, &str, V)]) {
    for (name, kind, help, v) in rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
}

/// The HTTP API's own counters.
fn render_api(o: &mut String, s: &ApiStats) {
    let get = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 3] = [
        (
            "sonde_api_busy_total",
            "counter",
            "API connections answered 503: [api] max_connections were open.",
            get(&s.busy),
        ),
        (
            "sonde_api_metrics_renders_total",
            "counter",
            "/metrics pages rendered (concurrent scrapers share one page per [api] metrics_cache_ms).",
            get(&s.renders),
        ),
        (
            "sonde_api_refused_total",
            "counter",
            "API requests refused: off loopback without the bearer token.",
            get(&s.refused),
        ),
    ];
    write_scalars(o, &rows);
}

/// The log miner's counters.
fn render_logs(o: &mut String, s: &sonde_logs::LogStats) {
    let rows: [(&str, &str, &str, u64); 7] = [
        (
            "sonde_log_lines_total",
            "counter",
            "stdout/stderr lines mined into templates.",
            s.lines,
        ),
        (
            "sonde_log_error_lines_total",
            "counter",
            "Lines classified as errors.",
            s.error_lines,
        ),
        (
            "sonde_log_templates",
            "gauge",
            "Templates held (all services).",
            s.templates,
        ),
        (
            "sonde_log_template_evictions_total",
            "counter",
            "Templates forgotten at the per-service bound.",
            s.template_evictions,
        ),
        (
            "sonde_log_service_evictions_total",
            "counter",
            "Services forgotten at the service bound.",
            s.service_evictions,
        ),
        (
            "sonde_log_lines_truncated_total",
            "counter",
            "Lines cut at max_line_bytes.",
            s.truncated_lines,
        ),
        (
            "sonde_log_stream_evictions_total",
            "counter",
            "Partial-line buffers dropped at the stream bound.",
            s.stream_evictions,
        ),
    ];
    write_scalars(o, &rows);
}

/// The live diagnosis' counters.
fn render_live(o: &mut String, s: &sonde_live::LiveStats) {
    let rows: [(&str, &str, &str, f64); 9] = [
        (
            "sonde_live_steps_total",
            "counter",
            "Steps the live history has taken.",
            s.steps as f64,
        ),
        (
            "sonde_live_series",
            "gauge",
            "Series in the live history (golden metrics, resources, edges, endpoint breakdowns).",
            s.series as f64,
        ),
        (
            "sonde_live_points",
            "gauge",
            "Points held by the live history (8 bytes each).",
            s.points as f64,
        ),
        (
            "sonde_live_series_refused_total",
            "counter",
            "Values refused because the history held live.max_series series.",
            s.series_refused as f64,
        ),
        (
            "sonde_incidents_opened_total",
            "counter",
            "Incidents opened.",
            s.incidents_opened as f64,
        ),
        (
            "sonde_incidents_merged_total",
            "counter",
            "Incidents folded into the open incident they arose under (same first root cause).",
            s.incidents_merged as f64,
        ),
        (
            "sonde_incidents_open",
            "gauge",
            "Incidents open now.",
            s.incidents_open as f64,
        ),
        (
            "sonde_incident_reports_total",
            "counter",
            "Incident reports written.",
            s.reports as f64,
        ),
        (
            "sonde_incident_analysis_errors_total",
            "counter",
            "Incident analyses that failed (the incident says why).",
            s.analysis_errors as f64,
        ),
    ];
    write_scalars(o, &rows);
}

pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(4096);
    let _ = writeln!(
        o,
        "# HELP sonde_build_info Sonde version.\n# TYPE sonde_build_info gauge"
    );
    let _ = writeln!(
        o,
        "sonde_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    counter_per_cpu(
        &mut o,
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
        &mut o,
        "sonde_capture_events_total",
        "Events written to the ring buffer, per CPU.",
        s,
        &[
            ("data", stat::DATA_EVENTS),
            ("conn", stat::CONN_EVENTS),
            ("log", stat::LOG_EVENTS),
        ],
    );
    render_io_uring(&mut o, s);
    let totals: [(&str, &str, u64); 12] = [
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
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(
        o,
        "# HELP sonde_stream_bytes_total Reassembled stream bytes by outcome.\n# TYPE sonde_stream_bytes_total counter"
    );
    for (kind, v) in [
        ("data", s.stream_data_bytes),
        ("truncated", s.stream_truncated_bytes),
        ("lost", s.stream_lost_bytes),
    ] {
        let _ = writeln!(o, "sonde_stream_bytes_total{{kind=\"{kind}\"}} {v}");
    }
    let _ = writeln!(
        o,
        "# HELP sonde_connections_open Connections tracked now.\n# TYPE sonde_connections_open gauge\nsonde_connections_open {}",
        s.connections_open
    );
    let _ = writeln!(
        o,
        "# HELP sonde_connections_total Connections by lifecycle outcome.\n# TYPE sonde_connections_total counter"
    );
    for (kind, v) in s.tracker.lifecycle_counters() {
        let _ = writeln!(o, "sonde_connections_total{{event=\"{kind}\"}} {v}");
    }
    render_parsers(&mut o, s);
    o
}

/// The parse pipeline: routing, verdicts, and per parser its work, drops and sandbox health.
fn render_parsers(o: &mut String, s: &Snapshot) {
    let r = &s.router;
    let name = "sonde_parse_segments_total";
    let _ = writeln!(
        o,
        "# HELP {name} Stream segments handed to parsers (routed) or to none (unrouted: their connection was decided).\n# TYPE {name} counter"
    );
    let _ = writeln!(o, "{name}{{outcome=\"routed\"}} {}", r.segments_routed);
    let _ = writeln!(o, "{name}{{outcome=\"unrouted\"}} {}", r.segments_unrouted);
    let gauges_and_counters: [(&str, &str, &str, u64); 6] = [
        (
            "sonde_parse_connections_relabeled_total",
            "counter",
            "Connections labelled again because Kubernetes metadata arrived after them.",
            r.relabeled,
        ),
        (
            "sonde_parse_verdicts_total",
            "counter",
            "Connections whose payload the kernel was told to stop copying: no parser wants them, or their parser has what it needs.",
            r.verdicts_skip,
        ),
        (
            "sonde_parse_verdict_errors_total",
            "counter",
            "Verdicts the kernel map refused.",
            s.verdict_errors,
        ),
        (
            "sonde_parse_connections_claimed_total",
            "counter",
            "Connections a parser claimed.",
            r.connections_claimed,
        ),
        (
            "sonde_parse_records_total",
            "counter",
            "Request records produced by parsers.",
            r.records,
        ),
        (
            "sonde_parse_connections",
            "gauge",
            "Connections the parse pipeline routes now.",
            s.routed_connections as u64,
        ),
    ];
    write_scalars(o, &gauges_and_counters);
    if s.parsers.is_empty() {
        return;
    }
    type Get = fn(&ParserStats) -> f64;
    let c = "counter";
    let per_parser: [(&str, &str, &str, Get); 11] = [
        (
            "sonde_parser_jobs_total",
            c,
            "Batches a parser was given.",
            |p| p.counters.jobs as f64,
        ),
        (
            "sonde_parser_jobs_dropped_total",
            c,
            "Batches refused because the parser's queue was full.",
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
            "gauge",
            "The longest sandbox call of a plugin (a stopped plugin: its deadline plus the stop latency).",
            |p| p.health.max_call_us as f64 / 1e6,
        ),
    ];
    for (name, kind, help, get) in per_parser {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &s.parsers {
            let _ = writeln!(
                o,
                "{name}{{world=\"protocol-parser\",plugin=\"{}\"}} {}",
                p.name,
                get(p)
            );
        }
    }
    let name = "sonde_plugin_failures_total";
    let _ = writeln!(
        o,
        "# HELP {name} Failed plugin calls by kind: the call was stopped and the instance dropped.\n# TYPE {name} counter"
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
            let _ = writeln!(
                o,
                "{name}{{world=\"protocol-parser\",plugin=\"{}\",kind=\"{kind}\"}} {v}",
                p.name
            );
        }
    }
    let name = "sonde_plugin_info";
    let _ = writeln!(o, "# HELP {name} Loaded plugins.\n# TYPE {name} gauge");
    for p in &s.parsers {
        let _ = writeln!(
            o,
            "{name}{{world=\"protocol-parser\",plugin=\"{}\",version=\"{}\",source=\"{}\"}} 1",
            p.name,
            p.version,
            p.source.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
}

/// Processes using io_uring: their sockets bypass the traced syscalls and are not captured.
fn render_io_uring(o: &mut String, s: &Snapshot) {
    let name = "sonde_io_uring_requests_total";
    let _ = writeln!(
        o,
        "# HELP {name} io_uring requests per process (kind=socket: socket operations, which Sonde cannot see).\n# TYPE {name} counter"
    );
    // By process name: pids come and go, names bound the series.
    let mut by_name: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for u in &s.capture.io_uring {
        let e = by_name.entry(u.comm.as_str()).or_default();
        e.0 += u.requests;
        e.1 += u.socket_requests;
    }
    for (comm, (all, socket)) in by_name {
        let comm = sonde_metrics::label_value(comm);
        for (kind, v) in [("all", all), ("socket", socket)] {
            let _ = writeln!(o, "{name}{{process=\"{comm}\",kind=\"{kind}\"}} {v}");
        }
    }
}

fn counter_per_cpu(o: &mut String, name: &str, help: &str, s: &Snapshot, kinds: &[(&str, u32)]) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
    for (cpu, slots) in s.capture.per_cpu.iter().enumerate() {
        for (kind, slot) in kinds {
            let _ = writeln!(
                o,
                "{name}{{cpu=\"{cpu}\",kind=\"{kind}\"}} {}",
                slots[*slot as usize]
            );
        }
    }
}

#[cfg(test)]
mod tests {
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
        let om = super::render_format(&state, true);
        assert!(om.contains("# TYPE sonde_task_panics counter\n"), "{om}");
    }
}
