//! A "three hosts through a switch" network lab for the network-service-map tests: one switch
//! namespace holding a Linux bridge, and N host namespaces each plugged into it by a veth
//! pair, plus faults injected on one host's link (random loss, a rate limit that builds a
//! queue, an address that swallows SYNs) and nginx/curl/ping helpers that run inside a host.
//!
//! Everything lives inside namespaces the lab creates, so deleting them on drop (also while
//! unwinding from a panic) removes the veths, the bridge, nft tables and qdiscs with them and
//! leaves nothing in the root namespace. Namespaces are named `sonde-t-<pid>-L<n>…`, so
//! [`crate::remove_stale_netns`] also cleans up after a run that crashed outright.
//!
//! ```text
//!   host0 ns            switch ns                   host1 ns
//!   eth0 10.78.S.1 ──── vh0 ─┐            ┌─ vh1 ──── eth0 10.78.S.2
//!                            └── br0 ─────┤
//!                                         └─ vh2 ──── eth0 10.78.S.3   host2 ns
//! ```

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::httplab::Scratch;
use crate::netns::{CREATE, NETNS_PREFIX, ip, netns_list, remove_stale_netns_once};
use crate::wait_until;

/// Name of each host's interface, inside its own namespace.
pub const HOST_IF: &str = "eth0";
/// Name of the bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// nftables table (family `inet`, in a host namespace) that holds the loss fault.
pub const FAULT_TABLE: &str = "sonde_fault";
/// Most hosts a lab may have: host addresses must stay below [`BLACKHOLE_HOST`].
pub const MAX_HOSTS: usize = 100;
/// Last byte of the address nobody owns (see [`Lab::blackhole_addr`]).
pub const BLACKHOLE_HOST: u8 = 200;
/// Made-up, locally administered MAC that [`Lab::blackhole_addr`] resolves to.
pub const BLACKHOLE_MAC: &str = "02:00:00:00:00:c8";
/// The files [`LabNginx`] serves: URL path (without `/`) and length. The bytes are
/// [`lab_file`]`(name)`, so a test can check what it downloaded.
pub const LAB_FILES: [(&str, usize); 3] = [("small", 1 << 10), ("1m", 1 << 20), ("4m", 4 << 20)];

/// Labs created by this process so far: gives each one distinct names and a distinct subnet.
static LABS: AtomicU32 = AtomicU32::new(0);

/// One host of a [`Lab`]: a namespace whose [`HOST_IF`] is plugged into the switch.
#[derive(Debug, Clone)]
pub struct Host {
    ns: String,
    addr: Ipv4Addr,
    switch_port: String,
}

impl Host {
    /// Name of the host's network namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address on [`HOST_IF`] (10.78.S.(i+1), a /24).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Name of the veth end in the switch namespace that leads to this host.
    pub fn switch_port(&self) -> &str {
        &self.switch_port
    }
}

/// A switch namespace with bridge [`BRIDGE`] and N hosts on subnet 10.78.S.0/24, S differing
/// between labs (also across test binaries, most likely) so a daemon watching all namespaces
/// never confuses two labs' flows. Hosts have no default route: only the lab is reachable.
/// Dropping it deletes every namespace it created; processes still running in one keep that
/// namespace alive but nameless, so stop them first (e.g. drop [`LabNginx`] before the lab).
pub struct Lab {
    switch: String,
    hosts: Vec<Host>,
    subnet: u8,
    /// Namespaces actually created so far, which is what Drop deletes (setup may stop halfway).
    created: Vec<String>,
}

impl Lab {
    /// Creates the switch and `hosts` hosts (1..=[`MAX_HOSTS`]); the first fixture of a process
    /// also removes namespaces left behind by crashed earlier runs.
    pub fn new(hosts: usize) -> Result<Lab> {
        ensure!(
            (1..=MAX_HOSTS).contains(&hosts),
            "a lab has 1..={MAX_HOSTS} hosts, not {hosts}"
        );
        remove_stale_netns_once();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Offset by pid so concurrently running test binaries are unlikely to collide too.
        let subnet = u8::try_from(pid.wrapping_add(n) % 254 + 1).expect("< 255");
        let base = format!("{NETNS_PREFIX}{pid}-L{n}");
        // Built before setup so Drop removes whatever was created if a step fails.
        let mut lab = Lab {
            switch: format!("{base}sw"),
            hosts: (0..hosts)
                .map(|i| Host {
                    ns: format!("{base}h{i}"),
                    addr: Ipv4Addr::new(10, 78, subnet, u8::try_from(i + 1).expect("<= 100")),
                    switch_port: format!("vh{i}"),
                })
                .collect(),
            subnet,
            created: Vec::new(),
        };
        let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        lab.setup().context("setting up the network lab")?;
        Ok(lab)
    }

