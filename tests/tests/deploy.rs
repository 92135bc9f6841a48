//! The Kubernetes manifests of deploy/. scripts/deploy-lint renders each kustomization with
//! kubectl's kustomize and validates every object against the Kubernetes schemas (1.30 and
//! 1.37, strict) and the prometheus-operator's CRDs; then this checks what would break Sonde in
//! a cluster although the schemas pass: the daemon's sonde.toml and arguments as the `sonde`
//! binary reads them, its RBAC against what the watchers read (and no more), one port from
//! sonde.toml to the container port, probes, annotations, PodMonitor and the vanilla
//! Prometheus scrape config, the hub's port through its Service and ServiceMonitor, writable
//! places on a read-only root. Every check is shown to catch a broken copy of deploy/.
//! No root, no cluster, no network: the tools come from scripts/bootstrap.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sonde_tests::httplab::Scratch;
use sonde_tests::sonde_bin_path;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A copy of deploy/ to render (and to break).
fn deploy_copy(scratch: &Scratch) -> PathBuf {
    let to = scratch.path().join("deploy");
    let out = Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&to)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp: {out:?}");
    to
}

/// `scripts/deploy-lint render DIR`: the objects, or the linter's complaint.
fn render(dir: &Path) -> Result<Vec<Value>, String> {
    let out = Command::new(repo().join("scripts/deploy-lint"))
        .arg("render")
        .arg(dir)
        .output()
        .expect("running scripts/deploy-lint");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("run scripts/bootstrap"),
        "the linters are not installed: {stderr}"
    );
    if !out.status.success() {
        return Err(stderr);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("deploy-lint's JSON: {e}"))
}

/// The rendered objects of one kustomization, with what the checks look up.
struct Objects<'a> {
    all: &'a [Value],
    /// deploy/ of this rendering (for the scrape config beside it).
    deploy: &'a Path,
    scratch: &'a Path,
}

type Check = Result<(), String>;

