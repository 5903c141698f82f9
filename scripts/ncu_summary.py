#!/usr/bin/env python3
"""Per-kernel time and DRAM traffic from an Nsight Compute CSV (for finding slow side kernels).

    ncu --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
        PROGRAM ... > run.csv
    python3 scripts/ncu_summary.py run.csv [--last FRACTION] [--top N]

Groups the launches by kernel name (template arguments kept, parameter lists dropped) and prints, largest total
first: launches, total and mean time, DRAM bytes per launch and the achieved DRAM rate (read + write over time).
A memory-bound kernel far below the copy bandwidth (~3 TB/s on an H100) is a candidate; a large kernel at a low
rate is usually compute-bound and fine. --last 0.5 keeps only the last half of the launches (the steady state of a
training run, after start-up and autotuning).
"""
import argparse
import collections
import csv
import sys


def short_name(name):
    for anon in ("(anonymous namespace)::", "<unnamed>::", "unnamed>::"):  # ncu writes the last
        name = name.replace(anon, "")
    depth, out = 0, []
    for ch in name:  # drop the parameter list "(...)" at template depth 0
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            break
        out.append(ch)
    return "".join(out).replace("void ", "").strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--last", type=float, default=1.0, help="keep the last FRACTION of the launches")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    launches = collections.OrderedDict()  # launch id -> {name, metrics}
    with open(args.csv, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu's own messages are not CSV rows
    for row in csv.DictReader(lines):
        try:
            value = float(row["Metric Value"].replace(",", ""))
        except (KeyError, ValueError):
            continue
        rec = launches.setdefault(row["ID"], {"name": short_name(row["Kernel Name"])})
        unit = row.get("Metric Unit", "")
        scale = {"ns": 1e-9, "nsecond": 1e-9, "us": 1e-6, "usecond": 1e-6, "ms": 1e-3, "msecond": 1e-3, "s": 1.0,
                 "second": 1.0, "byte": 1.0, "Kbyte": 1e3, "KB": 1e3, "Mbyte": 1e6, "MB": 1e6, "Gbyte": 1e9,
                 "GB": 1e9}.get(unit, 1.0)
        rec[row["Metric Name"]] = value * scale
    recs = list(launches.values())
    if not recs:
        sys.exit(f"ncu_summary: no metric rows in {args.csv}")
    recs = recs[-max(1, round(len(recs) * args.last)):]
    groups = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for r in recs:
        g = groups[r["name"]]
        g[0] += 1
        g[1] += r.get("gpu__time_duration.sum", 0.0)
        g[2] += r.get("dram__bytes_read.sum", 0.0) + r.get("dram__bytes_write.sum", 0.0)
    total = sum(g[1] for g in groups.values())
    print(f"{len(recs)} launches, {total * 1e3:.3f} ms of kernel time")
    print(f"{'ms':>9} {'share':>6} {'calls':>6} {'us/call':>9} {'MB/call':>9} {'GB/s':>7}  kernel")
    for name, (n, t, b) in sorted(groups.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"{t * 1e3:9.3f} {t / total:6.1%} {n:6d} {t / n * 1e6:9.1f} {b / n / 1e6:9.2f} {b / t / 1e9 if t else 0:7.0f}  "
              f"{name[:110]}")


if __name__ == "__main__":
    main()
