#!/usr/bin/env python3
"""A/B comparison of bench_attention builds or switches, interleaved in one call (for the GPU machine).

    python3 scripts/bench_ab.py [--rounds N] [--mode MODE] VARIANT VARIANT ...

VARIANT is LABEL=BINARY[,NAME=VALUE...]: a bench_attention binary and environment settings, e.g.
    new=build/bench_attention  old=build/bench_attention_old  cp=build/bench_attention,LATTE_DECODE_TMA=0
MODE is the benchmark's mode: decode (the default), decode-models, forward or backward (bench_attention --MODE).
--rows TEXT[|TEXT...] keeps only the decode and read-floor rows (or --forward / --backward shapes, "bwd B4 T4096
H16 (64,64)") whose name and shape contain one of the texts (e.g. "H128" or "B4 S32k H128|latent_B4"): bench_attention's
LATTE_BENCH_ROWS, for every variant; less device time per round. The variants run in
turn, round after round (A B A B ...), so that a drift of the machine (clocks, temperature) hits all of them
alike; one row per benchmark line, one column per variant: the median over the rounds and, in brackets, the
range. Decode rows give the fraction of the copy bandwidth, forward rows TFLOP/s, backward rows TFLOP/s (one call,
and back to back).
The last column is the first variant's median over the second's.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

# The final table of bench_attention: "<name> <shape>  <ms> <rate> <unit> <ratio> <of>".
TABLE_ROW = re.compile(r"^(?P<label>.+?)\s+(?P<ms>\d+\.\d{4})\s+(?P<rate>\d+\.\d)\s+(?P<unit>\S+)\s+"
                       r"(?P<ratio>\d+\.\d{3})\s+(?P<of>.+)$")
# bench_attention --backward: "<name> B4 T4096 H16 (d,d) causal: X ms Y TFLOP/s, back to back X ms Y TFLOP/s".
BACKWARD_ROW = re.compile(r"^(?P<label>.+?): (?P<ms>[\d.]+) ms (?P<tf>[\d.]+) TFLOP/s, back to back "
                          r"(?P<ms4>[\d.]+) ms (?P<tf4>[\d.]+) TFLOP/s")
# bench_attention --forward: "<name> fwd B4 T4096 H16 (d,d) causal: X ms Y TFLOP/s".
FORWARD_ROW = re.compile(r"^(?P<label>.+?): (?P<ms>[\d.]+) ms (?P<tf>[\d.]+) TFLOP/s$")


def parse_variant(text):
    label, _, rest = text.partition("=")
    if not label or not rest:
        sys.exit(f"bench_ab: variant '{text}' is not LABEL=BINARY[,NAME=VALUE...]")
    binary, *settings = rest.split(",")
    env = dict(os.environ)
    for s in settings:
        name, eq, value = s.partition("=")
        if not eq:
            sys.exit(f"bench_ab: '{s}' in variant '{text}' is not NAME=VALUE")
        env[name] = value
    return label, binary, env


def parse_rows(output):
    """{row label: value} of one benchmark run, in the order printed."""
    rows = {}
    in_table = False
    for line in output.splitlines():
        m = BACKWARD_ROW.match(line)
        if m:
            label = re.sub(r"\s+", " ", m["label"].strip())
            rows[label] = float(m["tf"])
            rows[label + " (back to back)"] = float(m["tf4"])
            continue
        m = FORWARD_ROW.match(line)
        if m:
            rows[re.sub(r"\s+", " ", m["label"].strip())] = float(m["tf"])
            continue
        if line.startswith("kernel ") and line.rstrip().endswith(" of"):
            in_table = True
            continue
        m = TABLE_ROW.match(line) if in_table else None
        if m:
            rows[re.sub(r"\s+", " ", m["label"].strip())] = float(m["ratio"])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", default="decode", choices=["decode", "decode-models", "forward", "backward"])
    ap.add_argument("--rows", default="",
                    help="only the rows (decode, read floor, --backward shapes) containing one of these |-separated texts")
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    mode = "--" + args.mode
    variants = [parse_variant(v) for v in args.variants]
    if args.rows:
        for _, _, env in variants:
            env["LATTE_BENCH_ROWS"] = args.rows
    results = {label: [] for label, _, _ in variants}  # label -> [rows of each round]
    order = []
    for r in range(args.rounds):
        for label, binary, env in variants:
            if not os.access(binary, os.X_OK):
                sys.exit(f"bench_ab: {label}: no executable {binary} (build it, or carry it to the GPU machine)")
            run = subprocess.run([binary, mode], env=env, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"bench_ab: {label} ({binary} {mode}) failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
            rows = parse_rows(run.stdout)
            if not rows:
                sys.exit(f"bench_ab: no benchmark rows in the output of {label} ({binary} {mode})")
            results[label].append(rows)
            order += [k for k in rows if k not in order]
            print(f"round {r + 1}/{args.rounds}: {label} done", file=sys.stderr, flush=True)

    labels = [label for label, _, _ in variants]
    width = max(len(k) for k in order)
    print(f"{'row':<{width}}  " + "  ".join(f"{label:>22}" for label in labels) + (
        f"  {labels[0]}/{labels[1]:<6}" if len(labels) > 1 else ""))
    for key in order:
        medians, cells = [], []
        for label in labels:
            values = [rows[key] for rows in results[label] if key in rows]
            if not values:
                medians.append(None)
                cells.append(f"{'-':>22}")
                continue
            med = statistics.median(values)
            medians.append(med)
            d = 1 if med >= 10 else 3  # TFLOP/s, or a fraction of the copy bandwidth
            cells.append(f"{med:.{d}f} [{min(values):.{d}f}-{max(values):.{d}f}]".rjust(22))
        ratio = ""
        if len(labels) > 1 and medians[0] and medians[1]:
            ratio = f"  {medians[0] / medians[1]:8.3f}"
        print(f"{key:<{width}}  " + "  ".join(cells) + ratio)


if __name__ == "__main__":
    main()
