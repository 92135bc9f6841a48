//! `sonde run`: capture, track connections, reassemble streams, parse them in the Wasm
//! parsers, aggregate RED metrics, and serve `/metrics`.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::Config;
use crate::isolation::{Isolated, Task, TaskPanics};
use crate::metrics::{NetworkView, Snapshot, State};
use sonde_capture::conntrack::{ConnTracker, Connection, StreamEvent};
use sonde_capture::events::Event;
use sonde_capture::events::LogChunk;
use sonde_capture::net::NetReading;
use sonde_capture::reassembly::{GapReason, SegmentBody};
use sonde_capture::{Capture, monotonic_now_ns, unix_now_ms};
use sonde_correlate::Correlator;
use sonde_correlate::k8s::KubeWatch;
use sonde_live::Live;
use sonde_logs::LogMiner;
use sonde_logs::files::Tailer;
use sonde_netmap::NetMap;
use sonde_parse::{ParserBackend, TaggedRecord};
use sonde_pipeline::dispatch::Dispatch;
use sonde_pipeline::records::RecordLog;
use sonde_pipeline::red::Red;
use sonde_pipeline::router::{Labeler, Router, RouterConfig};
use sonde_pipeline::slot::ParserSlot;
use sonde_sandbox::PluginEngine;
use sonde_sandbox::fault_rules::WasmRuleEngine;
use sonde_sandbox::parsers;

/// How often reorder holes and closed connections are aged and metrics refreshed.
const TICK: Duration = Duration::from_millis(100);

/// How long shutdown waits for parsers to finish what they were given.
const SETTLE: Duration = Duration::from_secs(2);

/// The parse pipeline of `config`: every configured parser on a thread of its own.
pub fn parse_pipeline(config: &Config) -> Result<Router> {
    Ok(parse_pipeline_with_engine(config)?.0)
}

/// The pipeline and the engine its components run in (for loading more later).
fn parse_pipeline_with_engine(config: &Config) -> Result<(Router, Arc<PluginEngine>)> {
    let engine = parsers::engine(&config.plugins)?;
    let slots: Vec<ParserSlot> = parsers::load_all(&config.plugins, &engine)?
        .into_iter()
        .enumerate()
        .map(|(i, p)| ParserSlot::new(i, Box::new(p) as Box<dyn ParserBackend>))
        .collect();
    let names: Vec<String> = slots.iter().map(|s| s.name().to_string()).collect();
    tracing::info!(parsers = ?names, "parse pipeline ready");
    let dispatch = Dispatch::threaded(slots, config.plugins.parser_queue_jobs)?;
    let router = Router::new(
        dispatch,
        RouterConfig {
            batch_bytes: config.plugins.batch_bytes,
            ..Default::default()
        },
    );
    Ok((router, engine))
}

/// `sonde run`: listens for SIGINT/SIGTERM first, builds the daemon, runs it until one comes.
pub async fn run(config: Config) -> Result<()> {
    // First: from here on a SIGINT/SIGTERM is a clean stop, however early it comes.
    let signals = Shutdown::install().context("listening for SIGINT and SIGTERM")?;
    Daemon::build(config).await?.run(signals).await
}

/// The daemon, started and wired but not yet looping: what [`Daemon::build`] makes from a
/// [`Config`] (everything that can fail to start fails there) and [`Daemon::run`] drives.
pub struct Daemon {
    capture: Capture,
    tracker: ConnTracker,
    router: Router,
    netmap: NetMap,
    correlator: Arc<Correlator>,
    logs: Arc<Mutex<LogMiner>>,
    /// The file tailer, run as the isolated log task.
    log_mining: Isolated<Tailer>,
    /// What `/metrics` and the API serve, published by the loop.
    shared: Arc<State>,
    loop_state: LoopState,
    /// Parser loads, reloads and unloads, applied by the loop between batches.
    ops: mpsc::Receiver<admin::OpRequest>,
    /// Kept so the channel stays open when no admin socket or watcher holds a sender.
    _ops_tx: mpsc::Sender<admin::OpRequest>,
    admin: Option<AdminServer>,
    metrics_server: Option<JoinHandle<Result<()>>>,
    /// How long a swapped-out parser may take to finish its connections.
    drain_timeout: Duration,
    live_step: Duration,
    net_read_interval: Duration,
}

