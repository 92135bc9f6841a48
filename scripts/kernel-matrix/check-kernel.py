#!/usr/bin/env python3
"""Does Sonde load and capture on the running kernel? (Run on the host, or in a guest by
`run-in-kernel`.) Exit 0 only when every check holds; prints one JSON summary line last.

  check-kernel.py SONDE

1. `sonde doctor --json`: every program loads and attaches (optional ones may be off with a reason),
   the core can run, the verifier budget (stack, processed instructions) holds. Then again
   with a capture scope (`--netns`, and `--cgroup` where cgroup v2 is mounted), whose checks
   the verifier only walks when a scope is set: the same must hold.
2. `sonde trace --json --states --logs` while this script makes a real exchange on loopback:
   a TCP server and client (payload both ways, a sendfile body), a line on stdout from a
   child process, a connection to a closed port (a reset), and a TLS exchange through this
   Python's `ssl` module (OpenSSL's SSL_read_ex/SSL_write_ex: the uprobes). Every one must
   show up, the TLS request as plaintext marked `tls`, and the trace must turn no feature off
   that doctor loaded. The summary keeps the trace's warnings and kernel counters; a stdout
   line or reset still missing at the deadline is made once more, and the summary says so.
"""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

STACK_BUDGET = 384
INSN_BUDGET = 250_000


def fail(summary, why):
    summary["ok"] = False
    summary.setdefault("failures", []).append(why)


def cgroup2_mount():
    """The cgroup v2 mount point, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split(" ")[0] == "cgroup2":
                return pre.split(" ")[4]
    return None


def doctor_scoped(sonde, summary):
    """The doctor with a capture scope: the scope's checks verify within the budget too."""
    args = ["--netns", "/proc/self/ns/net"]
    cg = cgroup2_mount()
    if cg:
        args += ["--cgroup", cg]
    p = subprocess.run([sonde, "doctor", "--json", *args], capture_output=True, text=True, timeout=900)
    try:
        r = json.loads(p.stdout)
    except json.JSONDecodeError:
        fail(summary, f"scoped doctor printed no JSON (exit {p.returncode}): {p.stderr[-2000:]}")
        return
    summary["scoped_cgroup"] = bool(cg)
    failed = sorted(f'{x["program"]}: {x["detail"]}' for x in r["probes"] if x["state"] == "failed")
    costs = [x["cost"] for x in r["probes"] if x["state"] == "loaded" and x.get("cost")]
    insns = [(c["processed_insns"] or 0, c["program"]) for c in costs]
    summary["scoped_max_insns"], summary["scoped_max_insns_program"] = max(insns, default=(0, ""))
    summary["scoped_programs"] = {c["program"]: [c["processed_insns"] or 0, c["stack_bytes"]] for c in costs}
    if r["core_error"]:
        fail(summary, "scoped: core cannot run: " + r["core_error"])
    if failed:
        fail(summary, "scoped: programs failed: " + "; ".join(failed))
    if summary["scoped_max_insns"] > INSN_BUDGET:
        fail(summary, f"scoped: {summary['scoped_max_insns_program']}: {summary['scoped_max_insns']} insns > {INSN_BUDGET}")


