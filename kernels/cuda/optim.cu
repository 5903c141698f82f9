// Multi-tensor AdamW, global gradient norm and in-place scaling (kernels/cuda/optim.h has the math).
// Launch scheme (multi_tensor_apply, simplified): up to kGroup tensors per launch, their pointers and
// sizes passed by value in the kernel's parameters; blockIdx.y picks the tensor, blocks along x
// stride over its 8-element chunks (blocks past a small tensor's end exit at once). A 1.3B model's
// ~220 tensors take 7 launches. Floor: AdamW reads w, m, v (f32) and g and writes w, m, v and the
// bf16 param: 28 bytes per parameter with bf16 grads (14 read, 14 written). The norm reads each gradient once.
// The norm is deterministic: per (tensor, block) fp32 partials, added in a fixed order by one block.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/optim.h"

namespace latte::cuda {

namespace {

constexpr int kGroup = 32;
constexpr int kThreads = 256;
constexpr int kNormBlocks = 64;  // blocks per tensor in the norm (fixed: part of the summation order)

struct AdamWArgs {
  float* w[kGroup];
  float* m[kGroup];
  float* v[kGroup];
  const void* g[kGroup];
  void* p[kGroup];
  int64_t n[kGroup];
  float decay[kGroup];  // 1 - lr * wd
  int dtg[kGroup], dtp[kGroup];
  bool vec[kGroup];
};

__global__ void adamw_kernel(AdamWArgs a, float lr, float b1, float b2, float eps, float bc1, float bc2,
                             float grad_scale, const float* grad_scale_device) {
  const int t = blockIdx.y;
  const int64_t n = a.n[t];
  const bool vec = a.vec[t];
  const float gs = grad_scale * (grad_scale_device ? *grad_scale_device : 1.f);
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < (n + 7) / 8;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = c * 8;
    float w[8], m[8], v[8], g[8];
    load8_any(a.w[t], kF32, i, n, vec, w);
    load8_any(a.m[t], kF32, i, n, vec, m);
    load8_any(a.v[t], kF32, i, n, vec, v);
    load8_any(a.g[t], a.dtg[t], i, n, vec, g);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float gk = g[k] * gs;
      m[k] = b1 * m[k] + (1.f - b1) * gk;
      v[k] = b2 * v[k] + (1.f - b2) * gk * gk;
      const float update = (m[k] / bc1) / (sqrtf(v[k] / bc2) + eps);
      w[k] = w[k] * a.decay[t] - lr * update;
    }
    store8_any(a.w[t], kF32, i, n, vec, w);
    store8_any(a.m[t], kF32, i, n, vec, m);
    store8_any(a.v[t], kF32, i, n, vec, v);
    if (a.p[t]) store8_any(a.p[t], a.dtp[t], i, n, vec, w);
  }
}

struct ListArgs {
  void* p[kGroup];
  int64_t n[kGroup];
  int dt[kGroup];
  bool vec[kGroup];
};

// partials[(base + t) * gridDim.x + blockIdx.x] = sum of squares of this block's chunks of tensor t.
__global__ void sum_squares_multi_kernel(ListArgs a, float* partials, int base) {
  __shared__ float scratch[32];
  const int t = blockIdx.y;
  const int64_t n = a.n[t];
  float acc = 0.f;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < (n + 7) / 8;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8];
    load8_any(a.p[t], a.dt[t], c * 8, n, a.vec[t], v);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc += v[k] * v[k];
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[static_cast<int64_t>(base + t) * gridDim.x + blockIdx.x] = acc;
}

// One block: total = sum of partials in order. out = total; if norm/factor: norm = sqrt(total),
// factor = min(1, max_norm / (norm + 1e-6)).
__global__ void finish_norm_kernel(float* out, float* norm, float* factor, const float* partials, int64_t count,
                                   float max_norm) {
  __shared__ float scratch[32];
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) {
    if (out) *out = acc;
    const float nrm = sqrtf(acc);
    if (norm) *norm = nrm;
    if (factor) *factor = fminf(1.f, max_norm / (nrm + 1e-6f));
  }
}

__global__ void scale_multi_kernel(ListArgs a, const float* factor) {
  const int t = blockIdx.y;
  const int64_t n = a.n[t];
  const float f = *factor;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < (n + 7) / 8;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8];
    load8_any(a.p[t], a.dt[t], c * 8, n, a.vec[t], v);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] *= f;
    store8_any(a.p[t], a.dt[t], c * 8, n, a.vec[t], v);
  }
}

void check_f32(const Tensor& t, int64_t n, const char* what) {
  LATTE_CHECK(t.defined() && t.dtype() == DType::F32 && t.is_contiguous() && t.numel() == n, "adamw_step: ", what,
              " must be contiguous f32 with ", n, " elements, got ", t.defined() ? t.str() : "undefined");
}

void check_scalar(const Tensor& t, const char* op, const char* what) {
  LATTE_CHECK(t.defined() && t.dtype() == DType::F32 && t.numel() == 1 && t.device().is_cuda(), op, ": ", what,
              " must be a one-element f32 CUDA tensor");
}

// Calls f(first, count) for consecutive groups of at most kGroup items.
template <typename F>
void for_groups(size_t total, F&& f) {
  for (size_t first = 0; first < total; first += kGroup) f(first, std::min<size_t>(kGroup, total - first));
}

ListArgs list_args(const std::vector<Tensor>& ts, size_t first, size_t count, const char* op, int64_t* max_chunks) {
  ListArgs a{};
  *max_chunks = 1;
  for (size_t j = 0; j < count; ++j) {
    const Tensor& t = ts[first + j];
    require_contiguous(t, op, "tensor");
    a.p[j] = t.data_ptr();
    a.n[j] = t.numel();
    a.dt[j] = float_code(t, op);
    a.vec[j] = aligned16(t.data_ptr());
    *max_chunks = std::max(*max_chunks, (t.numel() + 7) / 8);
  }
  return a;
}

}  // namespace

