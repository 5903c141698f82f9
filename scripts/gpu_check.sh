#!/usr/bin/env bash
# The GPU machine's check, in one call: configure build-gpu/ for Hopper (sm_90a), build with every core,
# run the CUDA suite (then its allocator tests again with LATTE_CUDA_ALLOC=plain), the kernel benchmark,
# then the rest of the build and the other suites with the time that is left, and print a short summary
# with the benchmark table last. Logs go to $OUT when it is set (the device tool brings them back), else
# to build-gpu/logs/. Exit code: non-zero when the build or any test failed.
# Environment: LATTE_GPU_BUILD_DIR (build-gpu), LATTE_GPU_CHECK_BUDGET (seconds for the whole script, 450),
#   LATTE_GPU_CHECK_SKIP_OTHERS=1 (CUDA suite and benchmark only), LATTE_GPU_CHECK_SANITIZE=1 (then
#   compute-sanitizer memcheck over the Cuda* tests with the time left).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${LATTE_GPU_BUILD_DIR:-build-gpu}
BUDGET=${LATTE_GPU_CHECK_BUDGET:-450}
LOG=${OUT:-$BUILD/logs}
mkdir -p "$LOG"
JOBS=$(nproc)
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
status=0
summary=()

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | tee "$LOG/gpu.txt"
nvcc --version 2>&1 | tail -1
cmake --version | head -1

LAUNCH=()
command -v ccache >/dev/null && LAUNCH=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
# CMake < 3.26 does not know nvcc's C++20 flag: name it (harmless on newer CMake).
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLATTE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 \
  "${LAUNCH[@]}" >"$LOG/configure.log" 2>&1 || { tail -30 "$LOG/configure.log"; echo "gpu_check: configure FAILED"; exit 1; }

# The CUDA suite and the benchmark first, so that a broken unrelated file cannot cost the GPU run.
t0=$(date +%s)
if ! cmake --build "$BUILD" -j "$JOBS" --target test_cuda bench_kernels >"$LOG/build.log" 2>&1; then
  grep -E "error|FAILED|undefined reference" "$LOG/build.log" | head -40
  echo "gpu_check: build of test_cuda/bench_kernels FAILED"
  exit 1
fi
summary+=("build test_cuda+bench_kernels: $(( $(date +%s) - t0 ))s")

# gtest summary of one run: "<passed> passed, <failed> failed" plus the failing names.
gtest_summary() {
  local log=$1 passed names
  passed=$(grep -E "^\[  PASSED  \]" "$log" | grep -oE "[0-9]+" | head -1)
  names=$(grep -E '^\[  FAILED  \] [A-Za-z]' "$log" | sed -E 's/^\[  FAILED  \] //; s/ \(.*//; s/, where.*//' | sort -u)
  echo "${passed:-0} passed, $(echo -n "$names" | grep -c .) failed $(echo $names)"
}

t0=$(date +%s)
timeout 300 "$BUILD/test_cuda" >"$LOG/test_cuda.log" 2>&1
rc=$?
[ $rc -ne 0 ] && status=1
summary+=("test_cuda (rc $rc, $(( $(date +%s) - t0 ))s): $(gtest_summary "$LOG/test_cuda.log")")

LATTE_CUDA_ALLOC=plain timeout 120 "$BUILD/test_cuda" --gtest_filter='CudaAllocator.*:CudaRuntime.*:CudaElementwise.*' \
  >"$LOG/test_cuda_plain.log" 2>&1
rc=$?
[ $rc -ne 0 ] && status=1
summary+=("test_cuda LATTE_CUDA_ALLOC=plain (rc $rc): $(gtest_summary "$LOG/test_cuda_plain.log")")

# The NCCL path with one rank (issue 8): a one-rank group is normally the no-communication "single"
# backend; LATTE_NCCL_SINGLE_RANK=1 makes it an NCCL communicator so the CUDA collective tests run on it.
if cmake --build "$BUILD" -j "$JOBS" --target test_distributed >"$LOG/build_dist.log" 2>&1 && command -v mpirun >/dev/null; then
  LATTE_NCCL_SINGLE_RANK=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 \
    mpirun -np 1 "$BUILD/test_distributed" --gtest_filter='Cuda*' >"$LOG/nccl_one_rank.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  summary+=("CUDA collectives, NCCL with one rank (rc $rc): $(gtest_summary "$LOG/nccl_one_rank.log")")
fi

t0=$(date +%s)
timeout 240 "$BUILD/bench_kernels" >"$LOG/bench.log" 2>&1
rc=$?
summary+=("bench_kernels (rc $rc, $(( $(date +%s) - t0 ))s)")

if [ "${LATTE_GPU_CHECK_SKIP_OTHERS:-0}" != 1 ] && [ "$(left)" -gt 60 ]; then
  t0=$(date +%s)
  timeout $(( $(left) - 30 )) cmake --build "$BUILD" -j "$JOBS" -- -k 0 >"$LOG/build_rest.log" 2>&1
  rc=$?
  summary+=("build everything else (rc $rc, $(( $(date +%s) - t0 ))s)")
  if [ "$(left)" -gt 40 ]; then
    timeout $(( $(left) - 15 )) ctest --test-dir "$BUILD" -j "$JOBS" -LE cuda --timeout 120 --output-on-failure >"$LOG/ctest.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=1
    summary+=("ctest other suites (rc $rc): $(grep -E 'tests passed|tests failed' "$LOG/ctest.log" | tail -1)")
    grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Not Run|Exception)" "$LOG/ctest.log" | head -20
  else
    summary+=("ctest other suites: skipped (out of time)")
  fi
fi

# Optional: compute-sanitizer memcheck over latte's CUDA suite (slow; last, with the time that is left).
if [ "${LATTE_GPU_CHECK_SANITIZE:-0}" = 1 ] && [ "$(left)" -gt 90 ] && command -v compute-sanitizer >/dev/null; then
  timeout $(( $(left) - 20 )) compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 "$BUILD/test_cuda" \
    --gtest_filter='Cuda*' >"$LOG/memcheck.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status=1
  summary+=("memcheck test_cuda Cuda* (rc $rc): $(grep -E 'ERROR SUMMARY' "$LOG/memcheck.log" | tail -1) $(gtest_summary "$LOG/memcheck.log")")
fi

echo
echo "== failures (test_cuda)"
grep -E "Failure|rel. error|FAILED" "$LOG/test_cuda.log" | head -30
echo
echo "== gpu_check summary ($(( $(date +%s) - START ))s)"
for line in "${summary[@]}"; do echo "  $line"; done
echo
sed -n '/^device:/p' "$LOG/bench.log"
sed -n '/^| kernel/,$p' "$LOG/bench.log"
grep -E "^bench_kernels:" "$LOG/bench.log"
exit $status
