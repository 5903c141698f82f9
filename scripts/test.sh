#!/usr/bin/env bash
# Builds if needed and runs every test: the GoogleTest suites through ctest (CPU, MPI under mpirun,
# CUDA suites skip without a GPU). Exit code is non-zero on any failure; the last line is a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${LATTE_BUILD_DIR:-build}
bash scripts/setup.sh || { echo "test.sh: SUMMARY: FAILED (setup/build)"; exit 1; }
start=$(date +%s)
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" --timeout 900 "$@"
rc=$?
elapsed=$(( $(date +%s) - start ))
if [ $rc -eq 0 ]; then
  echo "test.sh: SUMMARY: all tests passed in ${elapsed}s"
else
  echo "test.sh: SUMMARY: FAILED (ctest exit $rc) after ${elapsed}s"
fi
exit $rc
