#!/usr/bin/env python3
"""Sonde fault lab: a small shop (gateway, cart, product, config, MariaDB, dnsmasq and a load
generator) in network namespaces on this machine, seven fault injectors, and a runner that
starts Sonde on it, injects a fault, waits for Sonde's incident report and scores it.

Everything the lab creates is named with the prefix sl<4 hex>- (namespaces), sl<4 hex>
(cgroups), and listed in /run/sonde-lab/<lab>.json while it exists; teardown runs on normal
exit, exceptions, SIGINT and SIGTERM, and `lab.py cleanup` removes what a killed run left.
See README.md next to this file. Python 3 standard library only (the services need pymysql).
"""
import argparse
import atexit
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SVC = os.path.join(HERE, "svc.py")
# The services need python3-pymysql, a Debian package: use Debian's interpreter, not
# whatever python3 comes first on PATH (pyenv and the like).
SVC_PYTHON = os.environ.get("SONDE_LAB_PYTHON", "/usr/bin/python3")
STATE_DIR = "/run/sonde-lab"
WORK_ROOT = os.environ.get("SONDE_LAB_DIR", "/tmp/sonde-lab")
LAB_RE = re.compile(r"^sl[0-9a-f]{4}$")
NS_RE = re.compile(r"^sl[0-9a-f]{4}-")
SERVICE_PORT = 8080
DB_PORT = 3306
SERVICES = ("gateway", "cart", "product", "config")
# host key -> (namespace suffix, last address byte, process role)
HOSTS = {
    "gateway": ("gw", 1), "cart": ("cart", 2), "product": ("product", 3), "config": ("config", 4),
    "db": ("db", 5), "dns": ("dns", 6), "client": ("client", 7),
}
HOST_IF = "eth0"
BRIDGE = "br0"
FAULT_TABLE = "sonde_lab_fault"
DNS_NAMES = {"gateway.lab": "gateway", "cart.lab": "cart", "product.lab": "product",
             "config.lab": "config", "db.lab": "db"}
LOAD_RATE = 25.0
LOAD_MIX = [["GET /api/home", 50], ["GET /api/cart", 30], ["POST /api/checkout", 20]]
DB_ROWS = 5000
DB_CATEGORIES = 50

FAULTS = {
    "loss": {"expected": {"kind": "edge", "caller": "gateway", "callee": "cart"}, "class": "network",
             "what": "nftables in the cart namespace drops 20% of packets on its veth, both directions"},
    "bandwidth": {"expected": {"kind": "edge", "caller": "gateway", "callee": "config"}, "class": "network",
                  "what": "tc tbf on config's veth egress, 300 kbit"},
    "cpu": {"expected": {"kind": "service", "name": "product"}, "class": "cpu-saturation",
            "what": "CPU quota of product's cgroup set to 3 ms per 100 ms"},
    "errors": {"expected": {"kind": "service", "name": "cart"}, "class": "code-error",
               "what": "cart answers 500 to 60% of POST /cart/checkout"},
    "slow": {"expected": {"kind": "service", "name": "cart"}, "class": "service-slow",
             "what": "cart sleeps 250 ms in every request"},
    "slow-sql": {"expected": {"kind": "service", "name": "mariadbd"}, "class": "database-slow",
                 "what": "product's query spends SLEEP(0.25) inside MariaDB"},
    "dns": {"expected": {"kind": "service", "name": "gateway"}, "class": "dns-failure",
            "what": "config.lab removed from dnsmasq's hosts (SIGHUP): NXDOMAIN"},
}
# The cluster lab (--cluster): three nodes, each a set of hosts (network namespaces) that one
# scoped `sonde run` watches. Every call of the shop but config's crosses a node boundary.
NODES = {"node-a": ("gateway", "client"), "node-b": ("cart", "product", "config"), "node-c": ("db", "dns")}
# Where each fault's root cause lives (what the hub's report must name besides the element).
FAULT_NODE = {"loss": "node-b", "bandwidth": "node-b", "cpu": "node-b", "errors": "node-b",
              "slow": "node-b", "slow-sql": "node-c", "dns": "node-a"}
# Magnitudes that can be changed without editing the table above (the defaults are what it says).
BW_RATE = os.environ.get("SONDE_LAB_BW_RATE", "300kbit")
CPU_QUOTA_US = int(os.environ.get("SONDE_LAB_CPU_QUOTA_US", "3000"))
LOSS_PCT = int(os.environ.get("SONDE_LAB_LOSS_PCT", "20"))


def log(msg):
    sys.stderr.write(f"[lab {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so `finally` blocks run."""


def _on_signal(signum, _frame):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"signal {signum}")


def run(cmd, check=True, input=None, timeout=60):
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.strip()}")
    return p


def netns_list():
    p = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def netns_pids(ns):
    p = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def kill_pids(pids, grace=3.0):
    """SIGTERM each pid, then SIGKILL what is still alive after `grace` seconds."""
    pids = {p for p in pids if p and p != os.getpid() and pid_alive(p)}
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    end = time.time() + grace
    while time.time() < end and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if pid_alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    end = time.time() + 3
    while time.time() < end and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    # Reap our own children so they do not linger as zombies.
    for p in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, os.WNOHANG)


# --- cgroups ---------------------------------------------------------------------------------

