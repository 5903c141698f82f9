#!/usr/bin/env bash
# End-to-end training on the GPU machine, in one call: builds latte (sm_90a), trains the 125m EG-MLA,
# MLA and MHA configs for a few hundred steps and the 1b3 configs for a few dozen on the KJV corpus,
# times the PyTorch reference (scripts/reference/train_bench.py) on the same model and batch, and prints
# a table last. Needs data/$DATA (scripts/prepare_data.sh small|linux-doc; carry it). Logs and metrics go
# to $OUT (metrics-<run>.jsonl: scripts/plot_runs.py draws them).
#   STEPS_125M=200 STEPS_1B3=30 VARIANTS="egmla mla mha" DATA=kjv bash scripts/gpu_train_bench.sh
# BATCH_1B3 / ACCUM_1B3 (default 4 / 1): the 1b3 micro-batch and micro-batches per optimizer step (ACCUM_1B3=4 with
# BATCH_1B3=8 is one GPU's share of configs/ablations/paper_egmla_1b3.yaml's 524,288-token step); those runs are named <variant>-1b3-b8-a4.
# TORCH_MODES (default eager,compile): the PyTorch reference's modes.
# TORCH=0 skips the PyTorch reference; STEPS_125M=0 / STEPS_1B3=0 skip the 125m / 1b3 runs; SCAN="4 8 32" also times egmla-125m at those micro-batches (30 steps):
# tokens/s that grow with the batch mean per-step overhead (launches, host work) is a large share.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/latte-out}
mkdir -p "$OUT"
STEPS_125M=${STEPS_125M:-200}
STEPS_1B3=${STEPS_1B3:-30}
VARIANTS=${VARIANTS:-"egmla mla mha"}
DATA=${DATA:-kjv}
SCAN=${SCAN:-}
TORCH=${TORCH:-1}
BATCH_1B3=${BATCH_1B3:-4}
ACCUM_1B3=${ACCUM_1B3:-1}
TORCH_MODES=${TORCH_MODES:-eager,compile}
BUILD=${LATTE_BUILD_DIR:-build-gpu}
export NCCL_NVLS_ENABLE=0

if [ ! -x "$BUILD/latte" ] || [ "${REBUILD:-1}" = 1 ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target latte_cli > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
fi
"$BUILD/latte" version

run_config() {  # variant size steps batch seq [name] [torch: 1|0] [accum]
  local v=$1 size=$2 steps=$3 batch=$4 seq=$5 name=${6:-$1-$2} torch=${7:-1} accum=${8:-1}
  cat > "/tmp/$name.yaml" <<YAML
base: $PWD/configs/models/$v-$size.yaml
model: {max_seq_len: $seq}
train: {steps: $steps, micro_batch: $batch, seq_len: $seq, global_batch_tokens: $((batch * seq * accum)), lr: 6.0e-4, warmup_steps: $((steps / 10)), out_dir: /tmp/runs/$name}
data: {train: $PWD/data/$DATA/${DATA}_train_*.bin, val: $PWD/data/$DATA/${DATA}_val_*.bin}
checkpoint: {every: 0, keep_last: 1, at_end: false}
eval: {every: 0, batches: 4}
log: {every: 25}
YAML
  rm -rf "/tmp/runs/$name"
  "$BUILD/latte" train "/tmp/$name.yaml" > "$OUT/train-$name.log" 2>&1 || { echo "train $name failed:"; tail -20 "$OUT/train-$name.log"; }
  cp "/tmp/runs/$name/metrics.jsonl" "$OUT/metrics-$name.jsonl" 2>/dev/null
  [ "$torch" = 1 ] && [ "$TORCH" = 1 ] || return 0
  python3 scripts/reference/train_bench.py "configs/models/$v-$size.yaml" --batch "$batch" --seq "$seq" --accum "$accum" --steps $((15 / accum + 3)) --modes "$TORCH_MODES" \
    > "$OUT/torch-$name.jsonl" 2> "$OUT/torch-$name.err" || tail -5 "$OUT/torch-$name.err"
}

[ "$STEPS_125M" -gt 0 ] && for v in $VARIANTS; do run_config "$v" 125m "$STEPS_125M" 16 1024; done
suffix=$([ "$ACCUM_1B3" -gt 1 ] && echo "-b$BATCH_1B3-a$ACCUM_1B3")
[ "$STEPS_1B3" -gt 0 ] && for v in $VARIANTS; do
  run_config "$v" 1b3 "$STEPS_1B3" "$BATCH_1B3" 2048 "$v-1b3$suffix" 1 "$ACCUM_1B3"
done
for b in $SCAN; do run_config egmla 125m 30 "$b" 1024 "egmla-125m-b$b" 0; done

python3 - "$OUT" <<'PY'
import json, glob, os, statistics, sys
out = sys.argv[1]
rows = []
for m in sorted(glob.glob(f"{out}/metrics-*.jsonl")):
    name = os.path.basename(m)[8:-6]
    recs = [json.loads(l) for l in open(m) if l.strip()]
    if not recs: continue
    tail = recs[len(recs) // 3:]  # skip warm-up steps
    tps = statistics.median(r["tokens_per_s"] for r in tail)
    mfu = statistics.median(r["mfu"] for r in tail)
    torch_rows = {}
    tp = f"{out}/torch-{name}.jsonl"
    if os.path.exists(tp):
        for l in open(tp):
            if l.strip().startswith("{"):
                r = json.loads(l); torch_rows[r["mode"]] = r
    e, c = torch_rows.get("eager", {}).get("tokens_per_s"), torch_rows.get("compile", {}).get("tokens_per_s")
    rows.append((name, len(recs), recs[0]["loss"], recs[-1]["loss"], tps, mfu, e, c))
print(f"{'run':18} {'steps':>5} {'loss0':>7} {'lossN':>7} {'latte tok/s':>12} {'MFU':>6} {'torch eager':>12} {'torch compile':>14} {'vs compile':>10}")
for name, n, l0, ln, tps, mfu, e, c in rows:
    ratio = f"{tps / c:.2f}x" if c else "-"
    print(f"{name:18} {n:5d} {l0:7.3f} {ln:7.3f} {tps:12.0f} {100*mfu:5.1f}% {e or 0:12.0f} {c or 0:14.0f} {ratio:>10}")
PY
