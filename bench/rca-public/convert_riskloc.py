#!/usr/bin/env python3
"""Convert RiskLoc-generated attribution datasets into Sonde's attribution case layout.

Usage: convert_riskloc.py <generator output dir> <out dir> [dataset ...]

The input is what RiskLoc's `generate_dataset.py` (github.com/shaido987/riskloc) writes for a
dataset: `<name>/<id>.csv` with the dimension columns then `real,predict`, and
`<name>/injection_info.csv` whose `timestamp` column is the case id and `set` its root causes
(`a=a1&b=b3;c=c2`). The output (sonde_analysis::attribution_cases) is, per dataset:

    <out>/<name>/cases.csv   id,root_causes
    <out>/<name>/<id>.csv    <dims>,actual,forecast

Only the header changes (real -> actual, predict -> forecast); rows are copied as they are.
Cases are listed in the generator's order. Standard library only; nothing is downloaded.
"""

import csv
import os
import sys


def convert(src, dst):
    info = os.path.join(src, "injection_info.csv")
    if not os.path.isfile(info):
        sys.exit(f"{src}: no injection_info.csv (not a generate_dataset.py output directory)")
    os.makedirs(dst, exist_ok=True)
    rows = []
    with open(info, newline="") as f:
        for r in csv.DictReader(f):
            rows.append((r["timestamp"], r["set"]))
    converted = 0
    for case_id, _ in rows:
        with open(os.path.join(src, case_id + ".csv")) as fin:
            header = fin.readline().rstrip("\n").split(",")
            if header[-2:] != ["real", "predict"]:
                sys.exit(f"{src}/{case_id}.csv: header must end with real,predict: {header}")
            header[-2:] = ["actual", "forecast"]
            with open(os.path.join(dst, case_id + ".csv"), "w") as fout:
                fout.write(",".join(header) + "\n")
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
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src_root, dst_root = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or sorted(
        d for d in os.listdir(src_root)
        if os.path.isfile(os.path.join(src_root, d, "injection_info.csv"))
    )
    if not names:
        sys.exit(f"{src_root}: no dataset directories (with injection_info.csv) found")
    for name in names:
        convert(os.path.join(src_root, name), os.path.join(dst_root, name))


if __name__ == "__main__":
    main()
