#!/usr/bin/env bash
# Issue 10 in one call, on one machine with N GPUs (N from nvidia-smi -L): every run goes through
# scripts/launch.sh (mpirun, NCCL_NVLS_ENABLE=0), its metrics.jsonl / JSON is kept in $OUT, and the tables
# are printed and written to docs/results/multi_gpu.md (RESULTS=...). What needs more GPUs than the
# machine has is skipped and listed as such.
#
#   1. Data parallelism: DP = 1, 2, 4, 8 (up to N) on configs/models/*-125m.yaml and the 1b3 configs, a fixed
#      number of steps at the same global batch: micro-batch MICRO fixed, train.global_batch_tokens =
#      MICRO * SEQ * 8, so gradient accumulation = 8 / dp and every step sees the same windows at every dp
#      (the loader deals window k to DP rank k % dp). Table: loss at the last step and its difference to
#      DP = 1, tokens/s, tokens/s per GPU, scaling efficiency = (tokens/s per GPU) / (that at DP = 1).
#   2. Tensor parallelism: TP = 1, 2, 4 for the 1b3 MLA, EG-MLA and MLRA-4 configs (same batch on every TP
#      rank): loss at the last step vs TP = 1, tokens/s, per GPU.
#   3. Decode: `latte decode-bench` (random weights, cache filled to the context) at 131072 ... 1048576
#      context, batch 1, at TP = 1, 2, 4 (up to N): MLRA-4 and MLRA-2 in the block layout (blocks / tp latent
#      blocks per GPU: d_l + d_r cached per token per layer and block) vs MLA (d_c + d_r on every GPU);
#      per-device KV bytes, ms/token, and the ratios MLA / MLRA at the same TP and against MLA at TP = 1.
#
# Environment (defaults in brackets):
#   PARTS ["dp tp decode"]   which parts to run          OUT [/tmp/latte-multi-gpu]   logs, metrics, JSON
#   NGPU [nvidia-smi -L]     GPUs to use                 DEVICE [auto]               cpu: a CPU smoke run
#   DP_CONFIGS ["<every configs/models/*-125m.yaml> mla-1b3 egmla-1b3 mlra4-1b3 mlra2-1b3 gqa-1b3 mha-1b3"]
#   TP_CONFIGS ["mla-1b3 egmla-1b3 mlra4-1b3"]           DECODE_SIZES ["2b9 1b3"] (mla-S vs mlra4-S)
#   DP_DEGREES ["1 2 4 8"] TP_DEGREES ["1 2 4"] DECODE_TPS ["1 2 4"]   degrees to run (more than NGPU: skipped)
#   STEPS_125M [30] STEPS_1B3 [20]   steps per training run (configs named *-1b3* / *-2b9* use the 1b3 ones)
#   MICRO_125M [8] SEQ_125M [1024] MICRO_1B3 [4] SEQ_1B3 [2048]   per-rank micro-batch and sequence length
#   DECODE_CONTEXTS [131072,262144,524288,1048576]   DECODE_STEPS [20]
#   DATA [data/linuxdoc/linuxdoc_train_*.bin, else data/kjv/kjv_train_*.bin if present, else synthetic]
#         shard glob, or "synthetic": a corpus of ids < 128 written to $OUT/data (any config, tiny ones too)
#   BUILD [build-gpu] REBUILD [1 when $BUILD/latte is missing]   RESULTS [docs/results/multi_gpu.md]
#   NOISE [1]                repeat each TP = 1 run once: the run-to-run spread the TP differences compare to
#   EXTRA_SET [""]           more --set overrides for every training run, e.g. "train.dtype=f32": f32 runs on the GPU
#                            (cuBLAS without TF32) separate a parallelism bug from bf16 rounding, which early
#                            training at a high learning rate amplifies (use another OUT and RESULTS for them)
#   LOSS_TOL [unset]         exit 3 when a DP or TP run's loss differs from DP/TP = 1 by more than this at any
#                            step (CPU runs in f32: 1e-4; the CI smoke test uses it)
#   SYNTHETIC_TOKENS [16777216]  size of the synthetic corpus
#   DRY_RUN=1                print every command instead of running it
# One call of everything takes well over the device tool's 10 minutes per command: run it in pieces with the
# same OUT (PARTS=decode, PARTS=tp, PARTS=dp DP_CONFIGS="..."); each call rewrites the tables from every
# result in $OUT.
# A CPU smoke test of the plumbing (what the docs show):
#   NGPU=4 DEVICE=cpu BUILD=build DATA=synthetic DP_CONFIGS="mla-tiny mlra4-tiny" TP_CONFIGS="mla-tiny mlra4-tiny" \
#     DECODE_SIZES=tiny DECODE_CONTEXTS=256,1024 STEPS_125M=4 SEQ_125M=32 MICRO_125M=2 RESULTS=/tmp/mg.md \
#     scripts/multi_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/latte-multi-gpu}
PARTS=${PARTS:-"dp tp decode"}
DEVICE=${DEVICE:-auto}
BUILD=${BUILD:-${LATTE_BUILD_DIR:-build-gpu}}
RESULTS=${RESULTS:-$ROOT/docs/results/multi_gpu.md}
STEPS_125M=${STEPS_125M:-30}
STEPS_1B3=${STEPS_1B3:-20}
MICRO_125M=${MICRO_125M:-8}
SEQ_125M=${SEQ_125M:-1024}
MICRO_1B3=${MICRO_1B3:-4}
SEQ_1B3=${SEQ_1B3:-2048}
TP_CONFIGS=${TP_CONFIGS:-"mla-1b3 egmla-1b3 mlra4-1b3"}
DECODE_SIZES=${DECODE_SIZES:-"2b9 1b3"}
DECODE_CONTEXTS=${DECODE_CONTEXTS:-131072,262144,524288,1048576}
DECODE_STEPS=${DECODE_STEPS:-20}
DRY_RUN=${DRY_RUN:-0}
NOISE=${NOISE:-1}
EXTRA_SET=${EXTRA_SET:-}
DP_DEGREES=${DP_DEGREES:-"1 2 4 8"}
TP_DEGREES=${TP_DEGREES:-"1 2 4"}
DECODE_TPS=${DECODE_TPS:-"1 2 4"}
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT/runs" "$OUT/logs" "$OUT/metrics" "$OUT/decode"
SKIPPED="$OUT/skipped.txt"
FAILED_RUNS=0
: > "$SKIPPED"

