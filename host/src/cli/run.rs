//! `sonde run`: the daemon.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use sonde_correlate::k8s::{KubeMode, KubernetesSettings};

use super::capture::CaptureArgs;
use crate::config::{Config, MetricsSettings};
use crate::instance::{self, InstanceLock};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Address for /metrics (default 127.0.0.1:9464); `none` disables it.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// A file with the bearer token that lets clients off loopback read /api/* (`[api]
    /// token_file`); without one, /api/* answers loopback clients only.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
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

impl RunArgs {
    /// The flags given override the file, section by section.
    pub fn apply(self, config: &mut Config) -> Result<()> {
        self.capture.apply(&mut config.capture);
        if self.no_payload {
            config.capture.payload = false;
        }
        if self.no_network {
            config.capture.network = false;
        }
        apply_kubernetes(
            &mut config.kubernetes,
            self.kubeconfig,
            self.node_name,
            self.no_kubernetes,
        );
        if let Some(file) = self.api_token_file {
            config.api.token_file = Some(file);
        }
        if let Some(listen) = self.metrics_listen {
            apply_metrics_listen(&mut config.metrics, &listen)?;
        }
        Ok(())
    }
}

fn apply_kubernetes(
    k8s: &mut KubernetesSettings,
    kubeconfig: Option<PathBuf>,
    node_name: Option<String>,
    off: bool,
) {
    if let Some(path) = kubeconfig {
        k8s.kubeconfig = Some(path);
        k8s.mode = KubeMode::Kubeconfig;
    }
    if node_name.is_some() {
        k8s.node_name = node_name;
    }
    // Last: `--no-kubernetes` wins (clap refuses it together with --kubeconfig anyway).
    if off {
        k8s.mode = KubeMode::Off;
    }
}

/// `--metrics-listen`: an address, or `none` (or empty) for no /metrics at all.
fn apply_metrics_listen(metrics: &mut MetricsSettings, listen: &str) -> Result<()> {
    metrics.listen = match listen {
        "none" | "" => None,
        a => Some(
            a.parse()
                .map_err(|e| anyhow::anyhow!("--metrics-listen {a}: {e}"))?,
        ),
    };
    Ok(())
}

pub fn run(args: RunArgs, mut config: Config) -> Result<()> {
    args.apply(&mut config)?;
    // Before anything touches the system: the values in range, then root, then the lock
    // that keeps a second daemon on this node from going further.
    config.validate()?;
    // The token file too: a bad one is a configuration error, reported whether or not
    // another daemon holds the lock (the daemon reads it again when it builds the API).
    crate::http::Access::load(config.api.token_file.as_deref())?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    anyhow::ensure!(
        euid == 0,
        "Sonde must run as root (it loads eBPF programs and may mount tracefs)"
    );
    let lock = InstanceLock::acquire(&instance::lock_path(config.admin.socket.as_deref()))?;
    // Before the runtime's threads exist: they inherit the namespace.
    if config.correlation.host_cgroup_namespace {
        join_host_cgroup_namespace(&config);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(crate::daemon::run(config));
    // The runtime first (its tasks hold the sockets), then the lock.
    drop(rt);
    drop(lock);
    result
}

/// Container ids come from /proc/<pid>/cgroup, which shows paths relative to our own cgroup
/// namespace; in the host's they are whole. Failing to join is a warning, not an error.
/// Logged under the target `sonde`, where these lines were before the CLI had modules.
fn join_host_cgroup_namespace(config: &Config) {
    match sonde_correlate::join_host_cgroup_namespace(&config.correlation.proc_root) {
        Ok(true) => tracing::info!(target: "sonde", "joined the host's cgroup namespace"),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            target: "sonde",
            error = format!("{e:#}"),
            "staying in this cgroup namespace: container ids from /proc/<pid>/cgroup may be partial"
        ),
    }
}