/// The admin socket's server task, and the socket file it removes when it stops.
struct AdminServer {
    task: JoinHandle<()>,
    socket: SocketFile,
}

/// A socket file this daemon bound: removed when dropped (a clean stop, or a start that
/// failed after binding it).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Daemon {
    /// Starts every part of the daemon from `config`, in the order the log tells: the
    /// configuration checked, the /metrics listener and the admin socket bound (a busy port or
    /// a live socket fails here, before anything is attached), parsers, correlation, capture,
    /// the admin server, log mining, live diagnosis, network map, /metrics served. A failure
    /// leaves nothing behind: what was attached is detached and the socket file removed.
    pub async fn build(config: Config) -> Result<Daemon> {
        config.validate()?;
        // Before the kernel: a token file that is no token must not leave programs attached.
        let api_access = crate::http::Access::load(config.api.token_file.as_deref())?;
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(crate::http::bind(addr).await?),
            None => None,
        };
        let admin_listener = bind_admin(&config)?;
        let (mut router, engine) =
            parse_pipeline_with_engine(&config).context("loading protocol parsers")?;
        let (ops_tx, ops) = mpsc::channel::<admin::OpRequest>(16);
        // Correlation first: with a cluster, the first lists arrive before the first connection.
        let correlator = Arc::new(start_correlation(&config).await);
        let capture = Capture::start(&config.capture)?;
        let admin = start_admin(&config, engine, &ops_tx, admin_listener)?;
        let tracker = ConnTracker::new(config.streams.tracker_config());
        router.set_labeler(Box::new(ConnLabels(correlator.clone())));
        // Log mining, correlation scans and the live engine run isolated: a panic in one turns
        // it off (counted on /metrics) instead of ending the daemon.
        let task_panics = Arc::new(TaskPanics::default());
        tokio::spawn(scan_loop(correlator.clone(), task_panics.clone()));
        let logs = Arc::new(Mutex::new(
            LogMiner::new(config.logs.clone()).keep_samples(config.privacy.log_samples),
        ));
        // The log task's own state is the file tailer; the miner is shared (/metrics, /api/logs,
        // the live engine's reports) behind its lock, which a panic while mining poisons: its
        // readers then report no templates.
        let log_mining = Isolated::new(
            Task::Logs,
            Some(Tailer::new(&config.logs.files, config.logs.max_line_bytes)),
            task_panics.clone(),
        );
        let (live, rules) = start_live(&config, &logs)?;
        let shared = Arc::new(State {
            // The loaded parsers from the first scrape on: /metrics is served before the loop's
            // first tick publishes a snapshot.
            snapshot: Mutex::new(Snapshot {
                parsers: router.parser_stats(),
                ..Default::default()
            }),
            red: Mutex::new(Red::new(&config.metrics.red_settings())),
            network: Mutex::new(NetworkView::default()),
            records: Mutex::new(
                RecordLog::new(config.metrics.record_log)
                    .raw_values(config.privacy.raw_records)
                    .route_templates(&config.metrics.route_templates),
            ),
            correlator: Some(correlator.clone()),
            live: Mutex::new(sonde_live::LiveBoard::default()),
            logs: Some(logs.clone()),
            task_panics: task_panics.clone(),
            health: Mutex::new(crate::metrics::Health::of(&capture)),
            rules,
            api: Default::default(),
            hub: None,
        });
        let loop_state = LoopState {
            snap: Snapshot::default(),
            live: Isolated::new(Task::Live, live, task_panics.clone()),
            records: Vec::new(),
            verdicts: Vec::new(),
        };
        let netmap = network_map(&config, &capture, &correlator);
        let metrics_server = metrics_listener.map(|listener| {
            let settings = config.api.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                crate::http::serve(listener, shared, api_access, &settings).await
            })
        });
        Ok(Daemon {
            capture,
            tracker,
            router,
            netmap,
            correlator,
            logs,
            log_mining,
            shared,
            loop_state,
            ops,
            _ops_tx: ops_tx,
            admin,
            metrics_server,
            drain_timeout: Duration::from_secs(config.admin.drain_timeout_s),
            live_step: Duration::from_millis(config.live.step_ms.max(1000)),
            net_read_interval: Duration::from_millis(config.network.read_interval_ms),
        })
    }

    /// The loop: capture batches through the tracker into the parsers, admin operations,
    /// network reads, live steps and the tick, until `signals` fires; then stops the servers,
    /// detaches capture and lets the parsers finish what they hold.
    pub async fn run(self, mut signals: Shutdown) -> Result<()> {
        let Daemon {
            mut capture,
            mut tracker,
            mut router,
            mut netmap,
            correlator,
            logs,
            mut log_mining,
            shared,
            mut loop_state,
            mut ops,
            _ops_tx,
            admin,
            metrics_server,
            drain_timeout,
            live_step,
            net_read_interval,
        } = self;
        let mut live_ticker = tokio::time::interval(live_step);
        let mut net_reading = NetReading::default();
        let mut net_ticker = tokio::time::interval(net_read_interval);
        tracing::info!("sonde running; Ctrl-C to stop");

        let mut batch = Vec::with_capacity(4096);
        let mut out = Vec::with_capacity(4096);
        let mut ticker = tokio::time::interval(TICK);
        let mut exits = crate::exits::ExitCheck::new(correlator.settings().proc_root.clone());
        loop {
            tokio::select! {
                _ = signals.wait() => break,
                r = capture.next_batch(&mut batch, 4096) => {
                    r?;
                    for ev in batch.drain(..) {
                        match &ev {
                            Event::Conn(c) => netmap.on_conn(c),
                            Event::Log(l) => {
                                log_mining.run(|_| observe_log(&correlator, &logs, l));
                                continue;
                            }
                            Event::Data(_) => {}
                        }
                        tracker.on_event(&ev, &mut out);
                        // Route at once: the tracker still knows the connection (it may finalise
                        // it on a later event of this batch).
                        route(&mut loop_state.snap, &mut router, &tracker, &mut out);
                    }
                    router.flush();
                    loop_state.deliver(&mut router, &mut capture, &shared, &mut netmap);
                }
                Some(req) = ops.recv() => {
                    // Flush first: segments batched for the old version go to it, not the new.
                    router.flush();
                    let answer = admin::apply(&mut router, req.op);
                    let _ = req.reply.send(answer);
                }
                _ = net_ticker.tick() => {
                    read_network(&mut capture, &mut netmap, &mut net_reading, &shared);
                }
                _ = live_ticker.tick(), if loop_state.live.is_on() => {
                    loop_state.live.run(|live| {
                        let changed = live.step(unix_now_ms(), &netmap.topology());
                        if let Ok(mut board) = shared.live.lock() {
                            live.publish(&mut board, changed);
                        }
                    });
                }
                _ = ticker.tick() => {
                    tracker.tick(monotonic_now_ns(), &mut out);
                    if let Some(exits) = &mut exits {
                        exits.run(&mut tracker, &mut out);
                    }
                    log_mining.run(|tailer| {
                        if let Ok(mut miner) = logs.lock() {
                            let now = unix_now_ms();
                            if !tailer.is_empty() {
                                tailer.poll(&mut miner, now);
                            }
                            miner.tick(now);
                        }
                    });
                    for p in router.retire_drained(drain_timeout) {
                        tracing::info!(parser = p, "swapped-out parser retired");
                    }
                    route(&mut loop_state.snap, &mut router, &tracker, &mut out);
                    router.flush();
                    // Before the parsers' verdicts, which win (a finished TLS connection
                    // stops its plaintext too).
                    for conn in tracker.take_tls_marked() {
                        let v = sonde_common::verdict::SKIP_CIPHERTEXT;
                        if let Err(e) = capture.set_verdict(conn, v) {
                            loop_state.snap.verdict_errors += 1;
                            tracing::debug!(conn, error = %e, "TLS verdict not set");
                        }
                    }
                    loop_state.deliver(&mut router, &mut capture, &shared, &mut netmap);
                    let _ = tracker.take_finished();
                    let snap = &mut loop_state.snap;
                    snap.capture = capture.stats()?;
                    let tls = capture.tls_status();
                    if tls != snap.tls {
                        // The TLS programs' detail lists the attached files: keep it current.
                        if let Ok(mut h) = shared.health.lock() {
                            h.probes = capture.probes().to_vec();
                        }
                    }
                    snap.tls = tls;
                    snap.tracker = tracker.stats().clone();
                    snap.connections_open = tracker.len();
                    snap.parsers = router.parser_stats();
                    snap.router = router.stats.clone();
                    snap.routed_connections = router.len();
                    if let Ok(mut s) = shared.snapshot.lock() {
                        *s = snap.clone();
                    }
                }
            }
        }
        if let Some(server) = metrics_server {
            server.abort();
        }
        if let Some(admin) = admin {
            admin.task.abort();
            drop(admin.socket);
        }
        drop(capture);
        // Flush what is still waiting in reorder buffers, and what parsers still hold.
        tracker.finish_all(&mut out);
        route(&mut loop_state.snap, &mut router, &tracker, &mut out);
        if !router.settle(SETTLE) {
            tracing::warn!(
                pending = router.pending(),
                "parsers did not finish within {SETTLE:?}"
            );
        }
        tracing::info!("stopped; all programs detached");
        Ok(())
    }
}