fn text<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn items<'v>(v: &'v Value, pointer: &str) -> &'v [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn named<'v>(list: &'v [Value], name: &str) -> Option<&'v Value> {
    list.iter().find(|x| text(x, "/name") == name)
}

impl<'a> Objects<'a> {
    fn find(&self, kind: &str, name: &str) -> Result<&'a Value, String> {
        self.all
            .iter()
            .find(|o| text(o, "/kind") == kind && text(o, "/metadata/name") == name)
            .ok_or_else(|| format!("no {kind} {name}"))
    }

    fn kinds(&self) -> BTreeSet<&'a str> {
        self.all.iter().map(|o| text(o, "/kind")).collect()
    }

    /// A ConfigMap by the name a pod refers to it (kustomize appends a hash to both).
    fn config_map_data(&self, name: &str, key: &str) -> Result<&'a str, String> {
        let cm = self.find("ConfigMap", name)?;
        cm.pointer(&format!("/data/{key}"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("ConfigMap {name} has no key {key}"))
    }

    /// Every check, first failure first.
    fn check(&self) -> Check {
        self.check_namespaces()?;
        let listen = self.check_daemon()?;
        self.check_rbac()?;
        let hub_port = self.check_hub()?;
        self.check_monitors(listen, hub_port)?;
        self.check_scrape_config(listen, hub_port)
    }

    /// Everything namespaced is in `sonde`, which the base creates.
    fn check_namespaces(&self) -> Check {
        self.find("Namespace", "sonde")?;
        for o in self.all {
            let kind = text(o, "/kind");
            if matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
                continue;
            }
            let ns = text(o, "/metadata/namespace");
            if ns != "sonde" {
                return Err(format!(
                    "{kind} {} is in namespace {ns:?}, not sonde",
                    text(o, "/metadata/name")
                ));
            }
        }
        Ok(())
    }

    /// The DaemonSet against the binary: its arguments parse, its sonde.toml passes
    /// `sonde config check`, and the port that file listens on is the container's, the
    /// probes' and the annotation's. The port.
    fn check_daemon(&self) -> Result<u16, String> {
        let ds = self.find("DaemonSet", "sonde")?;
        let pod = ds.pointer("/spec/template").unwrap();
        let spec = &pod["spec"];
        let c = named(items(spec, "/containers"), "sonde").ok_or("no container sonde")?;
        let args: Vec<&str> = items(c, "/args").iter().filter_map(Value::as_str).collect();
        sonde_accepts(&args).map_err(|e| format!("DaemonSet args {args:?}: {e}"))?;
        if args.first() != Some(&"run") {
            return Err(format!("DaemonSet args {args:?} do not run the daemon"));
        }

        // The config file: $SONDE_CONFIG (what the global --config reads), in a mounted
        // ConfigMap.
        let env = items(c, "/env");
        let config_path = named(env, "SONDE_CONFIG")
            .map(|e| text(e, "/value"))
            .ok_or("no SONDE_CONFIG in the daemon's env")?;
        let help = sonde(&["--help"])?;
        if !help.contains("SONDE_CONFIG") {
            return Err("sonde --config no longer reads $SONDE_CONFIG".into());
        }
        if named(env, "NODE_NAME").map(|e| text(e, "/valueFrom/fieldRef/fieldPath"))
            != Some("spec.nodeName")
        {
            return Err("NODE_NAME is not the pod's spec.nodeName".into());
        }
        let mounts = items(c, "/volumeMounts");
        let mount = mount_of(mounts, config_path)
            .ok_or_else(|| format!("{config_path} is on no volume"))?;
        let key = config_path
            .strip_prefix(&format!("{}/", text(mount, "/mountPath")))
            .unwrap_or("");
        let volume = named(items(spec, "/volumes"), text(mount, "/name")).ok_or("no volume")?;
        let toml = self.config_map_data(text(volume, "/configMap/name"), key)?;
        let config = config_check(self.scratch, toml)?;

        let listen = text(&config, "/metrics/listen");
        let addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|e| format!("[metrics] listen {listen:?}: {e}"))?;
        if spec["hostNetwork"] == true && addr.ip().is_loopback() {
            return Err(format!(
                "[metrics] listen {listen} is unreachable for Prometheus"
            ));
        }
        let port = addr.port();
        let ports = items(c, "/ports");
        let metrics = named(ports, "metrics").ok_or("no container port `metrics`")?;
        if metrics["containerPort"] != port {
            return Err(format!(
                "container port metrics is {}, sonde.toml listens on {port}",
                metrics["containerPort"]
            ));
        }
        let annotated = text(pod, "/metadata/annotations/prometheus.io~1port");
        if annotated != port.to_string() {
            return Err(format!(
                "prometheus.io/port is {annotated:?}, sonde.toml listens on {port}"
            ));
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let p = c.get(probe).ok_or_else(|| format!("no {probe}"))?;
            let named_port = p
                .pointer("/tcpSocket/port")
                .or_else(|| p.pointer("/httpGet/port"));
            if named_port != Some(&Value::from("metrics")) {
                return Err(format!("{probe} is not on the port `metrics`"));
            }
        }

        // What the daemon needs of the host, as sonde.toml says it.
        if text(&config, "/correlation/proc_root") == "/proc" && spec["hostPID"] != true {
            return Err("correlation.proc_root is /proc without hostPID".into());
        }
        for path in ["/sys/fs/cgroup", "/sys/kernel/btf", "/sys/kernel/tracing"] {
            let m = mounts.iter().find(|m| text(m, "/mountPath") == path);
            let host = m
                .and_then(|m| named(items(spec, "/volumes"), text(m, "/name")))
                .map(|v| text(v, "/hostPath/path"));
            if host != Some(path) {
                return Err(format!("the host's {path} is not mounted at {path}"));
            }
        }
        // On a read-only root, the admin socket and plugin cache need writable volumes; a
        // token file needs a mounted Secret.
        let read_only_root =
            c.pointer("/securityContext/readOnlyRootFilesystem") == Some(&true.into());
        let writable = |path: &str| {
            !read_only_root || mount_of(mounts, path).is_some_and(|m| m["readOnly"] != true)
        };
        for (what, pointer) in [
            ("[admin] socket", "/admin/socket"),
            ("[plugins] cache_dir", "/plugins/cache_dir"),
        ] {
            let path = text(&config, pointer);
            if !path.is_empty() && !writable(path) {
                return Err(format!("{what} {path} is on no writable volume"));
            }
        }
        let token = text(&config, "/api/token_file");
        if !token.is_empty() {
            let m = mount_of(mounts, token)
                .ok_or_else(|| format!("[api] token_file {token} is on no volume"))?;
            let v = named(items(spec, "/volumes"), text(m, "/name")).ok_or("no volume")?;
            if v.get("secret").is_none() {
                return Err(format!("[api] token_file {token} is not from a Secret"));
            }
        }
        Ok(port)
    }

    /// The daemon's account may list and watch exactly what the watchers read
    /// (`sonde_correlate::k8s::watched_resources`); the hub's has no role and no token.
    fn check_rbac(&self) -> Check {
        let ds = self.find("DaemonSet", "sonde")?;
        let account = text(ds, "/spec/template/spec/serviceAccountName");
        self.find("ServiceAccount", account)?;
        let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for role in self.roles_of(account) {
            for rule in items(role, "/rules") {
                for group in items(rule, "/apiGroups") {
                    for resource in items(rule, "/resources") {
                        let verbs = items(rule, "/verbs").iter().filter_map(Value::as_str);
                        granted
                            .entry((
                                group.as_str().unwrap_or("?").into(),
                                resource.as_str().unwrap_or("?").into(),
                            ))
                            .or_default()
                            .extend(verbs.map(String::from));
                    }
                }
            }
        }
        let watched: BTreeSet<(String, String)> = sonde_correlate::k8s::watched_resources()
            .iter()
            .map(|(g, r)| (g.to_string(), r.to_string()))
            .collect();
        let needed: BTreeSet<String> = ["list", "watch"].map(String::from).into();
        for w in &watched {
            let verbs = granted.get(w).cloned().unwrap_or_default();
            if !needed.is_subset(&verbs) {
                return Err(format!(
                    "RBAC: {account} may not list and watch {w:?} (granted {verbs:?}), which the watchers read"
                ));
            }
        }
        for (what, verbs) in &granted {
            if !watched.contains(what) {
                return Err(format!(
                    "RBAC: {account} is granted {what:?}, which no watcher reads"
                ));
            }
            if !verbs.is_subset(&needed) {
                return Err(format!(
                    "RBAC: {account} is granted {verbs:?} on {what:?}: list and watch only"
                ));
            }
        }

        let hub = self.find("Deployment", "sonde-hub")?;
        let hub_account = text(hub, "/spec/template/spec/serviceAccountName");
        let sa = self.find("ServiceAccount", hub_account)?;
        if !self.roles_of(hub_account).is_empty() {
            return Err(format!("RBAC: the hub's account {hub_account} has a role"));
        }
        if sa["automountServiceAccountToken"] != false
            || hub.pointer("/spec/template/spec/automountServiceAccountToken")
                != Some(&false.into())
        {
            return Err("the hub's pod gets an API token it does not use".into());
        }
        Ok(())
    }

    /// The (Cluster)Roles bound to a service account of the namespace `sonde`.
    fn roles_of(&self, account: &str) -> Vec<&'a Value> {
        let mut roles = Vec::new();
        for binding in self
            .all
            .iter()
            .filter(|o| matches!(text(o, "/kind"), "ClusterRoleBinding" | "RoleBinding"))
        {
            let bound = items(binding, "/subjects").iter().any(|s| {
                text(s, "/kind") == "ServiceAccount"
                    && text(s, "/name") == account
                    && text(s, "/namespace") == "sonde"
            });
            if bound {
                let kind = text(binding, "/roleRef/kind");
                match self.find(kind, text(binding, "/roleRef/name")) {
                    Ok(role) => roles.push(role),
                    // A binding to a role that is not here: a role of the cluster's (e.g.
                    // cluster-admin), which is more than the watchers need.
                    Err(_) => roles.push(binding),
                }
            }
        }
        roles
    }

    /// The hub's command line has the flags (checked against `sonde hub --help` when the
    /// binary has the hub), its --listen port is its container's, its Service's and its
    /// annotation's, and the Prometheus URL comes from the ConfigMap. The port.
    fn check_hub(&self) -> Result<u16, String> {
        let hub = self.find("Deployment", "sonde-hub")?;
        let pod = hub.pointer("/spec/template").unwrap();
        let c = named(items(&pod["spec"], "/containers"), "hub").ok_or("no container hub")?;
        let args: Vec<&str> = items(c, "/args").iter().filter_map(Value::as_str).collect();
        if args.first() != Some(&"hub") {
            return Err(format!("hub args {args:?} do not run `sonde hub`"));
        }
        let flag = |name: &str| {
            args.iter()
                .position(|a| *a == name)
                .and_then(|i| args.get(i + 1).copied())
                .ok_or_else(|| format!("hub args {args:?} have no {name}"))
        };
        let listen = flag("--listen")?;
        let port = listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("hub --listen {listen}: {e}"))?
            .port();
        if flag("--prometheus")? != "$(PROMETHEUS_URL)" {
            return Err("hub --prometheus is not $(PROMETHEUS_URL)".into());
        }
        let env = named(items(c, "/env"), "PROMETHEUS_URL").ok_or("no PROMETHEUS_URL env")?;
        let url = self.config_map_data(
            text(env, "/valueFrom/configMapKeyRef/name"),
            text(env, "/valueFrom/configMapKeyRef/key"),
        )?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("the hub's Prometheus URL {url:?} is not http(s)"));
        }
        hub_flags_exist(&args)?;

        let http = named(items(c, "/ports"), "http").ok_or("no hub container port `http`")?;
        if http["containerPort"] != port {
            return Err(format!(
                "hub container port is {}, --listen {port}",
                http["containerPort"]
            ));
        }
        let annotated = text(pod, "/metadata/annotations/prometheus.io~1port");
        if annotated != port.to_string() {
            return Err(format!(
                "hub prometheus.io/port is {annotated:?}, --listen {port}"
            ));
        }
        let svc = self.find("Service", "sonde-hub")?;
        selects(&svc["spec"]["selector"], &pod["metadata"]["labels"])
            .map_err(|e| format!("Service sonde-hub: {e}"))?;
        for p in items(svc, "/spec/ports") {
            if p["targetPort"] != "http" && p["targetPort"] != port {
                return Err(format!(
                    "Service sonde-hub port {} misses the hub",
                    p["name"]
                ));
            }
        }
        Ok(port)
    }

    /// The PodMonitor and ServiceMonitor, when present, select Sonde's pods and Service and
    /// name ports that are the daemon's and the hub's.
    fn check_monitors(&self, listen: u16, hub_port: u16) -> Check {
        if let Ok(pm) = self.find("PodMonitor", "sonde") {
            let ds = self.find("DaemonSet", "sonde")?;
            selects(
                &pm["spec"]["selector"]["matchLabels"],
                &ds["spec"]["template"]["metadata"]["labels"],
            )
            .map_err(|e| format!("PodMonitor: {e}"))?;
            let containers = items(ds, "/spec/template/spec/containers");
            for ep in items(pm, "/spec/podMetricsEndpoints") {
                let name = text(ep, "/port");
                let number = containers
                    .iter()
                    .flat_map(|c| items(c, "/ports"))
                    .find(|p| text(p, "/name") == name)
                    .map(|p| p["containerPort"].clone());
                if number != Some(listen.into()) {
                    return Err(format!(
                        "PodMonitor port {name:?} is not the daemon's {listen}"
                    ));
                }
                if text(ep, "/path") != "/metrics" {
                    return Err("PodMonitor path is not /metrics".into());
                }
            }
        }
        if let Ok(sm) = self.find("ServiceMonitor", "sonde-hub") {
            let svc = self.find("Service", "sonde-hub")?;
            selects(
                &sm["spec"]["selector"]["matchLabels"],
                &svc["metadata"]["labels"],
            )
            .map_err(|e| format!("ServiceMonitor: {e}"))?;
            for ep in items(sm, "/spec/endpoints") {
                let p = named(items(svc, "/spec/ports"), text(ep, "/port")).ok_or_else(|| {
                    format!("ServiceMonitor port {:?} is not the Service's", ep["port"])
                })?;
                if p["port"] != hub_port {
                    return Err(format!(
                        "ServiceMonitor's Service port is not the hub's {hub_port}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// deploy/prometheus/scrape-config.yml, applied to these pods as Prometheus would (by
    /// scripts/deploy-lint): one target per daemon and hub pod, on their ports, at /metrics.
    fn check_scrape_config(&self, listen: u16, hub_port: u16) -> Check {
        let objects = self.scratch.join("objects.json");
        std::fs::write(&objects, serde_json::to_vec(self.all).unwrap()).unwrap();
        let out = Command::new(repo().join("scripts/deploy-lint"))
            .arg("scrape")
            .arg(self.deploy.join("prometheus/scrape-config.yml"))
            .arg(&objects)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "scrape config: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let targets: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut got: Vec<(String, String, String)> = targets
            .iter()
            .map(|t| {
                (
                    text(t, "/pod").to_string(),
                    text(t, "/address").to_string(),
                    text(t, "/metrics_path").to_string(),
                )
            })
            .collect();
        got.sort();
        let want = vec![
            (
                "sonde".to_string(),
                format!("10.0.0.1:{listen}"),
                "/metrics".to_string(),
            ),
            (
                "sonde-hub".to_string(),
                format!("10.0.0.1:{hub_port}"),
                "/metrics".to_string(),
            ),
        ];
        if got != want {
            return Err(format!("scrape config targets {got:?}, expected {want:?}"));
        }
        Ok(())
    }
}

/// The volume mount a path of the container is on: the deepest one holding it.
fn mount_of<'v>(mounts: &'v [Value], path: &str) -> Option<&'v Value> {
    mounts
        .iter()
        .filter(|m| Path::new(path).starts_with(text(m, "/mountPath")))
        .max_by_key(|m| text(m, "/mountPath").len())
}

/// Every key of `selector` is a label of `labels` with the same value, and there is one.
fn selects(selector: &Value, labels: &Value) -> Check {
    let sel = selector
        .as_object()
        .filter(|s| !s.is_empty())
        .ok_or("empty selector")?;
    for (k, v) in sel {
        if labels.get(k) != Some(v) {
            return Err(format!(
                "selector {k}={v} does not match the pods' labels {labels}"
            ));
        }
    }
    Ok(())
}

/// `sonde ARGS`: stdout, or the first line of why not.
fn sonde(args: &[&str]) -> Result<String, String> {
    let out = Command::new(sonde_bin_path()).args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string())
    }
}

/// The binary's parser accepts this command line: clap checks every flag and value it
/// meets before it reaches `--help`, where it stops.
fn sonde_accepts(args: &[&str]) -> Check {
    let mut with_help = args.to_vec();
    with_help.push("--help");
    sonde(&with_help).map(drop)
}

/// The hub's flags against `sonde hub --help`. The hub is being built beside this (a mode of
/// the same binary); until this binary has it, its flags are checked against the ones the
/// manifests were written for, and the test says so on stderr.
fn hub_flags_exist(args: &[&str]) -> Check {
    let help = match sonde(&["hub", "--help"]) {
        Ok(help) => help,
        Err(e) if e.contains("unrecognized subcommand") => {
            eprintln!(
                "deploy: NOTE this sonde has no `hub` command yet; the hub's args are checked against --prometheus and --listen only"
            );
            "--prometheus --listen".to_string()
        }
        Err(e) => return Err(format!("sonde hub --help: {e}")),
    };
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        if !help.contains(flag) {
            return Err(format!("sonde hub has no flag {flag}"));
        }
    }
    Ok(())
}

