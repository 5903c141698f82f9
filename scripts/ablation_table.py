#!/usr/bin/env python3
"""Summarises a `latte sweep` output directory as a Markdown table and a PNG of the loss curves.

    python3 scripts/ablation_table.py runs/ablations/egmla_kv [--out docs/results/egmla_kv_sweep]
                                      [--latte build/latte] [--smooth 20]

For each run directory (in the sweep's order, from <out_dir>/sweep.json; else every sub-directory with
a config.yaml or metrics.jsonl, sorted) it reads config.yaml and metrics.jsonl and reports: the
attention config, parameters (total and non-embedding), KV-cache elements per token per layer and their
share of MHA of the same width (2 d), steps done, the final train loss (mean of the last 10 steps), the
last validation loss and perplexity, and the median tokens/s. Parameters and KV numbers come from
`latte kv-report <run>/config.yaml --json` when the binary is there (the C++ formulas are the
contract), else from the same formulas re-implemented here (spec/attention.md).

With --out X it writes X.md and X.png; without, it prints the table and writes
<out_dir>/loss_curves.png. Needs only Debian's python3, python3-matplotlib for the figure and, when
installed, python3-yaml (a minimal reader of latte's own config.yaml output is the fallback).
"""
import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_runs  # noqa: E402  (same folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- YAML: python3-yaml when installed, else a reader of the subset yaml-cpp's Dump writes ----------

def _scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("", "~", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text.replace("_", "")) if cast is int else cast(text)
        except ValueError:
            pass
    return text


def _flow(text, i=0):
    """Parses a flow collection ({a: 1, b: [x, y]}) starting at text[i]; returns (value, next index)."""
    def skip(j):
        while j < len(text) and text[j] in " \t":
            j += 1
        return j

    i = skip(i)
    if text[i] in "{[":
        closing = "}" if text[i] == "{" else "]"
        out = {} if closing == "}" else []
        i = skip(i + 1)
        while text[i] != closing:
            if closing == "}":
                key, i = _flow(text, i)
                i = skip(i)
                assert text[i] == ":", "expected ':' in %r" % text
                value, i = _flow(text, i + 1)
                out[key] = value
            else:
                value, i = _flow(text, i)
                out.append(value)
            i = skip(i)
            if text[i] == ",":
                i = skip(i + 1)
        return out, i + 1
    if text[i] in "'\"":
        end = text.index(text[i], i + 1)
        return text[i + 1:end], end + 1
    j = i
    while j < len(text) and text[j] not in ",}]" and not (text[j] == ":" and (j + 1 == len(text) or text[j + 1] == " ")):
        j += 1
    return _scalar(text[i:j]), j


def _mini_yaml(text):
    """Block mappings, block sequences and flow collections: what yaml-cpp writes for latte configs."""
    lines = []
    for raw in text.splitlines():
        stripped = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if stripped.strip() and stripped.strip() != "---":
            lines.append((len(stripped) - len(stripped.lstrip()), stripped.strip()))

    def value_of(rest):
        rest = rest.strip()
        return _flow(rest)[0] if rest[:1] in "{[" else _scalar(rest)

    def block(i, indent):
        if i < len(lines) and lines[i][1].startswith("- "):
            out = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                out.append(value_of(lines[i][1][2:]))
                i += 1
            return out, i
        out = {}
        while i < len(lines) and lines[i][0] == indent:
            key, _, rest = lines[i][1].partition(":")
            key = _scalar(key)
            if rest.strip():
                out[key] = value_of(rest)
                i += 1
            elif i + 1 < len(lines) and (lines[i + 1][0] > indent or
                                         (lines[i + 1][0] == indent and lines[i + 1][1].startswith("- "))):
                out[key], i = block(i + 1, lines[i + 1][0])
            else:
                out[key] = None
                i += 1
        return out, i

    return block(0, lines[0][0])[0] if lines else {}


