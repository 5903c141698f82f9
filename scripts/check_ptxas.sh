#!/usr/bin/env bash
# Compile-time check of the attention kernels' register use on Hopper: ptxas must not spill, and must not
# serialize the wgmma instructions (its "Potential Performance Loss: wgmma.mma_async instructions are serialized"
# advisories, seen so far: C7512 insufficient registers, C7515 accumulators written while a group is in flight,
# C7518 / C7520 compiler-inserted waits or arrives in divergent paths; each puts a wait after every k-step of every
# GEMM in the kernel). Both pass every
# correctness test and silently cost 10-30% (docs/attention_kernels.md v6 and v23: the (192,128) backward ran
# at 310 instead of 347 TFLOP/s). Compiles each file for sm_90a with `-Xptxas -v`; no GPU needed.
#   usage: scripts/check_ptxas.sh [NVCC]     (ctest: ptxas_attention_kernels)
set -uo pipefail
cd "$(dirname "$0")/.."
NVCC=${1:-${NVCC:-nvcc}}
files=(kernels/cuda/flash_attention_fwd_sm90.cu kernels/cuda/flash_attention_bwd_sm90.cu
       kernels/cuda/flash_attention_fwd.cu kernels/cuda/flash_attention_bwd.cu kernels/cuda/flash_attention_bwd_dq.cu
       kernels/cuda/decode_attention.cu kernels/cuda/decode_latent_sm90.cu)
status=0
for f in "${files[@]}"; do
  if ! log=$("$NVCC" -std=c++20 -O3 -arch=sm_90a -I. -Xptxas -v -c "$f" -o /dev/null 2>&1); then
    echo "FAIL $f: nvcc failed"; echo "$log" | tail -20; status=1; continue
  fi
  # The kernel each advisory or spill line belongs to: ptxas names it on the line before ("Function properties
  # for K", "Compiling entry function 'K'"), or in the advisory itself.
  bad=$(echo "$log" | awk '/Function properties for|Compiling entry function/ { fn = $NF }
                           /Potential Performance Loss: wgmma/ { print "  serialized wgmma " $4 ": " $NF; next }
                           /[1-9][0-9]* bytes spill (stores|loads)/ { print "  spills in " fn ": " $0 }')
  if [ -n "$bad" ]; then
    echo "FAIL $f"; echo "$bad"; status=1
  else
    echo "ok   $f ($(echo "$log" | grep -c 'Compiling entry function') kernels)"
  fi
done
[ $status = 0 ] || echo "ptxas: see the lines above; wgmma accumulators or fragments held across an async GEMM are the usual cause"
exit $status
