#!/usr/bin/env python3
"""A stand-in for `sonde run --config FILE`, to exercise lab.py's runner without the daemon:
serves /metrics and the live incident API on [metrics] listen, and "detects" an incident from
the lab's own load-generator stats (LABDIR/loadgen.jsonl next to the config), with a canned
report whose top cause is always service cart / service-slow. Not a detector: test plumbing.

    lab.py run --fault slow --sonde tests/lab/fake_sonde.py --baseline 20
"""
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if len(sys.argv) != 4 or sys.argv[1:3] != ["run", "--config"]:
    sys.exit("usage: fake_sonde.py run --config FILE")
conf_path = sys.argv[3]
conf = open(conf_path).read()
host, port = re.search(r'listen\s*=\s*"([^:]+):(\d+)"', conf).groups()
labdir = os.path.dirname(os.path.abspath(conf_path))
incidents = {}
lock = threading.Lock()
start = time.time()


def now_ms():
    return int(time.time() * 1000)


def detector():
    base = None
    opened = None
    while True:
        time.sleep(1)
        try:
            recs = [json.loads(line) for line in open(os.path.join(labdir, "loadgen.jsonl"))]
        except OSError:
            continue
        recs = [r for r in recs if r["t"] > start and r["n"]]
        if base is None and len(recs) >= 15:
            base = sum(r["mean_ms"] for r in recs) / len(recs)
            print(f"fake-sonde: baseline mean {base:.1f} ms", flush=True)
        if base is None or len(recs) < 3:
            continue
        last = recs[-3:]
        err = sum(r["err"] for r in last) / max(1, sum(r["n"] for r in last))
        mean = sum(r["mean_ms"] for r in last) / 3
        bad = err > 0.05 or mean > 2 * base + 20
        with lock:
            if bad and opened is None:
                opened = f"inc-{now_ms()}"
                incidents[opened] = {"id": opened, "entry": "gateway", "kpi": "error_ratio" if err > 0.05 else "latency_mean_ms",
                                     "opened_unix_ms": now_ms(), "report_unix_ms": None, "state": "open", "top_cause": None}
                print(f"fake-sonde: opened {opened} (err {err:.2f}, mean {mean:.0f} ms)", flush=True)
            elif opened and incidents[opened]["report_unix_ms"] is None and now_ms() - incidents[opened]["opened_unix_ms"] > 3000:
                incidents[opened]["report_unix_ms"] = now_ms()
                incidents[opened]["top_cause"] = {"element": {"kind": "service", "name": "cart"}, "category": "service-slow"}
            elif opened and not bad:
                incidents[opened]["state"] = "resolved"
                opened = None


REPORT = {
    "phenomenon": "gateway latency_mean_ms above its baseline (fake)",
    "root_causes": [
        {"rank": 1, "element": {"kind": "service", "name": "cart"}, "category": "service-slow", "confidence": 0.5,
         "explanation": "canned answer of fake_sonde.py"},
        {"rank": 2, "element": {"kind": "edge", "caller": "gateway", "callee": "cart"}, "category": "network",
         "confidence": 0.3, "explanation": "canned"},
        {"rank": 3, "element": {"kind": "service", "name": "product"}, "category": "cpu-saturation",
         "confidence": 0.1, "explanation": "canned"},
    ],
    "propagation_path": [{"kind": "service", "name": "cart"}, {"kind": "service", "name": "gateway"}],
}


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, code, body, ctype="application/json"):
        b = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        with lock:
            if self.path == "/metrics":
                return self.send(200, b"fake_sonde_up 1\n", "text/plain")
            if self.path == "/api/incidents":
                return self.send(200, {"incidents": list(incidents.values())})
            m = re.match(r"^/api/incidents/(.+)$", self.path)
            if m and m.group(1) in incidents:
                inc = incidents[m.group(1)]
                return self.send(200, {"incident": inc, "report": REPORT if inc["report_unix_ms"] else None})
        self.send(404, {"error": "not found"})


srv = ThreadingHTTPServer((host, int(port)), H)
signal.signal(signal.SIGINT, lambda *_: (print("fake-sonde: SIGINT, exiting", flush=True), os._exit(0)))
threading.Thread(target=detector, daemon=True).start()
print(f"fake-sonde: listening on {host}:{port}, lab {labdir}", flush=True)
srv.serve_forever()