    fn setup(&mut self) -> Result<()> {
        let sw = self.switch.clone();
        self.add_ns(&sw)?;
        ip(&["-n", &sw, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;
        for host in self.hosts.clone() {
            self.add_ns(&host.ns)?;
            plug_in(&host, &sw)?;
        }
        Ok(())
    }

    /// `ip netns add`, remembering the namespace for Drop.
    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        Ok(())
    }

    /// Host `i` (0-based). Panics if the lab has no such host: that is a bug in the test.
    pub fn host(&self, i: usize) -> &Host {
        self.hosts
            .get(i)
            .unwrap_or_else(|| panic!("the lab has {} hosts, no host {i}", self.hosts.len()))
    }

    /// All hosts, in index order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Name of the switch namespace (the one holding [`BRIDGE`] and the switch ports).
    pub fn switch_ns(&self) -> &str {
        &self.switch
    }

    /// The lab's subnet, 10.78.S.0; hosts use prefix length 24.
    pub fn subnet(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.subnet, 0)
    }

    /// What this lab puts on the machine, for checking after drop that none of it remains.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            namespaces: self.created.clone(),
            root_ifaces: self.hosts.iter().map(|h| h.switch_port.clone()).collect(),
        }
    }

    /// Drops packets on `host`'s link at random, `percent` % in each direction (so a round
    /// trip survives with probability (1 - p)²): an nftables table [`FAULT_TABLE`] in the host's
    /// namespace with input and output chains on [`HOST_IF`]. Replaces an earlier loss fault.
    pub fn loss(&self, host: usize, percent: u8) -> Result<()> {
        ensure!(percent <= 100, "loss is a percentage, not {percent}");
        let ns = self.host(host).ns();
        // Declaring then deleting the table first makes the whole script an atomic replace.
        let script = format!(
            r#"
table inet {FAULT_TABLE} {{}}
delete table inet {FAULT_TABLE}
table inet {FAULT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{HOST_IF}" numgen random mod 100 < {percent} drop
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname "{HOST_IF}" numgen random mod 100 < {percent} drop
    }}
}}
"#
        );
        exec_stdin(ns, &["nft", "-f", "-"], &script)
            .with_context(|| format!("adding {percent}% loss on host {host}"))?;
        Ok(())
    }

    /// Removes the loss fault of `host` (nothing to do if there is none).
    pub fn clear_loss(&self, host: usize) -> Result<()> {
        let script = format!("table inet {FAULT_TABLE} {{}}\ndelete table inet {FAULT_TABLE}\n");
        exec_stdin(self.host(host).ns(), &["nft", "-f", "-"], &script)
            .with_context(|| format!("clearing the loss on host {host}"))?;
        Ok(())
    }

    /// Limits `host`'s link to `rate` (tc syntax, e.g. "4mbit") in both directions: a token
    /// bucket on the host's [`HOST_IF`] egress and on its switch port's egress. The bucket
    /// queues up to 500 ms of traffic instead of dropping early, so a bulk transfer to or from
    /// the host sees RTT rise while other hosts' traffic is unaffected.
    pub fn rate_limit(&self, host: usize, rate: &str) -> Result<()> {
        for (ns, dev) in self.link_ends(host) {
            tc(&[
                "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst",
                "16kb", "latency", "500ms",
            ])
            .with_context(|| format!("rate-limiting host {host} to {rate}"))?;
        }
        Ok(())
    }

    /// Removes the rate limit of `host` (nothing to do if there is none).
    pub fn clear_rate_limit(&self, host: usize) -> Result<()> {
        for (ns, dev) in self.link_ends(host) {
            // Deleting the default root qdisc fails, so only delete the one we added.
            if tc(&["-n", ns, "qdisc", "show", "dev", dev, "root"])?.contains("tbf") {
                tc(&["-n", ns, "qdisc", "del", "dev", dev, "root"])
                    .with_context(|| format!("clearing the rate limit of host {host}"))?;
            }
        }
        Ok(())
    }

    /// Both ends of `host`'s link as (namespace, interface).
    fn link_ends(&self, host: usize) -> [(&str, &str); 2] {
        let h = self.host(host);
        [(h.ns(), HOST_IF), (self.switch_ns(), h.switch_port())]
    }

    /// 10.78.S.[`BLACKHOLE_HOST`], an address in the lab that nobody owns, made to swallow
    /// connection attempts from `host`: a permanent neighbour entry there maps it to
    /// [`BLACKHOLE_MAC`], so a SYN really leaves the host and is flooded by the bridge, and
    /// nobody answers. A connect then times out, rather than failing at once on an
    /// unanswered ARP request (EHOSTUNREACH).
    pub fn blackhole_addr(&self, host: usize) -> Result<Ipv4Addr> {
        let addr = Ipv4Addr::new(10, 78, self.subnet, BLACKHOLE_HOST);
        let ns = self.host(host).ns();
        ip(&[
            "-n",
            ns,
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            BLACKHOLE_MAC,
            "dev",
            HOST_IF,
            "nud",
            "permanent",
        ])
        .with_context(|| format!("adding a black-hole neighbour on host {host}"))?;
        Ok(addr)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// Gives `host` its [`HOST_IF`] (addressed, up, `lo` up too) and plugs the other end of the
/// veth into the switch's bridge. Both ends are created directly in their namespaces, so their
/// names never clash with interfaces of the root namespace.
fn plug_in(host: &Host, switch: &str) -> Result<()> {
    let (ns, port) = (host.ns(), host.switch_port());
    ip(&[
        "link", "add", HOST_IF, "netns", ns, "type", "veth", "peer", "name", port, "netns", switch,
    ])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{}/24", host.addr()),
        "dev",
        HOST_IF,
    ])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "link", "set", HOST_IF, "up"])?;
    ip(&["-n", switch, "link", "set", port, "master", BRIDGE, "up"])?;
    Ok(())
}