/// `sonde config check --json` on this sonde.toml: the effective configuration.
fn config_check(scratch: &Path, toml: &str) -> Result<Value, String> {
    let file = scratch.join("sonde.toml");
    std::fs::write(&file, toml).unwrap();
    let json = sonde(&["config", "check", "--json", file.to_str().unwrap()])
        .map_err(|e| format!("sonde config check: {e}"))?;
    serde_json::from_str(&json).map_err(|e| format!("sonde config check --json: {e}"))
}

fn rendered_and_checked(dir: &str) -> Vec<Value> {
    let scratch = Scratch::new("deploy");
    let deploy = deploy_copy(&scratch);
    let all = render(&deploy.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let objects = Objects {
        all: &all,
        deploy: &deploy,
        scratch: scratch.path(),
    };
    objects.check().unwrap_or_else(|e| panic!("{dir}: {e}"));
    all
}

#[test]
fn base_renders_validates_and_fits_the_binary() {
    let all = rendered_and_checked("base");
    let objects = Objects {
        all: &all,
        deploy: Path::new(""),
        scratch: Path::new(""),
    };
    // Everything a cluster without the prometheus-operator can apply, and nothing else.
    let kinds: Vec<&str> = objects.kinds().into_iter().collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Deployment",
            "Namespace",
            "Service",
            "ServiceAccount"
        ]
    );
    // One image, this version, for the daemon and the hub.
    let image = format!(
        "ghcr.io/sonde-observability/sonde:{}",
        env!("CARGO_PKG_VERSION")
    );
    for (kind, name) in [("DaemonSet", "sonde"), ("Deployment", "sonde-hub")] {
        let o = objects.find(kind, name).unwrap();
        for c in items(o, "/spec/template/spec/containers") {
            assert_eq!(text(c, "/image"), image, "{kind} {name}");
        }
    }
}