void adamw_step(const std::vector<AdamWTensors>& tensors, const AdamWHyper& h, double grad_scale,
                const Tensor& grad_scale_device) {
  if (tensors.empty()) return;
  if (grad_scale_device.defined()) check_scalar(grad_scale_device, "adamw_step", "grad_scale_device");
  LATTE_CHECK(h.step >= 1, "adamw_step: step is 1-based, got ", h.step);
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  cudaStream_t stream = current_stream();
  for_groups(tensors.size(), [&](size_t first, size_t count) {
    AdamWArgs a{};
    int64_t max_chunks = 1;
    for (size_t j = 0; j < count; ++j) {
      const AdamWTensors& t = tensors[first + j];
      const int64_t n = t.master.numel();
      check_f32(t.master, n, "master");
      check_f32(t.exp_avg, n, "exp_avg");
      check_f32(t.exp_avg_sq, n, "exp_avg_sq");
      LATTE_CHECK(t.grad.defined() && t.grad.numel() == n && t.grad.is_contiguous(), "adamw_step: grad of ",
                  t.master.str(), " must be contiguous with ", n, " elements");
      a.w[j] = t.master.data<float>();
      a.m[j] = t.exp_avg.data<float>();
      a.v[j] = t.exp_avg_sq.data<float>();
      a.g[j] = t.grad.data_ptr();
      a.dtg[j] = float_code(t.grad, "adamw_step");
      const bool write_param = t.param.defined() && t.param.data_ptr() != t.master.data_ptr();
      if (write_param) {
        LATTE_CHECK(t.param.numel() == n && t.param.is_contiguous(), "adamw_step: param ", t.param.str());
        a.p[j] = t.param.data_ptr();
        a.dtp[j] = float_code(t.param, "adamw_step");
      }
      a.n[j] = n;
      a.decay[j] = static_cast<float>(1.0 - h.lr * (t.decay ? h.weight_decay : 0.0));
      a.vec[j] = aligned16(a.w[j]) && aligned16(a.m[j]) && aligned16(a.v[j]) && aligned16(a.g[j]) &&
                 (!write_param || aligned16(a.p[j]));
      max_chunks = std::max(max_chunks, (n + 7) / 8);
    }
    const int64_t cap = h.max_blocks_per_tensor > 0 ? h.max_blocks_per_tensor : 1024;
    const dim3 grid(blocks_for(max_chunks, kThreads, cap), static_cast<unsigned>(count));
    adamw_kernel<<<grid, kThreads, 0, stream>>>(a, static_cast<float>(h.lr), static_cast<float>(h.beta1),
                                                static_cast<float>(h.beta2), static_cast<float>(h.eps),
                                                static_cast<float>(bc1), static_cast<float>(bc2),
                                                static_cast<float>(grad_scale),
                                                grad_scale_device.defined() ? grad_scale_device.data<float>() : nullptr);
    CUDA_CHECK_LAUNCH("adamw_kernel");
  });
}

namespace {
void norm_impl(const std::vector<Tensor>& ts, float* out, float* norm, float* factor, double max_norm, Device dev,
               const char* op) {
  cudaStream_t stream = current_stream();
  const int64_t count = static_cast<int64_t>(ts.size()) * kNormBlocks;
  Tensor partials = Tensor::empty({std::max<int64_t>(count, 1)}, DType::F32, dev);
  for_groups(ts.size(), [&](size_t first, size_t n) {
    int64_t max_chunks;
    ListArgs a = list_args(ts, first, n, op, &max_chunks);
    sum_squares_multi_kernel<<<dim3(kNormBlocks, static_cast<unsigned>(n)), kThreads, 0, stream>>>(
        a, partials.data<float>(), static_cast<int>(first));
    CUDA_CHECK_LAUNCH("sum_squares_multi_kernel");
  });
  finish_norm_kernel<<<1, 1024, 0, stream>>>(out, norm, factor, partials.data<float>(), count,
                                             static_cast<float>(max_norm));
  CUDA_CHECK_LAUNCH("finish_norm_kernel");
}
}  // namespace

void sum_squares_multi(const Tensor& out, const std::vector<Tensor>& tensors) {
  check_scalar(out, "sum_squares_multi", "out");
  norm_impl(tensors, out.data<float>(), nullptr, nullptr, 0.0, out.device(), "sum_squares_multi");
}

void clip_grad_norm(const std::vector<Tensor>& grads, double max_norm, const Tensor& norm_out,
                    const Tensor& factor_out) {
  check_scalar(norm_out, "clip_grad_norm", "norm_out");
  check_scalar(factor_out, "clip_grad_norm", "factor_out");
  norm_impl(grads, nullptr, norm_out.data<float>(), factor_out.data<float>(), max_norm, norm_out.device(),
            "clip_grad_norm");
}

void scale_multi(const std::vector<Tensor>& tensors, const Tensor& factor) {
  check_scalar(factor, "scale_multi", "factor");
  cudaStream_t stream = current_stream();
  for_groups(tensors.size(), [&](size_t first, size_t n) {
    int64_t max_chunks;
    ListArgs a = list_args(tensors, first, n, "scale_multi", &max_chunks);
    scale_multi_kernel<<<dim3(blocks_for(max_chunks, kThreads, 1024), static_cast<unsigned>(n)), kThreads, 0, stream>>>(
        a, factor.data<float>());
    CUDA_CHECK_LAUNCH("scale_multi_kernel");
  });
}

}  // namespace latte::cuda
