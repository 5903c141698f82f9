#!/usr/bin/env bash
# The X-EcoMLA upcycling experiment on one GPU (docs/upcycling.md has the recipe and the results):
#   1. pretrain a 125m MHA teacher (configs/models/mha-125m.yaml) on data/linuxdoc (or data/kjv);
#   2. upcycle it to MLA by SVD at two KV ranks (latte upcycle; default kv 128 and 64, rope 32, query kept);
#   3. distill each student from the teacher (train.init_from + train.distill, KL at tau 1);
#   4. train the same MLA from scratch on as many tokens as teacher pretraining + distillation;
#   5. evaluate every model on the same validation windows and print one table: KV elements per token,
#      training tokens, val loss / ppl of teacher, SVD-init student, distilled student, MLA from scratch
#      (also written to $OUT/results.md).
# Re-running continues (every latte train uses --resume auto; finished steps are skipped).
# Knobs (environment): MODEL (teacher config, default configs/models/mha-125m.yaml), CORPUS=linuxdoc|kjv, OUT, TEACHER_STEPS, DISTILL_STEPS, SCRATCH_STEPS, KV_RANKS,
# Q_RANK (0 = query uncompressed), MB (micro-batch), SEQ, TEACHER_LR, DISTILL_LR, EVAL_BATCHES, LATTE.
# Data: scripts/prepare_data.sh linux-doc (or small for kjv).
set -euo pipefail
cd "$(dirname "$0")/.."

LATTE=${LATTE:-build/latte}
MODEL=${MODEL:-configs/models/mha-125m.yaml}
CORPUS=${CORPUS:-linuxdoc}
OUT=${OUT:-runs/upcycle-$CORPUS}
TEACHER_STEPS=${TEACHER_STEPS:-2000}
DISTILL_STEPS=${DISTILL_STEPS:-500}
SCRATCH_STEPS=${SCRATCH_STEPS:-$((TEACHER_STEPS + DISTILL_STEPS))}
KV_RANKS=${KV_RANKS:-"128 64"}
Q_RANK=${Q_RANK:-0}
MB=${MB:-16}
SEQ=${SEQ:-512}
TEACHER_LR=${TEACHER_LR:-1.0e-3}
DISTILL_LR=${DISTILL_LR:-3.0e-4}
EVAL_BATCHES=${EVAL_BATCHES:-50}