/// What a [`Lab`] created, kept apart from the lab so it can be checked after the lab is gone.
#[derive(Debug, Clone)]
pub struct Footprint {
    namespaces: Vec<String>,
    /// Names that must never show up in the root namespace (the switch ports).
    root_ifaces: Vec<String>,
}

impl Footprint {
    /// The lab's namespaces that still exist and interfaces named like its switch ports in the
    /// root namespace; empty once the lab has been dropped cleanly.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let live = netns_list()?;
        let mut left: Vec<String> = self
            .namespaces
            .iter()
            .filter(|ns| live.contains(ns))
            .map(|ns| format!("namespace {ns}"))
            .collect();
        let root = root_interfaces()?;
        left.extend(
            self.root_ifaces
                .iter()
                .filter(|i| root.contains(i))
                .map(|i| format!("root-namespace interface {i}")),
        );
        Ok(left)
    }

    /// Namespace names of the lab (switch first, then hosts).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

/// Interface names in the root namespace, from `ip -o link` (lines like `5: vh0@if4: <…`).
pub fn root_interfaces() -> Result<Vec<String>> {
    Ok(ip(&["-o", "link"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect())
}

/// Runs `cmd` inside namespace `ns` (`ip netns exec`), failing on a nonzero exit with the
/// command and its stderr; returns its stdout.
pub fn exec(ns: &str, cmd: &[&str]) -> Result<String> {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(cmd);
    ip(&args)
}

/// Runs `cmd` inside namespace `ns` and returns its exit status and output whatever they are,
/// for commands whose failure is the point (ping with loss, curl to a closed port).
pub fn exec_output(ns: &str, cmd: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .with_context(|| format!("running `ip netns exec {ns} {}`", cmd.join(" ")))
}

/// Starts `cmd` inside namespace `ns` with stdin, stdout and stderr all null (a background
/// load or server whose output nobody reads; run it through `sh -c '… >FILE'` to keep it).
/// `ip netns exec` execs `cmd` in place, so the child's pid is `cmd`'s and killing it kills
/// `cmd`.
pub fn spawn(ns: &str, cmd: &[&str]) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning `ip netns exec {ns} {}`", cmd.join(" ")))
}

/// Runs `cmd` inside `ns` with `input` on its stdin (nft scripts), failing on a nonzero exit.
fn exec_stdin(ns: &str, cmd: &[&str], input: &str) -> Result<String> {
    let what = format!("`ip netns exec {ns} {}`", cmd.join(" "));
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .with_context(|| format!("writing the stdin of {what}"))?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {what}"))?;
    check(&what, out)
}

/// Runs `tc ARGS...` (iproute2), failing with its stderr on a nonzero exit; returns stdout.
fn tc(args: &[&str]) -> Result<String> {
    let what = format!("`tc {}`", args.join(" "));
    let out = Command::new("tc")
        .args(args)
        .output()
        .with_context(|| format!("running {what} (Debian package iproute2)"))?;
    check(&what, out)
}

/// Stdout of a finished command, or an error naming it with its status and stderr.
fn check(what: &str, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{what} printed non-UTF-8 output"))
}

/// The bytes of [`LAB_FILES`] entry `name`: a [`crate::pattern`] stream seeded by its index.
pub fn lab_file(name: &str) -> Option<Vec<u8>> {
    let (i, (_, len)) = LAB_FILES
        .iter()
        .enumerate()
        .find(|(_, (n, _))| *n == name)?;
    Some(crate::pattern(0x1ab0 + i as u64, *len))
}

/// nginx (Debian's package) serving [`LAB_FILES`] on one host's address, run inside that
/// host's namespace: one process (no master), access log of
/// `$remote_addr $request_method $uri $status $body_bytes_sent` lines. `sendfile` is off so
/// bodies go through ordinary socket writes. Killed on drop.
pub struct LabNginx {
    child: Child,
    addr: Ipv4Addr,
    port: u16,
    dir: Scratch,
}

impl LabNginx {
    /// Starts nginx on `lab.host(host)`'s address and `port`; returns once a request from
    /// inside that namespace gets a 200.
    pub fn start(lab: &Lab, host: usize, port: u16) -> Result<LabNginx> {
        Self::start_wrapped(lab, host, port, &[])
    }

    /// As [`LabNginx::start`], with `ip netns exec … nginx` run through `wrapper` (a command
    /// that execs its arguments, e.g. [`crate::cgroups::FakeContainer::wrapper`] to start it
    /// in a container's cgroups).
    pub fn start_wrapped(
        lab: &Lab,
        host: usize,
        port: u16,
        wrapper: &[String],
    ) -> Result<LabNginx> {
        let h = lab.host(host);
        let dir = Scratch::new("labnginx");
        write_site(&dir, h.addr(), port)?;
        let conf = dir.path().join("nginx.conf");
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        // The wrapper runs first, outside the namespace: `ip netns exec` remounts /sys, and
        // the cgroup file systems are not under the new mount.
        let mut argv: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        argv.extend(["ip", "netns", "exec", h.ns(), "nginx", "-c"]);
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting nginx (Debian package nginx-light) in the lab")?;
        let mut nginx = LabNginx {
            child,
            addr: h.addr(),
            port,
            dir,
        };
        let probe = nginx.url("/small");
        wait_until(Duration::from_secs(20), "lab nginx to answer", || {
            if let Ok(Some(st)) = nginx.child.try_wait() {
                return Some(Err(anyhow::anyhow!(
                    "nginx exited ({st}): {}",
                    nginx.logs()
                )));
            }
            let cmd = [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "1",
            ];
            let out = exec_output(h.ns(), &[&cmd[..], &[probe.as_str()]].concat());
            out.ok().filter(|o| o.stdout == b"200").map(|_| Ok(()))
        })??;
        Ok(nginx)
    }

    /// `http://ADDR:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.addr, self.port)
    }

    /// The address nginx listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The access log so far (one line per request, format in the type's docs).
    pub fn access_log(&self) -> Result<String> {
        let path = self.dir.path().join("access.log");
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// nginx's error log and stderr, for error messages.
    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("error.log"), read("stderr.log"))
    }
}

