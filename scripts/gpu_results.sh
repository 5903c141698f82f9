#!/usr/bin/env bash
# The result-producing GPU runs of docs/results/, for the lent GPU machine (no network, no apt): builds
# latte for sm_90a once, tokenizes linux-doc from the carried text when its shards are missing, then runs
# the named jobs with the time left and packs their run directories' small files (metrics.jsonl,
# config.yaml, train logs, eval JSON) into $OUT/<job>.tar.gz for the tables and plots made locally.
#
#   scripts/gpu_results.sh ablations      # run_ablations.sh $SUITES (kv mlra; WORKERS=3 runs share the GPU)
#   scripts/gpu_results.sh upcycle        # upcycle_experiment.sh on linux-doc
#   scripts/gpu_results.sh ablations upcycle
#
# Before the call, here: scripts/prepare_data.sh linux-doc stops after the HTML -> text step when no
# latte is built yet; carry data/linuxdoc/text and data/gpt2 (33 MB). Environment: BUDGET (seconds, 570),
# BUILD (build-gpu), WORKERS (3), anything run_ablations.sh / upcycle_experiment.sh read (but not their
# OUT: here $OUT is the device tool's folder of files to bring back).
# The device tool replaces carried paths on every call: run from a copy outside them (see the call in
# docs/results/README.md) so that the build and the run directories survive between calls.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET:-570}
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-/tmp/latte-out}
mkdir -p "$OUT"
left() { echo $((BUDGET - ($(date +%s) - START))); }
export NCCL_NVLS_ENABLE=0

if [[ ! -x $BUILD/latte ]]; then
  t0=$(date +%s)
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 \
    > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target latte_cli > "$OUT/build.log" 2>&1 ||
    { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
  echo "gpu_results: built $BUILD/latte in $(( $(date +%s) - t0 ))s"
fi
LATTE=$PWD/$BUILD/latte
export LATTE

if ! compgen -G "data/linuxdoc/linuxdoc_train_*.bin" > /dev/null; then
  [[ -f data/linuxdoc/text/linuxdoc.jsonl ]] || { echo "error: carry data/linuxdoc/text (see the header)" >&2; exit 1; }
  "$LATTE" tokenize --tokenizer gpt2 --tokenizer-dir data/gpt2 --input data/linuxdoc/text/linuxdoc.jsonl \
    --output data/linuxdoc --format bin --doc-mode jsonl --val-tokens 500K --shard-tokens 4M --workers "$(nproc)" \
    > "$OUT/tokenize.log" 2>&1 || { tail -20 "$OUT/tokenize.log"; exit 1; }
  tail -2 "$OUT/tokenize.log"
fi

pack() {  # pack <name> <dir>: the small files of every run under <dir>
  (cd "$2/.." && find "$(basename "$2")" \( -name metrics.jsonl -o -name config.yaml -o -name '*.log' -o -name '*.json' \
     -o -name '*.md' -o -name sweep.json \) -not -path '*/step_*' -print0 | tar czf "$OUT/$1.tar.gz" --null -T -)
}

status=0
for job in "$@"; do
  case $job in
    ablations)
      OUT=runs/ablations WORKERS=${WORKERS:-3} RESULTS=/tmp/latte-results timeout "$(left)" scripts/run_ablations.sh ${SUITES:-kv mlra} \
        > "$OUT/ablations.log" 2>&1 || status=1
      grep -E "^=== |done|failed" "$OUT/ablations.log" | tail -5
      pack ablations runs/ablations ;;
    trainbench)  # 125m (and 1b3) throughput and loss curves next to PyTorch: scripts/gpu_train_bench.sh
      rm -rf /tmp/trainbench && mkdir -p /tmp/trainbench
      OUT=/tmp/trainbench DATA=linuxdoc LATTE_BUILD_DIR=$BUILD REBUILD=0 timeout "$(left)" scripts/gpu_train_bench.sh \
        > /tmp/trainbench/trainbench.log 2>&1 || status=1
      tail -12 /tmp/trainbench/trainbench.log
      tar czf "$OUT/trainbench.tar.gz" -C /tmp trainbench ;;
    upcycle)
      OUT=runs/upcycle-linuxdoc timeout "$(left)" scripts/upcycle_experiment.sh > "$OUT/upcycle.log" 2>&1 || status=1
      tail -15 "$OUT/upcycle.log"
      pack upcycle runs/upcycle-linuxdoc ;;
    *) echo "error: unknown job '$job' (ablations, trainbench, upcycle)" >&2; exit 2 ;;
  esac
done
echo "gpu_results: $(( $(date +%s) - START ))s, status $status"
exit $status