def cgroup_roots():
    """[(kind, mount)] where the lab makes its cgroups: pure cgroup v2 -> [("v2", /sys/fs/cgroup)];
    hybrid -> the v1 cpu hierarchy (for the quota) and the unified v2 one (membership only)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return [("v2", "/sys/fs/cgroup")]
    roots = []
    for name in ("cpu", "cpu,cpuacct"):
        p = f"/sys/fs/cgroup/{name}"
        if os.path.exists(os.path.join(p, "cpu.cfs_quota_us")):
            roots.append(("v1cpu", os.path.realpath(p)))
            break
    if os.path.exists("/sys/fs/cgroup/unified/cgroup.procs"):
        roots.append(("v2", "/sys/fs/cgroup/unified"))
    return roots


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def cgroup_procs(path):
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def remove_cgroup_tree(path):
    """Kill everything in the tree, then rmdir leaves before parents."""
    if not os.path.isdir(path):
        return
    dirs = [d for d, _, _ in os.walk(path)]
    pids = set()
    for d in dirs:
        pids.update(cgroup_procs(d))
    kill_pids(pids)
    for d in sorted(dirs, key=len, reverse=True):
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                kill_pids(cgroup_procs(d), grace=0.5)
                time.sleep(0.1)


# --- the lab ---------------------------------------------------------------------------------

class Lab:
    def __init__(self, name, keep_dir=False):
        assert LAB_RE.match(name), name
        self.name = name
        self.dir = os.path.join(WORK_ROOT, name)
        self.keep_dir = keep_dir
        self.state_path = os.path.join(STATE_DIR, f"{name}.json")
        self.state = {"name": name, "owner_pid": os.getpid(), "dir": self.dir, "namespaces": [],
                      "netns_dirs": [], "cgroups": [], "pids": {}, "subnet": None}
        self.procs = {}
        self.torn_down = False

    # state file ------------------------------------------------------------------------------
    def save(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = self.state_path + ".tmp"
        write(tmp, json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    @classmethod
    def from_state(cls, path):
        with open(path) as f:
            st = json.load(f)
        lab = cls(st["name"])
        lab.state = st
        lab.dir = st["dir"]
        return lab

    # names -----------------------------------------------------------------------------------
    def ns(self, host):
        return f"{self.name}-{HOSTS[host][0]}"

    @property
    def switch(self):
        return f"{self.name}-sw"

    def ip(self, host):
        return f"10.79.{self.state['subnet']}.{HOSTS[host][1]}"

    def cgroup_dirs(self, leaf=None):
        return [(kind, os.path.join(root, self.name, leaf) if leaf else os.path.join(root, self.name))
                for kind, root in cgroup_roots()]

    # build -----------------------------------------------------------------------------------
    def build(self):
        t0 = time.monotonic()
        self.state["subnet"] = pick_subnet()
        os.makedirs(os.path.join(self.dir, "faults"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.save()
        log(f"building lab {self.name} in {self.dir}, subnet 10.79.{self.state['subnet']}.0/24")
        # MariaDB's data directory takes the longest: start it first, in the background.
        datadir = os.path.join(self.dir, "db", "data")
        os.makedirs(os.path.dirname(datadir), exist_ok=True)
        install = subprocess.Popen(
            ["mariadb-install-db", "--no-defaults", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db", f"--datadir={datadir}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "logs", "install-db.log"), "w"),
            start_new_session=True)
        self.add_ns(self.switch)
        run(["ip", "-n", self.switch, "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "-n", self.switch, "link", "set", BRIDGE, "up"])
        run(["ip", "-n", self.switch, "link", "set", "lo", "up"])
        for host in HOSTS:
            ns = self.ns(host)
            self.add_ns(ns)
            port = f"v-{HOSTS[host][0]}"
            run(["ip", "link", "add", HOST_IF, "netns", ns, "type", "veth", "peer", "name", port,
                 "netns", self.switch])
            run(["ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", HOST_IF])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "link", "set", HOST_IF, "up"])
            run(["ip", "-n", self.switch, "link", "set", port, "master", BRIDGE, "up"])
            d = f"/etc/netns/{ns}"
            os.makedirs(d, exist_ok=True)
            self.state["netns_dirs"].append(d)
            self.save()
            write(os.path.join(d, "resolv.conf"),
                  f"nameserver {self.ip('dns')}\noptions timeout:1 attempts:1\n")
        self.make_cgroups()
        self.write_conf()
        self.write_hosts(DNS_NAMES)
        self.spawn("dns", "dns", ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--user=root",
                                  "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
                                  f"--listen-address={self.ip('dns')}", "--port=53",
                                  f"--addn-hosts={self.hosts_file}", "--local=/lab/", "--no-negcache",
                                  f"--pid-file={os.path.join(self.dir, 'dnsmasq.pid')}"])
        if install.wait(timeout=120) != 0:
            raise RuntimeError("mariadb-install-db failed: " + open(os.path.join(self.dir, "logs", "install-db.log")).read())
        sock = os.path.join(self.dir, "db", "mysqld.sock")
        self.spawn("db", "db", ["mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}",
                                f"--bind-address={self.ip('db')}", f"--port={DB_PORT}",
                                "--skip-grant-tables", "--skip-name-resolve", f"--socket={sock}",
                                f"--pid-file={os.path.join(self.dir, 'db', 'mysqld.pid')}",
                                f"--log-error={os.path.join(self.dir, 'logs', 'mariadbd.err')}",
                                "--innodb-buffer-pool-size=64M", "--max-connections=500"])
        wait_for(lambda: os.path.exists(sock) and self.sql("SELECT 1", check=False).returncode == 0,
                 60, "mariadbd to accept connections", self.check_procs)
        self.sql(
            "SET SESSION max_recursive_iterations = 1000000; CREATE DATABASE shop; CREATE TABLE shop.products (id INT PRIMARY KEY, sku VARCHAR(32), "
            "name VARCHAR(100), category INT, price DECIMAL(10,2), stock INT, "
            "KEY by_category_price (category, price));"
            f"INSERT INTO shop.products WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
            f"WHERE n < {DB_ROWS}) SELECT n, CONCAT('sku-', n), CONCAT('Product number ', n), "
            f"1 + (n * 7919) % {DB_CATEGORIES}, ROUND(1 + (n * 104729) % 50000 / 100, 2), n % 97 FROM s;"
            "ANALYZE TABLE shop.products;")
        for svc in SERVICES:
            self.spawn(svc, svc, [SVC_PYTHON, SVC, svc, self.dir])
        wait_for(self.services_healthy, 30, "all four services to answer /health", self.check_procs)
        self.spawn("loadgen", "client", [SVC_PYTHON, SVC, "loadgen", self.dir])
        self.wait_load_clean(timeout=60)
        self.state["build_s"] = round(time.monotonic() - t0, 1)
        self.save()
        log(f"lab {self.name} is up in {self.state['build_s']} s; load runs without errors")

    def add_ns(self, ns):
        run(["ip", "netns", "add", ns])
        self.state["namespaces"].append(ns)
        self.save()

    def make_cgroups(self):
        roots = cgroup_roots()
        if not roots:
            raise RuntimeError("no cgroup hierarchy found under /sys/fs/cgroup")
        for kind, root in roots:
            top = os.path.join(root, self.name)
            if kind == "v2" and root == "/sys/fs/cgroup":
                with contextlib.suppress(OSError):
                    write(os.path.join(root, "cgroup.subtree_control"), "+cpu")
            os.makedirs(top, exist_ok=True)
            self.state["cgroups"].append(top)
            self.save()
            if kind == "v2" and root == "/sys/fs/cgroup":
                write(os.path.join(top, "cgroup.subtree_control"), "+cpu")
            for leaf in list(SERVICES) + ["db", "dns", "loadgen"]:
                os.makedirs(os.path.join(top, leaf), exist_ok=True)

    def write_conf(self):
        conf = {
            "lab": self.name, "service_port": SERVICE_PORT, "upstream_timeout_s": 2.0,
            "hosts": {h: {"ip": self.ip(h), "ns": self.ns(h)} for h in HOSTS},
            "db": {"host": "db.lab", "port": DB_PORT, "categories": DB_CATEGORIES},
            "load": {"rate": LOAD_RATE, "mix": LOAD_MIX, "timeout_s": 10, "max_inflight": 250},
            "config_bytes": 32768,
        }
        write(os.path.join(self.dir, "lab.json"), json.dumps(conf, indent=1))

    @property
    def hosts_file(self):
        return os.path.join(self.dir, "lab.hosts")

    def write_hosts(self, names):
        tmp = self.hosts_file + ".tmp"
        write(tmp, "".join(f"{self.ip(h)} {n}\n" for n, h in names.items()))
        os.replace(tmp, self.hosts_file)

    def spawn(self, key, host, argv):
        """Starts argv in HOST's namespace (`ip netns exec` execs in place, so the pid is the
        program's), in its own session and in cgroup <lab>/<key> of every hierarchy."""
        ns = self.ns(host)
        procs_files = [os.path.join(d, "cgroup.procs") for _, d in self.cgroup_dirs(key)
                       if os.path.isdir(d)]

        def pre():
            pid = str(os.getpid())
            for p in procs_files:
                with open(p, "w") as f:
                    f.write(pid)

        out = open(os.path.join(self.dir, "logs", f"{key}.log"), "ab")
        cmd = ["ip", "netns", "exec", ns] + argv
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=pre, start_new_session=True)
        out.close()
        self.procs[key] = p
        self.state["pids"][key] = p.pid
        self.save()
        return p

    def check_procs(self):
        for key, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{key} exited with {p.returncode}; log:\n{self.tail_log(key)}")

    def tail_log(self, key, n=30):
        with contextlib.suppress(OSError):
            with open(os.path.join(self.dir, "logs", f"{key}.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        return ""

    def sql(self, sql, check=True):
        return run(["mariadb", "--no-defaults", "-u", "root",
                    f"--socket={os.path.join(self.dir, 'db', 'mysqld.sock')}", "--batch", "-e", sql],
                   check=check)

    def exec(self, host, cmd, check=True, timeout=30):
        return run(["ip", "netns", "exec", self.ns(host)] + cmd, check=check, timeout=timeout)

    def services_healthy(self):
        for svc in SERVICES:
            p = self.exec("client", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
                                     f"http://{svc}.lab:{SERVICE_PORT}/health"], check=False)
            if p.stdout.strip() != "200":
                return False
        return True

    # load generator stats -------------------------------------------------------------------
    def load_records(self, since=0, until=None):
        out = []
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(self.dir, "loadgen.jsonl")) as f:
                for line in f:
                    with contextlib.suppress(ValueError):
                        r = json.loads(line)
                        if r["t"] > since and (until is None or r["t"] <= until):
                            out.append(r)
        return out

    def load_summary(self, since, until=None):
        return summarize(self.load_records(since, until))

    def wait_load_clean(self, timeout=60, seconds=5):
        """Until the load generator has run `seconds` consecutive seconds without errors."""
        def ok():
            self.check_procs()
            recs = self.load_records(time.time() - seconds - 2)
            recs = recs[-seconds:]
            return len(recs) == seconds and all(r["n"] > 0 and r["err"] == 0 for r in recs)
        wait_for(ok, timeout, f"{seconds} s of error-free load")

    # faults ----------------------------------------------------------------------------------
    def fault_file(self, svc, obj):
        path = os.path.join(self.dir, "faults", f"{svc}.json")
        if obj is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        tmp = path + ".tmp"
        write(tmp, json.dumps(obj))
        os.replace(tmp, path)

    def set_cpu_quota(self, svc, quota_us, period_us=100000):
        done = False
        for kind, d in self.cgroup_dirs(svc):
            if kind == "v1cpu":
                write(os.path.join(d, "cpu.cfs_period_us"), str(period_us))
                write(os.path.join(d, "cpu.cfs_quota_us"), str(quota_us if quota_us else -1))
                done = True
            elif kind == "v2" and os.path.exists(os.path.join(d, "cpu.max")):
                write(os.path.join(d, "cpu.max"), f"{quota_us if quota_us else 'max'} {period_us}")
                done = True
        if not done:
            raise RuntimeError(f"no CPU controller for {svc}'s cgroup")

    def dnsmasq_reload(self):
        os.kill(self.state["pids"]["dns"], signal.SIGHUP)

    def inject(self, fault):
        if fault == "loss":
            script = (f"table inet {FAULT_TABLE} {{}}\ndelete table inet {FAULT_TABLE}\n"
                      f"table inet {FAULT_TABLE} {{\n"
                      f"  chain input {{ type filter hook input priority filter; policy accept;\n"
                      f"    iifname \"{HOST_IF}\" numgen random mod 100 < {LOSS_PCT} drop\n  }}\n"
                      f"  chain output {{ type filter hook output priority filter; policy accept;\n"
                      f"    oifname \"{HOST_IF}\" numgen random mod 100 < {LOSS_PCT} drop\n  }}\n}}\n")
            run(["ip", "netns", "exec", self.ns("cart"), "nft", "-f", "-"], input=script)
        elif fault == "bandwidth":
            run(["tc", "-n", self.ns("config"), "qdisc", "replace", "dev", HOST_IF, "root", "tbf",
                 "rate", BW_RATE, "burst", "16kb", "latency", "500ms"])
        elif fault == "cpu":
            self.set_cpu_quota("product", CPU_QUOTA_US)
        elif fault == "errors":
            self.fault_file("cart", {"error_rate": 0.6})
        elif fault == "slow":
            self.fault_file("cart", {"delay_ms": 250})
        elif fault == "slow-sql":
            self.fault_file("product", {"sql_sleep_s": 0.25})
        elif fault == "dns":
            self.write_hosts({n: h for n, h in DNS_NAMES.items() if n != "config.lab"})
            self.dnsmasq_reload()
        else:
            raise ValueError(f"unknown fault {fault}")
        self.state.setdefault("faults", [])
        if fault not in self.state["faults"]:
            self.state["faults"].append(fault)
        self.save()

    def clear(self, fault):
        if fault == "loss":
            run(["ip", "netns", "exec", self.ns("cart"), "nft", "-f", "-"],
                input=f"table inet {FAULT_TABLE} {{}}\ndelete table inet {FAULT_TABLE}\n")
        elif fault == "bandwidth":
            if "tbf" in run(["tc", "-n", self.ns("config"), "qdisc", "show", "dev", HOST_IF, "root"]).stdout:
                run(["tc", "-n", self.ns("config"), "qdisc", "del", "dev", HOST_IF, "root"])
        elif fault == "cpu":
            self.set_cpu_quota("product", None)
        elif fault in ("errors", "slow"):
            self.fault_file("cart", None)
        elif fault == "slow-sql":
            self.fault_file("product", None)
        elif fault == "dns":
            self.write_hosts(DNS_NAMES)
            self.dnsmasq_reload()
        else:
            raise ValueError(f"unknown fault {fault}")
        with contextlib.suppress(ValueError, KeyError):
            self.state["faults"].remove(fault)
        self.save()

    # teardown --------------------------------------------------------------------------------
    def teardown(self):
        """Idempotent: stops every process, deletes namespaces, /etc/netns dirs and cgroups,
        the lab directory (unless kept) and the state file. Returns what is still left."""
        if self.torn_down:
            return []
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            pids = set(self.state["pids"].values())
            # Also what was started but not recorded (mariadb-install-db and its bootstrap
            # server while the lab is being built): their command lines name the lab directory.
            pids.update(lab_processes(self.name))
            for ns in self.state["namespaces"]:
                pids.update(netns_pids(ns))
            for cg in self.state["cgroups"]:
                for d, _, _ in os.walk(cg):
                    pids.update(cgroup_procs(d))
            kill_pids(pids)
            for p in self.procs.values():
                with contextlib.suppress(Exception):
                    p.wait(timeout=1)
            live = set(netns_list())
            for ns in reversed(self.state["namespaces"]):
                if ns in live:
                    run(["ip", "netns", "del", ns], check=False)
            for d in self.state["netns_dirs"]:
                shutil.rmtree(d, ignore_errors=True)
            for cg in self.state["cgroups"]:
                remove_cgroup_tree(cg)
            if not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            left = self.leftovers()
            if not left:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.state_path)
            self.torn_down = True
            return left
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def leftovers(self):
        left = [f"namespace {ns}" for ns in netns_list() if ns.startswith(self.name + "-")]
        left += [f"/etc/netns/{d}" for d in os.listdir("/etc/netns")
                 if d.startswith(self.name + "-")] if os.path.isdir("/etc/netns") else []
        left += [f"cgroup {os.path.join(r, self.name)}" for _, r in cgroup_roots()
                 if os.path.exists(os.path.join(r, self.name))]
        left += [f"process {p}" for p in self.state["pids"].values() if pid_alive(p)]
        left += [f"process {p} ({comm(p)})" for p in lab_processes(self.name)]
        return sorted(set(left))