#[test]
fn example_overlay_adds_the_monitors_and_its_settings() {
    let all = rendered_and_checked("overlays/example");
    let objects = Objects {
        all: &all,
        deploy: Path::new(""),
        scratch: Path::new(""),
    };
    assert!(objects.kinds().contains("PodMonitor"));
    assert!(objects.kinds().contains("ServiceMonitor"));
    // The overlay's values arrived: image, Prometheus URL, nodeSelector, resources.
    let ds = objects.find("DaemonSet", "sonde").unwrap();
    assert_eq!(
        text(ds, "/spec/template/spec/containers/0/image"),
        "registry.example.internal/observability/sonde:0.1.0"
    );
    assert_eq!(
        text(ds, "/spec/template/spec/nodeSelector/kubernetes.io~1os"),
        "linux"
    );
    assert_eq!(
        text(
            ds,
            "/spec/template/spec/containers/0/resources/limits/memory"
        ),
        "2Gi"
    );
    let hub_url = objects
        .all
        .iter()
        .find(|o| {
            text(o, "/kind") == "ConfigMap" && text(o, "/metadata/name").starts_with("sonde-hub")
        })
        .map(|o| text(o, "/data/prometheus-url"));
    assert_eq!(
        hub_url,
        Some("http://prometheus-operated.monitoring.svc:9090")
    );
}

