// cuBLAS entry points beyond the kernel contract's matmul (kernels/op_decls.inc): a GEMM with a bias
// epilogue, and the per-device library handles other CUDA files share (attention's batched GEMMs).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstddef>

#include "core/tensor.h"

namespace latte::cuda {

// out = op(a) @ op(b) + bias, bias (N) broadcast over the rows (and batches) of out: the contract's
// matmul with alpha 1, beta 0 and cuBLASLt's bias epilogue fused (no second pass over out).
// bias is bf16 or f32 on the same device; other rules as matmul.
void matmul_bias(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias, bool trans_a, bool trans_b);

// GEMM plans (descriptors + algorithm) cached on the current device; for tests.
size_t matmul_plan_count();

// The first-call autotuning on the current device (kernels/cuda/matmul.cu): plans whose candidates were timed,
// how many switched away from the heuristic's first answer, and those plans' summed times (first answer vs
// chosen, one call each).
struct MatmulTuningStats {
  size_t plans_timed = 0, plans_switched = 0;
  double first_ms = 0, chosen_ms = 0;
};
MatmulTuningStats matmul_tuning_stats();

// Per-device handles bound to nothing: set the stream before use (cublasSetStream).
cublasLtHandle_t lt_handle();
cublasHandle_t blas_handle();  // bound to current_stream() and a cached 32 MiB workspace on return

}  // namespace latte::cuda