/// The admin socket bound (unless `[admin] socket` is empty), not yet served.
fn bind_admin(config: &Config) -> Result<Option<(tokio::net::UnixListener, SocketFile)>> {
    let socket = config
        .admin
        .socket
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    Ok(match socket {
        Some(socket) => Some((admin::bind(&socket)?, SocketFile(socket))),
        None => None,
    })
}

/// The admin socket's server on `listener` (from [`bind_admin`]) and the parser directory
/// watcher (with `[admin] watch_parser_dirs`), both sending operations to the loop.
fn start_admin(
    config: &Config,
    engine: Arc<PluginEngine>,
    ops_tx: &mpsc::Sender<admin::OpRequest>,
    listener: Option<(tokio::net::UnixListener, SocketFile)>,
) -> Result<Option<AdminServer>> {
    let loader = admin::Loader {
        engine,
        plugins: config.plugins.clone(),
    };
    let server = listener.map(|(listener, socket)| AdminServer {
        task: tokio::spawn(admin::serve(listener, loader.clone(), ops_tx.clone())),
        socket,
    });
    if config.admin.watch_parser_dirs && !config.plugins.parser_dirs.is_empty() {
        // The thread lives as long as the process (it blocks in read(2)).
        admin::watch_dirs(
            config.plugins.parser_dirs.clone(),
            loader.clone(),
            ops_tx.clone(),
        )?;
    }
    Ok(server)
}