/// A copy of deploy/ with `from` replaced by `to` in `file` (which must contain it, so a
/// mutation cannot go stale unnoticed), rendered from `dir` and checked: the error.
fn broken(file: &str, from: &str, to: &str, dir: &str) -> String {
    let scratch = Scratch::new("deploy-broken");
    let deploy = deploy_copy(&scratch);
    let path = deploy.join(file);
    let original = std::fs::read_to_string(&path).unwrap();
    assert!(original.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
    let result = render(&deploy.join(dir)).and_then(|all| {
        Objects {
            all: &all,
            deploy: &deploy,
            scratch: scratch.path(),
        }
        .check()
    });
    match result {
        Ok(()) => panic!("{file}: {from:?} -> {to:?} passed"),
        Err(e) => e,
    }
}

#[test]
fn broken_copies_are_rejected() {
    // (file, from, to, kustomization, what the error must name)
    let cases = [
        // The schemas: an unknown field, a wrong type, a CRD field misspelt.
        (
            "base/daemonset.yaml",
            "hostPID: true",
            "hostPid: true",
            "base",
            "hostPid",
        ),
        (
            "base/daemonset.yaml",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: \"30\"",
            "base",
            "terminationGracePeriodSeconds",
        ),
        (
            "components/prometheus-operator/podmonitor.yaml",
            "podMetricsEndpoints",
            "podMetricEndpoints",
            "overlays/example",
            "podMetricEndpoints",
        ),
        // kustomize itself: a key twice, a missing file.
        (
            "base/daemonset.yaml",
            "      hostNetwork: true\n",
            "      hostNetwork: true\n      hostNetwork: false\n",
            "base",
            "already defined",
        ),
        (
            "base/kustomization.yaml",
            "- hub.yaml",
            "- hubs.yaml",
            "base",
            "hubs.yaml",
        ),
        // The binary: a flag `sonde run` does not have, a key sonde.toml may not have.
        (
            "base/daemonset.yaml",
            "args: [\"run\"]",
            "args: [\"run\", \"--metrics-port\", \"9464\"]",
            "base",
            "--metrics-port",
        ),
        (
            "base/sonde.toml",
            "[kubernetes]\n",
            "[kubernetes]\nnode = \"a\"\n",
            "base",
            "unknown field `node`",
        ),
        // One port everywhere.
        (
            "base/sonde.toml",
            "0.0.0.0:9464",
            "0.0.0.0:9463",
            "base",
            "9463",
        ),
        (
            "base/sonde.toml",
            "0.0.0.0:9464",
            "127.0.0.1:9464",
            "base",
            "unreachable",
        ),
        (
            "base/daemonset.yaml",
            "prometheus.io/port: \"9464\"",
            "prometheus.io/port: \"9465\"",
            "base",
            "prometheus.io/port",
        ),
        (
            "base/hub.yaml",
            "\"0.0.0.0:9465\"",
            "\"0.0.0.0:9466\"",
            "base",
            "9466",
        ),
        (
            "components/prometheus-operator/podmonitor.yaml",
            "port: metrics",
            "port: http",
            "overlays/example",
            "PodMonitor port",
        ),
        // RBAC: a watched resource missing, a verb too many.
        (
            "base/rbac-daemon.yaml",
            "[\"endpointslices\"]",
            "[\"endpoints\"]",
            "base",
            "endpoint",
        ),
        (
            "base/rbac-daemon.yaml",
            "[\"list\", \"watch\"]",
            "[\"get\", \"list\", \"watch\"]",
            "base",
            "get",
        ),
        // The host's /proc, and the admin socket on a read-only root.
        (
            "base/daemonset.yaml",
            "hostPID: true",
            "hostPID: false",
            "base",
            "hostPID",
        ),
        (
            "base/daemonset.yaml",
            "- {name: run, mountPath: /run/sonde}",
            "",
            "base",
            "[admin] socket",
        ),
        // The overlay's token file without its Secret.
        (
            "overlays/example/daemonset-patch.yaml",
            "/etc/sonde/api",
            "/etc/sonde/token",
            "overlays/example",
            "token_file",
        ),
        // The vanilla scrape config keeping nothing.
        (
            "prometheus/scrape-config.yml",
            "regex: \"true\"",
            "regex: \"yes\"",
            "base",
            "scrape config",
        ),
    ];
    for (file, from, to, dir, names) in cases {
        let e = broken(file, from, to, dir);
        eprintln!("rejected {file}: {from:?} -> {to:?}: {}", e.trim());
        assert!(
            e.contains(names),
            "{file}: {from:?} -> {to:?}: error {e:?} does not name {names:?}"
        );
    }
}

/// `sonde config check`, which the checks above lean on: exit status 0 and one line for a
/// good file, 1 and one line naming the key for a bad one (a TOML error's caret lines
/// joined), every default filled in with --json.
#[test]
fn config_check_answers_in_one_line() {
    let scratch = Scratch::new("config-check");
    let run = |toml: &str| {
        let file = scratch.path().join("sonde.toml");
        std::fs::write(&file, toml).unwrap();
        let out = Command::new(sonde_bin_path())
            .args(["config", "check"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, _) = run("[metrics]\nlisten = \"0.0.0.0:9464\"\n");
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("config ") && stdout.trim_end().ends_with(": ok"),
        "{stdout}"
    );
    for (toml, key) in [
        ("[metrics]\nmax_series = 0\n", "metrics.max_series"),
        ("[logs]\nsimilarity = 7.5\n", "logs.similarity"),
        ("[metrics]\nlisten = \"nowhere\"\n", "listen"),
        ("[capture]\ncapture_byte = 1\n", "capture_byte"),
    ] {
        let (code, stdout, stderr) = run(toml);
        assert_eq!(code, Some(1), "{toml}");
        assert!(stdout.is_empty(), "{toml}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{toml}: {stderr}");
        assert!(stderr.contains(key), "{toml}: {stderr}");
    }
    let defaults = config_check(scratch.path(), "").unwrap();
    assert_eq!(text(&defaults, "/metrics/listen"), "127.0.0.1:9464");
    assert_eq!(text(&defaults, "/kubernetes/mode"), "auto");
}
