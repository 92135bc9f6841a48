#!/usr/bin/env python3
"""Convert the PetShop root-cause dataset (amazon-science/petshop-root-cause-analysis, data under
CC-BY-4.0) into Sonde's timeline layout (analysis/src/import.rs, docs in README.md here):

    <out>/<scenario>/metrics.csv   time,service,metric,value
    <out>/<scenario>/edges.csv     caller,callee
    <out>/<scenario>/cases.csv     id,entry,kpi,root_cause,window_start,window_end,injected_at

One timeline per traffic scenario: the scenario's normal period (noissue/, when the dataset has
it) shifted to end one step before the first fault case, then every fault case (train/ and test/)
in time order. A case's window is its own 5 samples; `injected_at` is the dataset's target
timestamp.

Nodes named `*_remote` are what AWS X-Ray draws for calls to an endpoint it does not instrument
(a load balancer, an external site): their numbers are the caller's client-side view of the
call. They become metrics of the call edge measured at the caller (`caller->remote`,
`caller_latency_ms`, `caller_error_rate`, `caller_request_rate`), and the remote endpoint is a
callee with no metrics of its own. Every `_remote` node here has exactly one caller.
Only the standard library is used.

usage: convert_petshop.py <dataset dir of a checkout> <out dir>
"""
import csv
import json
import os
import sys

STEP = 300

# PetShop metric/statistic -> (Sonde metric, scale)
METRICS = {
    ("latency", "Average"): ("latency_mean_ms", 1000.0),
    ("latency", "p50"): ("latency_p50_ms", 1000.0),
    ("latency", "p90"): ("latency_p90_ms", 1000.0),
    ("latency", "p95"): ("latency_p95_ms", 1000.0),
    ("latency", "p99"): ("latency_p99_ms", 1000.0),
    ("requests", "Sum"): ("request_rate", 1.0 / STEP),
}


def read_wide(path):
    """(timestamp, service, metric, value) rows of one PetShop metrics.csv."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    services, metrics, stats = rows[0], rows[1], rows[2]
    out = []
    for row in rows[4:]:
        if not row or not row[0]:
            continue
        ts = int(float(row[0]))
        for j in range(1, len(row)):
            if row[j] == "":
                continue
            v = float(row[j])
            key = (metrics[j], stats[j])
            if key == ("availability", "Average"):
                out.append((ts, services[j], "error_rate", max(0.0, 1.0 - v / 100.0)))
            elif key in METRICS:
                name, scale = METRICS[key]
                out.append((ts, services[j], name, v * scale))
    return out


def convert(scenario_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    # Edges: graph.csv is an adjacency matrix, row = caller, column = callee.
    with open(os.path.join(scenario_dir, "graph.csv"), newline="") as f:
        g = list(csv.reader(f))
    with open(os.path.join(out_dir, "edges.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["caller", "callee"])
        for row in g[1:]:
            for j in range(1, len(row)):
                if row[j] and float(row[j]) != 0.0 and row[0] != g[0][j]:
                    w.writerow([row[0], g[0][j]])
    cases = []
    rows = []
    for split in ("train", "test"):
        d = os.path.join(scenario_dir, split)
        if not os.path.isdir(d):
            continue
        for issue in sorted(os.listdir(d)):
            m = os.path.join(d, issue, "metrics.csv")
            t = os.path.join(d, issue, "target.json")
            if not (os.path.exists(m) and os.path.exists(t)):
                continue
            points = read_wide(m)
            if not points:
                continue
            with open(t) as f:
                target = json.load(f)
            times = sorted({p[0] for p in points})
            kpi = {"latency": "latency_mean_ms", "availability": "error_rate"}[
                target["target"]["metric"]
            ]
            cases.append(
                (
                    f"{split}/{issue}",
                    target["target"]["node"],
                    kpi,
                    target["root_cause"]["node"],
                    times[0],
                    times[-1] + STEP,
                    int(target["target"]["timestamp"]),
                )
            )
            rows.extend(points)
    # X-Ray remote nodes -> caller-side metrics of the edge from their (single) caller.
    callers = {}
    with open(os.path.join(out_dir, "edges.csv"), newline="") as f:
        for e in list(csv.reader(f))[1:]:
            callers.setdefault(e[1], []).append(e[0])
    as_edge = {
        "latency_mean_ms": "caller_latency_ms",
        "error_rate": "caller_error_rate",
        "request_rate": "caller_request_rate",
    }

    def remap(points):
        out = []
        for ts, s, m, v in points:
            if s.endswith("_remote") and len(callers.get(s, [])) == 1:
                if m in as_edge:
                    out.append((ts, f"{callers[s][0]}->{s}", as_edge[m], v))
            else:
                out.append((ts, s, m, v))
        return out

    rows = remap(rows)
    cases.sort(key=lambda c: c[4])
    first = min(c[4] for c in cases)
    normal = os.path.join(scenario_dir, "noissue", "metrics.csv")
    if os.path.exists(normal) and os.path.getsize(normal) > 0:
        points = read_wide(normal)
        last = max(p[0] for p in points)
        shift = (first - STEP) - last
        rows.extend((ts + shift, s, m, v) for ts, s, m, v in remap(points))
    rows.sort()
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "service", "metric", "value"])
        for ts, s, m, v in rows:
            w.writerow([ts, s, m, f"{v:.6g}"])
    with open(os.path.join(out_dir, "cases.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "entry", "kpi", "root_cause", "window_start", "window_end", "injected_at"])
        w.writerows(cases)
    return len(cases), len(rows)


def main():
    src, out = sys.argv[1], sys.argv[2]
    for scenario in sorted(os.listdir(src)):
        d = os.path.join(src, scenario)
        if os.path.isfile(os.path.join(d, "graph.csv")):
            n, r = convert(d, os.path.join(out, scenario))
            print(f"{scenario}: {n} cases, {r} samples")


if __name__ == "__main__":
    main()
