//! `sonde`: the per-node daemon and its command-line tools.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use sonde::config::Config;
use sonde::trace::{Filter, TraceOptions};

#[derive(Parser, Debug)]
#[command(
    name = "sonde",
    version,
    about = "Per-node eBPF observability: capture, parse, correlate, explain"
)]
struct Cli {
    /// Configuration file (TOML, see docs/sonde.example.toml). Flags override it.
    #[arg(long, short, global = true, env = "SONDE_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), e.g. `info`, `sonde=debug`.
    #[arg(long, global = true, env = "SONDE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon on this node (capture, reassembly, Wasm parsers, RED metrics at /metrics).
    Run(RunArgs),
    /// Live view of socket connections and data chunks, one line per event.
    Trace(TraceArgs),
    /// What this kernel supports and whether every eBPF program loads here, with its
    /// verifier cost (stack, processed instructions, time) against Sonde's budget. Loads,
    /// attaches nothing. Exit status 1 when the core socket capture cannot run.
    Doctor(DoctorArgs),
    /// Run the root-cause engine on an incident bundle (docs/analyze.md) and print the report.
    Analyze(AnalyzeArgs),
    /// Live table of the busiest endpoints (rate, error %, p50/p99) from a running daemon.
    Top(TopArgs),
    /// The network map from a running daemon: edges (client -> server:port) worst first, with
    /// connects, failures, retransmits, drops, RTT and request errors.
    Map(MapArgs),
    /// The exception event list of a running daemon: incidents, newest first, with the first
    /// root cause of each.
    Incidents(IncidentsArgs),
    /// One incident's report: phenomenon, key metrics, ranked root causes, propagation path,
    /// evidence, slow SQL and error-log templates.
    Report(ReportArgs),
    /// Build the fault lab (a small microservice system in network namespaces), start Sonde
    /// on it, inject one fault and print the report when it arrives. Tears everything down.
    Demo(DemoArgs),
    /// Plugin authoring tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Create a new plugin crate (a working example with a native test) from the template.
    New(PluginNewArgs),
    /// Make a publisher key pair: the secret key (mode 0600) and `<out>.pub`, the public key
    /// operators add to `[[plugins.trusted_keys]]`.
    Keygen(PluginKeygenArgs),
    /// Sign a component: write `<name>-<version>.wasm` and its signed manifest
    /// `<name>-<version>.toml` (and `.tar` with --tar) into --out.
    Package(PluginPackageArgs),
    /// Check components (files, or every *.wasm of directories) as the daemon would load them:
    /// manifest, sha256, signature, trusted key, world, capabilities, identity. Exit status 1 if
    /// any is refused.
    Verify(PluginVerifyArgs),
    /// The running daemon's parsers: name, version, source, state, connections (admin socket).
    List(AdminArgs),
    /// Load a parser component into the running daemon.
    Load {
        /// The component (.wasm), absolute path.
        path: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Swap a running parser for a new version: new connections go to the new version, the
    /// old one finishes its own (then is retired); a component that fails to load changes
    /// nothing.
    Reload {
        /// The parser's name (`sonde plugin list`).
        name: String,
        /// The new component (default: the file it was loaded from).
        path: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop a running parser (it finishes its connections first).
    Unload {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args, Debug)]
struct DoctorArgs {
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct AdminArgs {
    /// The daemon's admin socket (`[admin] socket`).
    #[arg(long, default_value = "/run/sonde/admin.sock")]
    socket: PathBuf,
    /// Print the daemon's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PluginKeygenArgs {
    /// Secret key file to create (never overwritten); the public key goes to `<out>.pub`.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct PluginPackageArgs {
    /// The component to sign.
    #[arg(long, required_unless_present = "build", conflicts_with = "build")]
    wasm: Option<PathBuf>,
    /// Build this plugin crate first (`cargo build --release --target wasm32-wasip2`) and
    /// sign what it made.
    #[arg(long)]
    build: Option<PathBuf>,
    /// The publisher's secret key (from `sonde plugin keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Publisher name written into the signature.
    #[arg(long)]
    publisher: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Plugin name (default: the component's own `info`; must agree with it).
    #[arg(long)]
    name: Option<String>,
    /// Plugin version (default: the component's own `info`; must agree with it).
    #[arg(long)]
    version: Option<String>,
    /// `protocol-parser` or `fault-rule` (default: whichever the component implements).
    #[arg(long)]
    world: Option<String>,
    /// Protocols it parses (default: a parser's own `info`); repeatable.
    #[arg(long)]
    protocol: Vec<String>,
    /// Ports its protocols usually use (a hint); repeatable.
    #[arg(long)]
    port: Vec<u16>,
    /// A capability it needs (`clocks`); repeatable. None by default.
    #[arg(long)]
    capability: Vec<String>,
    /// Also write `<name>-<version>.tar` holding both files.
    #[arg(long)]
    tar: bool,
}

#[derive(Args, Debug)]
struct PluginVerifyArgs {
    /// Components (*.wasm, with their manifests beside them) or directories of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also trust this key (`ed25519:<base64>`), besides the config's trusted_keys; repeatable.
    #[arg(long)]
    trusted_key: Vec<String>,
}

#[derive(Args, Debug)]
struct PluginNewArgs {
    /// Directory to create (must not exist, or be empty).
    dir: PathBuf,
    /// `parser` (protocol-parser world) or `fault-rule`.
    #[arg(long, default_value = "parser")]
    kind: sonde::scaffold::PluginKind,
    /// Crate name (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Depend on the SDK at this path (a Sonde checkout's `sdk/`) instead of a copy of this
    /// binary's SDK written into the crate (`sonde-sdk/`, the default: builds offline).
    #[arg(long, conflicts_with = "sdk_version")]
    sdk_path: Option<PathBuf>,
    /// Depend on this version requirement of `sonde-sdk` from a registry that has it (e.g.
    /// `0.1`) instead of the vendored copy.
    #[arg(long)]
    sdk_version: Option<String>,
}

#[derive(Args, Debug)]
struct TopArgs {
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: std::net::SocketAddr,
    /// Refresh interval, seconds.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Rows shown.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print one table after one interval and exit.
    #[arg(long)]
    once: bool,
}

#[derive(Args, Debug)]
struct MapArgs {
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: std::net::SocketAddr,
    /// Refresh interval, seconds.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Edges shown.
    #[arg(long, default_value_t = 30)]
    limit: usize,
    /// Print once and exit.
    #[arg(long)]
    once: bool,
    /// With --once: print the topology as JSON (what /api/map serves).
    #[arg(long, requires = "once")]
    json: bool,
}

#[derive(Args, Debug)]
struct IncidentsArgs {
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: std::net::SocketAddr,
    /// Print the list as JSON (what /api/incidents serves).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Incident id (from `sonde incidents`), or `latest`.
    id: String,
    /// The daemon's metrics address (`[metrics] listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    endpoint: std::net::SocketAddr,
    /// Print the report as JSON (what /api/incidents/<id> serves).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// The fault to inject: loss, bandwidth, cpu, errors, slow, slow-sql, dns.
    #[arg(long, default_value = "slow-sql")]
    fault: String,
    /// Seconds of steady load before the fault.
    #[arg(long, default_value_t = 60)]
    baseline: u64,
    /// Seconds to wait for the report.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Args, Debug)]
struct AnalyzeArgs {
    /// Bundle directory: topology.toml, metrics/*.csv, breakdowns/*.csv.
    dir: Option<PathBuf>,
    /// Analyse a built-in scenario instead (see --list-examples).
    #[arg(long, conflicts_with = "dir")]
    example: Option<String>,
    /// With --example: also write the scenario as a bundle directory here.
    #[arg(long, requires = "example")]
    save: Option<PathBuf>,
    /// List the built-in scenarios.
    #[arg(long)]
    list_examples: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Extra fault-rule components (*.wasm) from this directory; repeatable.
    #[arg(long)]
    rules_dir: Vec<PathBuf>,
    /// Leave the embedded default fault tree out.
    #[arg(long)]
    no_default_rules: bool,
    /// Load the --rules-dir components without a signed manifest (your own, while you write
    /// them); otherwise they must be signed by a trusted key (`[plugins] trusted_keys`).
    #[arg(long, requires = "rules_dir")]
    allow_unsigned: bool,
    /// Plugin compile cache directory (default from the config; `none` for no cache).
    #[arg(long)]
    plugin_cache: Option<String>,
}

/// Capture flags shared by `run` and `trace`.
#[derive(Args, Debug, Default)]
struct CaptureArgs {
    /// Payload bytes copied per syscall (max 32768).
    #[arg(long)]
    capture_bytes: Option<u32>,
    /// Ring buffer size in bytes (power of two).
    #[arg(long)]
    ring_bytes: Option<u32>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Address for /metrics (default 127.0.0.1:9464); `none` disables it.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Do not capture socket payloads (no L7 records): TCP state changes and the network
    /// probes only (`[capture] payload = false`).
    #[arg(long)]
    no_payload: bool,
    /// Do not run the network-quality probes (`[capture] network = false`).
    #[arg(long)]
    no_network: bool,
    /// Kubernetes metadata from this kubeconfig (`[kubernetes] kubeconfig`).
    #[arg(long, conflicts_with = "no_kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// This node's name in Kubernetes (`[kubernetes] node_name`; default `$NODE_NAME`, then
    /// the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// No Kubernetes metadata: labels from cgroups and /proc only (`[kubernetes] mode = "off"`).
    #[arg(long)]
    no_kubernetes: bool,
}

#[derive(Args, Debug)]
struct TraceArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Only these processes (tgid); repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Only connections with this local or peer port; repeatable.
    #[arg(long)]
    port: Vec<u16>,
    /// Only processes with this command name; repeatable.
    #[arg(long)]
    comm: Vec<String>,
    /// Also show TCP state changes (they have no process context).
    #[arg(long)]
    states: bool,
    /// Also show what processes write to stdout/stderr (filtered by --pid and --comm).
    #[arg(long)]
    logs: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Payload bytes shown per data line.
    #[arg(long, default_value_t = 48)]
    payload_bytes: usize,
}

impl AnalyzeArgs {
    fn rule_dir_list(&self) -> Vec<PathBuf> {
        self.rules_dir.clone()
    }
}

fn apply(config: &mut Config, args: &CaptureArgs) {
    if let Some(v) = args.capture_bytes {
        config.capture.capture_bytes = v;
    }
    if let Some(v) = args.ring_bytes {
        config.capture.ring_bytes = v;
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::load(cli.config.as_deref())?;
    // Before the runtime's threads exist: they inherit the namespace.
    if matches!(cli.command, Command::Run(_)) && config.correlation.host_cgroup_namespace {
        match sonde_correlate::join_host_cgroup_namespace(&config.correlation.proc_root) {
            Ok(true) => tracing::info!("joined the host's cgroup namespace"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "staying in this cgroup namespace: container ids from /proc/<pid>/cgroup may be partial"
            ),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => {
            apply(&mut config, &args.capture);
            if args.no_payload {
                config.capture.payload = false;
            }
            if args.no_network {
                config.capture.network = false;
            }
            if let Some(path) = args.kubeconfig {
                config.kubernetes.kubeconfig = Some(path);
                config.kubernetes.mode = sonde_correlate::k8s::KubeMode::Kubeconfig;
            }
            if args.node_name.is_some() {
                config.kubernetes.node_name = args.node_name;
            }
            if args.no_kubernetes {
                config.kubernetes.mode = sonde_correlate::k8s::KubeMode::Off;
            }
            if let Some(listen) = args.metrics_listen {
                config.metrics.listen = match listen.as_str() {
                    "none" | "" => None,
                    a => Some(
                        a.parse()
                            .map_err(|e| anyhow::anyhow!("--metrics-listen {a}: {e}"))?,
                    ),
                };
            }
            rt.block_on(sonde::daemon::run(config))
        }
        Command::Trace(args) => {
            apply(&mut config, &args.capture);
            let opts = TraceOptions {
                filter: Filter {
                    pids: args.pid,
                    ports: args.port,
                    comms: args.comm,
                    states: args.states,
                    logs: args.logs,
                },
                json: args.json,
                payload_bytes: args.payload_bytes,
            };
            rt.block_on(sonde::trace::run(&config.capture, opts))
        }
        Command::Doctor(args) => {
            let code = sonde_capture::doctor::run(&config.capture, args.json)?;
            std::process::exit(code)
        }
        Command::Top(args) => sonde::top::run(&sonde::top::TopOptions {
            endpoint: args.endpoint,
            interval: std::time::Duration::from_secs_f64(args.interval.max(0.1)),
            limit: args.limit,
            once: args.once,
        }),
        Command::Incidents(args) => sonde::incidents_view::run_list(args.endpoint, args.json),
        Command::Report(args) => {
            sonde::incidents_view::run_report(args.endpoint, &args.id, args.json)
        }
        Command::Demo(args) => sonde::demo::run(&args.fault, args.baseline, args.timeout),
        Command::Map(args) => sonde::map_view::run(&sonde::map_view::MapOptions {
            endpoint: args.endpoint,
            interval: std::time::Duration::from_secs_f64(args.interval.max(0.1)),
            limit: args.limit,
            once: args.once,
            json: args.json,
        }),
        Command::Plugin(PluginCommand::List(admin)) => {
            admin_call(&admin, &sonde::admin::Request::List)
        }
        Command::Plugin(PluginCommand::Load { path, admin }) => {
            let path = std::path::absolute(&path)?;
            admin_call(&admin, &sonde::admin::Request::Load { path })
        }
        Command::Plugin(PluginCommand::Reload { name, path, admin }) => {
            let path = path.map(|p| std::path::absolute(&p)).transpose()?;
            admin_call(&admin, &sonde::admin::Request::Reload { name, path })
        }
        Command::Plugin(PluginCommand::Unload { name, admin }) => {
            admin_call(&admin, &sonde::admin::Request::Unload { name })
        }
        Command::Plugin(PluginCommand::Keygen(args)) => {
            let k = sonde_sandbox::package::keygen(&args.out)?;
            eprintln!(
                "secret key: {} (keep it secret)\npublic key: {}",
                k.secret.display(),
                k.public.display()
            );
            println!("{}", k.public_key);
            Ok(())
        }
        Command::Plugin(PluginCommand::Package(args)) => {
            use sonde_sandbox::manifest::World;
            let world = match &args.world {
                Some(w) => Some(World::parse(w).ok_or_else(|| {
                    anyhow::anyhow!("--world {w:?}: give protocol-parser or fault-rule")
                })?),
                None => None,
            };
            let p = sonde_sandbox::package::package(&sonde_sandbox::package::PackageOptions {
                wasm: args.wasm,
                build: args.build,
                key: args.key,
                publisher: args.publisher,
                out: args.out,
                name: args.name,
                version: args.version,
                world,
                protocols: args.protocol,
                ports: args.port,
                capabilities: args.capability,
                tar: args.tar,
            })?;
            let m = &p.manifest.plugin;
            println!(
                "packaged {} {} ({})\n  {}\n  {}",
                m.name,
                m.version,
                m.world,
                p.wasm.display(),
                p.manifest_path.display()
            );
            if let Some(tar) = &p.tar {
                println!("  {}", tar.display());
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::Verify(args)) => {
            let checked = sonde_sandbox::package::verify_paths(
                &args.paths,
                &config.plugins,
                &args.trusted_key,
            )?;
            anyhow::ensure!(!checked.is_empty(), "no *.wasm components found");
            for c in &checked {
                println!("{c}");
            }
            let refused = checked.iter().filter(|c| c.outcome.is_err()).count();
            anyhow::ensure!(
                refused == 0,
                "{refused} of {} components refused",
                checked.len()
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::New(args)) => {
            let name = match args.name {
                Some(n) => n,
                None => args
                    .dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| anyhow::anyhow!("{}: give --name", args.dir.display()))?
                    .to_string(),
            };
            let sdk = match (args.sdk_path, args.sdk_version) {
                (Some(p), _) => sonde::scaffold::SdkSource::Path(p),
                (None, Some(v)) => sonde::scaffold::SdkSource::Version(v),
                (None, None) => sonde::scaffold::SdkSource::default(),
            };
            let files = sonde::scaffold::new_plugin(&args.dir, &name, args.kind, sdk)?;
            for f in files {
                println!("created {}", f.display());
            }
            println!(
                "next: cd {} && cargo test && cargo build --release --target wasm32-wasip2",
                args.dir.display()
            );
            Ok(())
        }
        Command::Analyze(args) => {
            if args.list_examples {
                print!("{}", sonde::analyze::examples());
                return Ok(());
            }
            let mut plugins = config.plugins.clone();
            plugins.rule_dirs.extend(args.rule_dir_list());
            if args.allow_unsigned {
                plugins.allow_unsigned_dirs.extend(args.rule_dir_list());
            }
            if args.no_default_rules {
                plugins.default_rules = false;
            }
            if let Some(cache) = &args.plugin_cache {
                plugins.cache_dir =
                    (cache != "none" && !cache.is_empty()).then(|| PathBuf::from(cache));
            }
            let opts = sonde::analyze::AnalyzeOptions {
                dir: args.dir,
                example: args.example,
                save: args.save,
                json: args.json,
            };
            sonde::analyze::run(&opts, &plugins)
        }
    }
}

/// One admin request; prints the slots (or the JSON answer); an error answer is an error.
fn admin_call(args: &AdminArgs, req: &sonde::admin::Request) -> Result<()> {
    let answer = sonde::admin::request(&args.socket, req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if answer.ok {
        println!(
            "{:<4} {:<16} {:<10} {:<9} {:>6} {:>9}  SOURCE",
            "SLOT", "NAME", "VERSION", "STATE", "CONNS", "RECORDS"
        );
        for s in &answer.slots {
            println!(
                "{:<4} {:<16} {:<10} {:<9} {:>6} {:>9}  {}",
                s.index, s.name, s.version, s.state, s.connections, s.records, s.source
            );
        }
        if let (Some(load), Some(swap)) = (answer.load_ms, answer.swap_ms) {
            println!("loaded in {load:.1} ms, swapped in {swap:.2} ms");
        }
    }
    match (answer.ok, answer.error) {
        (true, _) => Ok(()),
        (false, e) => anyhow::bail!("{}", e.unwrap_or_else(|| "refused".into())),
    }
}