/// The network map, with the probes capture could not attach and the correlator's labels
/// for peer addresses.
fn network_map(config: &Config, capture: &Capture, correlator: &Arc<Correlator>) -> NetMap {
    let mut netmap = NetMap::new(config.network.clone(), capture.drop_reason_names().clone());
    netmap.set_probes_missing(capture.net_missing().to_vec());
    let by_ip = correlator.clone();
    netmap.set_ip_labeler(Box::new(move |ip| {
        let mut labels = Vec::new();
        if let Some(id) = by_ip.identity_of_ip(ip) {
            id.push_labels("", &mut labels);
        }
        labels
    }));
    netmap
}

/// The correlation layer: processes and containers from /proc, and Kubernetes watchers when
/// there is a cluster. A cluster that cannot be reached is a log line, not a failure: labels
/// then come from cgroups and /proc alone.
async fn start_correlation(config: &Config) -> Correlator {
    let node = config.kubernetes.node_name();
    let kube = match config.kubernetes.client().await {
        Ok(Some(client)) => {
            tracing::info!(node = %node, "Kubernetes metadata: watching this node's pods, and services, endpoint slices, nodes");
            let watch = KubeWatch::spawn(client, node.clone());
            let timeout = Duration::from_millis(config.kubernetes.sync_timeout_ms);
            if !watch.wait_synced(timeout).await {
                tracing::warn!(
                    ?timeout,
                    "Kubernetes lists not complete yet; starting capture, labels will follow"
                );
            }
            Some(watch)
        }
        Ok(None) => {
            tracing::info!(
                "no Kubernetes cluster (not in a pod, no kubeconfig): labels from cgroups and /proc only"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "Kubernetes metadata unavailable: labels from cgroups and /proc only"
            );
            None
        }
    };
    Correlator::new(config.correlation.clone(), node, kube)
}

