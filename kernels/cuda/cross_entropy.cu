// Cross-entropy over the vocabulary fused with its softmax and gradient: for each row of logits (N, V),
//   loss = logsumexp(x) - x[target],  dlogits = grad_scale (softmax(x) - onehot(target)),
// in one kernel, so no probability tensor (N, V) is ever stored. Floor: read the logits once and write
// dlogits once (2 N V elements): at V = 50304 and N = 8192 in bf16, 1.65 GB, ~0.55 ms on an H100.
//
// One block of 512 threads per row (3 resident per SM). Pass 1 reads the row with 16-byte loads and keeps
// a running (max, sum of exp) per thread (online softmax), combined over the block by a fixed tree.
// Pass 2 re-reads the row (100 KB in bf16, partly still in L2) and writes the gradient. Measured on an
// H100 (docs/performance.md): fwd+bwd 62%, fwd-only 74% of copy bandwidth; the re-read of pass 2 mostly
// goes to DRAM. Two variants that bounded the rows in flight (a persistent grid of 2 x 512 threads per
// SM; 2 x 768-thread blocks per SM with pass 2 back to front) measured 55-63% / 56-66%, and were dropped.
// The target logit is read before any write, and each element is read before it is written by the same
// thread, so dlogits may alias logits (the gradient overwrites the logits in place). Rows whose target
// is ignore_index get loss 0 and a zero gradient row; an out-of-range target gives a NaN loss (a data
// bug should be loud).
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

constexpr int kThreads = 512;

__global__ void cross_entropy_kernel(float* losses, void* dlogits, int dtd, const void* logits, int dtl,
                                     const int32_t* targets, int64_t V, int64_t ignore_index, float grad_scale,
                                     bool vec) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int es_l = dtl == kBF16 ? 2 : 4, es_d = dtd == kBF16 ? 2 : 4;
  const char* x = static_cast<const char*>(logits) + row * V * es_l;
  char* dx = dlogits ? static_cast<char*>(dlogits) + row * V * es_d : nullptr;
  const int64_t target = targets[row];
  if (target == ignore_index) {
    if (threadIdx.x == 0) losses[row] = 0.f;
    if (dx) {
      const float zero[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int64_t c = static_cast<int64_t>(threadIdx.x) * 8; c < V; c += kThreads * 8)
        store8_any(dx, dtd, c, V, vec, zero);
    }
    return;
  }
  const bool valid = target >= 0 && target < V;
  const float x_target = valid ? load1(x, dtl, target) : 0.f;  // before any write (dlogits may alias)
  float m = -INFINITY, s = 0.f;
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * 8; c < V; c += kThreads * 8) {
    float v[8];
    load8_any(x, dtl, c, V, vec, v);
    float cm = m;
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (c + k < V) cm = fmaxf(cm, v[k]);
    s *= expf(m - cm);  // m == -inf and s == 0 at the start: exp(-inf) = 0
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (c + k < V) s += expf(v[k] - cm);
    m = cm;
  }
  const float M = block_max(m, scratch);
  const float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M), scratch);
  const float lse = M + logf(S);
  if (threadIdx.x == 0) losses[row] = valid ? lse - x_target : __int_as_float(0x7fc00000);
  if (!dx) return;
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * 8; c < V; c += kThreads * 8) {
    float v[8];
    load8_any(x, dtl, c, V, vec, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = grad_scale * (expf(v[k] - lse) - (c + k == target ? 1.f : 0.f));
    store8_any(dx, dtd, c, V, vec, v);
  }
}

}  // namespace

void cross_entropy_forward_backward(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                                    const Tensor& targets, int64_t ignore_index, double grad_scale) {
  const char* op = "cross_entropy_forward_backward";
  LATTE_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0) &&
                  losses.numel() == logits.size(0),
              op, ": logits ", logits.shape().str(), " targets ", targets.shape().str(), " losses ",
              losses.shape().str());
  LATTE_CHECK(targets.dtype() == DType::I32 && losses.dtype() == DType::F32, op, ": targets must be i32, losses f32");
  require_contiguous(logits, op, "logits");
  require_contiguous(targets, op, "targets");
  require_contiguous(losses, op, "losses");
  if (dlogits.defined()) {
    LATTE_CHECK(dlogits.shape() == logits.shape(), op, ": dlogits ", dlogits.shape().str());
    require_contiguous(dlogits, op, "dlogits");
  }
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0) return;
  LATTE_CHECK(V > 0, op, ": empty vocabulary");
  const bool vec = V % 8 == 0 && aligned16(logits.data_ptr()) && (!dlogits.defined() || aligned16(dlogits.data_ptr()));
  cross_entropy_kernel<<<static_cast<unsigned>(N), kThreads, 0, current_stream()>>>(
      losses.data<float>(), dlogits.defined() ? dlogits.data_ptr() : nullptr,
      dlogits.defined() ? float_code(dlogits, op) : kF32, logits.data_ptr(), float_code(logits, op),
      targets.data<int32_t>(), V, ignore_index, static_cast<float>(grad_scale), vec);
  CUDA_CHECK_LAUNCH("cross_entropy_kernel");
}

}  // namespace latte::cuda