def comm(pid):
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    return "?"


def lab_processes(name_prefix=None):
    """Live processes whose command line mentions a lab directory (WORK_ROOT/sl....)."""
    pat = re.compile(re.escape(WORK_ROOT) + r"/(" + (re.escape(name_prefix) if name_prefix else r"sl[0-9a-f]{4}") + r")\b")
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            if pat.search(cmd) and pid_alive(int(d)):
                out.append(int(d))
    return out


def pick_subnet():
    used = set()
    for line in run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout.splitlines():
        m = re.match(r"(?:local |broadcast )?10\.79\.(\d+)\.", line)
        if m:
            used.add(int(m.group(1)))
    with contextlib.suppress(FileNotFoundError):
        for f in os.listdir(STATE_DIR):
            with contextlib.suppress(Exception):
                used.add(json.load(open(os.path.join(STATE_DIR, f)))["subnet"])
    free = [s for s in range(1, 255) if s not in used]
    return random.choice(free)


def summarize(recs):
    n = sum(r["n"] for r in recs)
    err = sum(r["err"] for r in recs)
    lat = sum((r["mean_ms"] or 0) * r["n"] for r in recs)
    ep = {}
    for r in recs:
        for k, v in r.get("ep", {}).items():
            e = ep.setdefault(k, [0, 0, 0.0])
            e[0] += v["n"]
            e[1] += v["err"]
            e[2] += v["mean_ms"] * v["n"]
    secs = len(recs)
    return {
        "seconds": secs, "requests": n, "rate_per_s": round(n / secs, 1) if secs else 0,
        "errors": err, "error_ratio": round(err / n, 3) if n else None,
        "mean_ms": round(lat / n, 1) if n else None,
        "p95_ms_max": max((r["p95_ms"] or 0 for r in recs), default=None),
        "shed": sum(r.get("shed", 0) for r in recs),
        "endpoints": {k: {"requests": v[0], "error_ratio": round(v[1] / v[0], 3) if v[0] else None,
                          "mean_ms": round(v[2] / v[0], 1) if v[0] else None} for k, v in sorted(ep.items())},
    }