def doctor(sonde, summary):
    t0 = time.monotonic()
    p = subprocess.run([sonde, "doctor", "--json"], capture_output=True, text=True, timeout=900)
    summary["doctor_s"] = round(time.monotonic() - t0, 1)
    try:
        r = json.loads(p.stdout)
    except json.JSONDecodeError:
        fail(summary, f"doctor printed no JSON (exit {p.returncode}): {p.stderr[-2000:]}")
        return False
    summary["kernel"] = r["kernel"]
    summary["socket_lookup"] = r["socket_lookup"]
    loaded = [x for x in r["probes"] if x["state"] == "loaded"]
    costs = [x["cost"] for x in loaded if x.get("cost")]
    summary["programs_loaded"] = len(loaded)
    summary["programs_off"] = sorted(
        f'{x["program"]}: {x["detail"]}' for x in r["probes"] if x["state"] == "off" and "configuration" not in x["detail"]
    )
    summary["programs_failed"] = sorted(f'{x["program"]}: {x["detail"]}' for x in r["probes"] if x["state"] == "failed")
    summary["max_stack"] = max((c["stack_bytes"] for c in costs), default=0)
    insns = [(c["processed_insns"] or 0, c["program"]) for c in costs]
    summary["max_insns"], summary["max_insns_program"] = max(insns, default=(0, ""))
    summary["verify_ms"] = r["verify_ms"]
    # Every loaded program's figures, [processed insns, stack bytes], for BENCHMARKS.md.
    summary["programs"] = {c["program"]: [c["processed_insns"] or 0, c["stack_bytes"]] for c in costs}
    if r["core_error"]:
        fail(summary, "core cannot run: " + r["core_error"])
    if summary["programs_failed"]:
        fail(summary, "programs failed: " + "; ".join(summary["programs_failed"]))
    if summary["max_stack"] > STACK_BUDGET:
        fail(summary, f"stack {summary['max_stack']} > {STACK_BUDGET}")
    if summary["max_insns"] > INSN_BUDGET:
        fail(summary, f"{summary['max_insns_program']}: {summary['max_insns']} insns > {INSN_BUDGET}")
    return not r["core_error"]


def free_ports(n):
    """n distinct free ports (a port closed and bound again can come back twice: a
    "closed" port equal to the server's would get no reset)."""
    ports = set()
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.add(s.getsockname()[1])
        s.close()
    return sorted(ports)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def trace_diagnostics(err, summary):
    """What the trace said about itself: its warnings (a probe that turned off in this run
    though `doctor` loaded it) and the kernel counters at its stop (emitted, lost, rate
    limited), so a missing event explains itself in the matrix's output."""
    err.seek(0)
    for line in err:
        line = ANSI.sub("", line).strip()
        if " WARN " in line or " ERROR " in line:
            summary.setdefault("trace_warnings", []).append(line[-300:])
        if "trace stopped" in line and "counters=" in line:
            summary["trace_counters"] = line.split("counters=", 1)[1].strip().strip('"')


def exchange(port, closed_port, marker):
    """A server that answers with a head (send) and a body (sendfile); a client; a child
    process that prints `marker`; a connect to a closed port."""
    body = tempfile.NamedTemporaryFile(delete=False)
    body.write(b"B" * 3000)
    body.close()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)

    def serve():
        for _ in range(3):
            c, _ = srv.accept()
            c.recv(100)
            c.sendall(b"PONG-HEAD\n")
            with open(body.name, "rb") as f:
                os.sendfile(c.fileno(), f.fileno(), 0, 3000)
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for i in range(3):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"PING-%d\n" % i)
        got = b""
        while len(got) < 3010:
            d = c.recv(65536)
            if not d:
                break
            got += d
        c.close()
    outcome = log_and_reset(closed_port, marker)
    t.join(5)
    srv.close()
    os.unlink(body.name)
    return outcome


def log_and_reset(closed_port, marker):
    """A child process that prints `marker`; a connect to a closed port. Returns what each
    did (the echo's exit status, how the connect ended), for the summary."""
    echo = subprocess.run(["sh", "-c", f"echo {marker}"]).returncode
    try:
        socket.create_connection(("127.0.0.1", closed_port), timeout=5).close()
        connect = "connected"
    except ConnectionRefusedError:
        connect = "refused"
    except OSError as e:
        connect = f"failed: {e}"
    return {"echo_status": echo, "connect": connect}


def tls_exchange(port, certdir):
    """A TLS server and client in this process (the system libssl, attached by the daemon
    at start): two requests on one connection, each answered."""
    cert, key = os.path.join(certdir, "cert.pem"), os.path.join(certdir, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=120,
    )
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)

    def serve():
        c, _ = srv.accept()
        with sctx.wrap_socket(c, server_side=True) as t:
            for _ in range(2):
                t.recv(100)
                t.sendall(b"TLSPONG\n")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    with cctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30)) as t:
        for i in range(2):
            t.sendall(b"TLSPING-%d\n" % i)
            t.recv(100)
    th.join(30)
    srv.close()


