#!/usr/bin/env bash
# Trains the small-scale ablation suites of configs/ablations/ on the GPU(s) of this machine and writes
# each suite's table and loss curves under docs/results/ (docs/ablations.md describes the suites).
#
#   scripts/run_ablations.sh                 # the EG-MLA KV sweep and the MLRA comparison
#   scripts/run_ablations.sh kv mlra gate share position noise   # or: all
#   (noise: two more seeds of two kv-sweep runs, to tell differences from seed-to-seed spread)
#
# Environment:
#   LATTE=build/latte    the CUDA build of the CLI (scripts/setup.sh)
#   GPUS=1               GPUs to use (CUDA_VISIBLE_DEVICES=i)
#   WORKERS=$GPUS        sweep workers, spread round-robin over the GPUs; they split each suite's runs. A
#                        small model leaves an H100 mostly idle, so WORKERS=3 on one GPU finishes a suite
#                        sooner (the tokens/s column then shows shared-GPU speeds)
#   DATA=linuxdoc        linuxdoc (scripts/prepare_data.sh linux-doc) or kjv (the King James Bible:
#                        1.1M tokens, so 300 steps instead of 1000; results go to */kjv/ instead)
#   OUT=runs/ablations   run directories;  RESULTS=docs/results   tables and figures
#   SWEEP_ARGS="..."     extra `latte sweep` arguments, e.g. "--set train.steps=200"
# Re-running continues where it stopped: finished runs are skipped, interrupted ones resumed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

LATTE=${LATTE:-build/latte}
GPUS=${GPUS:-1}
WORKERS=${WORKERS:-$GPUS}
DATA=${DATA:-linuxdoc}
read -r -a extra <<< "${SWEEP_ARGS:-}"

suites=("$@")
[[ ${#suites[@]} -eq 0 ]] && suites=(kv mlra)
[[ " ${suites[*]} " == *" all "* ]] && suites=(kv mlra gate share position noise)

if [[ ! -x $LATTE ]]; then
  echo "error: $LATTE not found; build latte first (scripts/setup.sh) or set LATTE=/path/to/latte" >&2
  exit 1
fi
if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
  echo "warning: no GPU visible; these suites take hours on a CPU (try SWEEP_ARGS='--set train.steps=20' for a smoke test)" >&2
fi

case $DATA in
  linuxdoc)
    compgen -G "data/linuxdoc/linuxdoc_train_*.bin" > /dev/null || LATTE=$LATTE scripts/prepare_data.sh linux-doc || exit 1
    data_args=()
    OUT=${OUT:-runs/ablations}
    RESULTS=${RESULTS:-docs/results}
    ;;
  kjv)
    compgen -G "data/kjv/kjv_train_*.bin" > /dev/null || LATTE=$LATTE scripts/prepare_data.sh small || exit 1
    data_args=(--set 'data.train=data/kjv/kjv_train_*.bin' --set 'data.val=data/kjv/kjv_val_*.bin'
               --set train.steps=300 --set train.warmup_steps=30 --set eval.every=100 --set eval.batches=12)
    OUT=${OUT:-runs/ablations/kjv}
    RESULTS=${RESULTS:-docs/results/kjv}
    ;;
  *) echo "error: DATA must be linuxdoc or kjv, got '$DATA'" >&2; exit 2 ;;
esac

# A python3 with matplotlib for the figures (Debian's, when the one on PATH is a bare pyenv/venv).
PYTHON=python3
python3 -c 'import matplotlib' 2> /dev/null || { [[ -x /usr/bin/python3 ]] && PYTHON=/usr/bin/python3; }

status=0
for suite in "${suites[@]}"; do
  case $suite in
    kv) file=egmla_kv_sweep; name=egmla_kv ;;
    mlra) file=mlra_comparison; name=mlra_comparison ;;
    gate) file=egmla_gate_sweep; name=egmla_gate ;;
    share) file=egmla_share_sweep; name=egmla_share ;;
    position) file=egmla_position; name=egmla_position ;;
    noise) file=seed_noise; name=seed_noise ;;
    *) echo "error: unknown suite '$suite' (kv, mlra, gate, share, position, noise, all)" >&2; exit 2 ;;
  esac
  sweep=(sweep "configs/ablations/$file.yaml" --out-dir "$OUT/$name" "${data_args[@]}" "${extra[@]}")
  echo "=== $suite: $LATTE ${sweep[*]}"
  if [[ $WORKERS -le 1 ]]; then
    "$LATTE" "${sweep[@]}" || status=1
  else
    # Workers spread over the GPUs; each takes the next run nobody holds (runs are locked while they train).
    mkdir -p "$OUT/$name"
    pids=()
    for ((w = 0; w < WORKERS; w++)); do
      CUDA_VISIBLE_DEVICES=$((w % GPUS)) "$LATTE" "${sweep[@]}" --quiet > "$OUT/$name/worker$w.log" 2>&1 &
      pids+=($!)
      sleep 2  # let each worker lock its first run before the next one looks
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    "$LATTE" "${sweep[@]}" --dry-run | sed -n '/^run /,$p'  # the summary table
  fi
  "$PYTHON" scripts/ablation_table.py "$OUT/$name" --out "$RESULTS/$file" --latte "$LATTE" || status=1
done
[[ $status -eq 0 ]] && echo "done: tables and figures in $RESULTS/" || echo "some runs failed; see the tables above and <run dir>/train.log" >&2
exit $status
