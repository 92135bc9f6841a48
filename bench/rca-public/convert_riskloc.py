#!/usr/bin/env python3
"""Convert RiskLoc-generated attribution datasets into Sonde's attribution case layout.

Usage: convert_riskloc.py [--first N] [--digits D] <generator output dir> <out dir> [dataset ...]

--first N keeps the first N cases of each dataset and --digits D keeps D significant digits
of actual and forecast (relative precision, so small leaves keep their ratio): how the
committed excerpt (analysis/tests/data/riskloc-excerpt) was made.

The input is what RiskLoc's `generate_dataset.py` (github.com/shaido987/riskloc) writes for a
dataset: `<name>/<id>.csv` with the dimension columns then `real,predict`, and
`<name>/injection_info.csv` whose `timestamp` column is the case id and `set` its root causes
(`a=a1&b=b3;c=c2`). Squeeze's B datasets have the same layout (the generator copies it): give
one B directory as the input, and each setting `B_cuboid_layer_*_n_ele_*` becomes a dataset.
The output (sonde_analysis::attribution_cases) is, per dataset:

    <out>/<name>/cases.csv   id,root_causes
    <out>/<name>/<id>.csv    <dims>,actual,forecast

Only the header changes (real -> actual, predict -> forecast); rows are copied as they are
unless --digits is given.
Cases are listed in the generator's order. Standard library only; nothing is downloaded.
"""

import csv
import os
import sys


def convert(src, dst, first=None, decimals=None):
    info = os.path.join(src, "injection_info.csv")
    if not os.path.isfile(info):
        sys.exit(f"{src}: no injection_info.csv (not a generate_dataset.py output directory)")
    os.makedirs(dst, exist_ok=True)
    rows = []
    with open(info, newline="") as f:
        for r in csv.DictReader(f):
            rows.append((r["timestamp"], r["set"]))
    if first is not None:
        rows = rows[:first]
    converted = 0
    for case_id, _ in rows:
        with open(os.path.join(src, case_id + ".csv")) as fin:
            header = fin.readline().rstrip("\n").split(",")
            if header[-2:] != ["real", "predict"]:
                sys.exit(f"{src}/{case_id}.csv: header must end with real,predict: {header}")
            header[-2:] = ["actual", "forecast"]
            with open(os.path.join(dst, case_id + ".csv"), "w") as fout:
                fout.write(",".join(header) + "\n")
                while decimals is not None:
                    line = fin.readline()
                    if not line:
                        break
                    f = line.rstrip("\n").split(",")
                    f[-2:] = [f"{float(x):.{decimals}g}" for x in f[-2:]]
                    fout.write(",".join(f) + "\n")
                while True:
                    chunk = fin.read(1 << 20)
                    if not chunk:
                        break
                    fout.write(chunk)
        converted += 1
    with open(os.path.join(dst, "cases.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "root_causes"])
        for case_id, rc in rows:
            w.writerow([case_id, rc])
    print(f"{src} -> {dst}: {converted} cases")


def main():
    args = sys.argv[1:]
    opts = {}
    while args and args[0] in ("--first", "--digits"):
        if len(args) < 2:
            sys.exit(__doc__)
        opts[args[0]] = int(args[1])
        args = args[2:]
    if len(args) < 2:
        sys.exit(__doc__)
    src_root, dst_root = args[0], args[1]
    names = args[2:] or sorted(
        d for d in os.listdir(src_root)
        if os.path.isfile(os.path.join(src_root, d, "injection_info.csv"))
    )
    if not names:
        sys.exit(f"{src_root}: no dataset directories (with injection_info.csv) found")
    for name in names:
        convert(os.path.join(src_root, name), os.path.join(dst_root, name),
                opts.get("--first"), opts.get("--digits"))


if __name__ == "__main__":
    main()