/// The live diagnosis with the fault-tree rules it runs (and those rules as loaded, for
/// `/api/plugins`), unless `[live] enabled = false`.
fn start_live(
    config: &Config,
    logs: &Arc<Mutex<LogMiner>>,
) -> Result<(Option<Live>, Vec<sonde_sandbox::PluginStats>)> {
    if !config.live.enabled {
        return Ok((None, Vec::new()));
    }
    let rules = WasmRuleEngine::load_configured(&config.plugins, &config.live.rules)
        .context("loading the fault-tree rule components")?;
    let loaded = rules.stats();
    tracing::info!(
        step_ms = config.live.step_ms,
        retention_steps = config.live.retention_steps,
        "live diagnosis: history, detection and incident reports"
    );
    let mut live = Live::new(
        config.live.clone(),
        config.kubernetes.node_name(),
        Box::new(rules),
        config.metrics.slow_query_ms,
    );
    live.set_log_source(Box::new(MinedLogs(logs.clone())));
    Ok((Some(live), loaded))
}

/// A stdout/stderr chunk into the template miner, under its writer's service name (the
/// correlator's lookup is part of the log task: a panic there turns log mining off).
fn observe_log(correlator: &Correlator, logs: &Mutex<LogMiner>, l: &LogChunk) {
    let id = correlator.identity_of(l.task.tgid, &l.task.comm, l.cgroup_id);
    if let Ok(mut miner) = logs.lock() {
        miner.observe_chunk(&id.service_name, l, sonde_logs::unix_ms_of(l.ts_ns));
    }
}

/// The miner as the live engine's source of error-log templates for reports.
struct MinedLogs(Arc<Mutex<LogMiner>>);

impl sonde_live::LogSource for MinedLogs {
    fn error_templates(
        &self,
        services: &[String],
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Vec<sonde_live::LogTemplate> {
        let Ok(miner) = self.0.lock() else {
            return Vec::new();
        };
        // Most lines first, across the services (the miner's order).
        miner
            .error_summary_of(services, from_ms, to_ms, limit)
            .into_iter()
            .map(|e| sonde_live::LogTemplate {
                service: e.service,
                template: e.template,
                count: e.count,
                sample: e.sample,
            })
            .collect()
    }
}

/// The router's labeler: the correlator's labels of a connection's process and peer.
struct ConnLabels(Arc<Correlator>);

impl Labeler for ConnLabels {
    fn labels(&self, c: &Connection) -> Vec<(String, String)> {
        self.0.conn_labels(
            c.task.tgid,
            &c.task.comm,
            c.cgroup_id,
            c.peer.map(|a| a.ip()),
        )
    }

    fn generation(&self) -> u64 {
        self.0.generation()
    }

