#!/usr/bin/env python3
"""Draws the train (and validation) loss curves of one or many latte run directories into a PNG.

    python3 scripts/plot_runs.py runs/a runs/b ... --out curves.png [--x step|tokens] [--smooth 20]
                                 [--labels a,b] [--title TEXT] [--logy]

A run directory is what `latte train` writes: metrics.jsonl (one JSON object per step with step, loss,
tokens, and val_loss on evaluation steps). The left panel shows the train loss (a moving average over
--smooth steps, the raw values faintly behind), the right panel the validation loss when any run has
one. Needs only Debian's python3 and python3-matplotlib (drawn with the Agg backend, no display).
scripts/ablation_table.py uses plot_loss_curves() for its figure.
"""
import argparse
import json
import os
import sys


def ensure_matplotlib():
    """Imports matplotlib with the Agg backend; re-executes under Debian's /usr/bin/python3 when the
    python3 on PATH (a pyenv or venv interpreter) lacks it. Returns the pyplot module or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        system = "/usr/bin/python3"
        if (os.path.exists(system) and os.path.realpath(sys.executable) != os.path.realpath(system)
                and not os.environ.get("LATTE_PLOT_REEXEC")):
            os.environ["LATTE_PLOT_REEXEC"] = "1"
            os.execv(system, [system] + sys.argv)
        return None


def read_metrics(run_dir):
    """The rows of <run_dir>/metrics.jsonl (a torn last line from a crash is skipped)."""
    rows = []
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return rows


def moving_average(values, window):
    """Centered mean over `window` values (truncated at both ends), so the curve does not lag the steps."""
    half = max(window, 1) // 2
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def plot_loss_curves(runs, out_path, x="step", smooth=20, title=None, logy=False):
    """runs: list of (label, rows). Writes out_path; returns False when matplotlib is missing."""
    plt = ensure_matplotlib()
    if plt is None:
        print("warning: python3-matplotlib is not installed; no figure written (apt-get install python3-matplotlib)",
              file=sys.stderr)
        return False
    has_val = any("val_loss" in r for _, rows in runs for r in rows)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(13 if has_val else 7.5, 4.8), squeeze=False)
    ax_train = axes[0][0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    key = "tokens" if x == "tokens" else "step"
    for i, (label, rows) in enumerate(runs):
        rows = [r for r in rows if "loss" in r and key in r]
        if not rows:
            continue
        color = colors[i % len(colors)]
        xs = [r[key] for r in rows]
        losses = [r["loss"] for r in rows]
        window = min(smooth, len(rows) // 20)  # short runs: never smooth away their shape
        if window > 1:
            ax_train.plot(xs, losses, color=color, alpha=0.15, linewidth=0.8)
            ax_train.plot(xs, moving_average(losses, window), color=color, linewidth=1.6, label=label)
        else:
            ax_train.plot(xs, losses, color=color, linewidth=1.4, label=label)
        if has_val:
            val = [(r[key], r["val_loss"]) for r in rows if "val_loss" in r]
            if val:
                axes[0][1].plot([v[0] for v in val], [v[1] for v in val], color=color, marker="o", markersize=3.5,
                                linewidth=1.4, label=label)
    xlabel = "tokens" if key == "tokens" else "step"
    ax_train.set_title("train loss" + (" (centered moving average, up to %d steps)" % smooth if smooth > 1 else ""))
    panels = [ax_train] + ([axes[0][1]] if has_val else [])
    if has_val:
        axes[0][1].set_title("validation loss")
    for ax in panels:
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss (nats/token)")
        ax.grid(True, alpha=0.3)
        if logy:
            ax.set_yscale("log")
    # Zoom on the interesting part: the first steps' loss (~ln V) would flatten every curve.
    tails = [r["loss"] for _, rows in runs for r in rows[len(rows) // 10:] if "loss" in r]
    if tails and not logy:
        lo, hi = min(tails), max(tails)
        ax_train.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    ax_train.legend(fontsize=8)
    if has_val:
        axes[0][1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description="Plot train/val loss curves of latte run directories.")
    ap.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    ap.add_argument("--out", default="curves.png", help="output PNG (default curves.png)")
    ap.add_argument("--x", choices=["step", "tokens"], default="step", help="x axis (default step)")
    ap.add_argument("--smooth", type=int, default=20, help="moving-average window in steps (1 = raw; default 20)")
    ap.add_argument("--labels", help="comma-separated labels (default: the directory names)")
    ap.add_argument("--title", help="figure title")
    ap.add_argument("--logy", action="store_true", help="logarithmic loss axis")
    args = ap.parse_args()
    labels = args.labels.split(",") if args.labels else [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        sys.exit("error: --labels has %d names for %d runs" % (len(labels), len(args.runs)))
    runs = []
    for label, run_dir in zip(labels, args.runs):
        rows = read_metrics(run_dir)
        if not rows:
            print("warning: %s has no metrics.jsonl rows; skipped" % run_dir, file=sys.stderr)
            continue
        runs.append((label, rows))
    if not runs:
        sys.exit("error: none of the run directories has metrics (expected <run>/metrics.jsonl)")
    if not plot_loss_curves(runs, args.out, x=args.x, smooth=args.smooth, title=args.title, logy=args.logy):
        sys.exit(1)
    print("wrote %s (%d runs)" % (args.out, len(runs)))


if __name__ == "__main__":
    main()