impl Drop for LabNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `www/` with [`LAB_FILES`] and `nginx.conf` listening on `addr:port` into `dir`.
fn write_site(dir: &Scratch, addr: Ipv4Addr, port: u16) -> Result<()> {
    let www: PathBuf = dir.path().join("www");
    std::fs::create_dir_all(&www)?;
    for (name, _) in LAB_FILES {
        std::fs::write(www.join(name), lab_file(name).expect("listed"))
            .with_context(|| format!("writing {name} into {}", www.display()))?;
    }
    let d = dir.path().display();
    let conf = format!(
        r#"
user root;
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format sonde '$remote_addr $request_method $uri $status $body_bytes_sent';
    access_log {d}/access.log sonde;
    default_type application/octet-stream;
    sendfile off;
    client_body_temp_path {d}/tmp_body;
    proxy_temp_path {d}/tmp_proxy;
    fastcgi_temp_path {d}/tmp_fcgi;
    uwsgi_temp_path {d}/tmp_uwsgi;
    scgi_temp_path {d}/tmp_scgi;
    server {{
        listen {addr}:{port};
        root {d}/www;
    }}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).context("writing nginx.conf")
}

/// Runs `curl -sS --max-time 60 ARGS...` inside `lab.host(host)`'s namespace, failing on a
/// nonzero exit (HTTP errors are not curl errors); returns stdout. Later `--max-time` in
/// `args` wins.
pub fn lab_curl(lab: &Lab, host: usize, args: &[&str]) -> Result<String> {
    let run = lab_curl_status(lab, host, args)?;
    ensure!(
        run.code == 0,
        "curl {args:?} on host {host} exited {}: {}",
        run.code,
        run.stderr.trim()
    );
    Ok(run.stdout)
}