    fn incomplete(&self, labels: &[(String, String)]) -> bool {
        self.0.incomplete(labels)
    }
}

/// Scan processes and read container usage every `scan_interval_ms`, off the capture loop,
/// until a scan panics: labels then stay what the correlator knew.
async fn scan_loop(correlator: Arc<Correlator>, panics: Arc<TaskPanics>) {
    let mut ticker = tokio::time::interval(correlator.scan_interval());
    let mut scans = Isolated::new(Task::Correlate, Some(correlator), panics);
    while scans.is_on() {
        ticker.tick().await;
        // The guard goes to the blocking pool with the scan, and comes back.
        let scan = tokio::task::spawn_blocking(move || {
            scans.run(|c| c.scan());
            scans
        });
        scans = match scan.await {
            Ok(scans) => scans,
            // Cancelled: the runtime is shutting down (a panic was caught inside).
            Err(_) => return,
        };
    }
}

/// What the loop carries between iterations.
struct LoopState {
    snap: Snapshot,
    live: Isolated<Live>,
    records: Vec<TaggedRecord>,
    verdicts: Vec<u64>,
}

impl LoopState {
    /// Take what parsers returned: records into RED, verdicts into the kernel.
    fn deliver(
        &mut self,
        router: &mut Router,
        capture: &mut Capture,
        shared: &State,
        netmap: &mut NetMap,
    ) {
        router.collect();
        router.take_records(&mut self.records);
        if !self.records.is_empty() {
            if let Ok(mut red) = shared.red.lock() {
                red.record_all(&self.records);
            }
            if let Ok(mut log) = shared.records.lock() {
                log.push_all(&self.records);
            }
            netmap.on_records(&self.records, monotonic_now_ns());
            self.live
                .run(|live| live.on_records(&self.records, unix_now_ms()));
            self.records.clear();
        }
        router.take_verdicts(&mut self.verdicts);
        for conn in self.verdicts.drain(..) {
            if let Err(e) = capture.set_verdict(conn, sonde_common::verdict::SKIP_PAYLOAD) {
                self.snap.verdict_errors += 1;
                tracing::debug!(conn, error = %e, "verdict not set");
            }
        }
    }
}

/// Reads the network probes' maps into the map, deletes what was read for the last time, and
/// publishes the topology and its series.
fn read_network(
    capture: &mut Capture,
    netmap: &mut NetMap,
    reading: &mut NetReading,
    shared: &State,
) {
    match capture.net_maps() {
        Some(maps) => {
            maps.read(reading);
            let removals = netmap.on_reading(reading, monotonic_now_ns());
            for k in &removals.flows {
                maps.remove_flow(k);
            }
            for k in &removals.drops {
                maps.remove_drop(k);
            }
        }
        // Probes off: state changes and records still make edges.
        None => {
            netmap.on_reading(&NetReading::default(), monotonic_now_ns());
        }
    }
    let view = NetworkView::of(netmap);
    if let Ok(mut n) = shared.network.lock() {
        *n = view;
    }
}

/// Count stream bytes and hand the events to the parse pipeline.
fn route(
    snap: &mut Snapshot,
    router: &mut Router,
    tracker: &ConnTracker,
    out: &mut Vec<StreamEvent>,
) {
    for ev in out.drain(..) {
        if let StreamEvent::Segment { segment, .. } = &ev {
            match &segment.body {
                SegmentBody::Data(b) => snap.stream_data_bytes += b.len() as u64,
                SegmentBody::Gap {
                    len,
                    reason: GapReason::Truncated,
                } => snap.stream_truncated_bytes += len,
                SegmentBody::Gap {
                    len,
                    reason: GapReason::Lost,
                } => snap.stream_lost_bytes += len,
            }
        }
        router.on_stream_event(&ev, tracker);
    }
}

/// Resolves on Ctrl-C or SIGTERM (what a DaemonSet's kubelet sends).
/// SIGINT and SIGTERM, listened for from the moment of `install`: a signal that arrives
/// before the main loop first waits is kept, not taken by the default disposition (which
/// killed a daemon signalled right after it began serving /metrics).
pub struct Shutdown {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn install() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM (cancel-safe: usable in `select!`).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
