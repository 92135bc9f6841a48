#!/usr/bin/env python3
"""Convert CIRCA's simulated datasets into Sonde's import layout (one timeline per graph).

Usage: convert_circa_sim.py [--as latency|rate] [--history N] [--separate] [--first-cases N]
                            [--first-history N]
                            <generator output dir>/<num_node> <out dir>

The input is what `python -m circa.experiment generate` (github.com/NetManAIOps/CIRCA,
circa/experiment/simulation/__init__.py) writes for one graph size: `<i>/graph.json` (nodes
`SIM/<k>`, edges cause -> effect) and `<i>/cases/<j>/data.csv` (one row per minute, one column
per node: 1440 normal minutes then 10 after the fault, standardised by the normal period) with
`info.json` (`causes`, `length_normal`). Node 0 is the SLI (the only node without effects).

Mapping (the simulated values are abstract, not a metric of a real service):
- node k becomes service `n<k>`; its value becomes that service's `latency_mean` (ms, as is:
  mean 0, standard deviation 1 over the normal period; negative values are kept) with
  `--as latency` (default), or its `req_rate` with `--as rate` (the one metric the engine
  watches in both directions; the SCM's faults move the SLI either way);
- an edge cause -> effect becomes the call effect -> cause (`caller,callee`): the effect's value
  is made of its causes', as a caller's latency is made of its callees';
- entry: `n0`, KPI: the mapped metric of `n0` (the SLI of the dataset).

Only cases with one root cause are kept (the generator draws 1 + Poisson(1) causes; the
benchmark scores one root cause per case). Each graph becomes one timeline, its kept cases in
the generator's order: the first with its whole normal period, the others with the last
`--history` normal minutes (default 120, the `lookup_window` of CIRCA's experiments), each
followed by its 10 minutes after the fault, which are the case's window; the injection is
the window's first minute. With `--separate` every kept case is a timeline of its own
(`<out>/g<i>-c<j>`: its whole normal period, then its window), as CIRCA's cases are: no
history then holds another case's fault. `--first-cases N` reads only cases 0..N-1 of each
graph and `--first-history N` keeps only the last N normal minutes of the first case too (how
the committed excerpt analysis/tests/data/circa-excerpt was made). Standard library only; nothing is downloaded.
"""

import csv
import json
import os
import sys

T0 = 1_700_000_000
STEP = 60
METRIC = {"latency": ("latency_mean", "latency_mean_ms"), "rate": ("req_rate", "request_rate")}


def load_graph(path):
    with open(path) as f:
        g = json.load(f)
    names = [f"n{n['metric']}" for n in g["nodes"]]
    # caller (effect), callee (cause)
    return sorted({(names[effect], names[cause]) for cause, effect in g["edges"]})


def convert_graph(src, dst, as_metric, history, first_cases, separate=False, first_history=None):
    column, kpi = METRIC[as_metric]
    edges = load_graph(os.path.join(src, "graph.json"))
    cases_dir = os.path.join(src, "cases")
    with open(os.path.join(cases_dir, "index")) as f:
        num_cases = int(f.readline())
    t = T0
    kept = 0
    out = None
    for j in range(num_cases):
        if first_cases is not None and j >= first_cases:
            break
        case = os.path.join(cases_dir, str(j))
        with open(os.path.join(case, "info.json")) as f:
            info = json.load(f)
        if len(info["causes"]) != 1:
            continue
        with open(os.path.join(case, "data.csv"), newline="") as f:
            rows = list(csv.reader(f))
        if out is None or separate:
            if out is not None:
                out.close()
            out = Timeline(f"{dst}-c{j}" if separate else dst, edges)
            t = T0
        metrics, cases = out.metrics, out.cases
        normal = info["length_normal"]
        if kept == 0 or separate:
            begin = 0 if first_history is None else max(0, normal - first_history)
        else:
            begin = max(0, normal - history)
        for r, row in enumerate(rows[begin:], start=begin):
            if r == normal:
                fault_at = t
            for k, v in enumerate(row):
                metrics.writerow([t, f"n{k}", column, v])
            t += STEP
        cases.writerow(
            [j, "n0", kpi, f"n{info['causes'][0]}", fault_at, t, fault_at]
        )
        kept += 1
    if out is not None:
        out.close()
    return kept, num_cases


class Timeline:
    """One output directory of the import layout, open for writing."""

    def __init__(self, dst, edges):
        os.makedirs(dst, exist_ok=True)
        with open(os.path.join(dst, "edges.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["caller", "callee"])
            w.writerows(edges)
        self._mf = open(os.path.join(dst, "metrics.csv"), "w", newline="")
        self._cf = open(os.path.join(dst, "cases.csv"), "w", newline="")
        self.metrics = csv.writer(self._mf)
        self.metrics.writerow(["time", "service", "metric", "value"])
        self.cases = csv.writer(self._cf)
        self.cases.writerow(
            ["id", "entry", "kpi", "root_cause", "window_start", "window_end", "injected_at"]
        )

    def close(self):
        self._mf.close()
        self._cf.close()


def main(argv):
    as_metric, history, first_cases, separate, first_history = "latency", 120, None, False, None
    args = []
    it = iter(argv)
    for a in it:
        if a == "--as":
            as_metric = next(it)
        elif a == "--history":
            history = int(next(it))
        elif a == "--first-history":
            first_history = int(next(it))
        elif a == "--separate":
            separate = True
        elif a == "--first-cases":
            first_cases = int(next(it))
        else:
            args.append(a)
    if len(args) != 2 or as_metric not in METRIC:
        sys.exit(__doc__.split("\n\n")[1])
    src, dst = args
    graphs = sorted(
        (d for d in os.listdir(src) if os.path.isfile(os.path.join(src, d, "graph.json"))),
        key=int,
    )
    if not graphs:
        sys.exit(f"{src}: no <i>/graph.json (not a `circa.experiment generate` size directory)")
    for g in graphs:
        kept, total = convert_graph(
            os.path.join(src, g),
            os.path.join(dst, f"g{g}"),
            as_metric,
            history,
            first_cases,
            separate,
            first_history,
        )
        print(f"graph {g}: {kept} one-cause cases of {total}")


if __name__ == "__main__":
    main(sys.argv[1:])