/// How a curl run ended: exit code (7 refused/unreachable, 28 timeout), output, wall time.
#[derive(Debug, Clone)]
pub struct CurlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Like [`lab_curl`] but reports any exit code instead of failing on it (connect failures are
/// what some tests want).
pub fn lab_curl_status(lab: &Lab, host: usize, args: &[&str]) -> Result<CurlRun> {
    let mut cmd = vec!["curl", "-sS", "--max-time", "60"];
    cmd.extend_from_slice(args);
    let start = Instant::now();
    let out = exec_output(lab.host(host).ns(), &cmd)?;
    let elapsed = start.elapsed();
    let code = out
        .status
        .code()
        .with_context(|| format!("curl {args:?} on host {host} was killed ({})", out.status))?;
    Ok(CurlRun {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    })
}

/// Echo requests sent and replies received by one [`ping`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

impl PingStats {
    /// Lost share of the requests, in percent.
    pub fn loss_percent(&self) -> f64 {
        if self.transmitted == 0 {
            return 0.0;
        }
        100.0 * f64::from(self.transmitted - self.received) / f64::from(self.transmitted)
    }
}

/// Pings `target` `count` times from `lab.host(host)`, 10 ms apart, waiting up to 1 s for a
/// late reply. Loss is a result here, not an error (ping exits 1 when any reply is missing).
pub fn ping(lab: &Lab, host: usize, target: Ipv4Addr, count: u32) -> Result<PingStats> {
    let (count, target) = (count.to_string(), target.to_string());
    let cmd = [
        "ping", "-q", "-n", "-c", &count, "-i", "0.01", "-W", "1", &target,
    ];
    let out = exec_output(lab.host(host).ns(), &cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping(&text).with_context(|| {
        format!(
            "no summary from `{}` ({}): {text}{}",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Reads `50 packets transmitted, 31 received, …` from ping's summary.
fn parse_ping(text: &str) -> Option<PingStats> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let number_before = |suffix: &str| -> Option<u32> {
        line.split(", ")
            .find_map(|part| part.strip_suffix(suffix))?
            .trim()
            .parse()
            .ok()
    };
    Some(PingStats {
        transmitted: number_before(" packets transmitted")?,
        received: number_before(" received")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summary() {
        let text = "--- 10.78.3.1 ping statistics ---\n\
                    50 packets transmitted, 31 received, 38% packet loss, time 612ms\n";
        let s = parse_ping(text).unwrap();
        assert_eq!(
            s,
            PingStats {
                transmitted: 50,
                received: 31
            }
        );
        assert!((s.loss_percent() - 38.0).abs() < 1e-9);
        let errs = "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4ms";
        assert_eq!(parse_ping(errs).unwrap().received, 0);
        assert!(parse_ping("connect: Network is unreachable").is_none());
    }

    #[test]
    fn lab_files_are_deterministic_and_sized() {
        for (name, len) in LAB_FILES {
            assert_eq!(lab_file(name).unwrap().len(), len);
        }
        assert_eq!(lab_file("1m"), lab_file("1m"));
        assert!(lab_file("nope").is_none());
    }
}