def trace(sonde, summary):
    port, closed, tls_port = free_ports(3)
    marker = f"sonde-matrix-{os.getpid()}"
    out = tempfile.TemporaryFile(mode="w+")
    err = tempfile.TemporaryFile(mode="w+")
    t0 = time.monotonic()
    p = subprocess.Popen(
        [sonde, "trace", "--json", "--states", "--logs", "--port", str(port), "--port", str(closed),
         "--port", str(tls_port)],
        stdout=out, stderr=err, env={**os.environ, "SONDE_LOG": "info"},
    )
    deadline = time.monotonic() + 600
    attached = False
    while time.monotonic() < deadline and p.poll() is None:
        err.seek(0)
        if "capture attached" in err.read():
            attached = True
            break
        time.sleep(0.2)
    summary["attach_s"] = round(time.monotonic() - t0, 1)
    if not attached:
        p.kill()
        err.seek(0)
        fail(summary, "sonde trace did not attach: " + err.read()[-2000:])
        return
    summary["log_and_reset"] = [exchange(port, closed, marker)]
    certdir = tempfile.mkdtemp(prefix="sonde-matrix-tls-")
    try:
        tls_exchange(tls_port, certdir)
    except (OSError, subprocess.SubprocessError) as e:
        fail(summary, f"the TLS exchange itself failed: {e}")
    finally:
        shutil.rmtree(certdir, ignore_errors=True)
    # The events are in the ring: poll the output until all kinds show up, or a deadline.
    want = {"request": False, "response": False, "sendfile": False, "log": False, "reset": False,
            "tls": False}
    scan(out, want, marker, 30)
    missed = [k for k in ("log", "reset") if not want[k]]
    if missed:
        # Once (CI saw both missing on 6.12 in one run of many, never here): do the two
        # again, and keep what the first attempt missed in the summary, where the matrix
        # prints it even when the second attempt passes.
        summary["first_attempt_missed"] = missed
        summary["log_and_reset"].append(log_and_reset(closed, marker))
        scan(out, want, marker, 15)
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
    summary["seen"] = want
    trace_diagnostics(err, summary)
    # Resets come from a network probe: optional, so only required where it loaded.
    resets_off = any(x.startswith("sonde_tcp_send_reset") for x in summary.get("programs_off", []))
    # TLS is optional too (it turns off alone), but off must be visible: the summary says so.
    tls_off = any(x.startswith("sonde_ssl_") for x in summary.get("programs_off", []))
    summary["tls_off"] = tls_off
    for k, v in want.items():
        if not v and not (k == "reset" and resets_off) and not (k == "tls" and tls_off):
            fail(summary, f"no {k} event captured")
    # A program the kernel refuses only at attach (a tracepoint program reading past the
    # record's end gets EACCES there) shows up as a feature the trace turned off; doctor
    # attaches too, so off is allowed only where doctor said so.
    for w in summary.get("trace_warnings", []):
        if "turned off" in w:
            fail(summary, "the trace turned a feature off that doctor loaded: " + w)


def scan(out, want, marker, seconds):
    """Reads the trace's JSON lines until every kind in `want` was seen, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(want.values()):
        out.seek(0)
        for line in out:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = e.get("event")
            if kind == "data" and "PING-" in e.get("preview", "") and e.get("direction") == "ingress":
                want["request"] = True
            if kind == "data" and "PONG-HEAD" in e.get("preview", "") and e.get("direction") == "ingress":
                want["response"] = True
            if kind == "data" and e.get("spliced") and e.get("len") == 3000 and e.get("direction") == "egress":
                want["sendfile"] = True
            if kind == "log" and marker in e.get("text", ""):
                want["log"] = True
            if kind == "reset":
                want["reset"] = True
            # The server's read of the client's request, in plaintext, from SSL_read_ex's probe.
            if (kind == "data" and e.get("tls") and "TLSPING-" in e.get("preview", "")
                    and e.get("direction") == "ingress"):
                want["tls"] = True
        time.sleep(0.5)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 3
    sonde = os.path.abspath(sys.argv[1])
    summary = {"ok": True}
    t0 = time.monotonic()
    if doctor(sonde, summary):
        doctor_scoped(sonde, summary)
        trace(sonde, summary)
    summary["total_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