def fmt_summary(s):
    if not s or not s["requests"]:
        return "no requests"
    eps = ", ".join(f"{k.split()[1]} {v['mean_ms']} ms/{100 * (v['error_ratio'] or 0):.0f}% err"
                    for k, v in s["endpoints"].items())
    return (f"{s['rate_per_s']}/s, errors {100 * s['error_ratio']:.1f}%, mean {s['mean_ms']} ms, "
            f"p95 max {s['p95_ms_max']} ms [{eps}]")


def wait_for(pred, timeout, what, also=None):
    end = time.monotonic() + timeout
    while True:
        if also:
            also()
        if pred():
            return
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


# --- cleanup of earlier runs -----------------------------------------------------------------

def cleanup_all(force=False, quiet=False):
    """Removes what earlier lab runs left: labs from state files (unless their owner still runs,
    or force), then anything named with the lab prefix. Returns the leftovers afterwards."""
    removed = []
    skip = set()
    with contextlib.suppress(FileNotFoundError):
        for f in sorted(os.listdir(STATE_DIR)):
            if not f.endswith(".json"):
                continue
            path = os.path.join(STATE_DIR, f)
            try:
                lab = Lab.from_state(path)
            except Exception:
                os.unlink(path)
                continue
            owner = lab.state.get("owner_pid")
            if not force and owner and owner != os.getpid() and pid_alive(owner):
                skip.add(lab.name)
                if not quiet:
                    log(f"leaving lab {lab.name} alone: its runner (pid {owner}) is still running")
                continue
            lab.keep_dir = False
            lab.teardown()
            removed.append(lab.name)
    names = set()
    for ns in netns_list():
        if NS_RE.match(ns):
            names.add(ns.split("-")[0])
    if os.path.isdir("/etc/netns"):
        names.update(d.split("-")[0] for d in os.listdir("/etc/netns") if NS_RE.match(d))
    for _, root in cgroup_roots():
        with contextlib.suppress(OSError):
            names.update(d for d in os.listdir(root) if LAB_RE.match(d) and os.path.isdir(os.path.join(root, d)))
    if force:  # lab directories kept with --keep-dir are only removed by `lab.py cleanup`
        with contextlib.suppress(OSError):
            names.update(d for d in os.listdir(WORK_ROOT) if LAB_RE.match(d))
    for name in sorted(names - skip):
        lab = Lab(name)
        lab.state["namespaces"] = [ns for ns in netns_list() if ns.startswith(name + "-")]
        lab.state["netns_dirs"] = [f"/etc/netns/{d}" for d in os.listdir("/etc/netns")
                                   if d.startswith(name + "-")] if os.path.isdir("/etc/netns") else []
        lab.state["cgroups"] = [os.path.join(r, name) for _, r in cgroup_roots()]
        lab.state["pids"] = {f"p{p}": p for p in lab_processes(name)}
        lab.teardown()
        removed.append(name)
    if removed and not quiet:
        log(f"removed leftovers of lab(s): {', '.join(sorted(set(removed)))}")
    left = []
    left += [f"namespace {ns}" for ns in netns_list() if NS_RE.match(ns) and ns.split("-")[0] not in skip]
    return left


# --- Sonde -----------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port, path, timeout=3):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if path != "/metrics" else body


def stop_process(proc, what, sig=signal.SIGINT, grace=20):
    """Ask `proc` to stop with `sig`; killed when it has not exited `grace` seconds later."""
    if not proc or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{what} did not stop within {grace} s of {signal.Signals(sig).name}; killing it")
        proc.kill()
        proc.wait()


class IncidentApi:
    """The incident API a runner reads (a daemon's or the hub's, on 127.0.0.1:`self.port`)."""

    def incidents(self):
        return http_json(self.port, "/api/incidents")["incidents"]

    def incident(self, iid):
        return http_json(self.port, f"/api/incidents/{iid}", timeout=5)


