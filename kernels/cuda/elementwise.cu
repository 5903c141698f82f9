// Elementwise arithmetic on contiguous tensors: add (out = alpha a + beta b), mul (out = a b),
// scale (out = alpha in) and axpy (y += alpha x; gradient accumulation, y and x may differ in dtype).
// One kernel serves all four: each thread handles 8 consecutive elements with 16-byte accesses when
// every pointer is 16-byte aligned. Floor: (inputs read + output written) bytes over copy bandwidth.
// Operands may alias the output (in-place updates): each element is read before it is written by the
// same thread.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

enum : int { kLinear = 0, kMul = 1 };

// out = alpha*a + beta*b (kLinear; b null for scale) or a*b (kMul); n elements.
__global__ void elementwise_kernel(void* out, int dto, const void* a, int dta, const void* b, int dtb, int64_t n,
                                   int mode, float alpha, float beta, bool vec) {
  const int64_t nchunks = (n + 7) / 8;
  const bool use_b = b != nullptr;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < nchunks;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = c * 8;
    float va[8], vb[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, vo[8];
    load8_any(a, dta, i, n, vec, va);
    if (use_b) load8_any(b, dtb, i, n, vec, vb);
#pragma unroll
    for (int k = 0; k < 8; ++k) vo[k] = mode == kMul ? va[k] * vb[k] : alpha * va[k] + beta * vb[k];
    store8_any(out, dto, i, n, vec, vo);
  }
}

void launch(const char* op, const Tensor& out, const Tensor& a, const Tensor* b, int mode, double alpha, double beta) {
  check_same_shape(out, a, op);
  if (b) check_same_shape(out, *b, op);
  require_contiguous(out, op, "out");
  require_contiguous(a, op, "a");
  if (b) require_contiguous(*b, op, "b");
  const int64_t n = out.numel();
  if (n == 0) return;
  const void* pb = b ? b->data_ptr() : nullptr;
  const int dtb = b ? float_code(*b, op) : kF32;
  const bool vec = aligned16(out.data_ptr()) && aligned16(a.data_ptr()) && (!pb || aligned16(pb));
  const int threads = 256;
  const unsigned grid = blocks_for((n + 7) / 8, threads, static_cast<int64_t>(sm_count()) * 16);
  elementwise_kernel<<<grid, threads, 0, current_stream()>>>(out.data_ptr(), float_code(out, op), a.data_ptr(),
                                                            float_code(a, op), pb, dtb, n, mode,
                                                            static_cast<float>(alpha), static_cast<float>(beta), vec);
  CUDA_CHECK_LAUNCH("elementwise_kernel");
}

}  // namespace

void add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  launch("add", out, a, &b, kLinear, alpha, beta);
}

void mul(const Tensor& out, const Tensor& a, const Tensor& b) { launch("mul", out, a, &b, kMul, 1.0, 0.0); }

void scale(const Tensor& out, const Tensor& in, double alpha) { launch("scale", out, in, nullptr, kLinear, alpha, 0.0); }

void axpy(const Tensor& y, const Tensor& x, double alpha) { launch("axpy", y, y, &x, kLinear, 1.0, alpha); }

}  // namespace latte::cuda