TRAIN_GLOB="data/$CORPUS/${CORPUS}_train_*.bin"
VAL_GLOB="data/$CORPUS/${CORPUS}_val_*.bin"
compgen -G "$TRAIN_GLOB" > /dev/null || {
  echo "error: no $TRAIN_GLOB; run scripts/prepare_data.sh $([[ $CORPUS == kjv ]] && echo small || echo linux-doc)" >&2
  exit 1
}
[[ -x $LATTE ]] || { echo "error: $LATTE not found; build latte first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$OUT/configs"

# common <out_dir> <steps> <lr> <warmup>: the train/data/eval sections every run shares (warmup at most
# a fifth of the steps).
common() {
  local warmup=$4
  (( warmup > $2 / 5 )) && warmup=$(( $2 / 5 ))
  cat <<EOF
train:
  steps: $2
  seed: 1337
  out_dir: $1
  micro_batch: $MB
  seq_len: $SEQ
  lr: $3
  warmup_steps: $warmup
  schedule: cosine
  min_lr_ratio: 0.1
  weight_decay: 0.1
  grad_clip: 1.0
data:
  train: $TRAIN_GLOB
  val: $VAL_GLOB
checkpoint: {every: 500, keep_last: 1}
eval: {every: 500, batches: 20}
log: {every: 50}
EOF
}

# ---- 1. teacher ---------------------------------------------------------------------------------------
cat > "$OUT/configs/teacher.yaml" <<EOF
base: $(realpath "$MODEL")
model: {max_seq_len: $SEQ}
$(common "$OUT/teacher" "$TEACHER_STEPS" "$TEACHER_LR" 100)
EOF
echo "== teacher: $MODEL, $TEACHER_STEPS steps"
"$LATTE" train "$OUT/configs/teacher.yaml" --resume auto

for R in $KV_RANKS; do
  # ---- 2. SVD initialisation ---------------------------------------------------------------------------
  echo "== upcycle: kv rank $R, query rank $Q_RANK"
  "$LATTE" upcycle --teacher "$OUT/teacher" --ranks "q:$Q_RANK,kv:$R" --out "$OUT/svd-kv$R"

  # ---- 3. distillation from the teacher ----------------------------------------------------------------
  cat > "$OUT/configs/distill-kv$R.yaml" <<EOF
base: $(pwd)/$OUT/svd-kv$R/config.yaml
$(common "$OUT/distill-kv$R" "$DISTILL_STEPS" "$DISTILL_LR" 50)
EOF
  # init_from / distill go under train: (append to the generated section)
  sed -i "s|^train:|train:\n  init_from: $OUT/svd-kv$R\n  distill: {teacher: $OUT/teacher, temperature: 1.0, kl_weight: 1.0, ce_weight: 0.0}|" \
    "$OUT/configs/distill-kv$R.yaml"
  echo "== distill: kv rank $R, $DISTILL_STEPS steps"
  "$LATTE" train "$OUT/configs/distill-kv$R.yaml" --resume auto

  # ---- 4. the same MLA from scratch ---------------------------------------------------------------------
  cat > "$OUT/configs/scratch-kv$R.yaml" <<EOF
base: $(pwd)/$OUT/svd-kv$R/config.yaml
model: {init: {std: 0.02, zero_out_proj: true}}
$(common "$OUT/scratch-kv$R" "$SCRATCH_STEPS" "$TEACHER_LR" 100)
EOF
  echo "== scratch: MLA kv rank $R, $SCRATCH_STEPS steps"
  "$LATTE" train "$OUT/configs/scratch-kv$R.yaml" --resume auto
done

# ---- 5. evaluation on the same validation windows -----------------------------------------------------
evaluate() {  # evaluate <name> <model source>
  "$LATTE" eval "$2" --data "$VAL_GLOB" --seq-len "$SEQ" --max-batches "$EVAL_BATCHES" --json "$OUT/eval-$1.json" > /dev/null
}
evaluate teacher "$OUT/teacher"
for R in $KV_RANKS; do
  evaluate "svd-kv$R" "$OUT/svd-kv$R/model.safetensors"
  evaluate "distill-kv$R" "$OUT/distill-kv$R"
  evaluate "scratch-kv$R" "$OUT/scratch-kv$R"
done

tokens_per_step=$((MB * SEQ))
python3 - "$OUT" "$tokens_per_step" "$TEACHER_STEPS" "$DISTILL_STEPS" "$SCRATCH_STEPS" $KV_RANKS <<'EOF' | tee "$OUT/results.md"
import json, math, os, sys
import yaml
out, tps, t_steps, d_steps, s_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ranks = sys.argv[6:]

def kv_per_token_layer(config_path):
    m = yaml.safe_load(open(config_path))["model"]
    a = m["attention"]
    return 2 * a["n_kv_heads"] * a["head_dim"] if a["kind"] == "mha" else a["kv_rank"] + a["rope_dim"]

def loss(name):
    return json.load(open(os.path.join(out, f"eval-{name}.json")))["loss"]

teacher_kv = kv_per_token_layer(os.path.join(out, "teacher", "config.yaml"))
rows = [("teacher (MHA)", teacher_kv, t_steps * tps, loss("teacher"))]
for r in ranks:
    kv = kv_per_token_layer(os.path.join(out, f"svd-kv{r}", "config.yaml"))
    rows.append((f"MLA kv{r}: SVD init", kv, t_steps * tps, loss(f"svd-kv{r}")))
    rows.append((f"MLA kv{r}: + distill", kv, (t_steps + d_steps) * tps, loss(f"distill-kv{r}")))
    rows.append((f"MLA kv{r}: from scratch", kv, s_steps * tps, loss(f"scratch-kv{r}")))
print(f"\n| model | KV elements/token/layer | % of MHA | tokens trained | val loss | val ppl |")
print(f"|---|---:|---:|---:|---:|---:|")
for name, kv, tokens, l in rows:
    print(f"| {name} | {kv} | {100 * kv / teacher_kv:.1f}% | {tokens:,} | {l:.4f} | {math.exp(l):.2f} |")
EOF