class Sonde(IncidentApi):
    def __init__(self, lab, path, node=None):
        self.lab = lab
        self.path = os.path.abspath(path)
        self.port = free_port()
        # One of the cluster's nodes (NODES): its own files, name and capture scope.
        self.node = node
        tag = f"-{node}" if node else ""
        self.key = f"sonde{tag}"
        self.conf = os.path.join(lab.dir, f"sonde{tag}.toml")
        self.log_path = os.path.join(lab.dir, f"sonde{tag}.log")
        self.proc = None
        # Where Sonde writes incident bundles (kept after teardown when outside the lab dir).
        self.incident_dir = None

    def admin_socket(self):
        """In a directory of this daemon's own: the instance lock sits beside the socket."""
        d = os.path.join(self.lab.dir, self.key)
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, "admin.sock")

    def node_name_line(self):
        return f'node_name = "{self.node}"' if self.node else ""

    def node_config(self):
        """The node's name and its capture scope (the network namespaces of its hosts)."""
        if not self.node:
            return ""
        netns = ", ".join(f'"/run/netns/{self.lab.ns(h)}"' for h in NODES[self.node])
        return f"""
[capture.scope]
netns = [{netns}]
"""

    def start(self, timeout=120):
        write(self.conf, f"""[metrics]
listen = "127.0.0.1:{self.port}"
# product's queries take ~5 ms; the slow-sql fault makes them ~260 ms.
slow_query_ms = 200

[admin]
socket = "{self.admin_socket()}"

[kubernetes]
mode = "off"
{self.node_name_line()}

[live]
step_ms = 1000
incident_dir = "{self.incident_dir or os.path.join(self.lab.dir, 'incidents')}"
{self.node_config()}""")
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.path, "run", "--config", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        out.close()
        self.lab.state["pids"][self.key] = self.proc.pid
        self.lab.save()
        log(f"started Sonde (pid {self.proc.pid}), metrics on 127.0.0.1:{self.port}, log {self.log_path}")

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"Sonde exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                http_json(self.port, "/metrics", timeout=1)
                return True
            except (OSError, urllib.error.URLError):
                return False
        wait_for(up, timeout, "Sonde to serve /metrics")

    def tail(self, n=40):
        with contextlib.suppress(OSError):
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        return ""

    def endpoint_args(self):
        """How `sonde incidents|report` reach this daemon."""
        return ["--endpoint", f"127.0.0.1:{self.port}"]

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        stop_process(self.proc, "Sonde")
        self.lab.state["pids"].pop(self.key, None)
        self.lab.save()


# --- a cluster: three nodes, a real Prometheus, the hub ---------------------------------------

class Prometheus:
    """Debian's `prometheus` on loopback, scraping `targets` every second, its data in the
    lab directory (removed with it)."""

    def __init__(self, lab):
        self.lab = lab
        self.port = free_port()
        self.dir = os.path.join(lab.dir, "prometheus")
        self.log_path = os.path.join(lab.dir, "prometheus.log")
        self.proc = None

    def start(self, targets, timeout=60):
        # A fresh TSDB per start: a bench restarts everything per run on one lab, and the
        # hub's backfill would otherwise warm its detectors on the previous run's fault.
        data = os.path.join(self.dir, "data")
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        conf = os.path.join(self.dir, "prometheus.yml")
        write(conf, json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "sonde", "static_configs": [{"targets": targets}]}],
        }, indent=1))
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.lab.state["pids"]["prometheus"] = self.proc.pid
        self.lab.save()
        log(f"started Prometheus (pid {self.proc.pid}) on 127.0.0.1:{self.port}, scraping {targets}")

        def all_up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"Prometheus exited with {self.proc.returncode}")
            try:
                got = http_json(self.port, "/api/v1/targets")["data"]["activeTargets"]
            except (OSError, urllib.error.URLError, KeyError, ValueError):
                return False
            return len(got) == len(targets) and all(t.get("health") == "up" for t in got)
        wait_for(all_up, timeout, "Prometheus to scrape every node")

    def stop(self):
        stop_process(self.proc, "Prometheus", signal.SIGTERM)
        self.lab.state["pids"].pop("prometheus", None)
        self.lab.save()


class _AnyExited:
    """`poll()` over several processes: the first one's exit status, or None while all run."""

    def __init__(self, named):
        self.named = named
        self.returncode = None

    def poll(self):
        for name, p in self.named:
            if p is not None and p.poll() is not None:
                self.returncode = f"{p.returncode} ({name})"
                return self.returncode
        return None