if [ -z "${DP_CONFIGS:-}" ]; then
  DP_CONFIGS=""
  for f in configs/models/*-125m*.yaml; do DP_CONFIGS+="$(basename "$f" .yaml) "; done
  DP_CONFIGS+="mla-1b3 egmla-1b3 mlra4-1b3 mlra2-1b3 gqa-1b3 mha-1b3"
fi
if [ -z "${NGPU:-}" ]; then
  NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
NGPU=${NGPU:-0}
echo "multi_gpu.sh: $NGPU GPU(s), parts: $PARTS, device $DEVICE, output in $OUT"
[ "$NGPU" -ge 1 ] || { echo "no GPU found (nvidia-smi -L); set NGPU and DEVICE=cpu for a CPU smoke run" | tee -a "$SKIPPED"; }

skip() { echo "skipped: $*" | tee -a "$SKIPPED"; }
run() {  # run <log> <command...>: logs stdout+stderr, or prints the command under DRY_RUN=1
  local log=$1; shift
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; return 0; fi
  "$@" > "$log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || { echo "FAILED (rc $rc): $*"; tail -15 "$log"; FAILED_RUNS=$((FAILED_RUNS + 1)); }
  return $rc
}

# ---- build ------------------------------------------------------------------------------------------
if [ "$DRY_RUN" != 1 ] && { [ ! -x "$BUILD/latte" ] || [ "${REBUILD:-0}" = 1 ]; }; then
  echo "building $BUILD (latte_cli)"
  # The CUDA20 options: the image's CMake does not know nvcc 13's C++20 flag by itself.
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 \
    > "$OUT/logs/cmake.log" 2>&1 \
    || { tail -30 "$OUT/logs/cmake.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target latte_cli ${BUILD_TARGETS:-} > "$OUT/logs/build.log" 2>&1 \
    || { grep -E "error" "$OUT/logs/build.log" | head -30; exit 1; }
fi
LATTE="$ROOT/$BUILD/latte"
[ "${BUILD#/}" != "$BUILD" ] && LATTE="$BUILD/latte"
LAUNCH="$ROOT/scripts/launch.sh"

# ---- data -------------------------------------------------------------------------------------------
if [ -z "${DATA:-}" ]; then
  if ls data/linuxdoc/linuxdoc_train_*.bin > /dev/null 2>&1; then
    DATA="$ROOT/data/linuxdoc/linuxdoc_train_*.bin"
  elif ls data/kjv/kjv_train_*.bin > /dev/null 2>&1; then
    DATA="$ROOT/data/kjv/kjv_train_*.bin"
  else
    DATA=synthetic
  fi
fi
if [ "$DATA" = synthetic ]; then
  # Synthetic corpus: 16M tokens, a skewed unigram distribution over ids < 128 (valid for every config,
  # tiny ones included, and learnable, so the loss moves). Format: .bin shards (docs/data.md).
  DATA="$OUT/data/synthetic_train_*.bin"
  if [ ! -f "$OUT/data/synthetic_train_000000.bin" ] && [ "$DRY_RUN" != 1 ]; then
    mkdir -p "$OUT/data"
    python3 - "$OUT/data/synthetic_train_000000.bin" "${SYNTHETIC_TOKENS:-16777216}" <<'PY'
import array, random, sys
n = int(sys.argv[2])
rng = random.Random(10)
header = array.array("i", [20240520, 1, n] + [0] * 253)
tokens = array.array("H", (int(128 * rng.random() ** 3) for _ in range(n)))
with open(sys.argv[1], "wb") as f:
    header.tofile(f)
    tokens.tofile(f)
PY
  fi
fi
echo "training data: $DATA"

is_big() { case "$1" in *-1b3*|*-2b9*) return 0 ;; *) return 1 ;; esac; }

# train_run <name> <config> <dp> <tp> <micro-batches per step over all DP ranks>: writes $OUT/metrics/<name>.jsonl
train_run() {
  local name=$1 cfg=$2 dp=$3 tp=$4 per_step=$5 steps micro seq
  if is_big "$cfg"; then steps=$STEPS_1B3 micro=$MICRO_1B3 seq=$SEQ_1B3; else steps=$STEPS_125M micro=$MICRO_125M seq=$SEQ_125M; fi
  local np=$((dp * tp)) global=$((micro * seq * per_step))
  local yaml="$OUT/runs/$name.yaml"
  cat > "$yaml" <<YAML
base: $ROOT/configs/models/$cfg.yaml
model: {max_seq_len: $seq}
train: {steps: $steps, micro_batch: $micro, seq_len: $seq, global_batch_tokens: $global, lr: 3.0e-4, warmup_steps: 2,
        seed: 1337, device: $DEVICE, out_dir: $OUT/runs/$name}
data: {train: "$DATA"}
checkpoint: {every: 0, at_end: false}  # a benchmark: no 16 GB-per-rank optimizer state written at the end
eval: {every: 0}
log: {every: 5}
YAML
  rm -rf "$OUT/runs/$name"
  local extra=() kv
  for kv in $EXTRA_SET; do extra+=(--set "$kv"); done
  run "$OUT/logs/$name.log" "$LAUNCH" -n "$np" -- "$LATTE" train "$yaml" --set "parallel.dp=$dp" --set "parallel.tp=$tp" "${extra[@]}"
  local rc=$?
  [ "$DRY_RUN" = 1 ] && return 0
  cp "$OUT/runs/$name/metrics.jsonl" "$OUT/metrics/$name.jsonl" 2>/dev/null
  return $rc
}

# ---- 1. data parallelism ----------------------------------------------------------------------------
if [[ " $PARTS " == *" dp "* ]]; then
  for cfg in $DP_CONFIGS; do
    for dp in $DP_DEGREES; do
      if [ "$dp" -gt "$NGPU" ]; then skip "DP=$dp $cfg (needs $dp GPUs, have $NGPU)"; continue; fi
      echo "== DP=$dp $cfg"
      train_run "dp${dp}-$cfg" "$cfg" "$dp" 1 8  # accumulation 8 / dp: the same windows every step at every dp
    done
  done
fi

# ---- 2. tensor parallelism --------------------------------------------------------------------------
if [[ " $PARTS " == *" tp "* ]]; then
  for cfg in $TP_CONFIGS; do
    for tp in $TP_DEGREES; do
      if [ "$tp" -gt "$NGPU" ]; then skip "TP=$tp $cfg (needs $tp GPUs, have $NGPU)"; continue; fi
      echo "== TP=$tp $cfg"
      train_run "tp${tp}-$cfg" "$cfg" 1 "$tp" 1  # one micro-batch per step, shared by the TP ranks
    done
    # TP = 1 once more: bf16 GPU runs are not bitwise repeatable (atomics in the attention backward), so
    # the run-to-run spread is the yardstick for the TP > 1 differences.
    [ "$NOISE" = 1 ] && [[ " $TP_DEGREES " == *" 1 "* ]] && { echo "== TP=1 $cfg (repeat)"; train_run "tp1r-$cfg" "$cfg" 1 1 1; }
  done
fi

# ---- 3. decode --------------------------------------------------------------------------------------
decode_run() {  # decode_run <config> <tp> <mlra layout>
  local cfg=$1 tp=$2 layout=$3 name="decode-$1-tp$2-$3"
  if [ "$tp" -gt "$NGPU" ]; then skip "decode $cfg TP=$tp (needs $tp GPUs, have $NGPU)"; return; fi
  echo "== decode $cfg TP=$tp ($layout)"
  local args=("$LATTE" decode-bench "$ROOT/configs/models/$cfg.yaml" --context "$DECODE_CONTEXTS" --batch 1
              --steps "$DECODE_STEPS" --mlra-layout "$layout" --device "$DEVICE" --json)
  if [ "$DRY_RUN" = 1 ]; then run /dev/null "$LAUNCH" -n "$tp" -- "${args[@]}"; return; fi
  "$LAUNCH" -n "$tp" -- "${args[@]}" > "$OUT/decode/$name.json" 2> "$OUT/logs/$name.log" \
    || { echo "FAILED: decode $cfg TP=$tp"; tail -15 "$OUT/logs/$name.log"; FAILED_RUNS=$((FAILED_RUNS + 1)); }
}
if [[ " $PARTS " == *" decode "* ]]; then
  for size in $DECODE_SIZES; do
    for tp in $DECODE_TPS; do
      decode_run "mla-$size" "$tp" heads
      decode_run "mlra4-$size" "$tp" blocks
      [ "$tp" -le 2 ] && decode_run "mlra2-$size" "$tp" blocks  # MLRA-2 has two latent blocks
    done
  done
fi
[ "$DRY_RUN" = 1 ] && exit 0

# ---- tables -----------------------------------------------------------------------------------------
mkdir -p "$(dirname "$RESULTS")"
python3 - "$OUT" "$RESULTS" "$NGPU" "$DEVICE" "$DATA" "${LOSS_TOL:-}" <<'PY'
import datetime, glob, json, os, statistics, subprocess, sys
out, results, ngpu, device, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
loss_tol = float(sys.argv[6]) if sys.argv[6] else None
too_far = []  # runs whose losses left LOSS_TOL of the one-GPU run

def rows(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip().startswith("{") and '"step"' in l]
    except OSError:
        return []

def summary(name):
    r = rows(f"{out}/metrics/{name}.jsonl")
    if not r:
        return None
    tail = r[len(r) // 2:]  # the first half holds warm-up and allocator growth
    return {"steps": r[-1]["step"], "loss": r[-1]["loss"], "tps": statistics.median(x["tokens_per_s"] for x in tail),
            "losses": [x["loss"] for x in r]}

def spread(a, b):  # (|loss diff| at step 1, max |loss diff| over all steps) of two runs
    n = min(len(a["losses"]), len(b["losses"]))
    d = [abs(a["losses"][i] - b["losses"][i]) for i in range(n)]
    return (d[0], max(d)) if d else (float("nan"), float("nan"))

def gpus():
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True).stdout.split("\n")
        names = [n.strip() for n in names if n.strip()]
        return f"{len(names)} x {names[0]}" if names else "no GPU"
    except OSError:
        return "no GPU"

lines = [f"# Multi-GPU results (issue 10)", "",
         f"Written by `scripts/multi_gpu.sh` on {datetime.date.today()}: {gpus()}, device {device}, NGPU={ngpu}, "
         f"data `{data}`. Raw metrics and logs: `{out}`.", ""]

# 1. DP
dp_runs = sorted({os.path.basename(p)[len("dp1-"):-len(".jsonl")] for p in glob.glob(f"{out}/metrics/dp1-*.jsonl")})
if dp_runs:
    lines += ["## Data parallelism (same global batch: micro-batch fixed, accumulation 8 / dp)", "",
              "| config | dp | steps | loss at last step | vs dp=1 | max abs diff, all steps | tokens/s | tokens/s per GPU | scaling efficiency |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cfg in dp_runs:
        base = summary(f"dp1-{cfg}")
        for dp in (1, 2, 4, 8):
            s = summary(f"dp{dp}-{cfg}")
            if not s:
                continue
            per = s["tps"] / dp
            eff = per / base["tps"] if base else float("nan")
            diff = s["loss"] - base["loss"] if base else float("nan")
            worst = spread(s, base)[1] if base else float("nan")
            if loss_tol is not None and dp > 1 and not worst <= loss_tol:
                too_far.append(f"dp{dp}-{cfg}: max abs loss diff {worst:.2e} > {loss_tol:g}")
            lines.append(f"| {cfg} | {dp} | {s['steps']} | {s['loss']:.5f} | {diff:+.2e} | {worst:.2e} | {s['tps']:.0f} | "
                         f"{per:.0f} | {100 * eff:.1f}% |")
    lines.append("")

# 2. TP
tp_runs = sorted({os.path.basename(p)[len("tp1-"):-len(".jsonl")] for p in glob.glob(f"{out}/metrics/tp1-*.jsonl")})
if tp_runs:
    lines += ["## Tensor parallelism (same batch, dp = 1)", "",
              "Loss differences against the TP = 1 run; the row \"1 (repeat)\" is TP = 1 run again: bf16 runs on the GPU "
              "are not bitwise repeatable, so that row is the noise floor the TP rows compare to.", "",
              "| config | tp | steps | loss at last step | vs tp=1 | abs diff at step 1 | max abs diff, all steps | tokens/s | tokens/s per GPU | speed-up vs tp=1 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cfg in tp_runs:
        base = summary(f"tp1-{cfg}")
        for label, name, tp in (("1", f"tp1-{cfg}", 1), ("1 (repeat)", f"tp1r-{cfg}", 1), ("2", f"tp2-{cfg}", 2),
                                ("4", f"tp4-{cfg}", 4)):
            s = summary(name)
            if not s:
                continue
            first, worst = spread(s, base)
            if loss_tol is not None and tp > 1 and not worst <= loss_tol:
                too_far.append(f"tp{tp}-{cfg}: max abs loss diff {worst:.2e} > {loss_tol:g}")
            lines.append(f"| {cfg} | {label} | {s['steps']} | {s['loss']:.5f} | {s['loss'] - base['loss']:+.2e} | "
                         f"{first:.2e} | {worst:.2e} | {s['tps']:.0f} | {s['tps'] / tp:.0f} | {s['tps'] / base['tps']:.2f}x |")
    lines.append("")

# 3. decode
dec = {}
for p in sorted(glob.glob(f"{out}/decode/*.json")):
    try:
        j = [json.loads(l) for l in open(p) if l.strip().startswith("{")][-1]
    except (OSError, IndexError, ValueError):
        continue
    name = os.path.basename(p)[len("decode-"):-len(".json")]
    dec[name] = j
if dec:
    lines += ["## Decode (batch 1, random weights, cache filled to the context)", "",
              "| run | kind | tp | cached elements / token / layer / GPU | context | KV bytes per GPU | ms/token | tokens/s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, j in dec.items():
        for r in j["results"]:
            lines.append(f"| {name} | {j['kind']} | {j['tp']} | {j['kv_elements_per_token_per_layer_per_device']} | "
                         f"{r['context']} | {r['kv_bytes_per_device'] / 2**30:.2f} GiB | {r['ms_per_token']:.3f} | "
                         f"{r['tokens_per_s']:.1f} |")
    lines.append("")
    ratios = []
    for name, j in dec.items():
        if not name.startswith("mlra") or j["tp"] == 1:
            continue
        size = name.split("-")[1]
        for ref in (f"mla-{size}-tp1-heads", f"mla-{size}-tp{j['tp']}-heads"):
            if ref not in dec:
                continue
            mine = {r["context"]: r for r in j["results"]}
            for r in dec[ref]["results"]:
                m = mine.get(r["context"])
                if m:
                    ratios.append(f"| {name} vs {ref} | {r['context']} | {r['kv_bytes_per_device'] / m['kv_bytes_per_device']:.2f}x | "
                                  f"{r['ms_per_token'] / m['ms_per_token']:.2f}x |")
    if ratios:
        lines += ["MLRA under TP (block layout) against MLA (the paper reports ~2.8x over MLA for MLRA-4 at TP = 4):", "",
                  "| comparison | context | KV bytes per GPU, MLA / MLRA | latency, MLA / MLRA |", "|---|---:|---:|---:|"]
        lines += ratios + [""]

skipped = [l.strip() for l in open(f"{out}/skipped.txt") if l.strip()]
if skipped:
    lines += ["## Skipped", ""] + [f"- {s}" for s in skipped] + [""]
text = "\n".join(lines)
print(text)
with open(results, "w") as f:
    f.write(text)
print(f"\n(written to {results})")
if too_far:
    print("LOSS_TOL exceeded:\n  " + "\n  ".join(too_far))
    sys.exit(3)
PY
tables_rc=$?
if [ "$FAILED_RUNS" -gt 0 ]; then echo "multi_gpu.sh: $FAILED_RUNS run(s) failed (logs in $OUT/logs)"; exit 4; fi
exit $tables_rc