def load_yaml(path):
    with open(path) as f:
        text = f.read()
    if not os.environ.get("LATTE_NO_PYYAML"):
        try:
            import yaml
            return yaml.safe_load(text) or {}
        except ImportError:
            pass
    return _mini_yaml(text)


# ---- parameters and KV cache from a model config (layers/model_config.cpp, spec/attention.md) ------

def resolve_attention(a, d):
    """The attention section with every default filled in, as parse_model_config does."""
    h = int(a["n_heads"])
    head = d // h if d % h == 0 else 0
    r = {"kind": a["kind"], "n_heads": h}
    if r["kind"] == "mha":
        r["n_kv_heads"] = int(a.get("n_kv_heads", h))
        r["head_dim"] = int(a.get("head_dim", head))
        return r
    r["kv_rank"] = int(a.get("kv_rank", 0))
    r["q_rank"] = int(a.get("q_rank", 0))
    r["nope_dim"] = int(a.get("nope_dim", head))
    r["rope_dim"] = int(a.get("rope_dim", r["nope_dim"] // 2))
    r["v_dim"] = int(a.get("v_dim", r["nope_dim"]))
    r["latent_scale"] = bool(a.get("latent_scale", False))
    r["latent_norm"] = bool(a.get("latent_norm", True))
    r["blocks"] = int(a.get("blocks", 4)) if r["kind"] == "mlra" else 1
    r["branches"] = int(a.get("branches", 4)) if r["kind"] == "mlra" else 1
    if r["kind"] == "egmla":
        g = a.get("gate") or {}
        r["gate"] = {"position": g.get("position", "latent"), "norm": g.get("norm", "layernorm"),
                     "share_layers": int(g.get("share_layers", 1)), "embed_dim": int(g.get("embed_dim", r["kv_rank"]))}
    return r


def attention_params(a, d):
    """(matmul weights, vectors) of one layer's attention."""
    h = a["n_heads"]
    if a["kind"] == "mha":
        return d * h * a["head_dim"] + 2 * d * a["n_kv_heads"] * a["head_dim"] + h * a["head_dim"] * d, 0
    dqk = a["nope_dim"] + a["rope_dim"]
    matmul = vectors = 0
    if a["q_rank"] == 0:
        matmul += h * dqk * d
    else:
        matmul += a["q_rank"] * d + h * dqk * a["q_rank"]
        vectors += a["q_rank"] if a["latent_norm"] else 0
    matmul += (a["kv_rank"] + a["rope_dim"]) * d
    heads_per_block = h // (a["blocks"] // a["branches"]) if a["kind"] == "mlra" else h
    matmul += a["kv_rank"] * heads_per_block * (a["nope_dim"] + a["v_dim"])
    matmul += d * h * a["v_dim"]
    gate = a.get("gate")
    bias = 2 if gate and gate["norm"] == "layernorm" else 1
    if gate and gate["position"] == "latent":
        matmul += a["kv_rank"] * gate["embed_dim"]
        vectors += a["kv_rank"] * bias
    else:
        vectors += a["kv_rank"] if a["latent_norm"] else 0
        if gate:
            matmul += h * (a["nope_dim"] + a["v_dim"]) * gate["embed_dim"]
            vectors += h * (a["nope_dim"] + a["v_dim"]) * bias
    return matmul, vectors


def model_numbers(model):
    """params_total, params_non_embedding, kv per token per layer, MHA's kv per layer (2 d)."""
    if model.get("layer_kinds"):
        raise ValueError("layer_kinds (mixed layers) needs `latte kv-report`; build latte or pass --latte")
    d, V, n = int(model["d_model"]), int(model["vocab_size"]), int(model["n_layers"])
    a = resolve_attention(model["attention"], d)
    am, av = attention_params(a, d)
    matmul = n * (am + 3 * d * int(model["ffn_dim"]))
    vectors = n * (av + 2 * d) + d
    embedding = V * d * (1 if model.get("tie_embeddings", True) else 2)
    if a["kind"] == "egmla":
        embedding += -(-n // a["gate"]["share_layers"]) * V * a["gate"]["embed_dim"]
    kv = a["kv_rank"] + a["rope_dim"] if a["kind"] != "mha" else 2 * a["n_kv_heads"] * a["head_dim"]
    total = matmul + vectors + embedding
    return {"params_total": total, "params_non_embedding": total - embedding,
            "kv_elements_per_token_per_layer": kv, "mha_kv_elements_per_token_per_layer": 2 * d}


def find_latte(explicit):
    for candidate in ([explicit] if explicit else []) + [os.environ.get("LATTE"), os.path.join(REPO, "build", "latte")]:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    if explicit:
        sys.exit("error: --latte %s is not an executable" % explicit)
    return None


def kv_report(latte, config_path):
    """`latte kv-report --json` of a run's config.yaml, or None when it cannot be had."""
    if not latte:
        return None
    try:
        out = subprocess.run([latte, "kv-report", config_path, "--json"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


# ---- the table ----------------------------------------------------------------------------------------

def describe(model):
    d = int(model["d_model"])
    a = resolve_attention(model["attention"], d)
    if a["kind"] == "mha":
        name = "MHA" if a["n_kv_heads"] == a["n_heads"] else "MQA" if a["n_kv_heads"] == 1 else "GQA"
        return "%s %d/%d heads x %d" % (name, a["n_heads"], a["n_kv_heads"], a["head_dim"])
    text = "d_c %d, d_r %d" % (a["kv_rank"], a["rope_dim"])
    if a["q_rank"]:
        text += ", q %d" % a["q_rank"]
    if a["kind"] == "mlra":
        text = "MLRA-%d %s (%d x %d)" % (a["branches"], text, a["blocks"], a["kv_rank"] // a["blocks"])
    elif a["kind"] == "egmla":
        g = a["gate"]
        text = "EG-MLA %s, d_e %d, share %d, %s" % (text, g["embed_dim"], g["share_layers"], g["position"])
    else:
        text = "MLA " + text
    if a.get("latent_scale"):
        text += ", latent scale"
    return text


def human(n):
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return "%.2f%s" % (n / div, unit)
    return "%d" % n


def list_runs(out_dir):
    """[(name, run_dir)] in the sweep's order when sweep.json is there."""
    manifest = os.path.join(out_dir, "sweep.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            m = json.load(f)
        runs = []
        for r in m.get("runs", []):
            run_dir = r["run_dir"]
            if not os.path.isdir(run_dir):  # relative to another working directory: look beside sweep.json
                run_dir = os.path.join(out_dir, r["name"])
            runs.append((r["name"], run_dir))
        return runs, m
    runs = sorted((e, os.path.join(out_dir, e)) for e in os.listdir(out_dir)
                  if os.path.isfile(os.path.join(out_dir, e, "config.yaml")) or
                  os.path.isfile(os.path.join(out_dir, e, "metrics.jsonl")))
    return runs, {}


def summarize(name, run_dir, latte):
    row = {"name": name, "run_dir": run_dir, "rows": plot_runs.read_metrics(run_dir)}
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(config_path):
        return row
    config = load_yaml(config_path)
    model = config.get("model") or {}
    train = config.get("train") or {}
    row["config"] = config
    row["steps"] = int(train.get("steps", 0))
    row["describe"] = describe(model)
    report = kv_report(latte, config_path)
    row["numbers"] = report if report else model_numbers(model)
    row["numbers_from"] = "latte kv-report" if report else "python"
    return row


def markdown(rows, title, out_dir, manifest):
    lines = ["# " + title, ""]
    first = next((r for r in rows if "config" in r), None)
    if first:
        t, data = first["config"].get("train") or {}, first["config"].get("data") or {}
        tokens = int(t.get("micro_batch", 8)) * int(t.get("seq_len", 256))
        if t.get("global_batch_tokens"):
            tokens = int(t["global_batch_tokens"])
        train_data = data.get("train")
        train_data = ", ".join(train_data) if isinstance(train_data, list) else train_data
        lines.append("Sweep `%s`, runs under `%s`. %s steps of %s tokens (seed %s) on `%s`. Generated %s by "
                     "`scripts/ablation_table.py`." % (manifest.get("sweep", "?"), out_dir, t.get("steps", "?"),
                                                       "{:,}".format(tokens), t.get("seed", "?"), train_data,
                                                       datetime.date.today().isoformat()))
        lines.append("")
    head = ["run", "attention", "params", "non-emb.", "KV/token/layer", "KV vs MHA", "steps", "train loss",
            "val loss", "val ppl", "tokens/s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
    sources = set()
    for r in rows:
        if "config" not in r:
            lines.append("| %s | (not run) |%s" % (r["name"], " |" * (len(head) - 2)))
            continue
        n = r["numbers"]
        sources.add(r["numbers_from"])
        kv, mha = n["kv_elements_per_token_per_layer"], n["mha_kv_elements_per_token_per_layer"]
        metrics = r["rows"]
        last10 = [m["loss"] for m in metrics[-10:] if "loss" in m]
        vals = [m["val_loss"] for m in metrics if "val_loss" in m]
        speeds = [m["tokens_per_s"] for m in metrics[len(metrics) // 10:] if m.get("tokens_per_s")]
        cells = [r["name"], r["describe"], human(n["params_total"]), human(n["params_non_embedding"]), str(kv),
                 "%.1f%%" % (100.0 * kv / mha),
                 "%d/%d" % (metrics[-1]["step"] if metrics else 0, r["steps"]),
                 "%.4f" % (sum(last10) / len(last10)) if last10 else "-",
                 "%.4f" % vals[-1] if vals else "-",
                 "%.2f" % math.exp(vals[-1]) if vals else "-",
                 human(statistics.median(speeds)) if speeds else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "train loss: mean of the last 10 steps; val loss: the last evaluation (eval.batches micro-batches "
              "of the validation shards); KV vs MHA: cached elements per token per layer relative to MHA of the same "
              "width (2 d); params and KV from %s; tokens/s: median over the run after its first 10%% of steps." %
              " and ".join(sorted(sources or {"-"}))]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description="Markdown table and loss curves of a latte sweep directory.")
    ap.add_argument("out_dir", help="the sweep's out_dir (holds sweep.json and one directory per run)")
    ap.add_argument("--out", help="write OUT.md and OUT.png (e.g. docs/results/egmla_kv_sweep)")
    ap.add_argument("--latte", help="latte binary for kv-report (default: $LATTE, else build/latte)")
    ap.add_argument("--smooth", type=int, default=20, help="moving-average window of the train-loss curves")
    ap.add_argument("--title", help="table and figure title (default: the sweep's description)")
    args = ap.parse_args()
    if not os.path.isdir(args.out_dir):
        sys.exit("error: %s is not a directory (give a sweep's out_dir, e.g. runs/ablations/egmla_kv)" % args.out_dir)
    runs, manifest = list_runs(args.out_dir)
    if not runs:
        sys.exit("error: %s holds no run directories (nothing with config.yaml or metrics.jsonl)" % args.out_dir)
    latte = find_latte(args.latte)
    rows = [summarize(name, run_dir, latte) for name, run_dir in runs]
    title = args.title or manifest.get("description") or os.path.basename(os.path.normpath(args.out_dir))
    table = markdown(rows, title, args.out_dir, manifest)
    png = args.out + ".png" if args.out else os.path.join(args.out_dir, "loss_curves.png")
    curves = [(r["name"], r["rows"]) for r in rows if r["rows"]]
    drew = bool(curves) and plot_runs.plot_loss_curves(curves, png, smooth=args.smooth, title=title)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".md", "w") as f:
            f.write(table + ("\n![loss curves](%s)\n" % os.path.basename(png) if drew else ""))
        print("wrote %s.md%s" % (args.out, " and " + png if drew else ""))
    else:
        sys.stdout.write(table)
        if drew:
            print("\nwrote " + png)


if __name__ == "__main__":
    main()