class Cluster(IncidentApi):
    """The lab as three nodes (NODES): a `sonde run` per node, scoped to its hosts' network
    namespaces and named after it, a real Prometheus scraping the three, and `sonde hub`
    reading that Prometheus. Looks like `Sonde` to the runner: incidents come from the hub."""

    def __init__(self, lab, path):
        self.lab = lab
        self.path = os.path.abspath(path)
        self.daemons = [Sonde(lab, path, node) for node in NODES]
        self.prometheus = Prometheus(lab)
        self.port = free_port()
        self.log_path = os.path.join(lab.dir, "hub.log")
        self.hub = None
        self.incident_dir = None

    @property
    def proc(self):
        named = [(d.key, d.proc) for d in self.daemons]
        named += [("prometheus", self.prometheus.proc), ("hub", self.hub)]
        return _AnyExited(named) if self.hub else None

    def start(self, timeout=120):
        for d in self.daemons:
            d.incident_dir = self.incident_dir
            d.start(timeout)
        self.prometheus.start([f"127.0.0.1:{d.port}" for d in self.daemons])
        out = open(self.log_path, "ab")
        self.hub = subprocess.Popen(
            [self.path, "hub", *hub_args(f"http://127.0.0.1:{self.prometheus.port}", self.port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        out.close()
        self.lab.state["pids"]["hub"] = self.hub.pid
        self.lab.save()
        log(f"started the hub (pid {self.hub.pid}) on 127.0.0.1:{self.port}, log {self.log_path}")

        def up():
            if self.hub.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.hub.returncode}:\n{self.tail()}")
            try:
                http_json(self.port, "/api/incidents", timeout=1)
                return True
            except (OSError, urllib.error.URLError, ValueError):
                return False
        wait_for(up, timeout, "the hub to serve /api/incidents")

    def tail(self, n=40):
        parts = []
        for name, path in [("hub", self.log_path)] + [(d.key, d.log_path) for d in self.daemons]:
            with contextlib.suppress(OSError):
                with open(path, errors="replace") as f:
                    parts.append(f"--- {name}\n" + "".join(f.readlines()[-n:]))
        return "\n".join(parts)

    def endpoint_args(self):
        """How `sonde incidents|report` reach the hub."""
        return ["--hub", f"http://127.0.0.1:{self.port}"]

    def stop(self):
        stop_process(self.hub, "the hub")
        self.lab.state["pids"].pop("hub", None)
        self.prometheus.stop()
        for d in self.daemons:
            d.stop()


def hub_args(prometheus_url, port):
    """`sonde hub`'s arguments: the Prometheus it reads, where it serves its API, and the
    lab's step (the daemons' step_ms is 1 s; Prometheus scrapes every second)."""
    return ["--prometheus", prometheus_url, "--listen", f"127.0.0.1:{port}", "--step", "1"]


def new_monitor(lab, args, sonde_path):
    """The daemon on the whole lab, or (--cluster) three scoped daemons, Prometheus and the hub."""
    return Cluster(lab, sonde_path) if getattr(args, "cluster", False) else Sonde(lab, sonde_path)


# --- scoring ---------------------------------------------------------------------------------

def element_matches(el, exp):
    if not isinstance(el, dict) or el.get("kind") != exp["kind"]:
        return False
    keys = ("caller", "callee") if exp["kind"] == "edge" else ("name",)
    return all(el.get(k) == exp[k] for k in keys)


def element_str(el):
    if not isinstance(el, dict):
        return str(el)
    if el.get("kind") == "edge":
        return f"edge {el.get('caller')}->{el.get('callee')}"
    return f"{el.get('kind')} {el.get('name')}"


def score(fault, report, report_unix_ms, fault_start_unix_ms):
    exp, exp_class = FAULTS[fault]["expected"], FAULTS[fault]["class"]
    causes = sorted((report or {}).get("root_causes") or [], key=lambda c: c.get("rank", 1e9))
    rank = None
    for i, c in enumerate(causes):
        if element_matches(c.get("element"), exp):
            rank = c.get("rank", i + 1)
            break
    top = causes[0] if causes else None
    class_ok = bool(top and top.get("category") == exp_class and element_matches(top.get("element"), exp))
    return {
        "rank": rank, "ac1": rank == 1, "ac3": rank is not None and rank <= 3, "class_ok": class_ok,
        "top": {"element": element_str(top.get("element")), "category": top.get("category")} if top else None,
        "time_to_report_s": round((report_unix_ms - fault_start_unix_ms) / 1000, 1)
        if report_unix_ms and fault_start_unix_ms else None,
    }


def cause_node(cause):
    """The node a root cause is placed on (the hub names it; a single daemon has one)."""
    el = cause.get("element") if isinstance(cause, dict) else None
    return cause.get("node") or (el.get("node") if isinstance(el, dict) else None)


def node_ok(fault, report):
    """The rank-1 cause sits on the node where the fault was injected."""
    causes = sorted((report or {}).get("root_causes") or [], key=lambda c: c.get("rank", 1e9))
    return bool(causes) and cause_node(causes[0]) == FAULT_NODE[fault]


def print_report(fault, inc, report, sc):
    exp = FAULTS[fault]
    print(f"\n=== fault {fault}: {exp['what']}")
    print(f"expected: {element_str(exp['expected'])} / {exp['class']}")
    if inc:
        print(f"incident {inc.get('id')}: entry {inc.get('entry')}, kpi {inc.get('kpi')}, state {inc.get('state')}")
    if report:
        ph = report.get("phenomenon")
        print(f"phenomenon: {ph if isinstance(ph, str) else json.dumps(ph)}")
        for c in sorted(report.get("root_causes") or [], key=lambda c: c.get("rank", 1e9))[:3]:
            print(f"  #{c.get('rank')} {element_str(c.get('element'))} [{c.get('category')}] "
                  f"confidence {c.get('confidence')}")
            if c.get("explanation"):
                print(f"      {c['explanation']}")
        pp = report.get("propagation_path")
        if pp:
            if isinstance(pp, list):
                pp = " -> ".join(element_str(x) if isinstance(x, dict) else str(x) for x in pp)
            print(f"propagation: {pp if isinstance(pp, str) else json.dumps(pp)}")
    else:
        print("no report")
    print(f"score: rank {sc['rank']}, AC@1 {sc['ac1']}, AC@3 {sc['ac3']}, class ok {sc['class_ok']}, "
          f"time to report {sc['time_to_report_s']} s")


# --- commands --------------------------------------------------------------------------------

def new_lab(args):
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root (namespaces, cgroups, nftables)")
    left = cleanup_all(quiet=False)
    if left:
        log(f"warning: could not remove {left}")
    name = "sl%04x" % random.randrange(0x10000)
    while os.path.exists(os.path.join(STATE_DIR, f"{name}.json")) or any(ns.startswith(name + "-") for ns in netns_list()):
        name = "sl%04x" % random.randrange(0x10000)
    lab = Lab(name, keep_dir=getattr(args, "keep_dir", False))
    atexit.register(finish_lab, lab)
    return lab


def finish_lab(lab):
    if lab.torn_down:
        return
    log(f"tearing down lab {lab.name}")
    left = lab.teardown()
    if left:
        log(f"LEFTOVERS after teardown of {lab.name}: {left}")
    else:
        log(f"teardown of {lab.name} complete: no namespaces, cgroups, /etc/netns dirs or processes left")
    return left


def progress(lab, seconds, label, every=5):
    end = time.time() + seconds
    last = time.time()
    while time.time() < end:
        time.sleep(min(every, max(0, end - time.time())))
        lab.check_procs()
        now = time.time()
        log(f"{label}: {fmt_summary(lab.load_summary(last, now))}")
        last = now


def run_one(lab, fault, args, sonde_path):
    """One scored run on an up lab: Sonde start, baseline, inject, wait for report, clear."""
    res = {"fault": fault, "expected": FAULTS[fault]["expected"], "expected_class": FAULTS[fault]["class"],
           "injection": FAULTS[fault]["what"], "lab": lab.name, "build_s": lab.state.get("build_s"),
           "false_alarms": [], "report": None, "incident": None, "error": None}
    sonde = new_monitor(lab, args, sonde_path)
    sonde.incident_dir = getattr(args, "incident_dir", None)
    injected = False
    try:
        sonde.start()
        res["sonde_start_unix_ms"] = int(time.time() * 1000)
        t_base = time.time()
        seen = {}

        def poll():
            try:
                incs = sonde.incidents()
            except Exception as e:
                res.setdefault("api_errors", 0)
                res["api_errors"] += 1
                res["last_api_error"] = repr(e)
                return []
            for i in incs:
                seen[i.get("id")] = i
            return incs

        end = time.time() + args.baseline
        log(f"baseline: {args.baseline} s of load without a fault")
        last = time.time()
        while time.time() < end:
            time.sleep(min(5, max(0, end - time.time())))
            lab.check_procs()
            poll()
            log(f"baseline: {fmt_summary(lab.load_summary(last))}; incidents so far {len(seen)}")
            last = time.time()
        res["load_before"] = lab.load_summary(max(t_base, time.time() - 30))
        fault_start = int(time.time() * 1000)
        lab.inject(fault)
        injected = True
        res["fault_start_unix_ms"] = fault_start
        log(f"injected {fault}: {FAULTS[fault]['what']}")
        found = None
        end = time.time() + args.timeout
        next_print = time.time() + 5
        last = fault_start / 1000
        while time.time() < end:
            lab.check_procs()
            if sonde.proc.poll() is not None:
                raise RuntimeError(f"Sonde exited with {sonde.proc.returncode}:\n{sonde.tail()}")
            incs = poll()
            cands = [i for i in incs if (i.get("opened_unix_ms") or 0) >= fault_start and i.get("report_unix_ms")]
            if cands:
                found = min(cands, key=lambda i: i.get("opened_unix_ms") or 0)
                break
            if time.time() >= next_print:
                log(f"fault: {fmt_summary(lab.load_summary(last))}; incidents {len(incs)}")
                last, next_print = time.time(), time.time() + 5
            time.sleep(0.5)
        if found and getattr(args, "keep_going", False):
            # Leave the fault in place until the timeout and keep every incident opened after
            # the injection (with its latest report); the score stays that of the first report.
            log(f"--keep-going: first report at +{(found['report_unix_ms'] - fault_start) / 1000:.1f} s; "
                f"fault stays until the timeout")
            while time.time() < end:
                lab.check_procs()
                time.sleep(2)
                poll()
            later = {}
            for iid, i in seen.items():
                if (i.get("opened_unix_ms") or 0) >= fault_start:
                    with contextlib.suppress(Exception):
                        later[iid] = sonde.incident(iid)
            res["incidents_after_injection"] = later
        res["load_during"] = lab.load_summary(fault_start / 1000)
        res["false_alarms"] = [i for i in seen.values() if (i.get("opened_unix_ms") or 0) < fault_start]
        if found:
            detail = sonde.incident(found["id"])
            res["incident"] = detail.get("incident", found)
            res["report"] = detail.get("report")
            res["slow_queries"] = detail.get("slow_queries") or []
            res["log_templates"] = detail.get("log_templates") or []
            rep_ms = found.get("report_unix_ms")
        else:
            res["error"] = f"no incident with a report within {args.timeout} s of the injection"
            rep_ms = None
        res["score"] = score(fault, res["report"], rep_ms, fault_start)
        if isinstance(sonde, Cluster):
            res["score"]["node_ok"] = node_ok(fault, res["report"])
        if found and getattr(args, "full_report", False):
            # The list and the report as `sonde incidents` and `sonde report` print them.
            endpoint = sonde.endpoint_args()
            listing = subprocess.run([sonde.path, "incidents", *endpoint], capture_output=True, text=True, timeout=30)
            text = subprocess.run([sonde.path, "report", found["id"], *endpoint],
                                  capture_output=True, text=True, timeout=30)
            res["incidents_text"] = listing.stdout or listing.stderr
            res["report_text"] = text.stdout or text.stderr
            print("\n" + res["incidents_text"] + "\n" + res["report_text"])
        print_report(fault, res["incident"], res["report"], res["score"])
        if res["false_alarms"]:
            print(f"false alarms before the injection: {len(res['false_alarms'])}: "
                  + ", ".join(f"{i.get('id')} ({i.get('entry')}/{i.get('kpi')})" for i in res["false_alarms"]))
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res.setdefault("score", score(fault, None, None, None))
        log(f"run of {fault} failed: {res['error']}")
        if sonde.proc:
            log(f"last lines of {sonde.log_path}:\n{sonde.tail()}")
    finally:
        if injected:
            with contextlib.suppress(Exception):
                lab.clear(fault)
                log(f"cleared {fault}")
        sonde.stop()
        res["sonde_log_tail"] = sonde.tail(60)
        if getattr(args, "out", None):
            with contextlib.suppress(OSError):
                shutil.copy(sonde.log_path, os.path.splitext(args.out)[0] + ".sonde.log")
    return res


def write_json(path, obj):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)
        log(f"wrote {path}")


def cmd_run(args):
    lab = new_lab(args)
    res = {"fault": args.fault, "error": None}
    try:
        lab.build()
        res = run_one(lab, args.fault, args, args.sonde)
        res["load_after_clear"] = None
        time.sleep(5)
        res["load_after_clear"] = lab.load_summary(time.time() - 5)
    except BaseException as e:
        res["error"] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise
    finally:
        res["leftovers"] = finish_lab(lab)
        write_json(args.out, res)
    if res.get("error") and not res.get("report"):
        if "no incident" not in res["error"]:
            return 1
    if args.require_hit and not (res["score"]["ac1"] and res["score"]["class_ok"]):
        log("--require-hit: the expected root cause was not rank 1 with the expected class")
        return 3
    if args.require_hit and args.cluster and not res["score"].get("node_ok"):
        log(f"--require-hit: the rank-1 cause is not placed on {FAULT_NODE[args.fault]}")
        return 3
    return 0


def cmd_quiet(args):
    lab = new_lab(args)
    sonde = new_monitor(lab, args, args.sonde)
    res = {"lab": lab.name, "duration_s": args.duration, "incidents": [], "error": None,
           "cluster": bool(args.cluster)}
    try:
        lab.build()
        sonde.start()
        end = time.time() + args.duration
        seen = {}
        last = time.time()
        while time.time() < end:
            time.sleep(min(5, max(0, end - time.time())))
            lab.check_procs()
            with contextlib.suppress(Exception):
                for i in sonde.incidents():
                    if i.get("id") not in seen:
                        log(f"INCIDENT opened during quiet run: {json.dumps(i)}")
                    seen[i.get("id")] = i
            log(f"quiet: {fmt_summary(lab.load_summary(last))}; incidents {len(seen)}")
            last = time.time()
        res["incidents"] = list(seen.values())
        res["load"] = lab.load_summary(time.time() - args.duration)
    except BaseException as e:
        res["error"] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise
    finally:
        sonde.stop()
        res["leftovers"] = finish_lab(lab)
        write_json(args.out, res)
    print(f"quiet run: {len(res['incidents'])} incident(s) in {args.duration} s")
    return 1 if res["incidents"] else 0


def cmd_up(args):
    lab = new_lab(args)
    sonde = None
    try:
        lab.build()
        if not args.no_sonde:
            sonde = Sonde(lab, args.sonde)
            sonde.start()
    except BaseException:
        if sonde:
            sonde.stop()
        finish_lab(lab)
        raise
    print(f"lab {lab.name} is up (dir {lab.dir}):")
    for h in HOSTS:
        print(f"  {h:8s} ns {lab.ns(h):16s} {lab.ip(h)}")
    print(f"  loadgen stats: {os.path.join(lab.dir, 'loadgen.jsonl')}; logs in {os.path.join(lab.dir, 'logs')}")
    if sonde:
        print(f"  Sonde: http://127.0.0.1:{sonde.port}/metrics, /api/incidents; log {sonde.log_path}")
    print(f"  inject/clear from another shell: {sys.argv[0]} inject FAULT --lab {lab.name}")
    print("Ctrl-C to tear down.", flush=True)
    try:
        while True:
            progress(lab, args.duration if args.duration else 3600 * 24 * 365, "load", every=args.every)
            if args.duration:
                break
    finally:
        if sonde:
            sonde.stop()
        finish_lab(lab)
    return 0


def find_lab(name):
    if name:
        return Lab.from_state(os.path.join(STATE_DIR, f"{name}.json"))
    labs = [f for f in os.listdir(STATE_DIR) if f.endswith(".json")] if os.path.isdir(STATE_DIR) else []
    if len(labs) != 1:
        raise SystemExit(f"give --lab: running labs {labs}")
    return Lab.from_state(os.path.join(STATE_DIR, labs[0]))


def cmd_inject(args):
    lab = find_lab(args.lab)
    (lab.inject if args.cmd == "inject" else lab.clear)(args.fault)
    log(f"{args.cmd} {args.fault} on {lab.name}")
    return 0


def cmd_cleanup(args):
    left = cleanup_all(force=True)
    left = [f"namespace {ns}" for ns in netns_list() if NS_RE.match(ns)]
    left += [f"/etc/netns/{d}" for d in os.listdir("/etc/netns") if NS_RE.match(d)] if os.path.isdir("/etc/netns") else []
    for _, r in cgroup_roots():
        left += [f"cgroup {r}/{d}" for d in os.listdir(r) if LAB_RE.match(d)]
    left += [f"process {p} ({comm(p)})" for p in lab_processes()]
    if left:
        log(f"still left: {left}")
        return 1
    log("nothing of any lab is left (namespaces, cgroups, /etc/netns, processes)")
    return 0


def cmd_faultcheck(args):
    """No Sonde: inject each fault and compare the load generator's stats before, during and
    after, so the fault magnitudes can be checked."""
    faults = args.faults.split(",") if args.faults != "all" else list(FAULTS)
    lab = new_lab(args)
    rows = []
    try:
        lab.build()
        for f in faults:
            lab.wait_load_clean(timeout=60)
            t0 = time.time()
            time.sleep(args.before)
            before = lab.load_summary(t0, time.time())
            lab.inject(f)
            t1 = time.time()
            # first seconds: how fast does it show?
            time.sleep(args.during)
            during = lab.load_summary(t1, time.time())
            first10 = lab.load_summary(t1, t1 + 10)
            lab.clear(f)
            t2 = time.time()
            time.sleep(args.after)
            after = lab.load_summary(t2 + args.after / 2, time.time())
            row = {"fault": f, "before": before, "during": during, "first_10s": first10, "after": after}
            rows.append(row)
            print(f"\n== {f}: {FAULTS[f]['what']}")
            print(f"  before : {fmt_summary(before)}")
            print(f"  0-10 s : {fmt_summary(first10)}")
            print(f"  during : {fmt_summary(during)}")
            print(f"  after  : {fmt_summary(after)}", flush=True)
    finally:
        finish_lab(lab)
        write_json(args.out, rows)
    return 0


def cmd_bench(args):
    faults = args.faults.split(",") if args.faults != "all" else list(FAULTS)
    lab = new_lab(args)
    results = []
    try:
        lab.build()
        for r in range(args.runs):
            for f in faults:
                lab.wait_load_clean(timeout=120)
                log(f"bench: run {r + 1}/{args.runs}, fault {f}")
                res = run_one(lab, f, args, args.sonde)
                res.pop("sonde_log_tail", None)
                results.append(res)
                write_json(os.path.splitext(args.out)[0] + ".json", results)
    finally:
        finish_lab(lab)
    # The cluster's table has a node column: the rank-1 cause on the injected node.
    node_col = bool(args.cluster)
    lines = ["| fault | runs | AC@1 | AC@3 | class |" + (" node |" if node_col else "")
             + " mean time to report (s) | max (s) | false alarms |",
             "|---|---|---|---|---|" + ("---|" if node_col else "") + "---|---|---|"]
    tot = {"n": 0, "a1": 0, "a3": 0, "c": 0, "nd": 0}
    for f in faults:
        rs = [x for x in results if x["fault"] == f]
        n = len(rs)
        a1 = sum(1 for x in rs if x["score"]["ac1"])
        a3 = sum(1 for x in rs if x["score"]["ac3"])
        c = sum(1 for x in rs if x["score"]["class_ok"])
        nd = sum(1 for x in rs if x["score"].get("node_ok"))
        ts = [x["score"]["time_to_report_s"] for x in rs if x["score"]["time_to_report_s"] is not None]
        fa = sum(len(x["false_alarms"]) for x in rs)
        tot = {"n": tot["n"] + n, "a1": tot["a1"] + a1, "a3": tot["a3"] + a3, "c": tot["c"] + c,
               "nd": tot["nd"] + nd}
        node = f" {nd}/{n} |" if node_col else ""
        lines.append(f"| {f} | {n} | {a1}/{n} | {a3}/{n} | {c}/{n} |{node} "
                     f"{sum(ts) / len(ts):.1f} | {max(ts):.1f} | {fa} |" if ts else
                     f"| {f} | {n} | {a1}/{n} | {a3}/{n} | {c}/{n} |{node} - | - | {fa} |")
    n = tot["n"] or 1
    node = f" {100 * tot['nd'] / n:.0f}% |" if node_col else ""
    lines.append(f"| **all** | {tot['n']} | {100 * tot['a1'] / n:.0f}% | {100 * tot['a3'] / n:.0f}% | "
                 f"{100 * tot['c'] / n:.0f}% |{node} | | |")
    what = "three nodes, scoped daemons, Prometheus, `sonde hub`" if node_col else "one daemon"
    md = (f"# Sonde fault lab ({what}): {args.runs} run(s) per fault\n\n"
          f"Baseline {args.baseline} s, timeout {args.timeout} s, Sonde `{args.sonde}`, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n" + "\n".join(lines) + "\n")
    with open(args.out, "w") as f:
        f.write(md)
    print(md)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def sonde_opts(p, required=True):
        p.add_argument("--sonde", required=required, help="path of the sonde binary")
        p.add_argument("--keep-dir", action="store_true", help="keep the lab directory (logs) after teardown")

    p = sub.add_parser("run", help="one fault, scored")
    p.add_argument("--fault", required=True, choices=list(FAULTS))
    sonde_opts(p)
    p.add_argument("--baseline", type=float, default=90)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--out")
    p.add_argument("--require-hit", action="store_true")
    p.add_argument("--full-report", action="store_true", help="print the report as `sonde report` does")
    p.add_argument("--incident-dir", help="where Sonde saves incident bundles (default: inside the lab dir, removed)")
    p.add_argument("--keep-going", action="store_true",
                   help="after the first report keep the fault until --timeout and record every incident")
    p.add_argument("--cluster", action="store_true",
                   help="three nodes (a scoped daemon each), Prometheus and `sonde hub`; the hub reports")
    p = sub.add_parser("quiet", help="no fault: Sonde must open no incident")
    sonde_opts(p)
    p.add_argument("--cluster", action="store_true", help="as for run: the hub must open no incident")
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--out")
    p = sub.add_parser("up", help="build the lab and keep it up until Ctrl-C")
    sonde_opts(p, required=False)
    p.add_argument("--no-sonde", action="store_true")
    p.add_argument("--duration", type=float, default=0, help="tear down after this many seconds (0: never)")
    p.add_argument("--every", type=float, default=5, help="print load stats every N seconds")
    for name in ("inject", "clear"):
        p = sub.add_parser(name, help=f"{name} a fault on a lab that is up")
        p.add_argument("fault", choices=list(FAULTS))
        p.add_argument("--lab")
    sub.add_parser("cleanup", help="remove everything any lab run left behind")
    p = sub.add_parser("faultcheck", help="no Sonde: each fault's effect on the load generator's stats")
    p.add_argument("--faults", default="all")
    p.add_argument("--before", type=float, default=10)
    p.add_argument("--during", type=float, default=20)
    p.add_argument("--after", type=float, default=15)
    p.add_argument("--out")
    p.add_argument("--keep-dir", action="store_true")
    p = sub.add_parser("bench", help="each fault N times; Markdown table of accuracy and time to report")
    sonde_opts(p)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cluster", action="store_true", help="as for run: three nodes, the hub reports")
    p.add_argument("--faults", default="all")
    p.add_argument("--baseline", type=float, default=90)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "up" and not args.no_sonde and not args.sonde:
        ap.error("up needs --sonde PATH or --no-sonde")

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    cmds = {"run": cmd_run, "quiet": cmd_quiet, "up": cmd_up, "inject": cmd_inject, "clear": cmd_inject,
            "cleanup": cmd_cleanup, "faultcheck": cmd_faultcheck, "bench": cmd_bench}
    try:
        return cmds[args.cmd](args)
    except KeyboardInterrupt:
        log("interrupted (SIGINT)")
        return 130
    except Terminated as e:
        log(f"terminated ({e})")
        return 143
    except (RuntimeError, TimeoutError, OSError) as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
