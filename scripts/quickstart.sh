#!/usr/bin/env bash
# The main job, from a fresh Debian machine: install what is missing and build (setup.sh), prepare the
# small real corpus (the King James Bible, GPT-2 BPE), train the quickstart EG-MLA model on the GPU if
# there is one (else the CPU), checkpoint, and sample from it. Re-running continues the same run.
# Extra arguments go to `latte train` (e.g. --set train.steps=100).
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenBLAS's threads otherwise spin ~0.1 s after each GEMM on the cores latte's CPU kernels need (~25% of the
# CPU quickstart's time; docs/training_performance.md). Read when the library loads, so it is set here.
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
bash scripts/setup.sh
bash scripts/prepare_data.sh small

CONFIG=configs/examples/quickstart.yaml
RUN_DIR=runs/quickstart
if ./build/latte version | grep -q "devices visible: [1-9]"; then
  CONFIG=configs/examples/quickstart-gpu.yaml
  RUN_DIR=runs/quickstart-gpu
fi
echo "quickstart: training $CONFIG into $RUN_DIR"
./build/latte train "$CONFIG" --resume auto "$@"

CKPT="$RUN_DIR/ckpt/$(cat "$RUN_DIR/ckpt/latest")"
echo "quickstart: sampling from $CKPT"
./build/latte generate "$CKPT" --prompt "And God said" --max-new 60 --temperature 0.8 --top-k 40 --seed 1
