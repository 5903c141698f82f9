// RMSNorm over the last dim, y = x / sqrt(mean(x^2) + eps) * w, forward and backward (fp32 math).
// Floor: forward reads x and writes y (2 N D elements); backward reads x and dout and writes dx
// (3 N D elements); the weight and the per-row rstd are negligible.
//
// Both directions: a persistent grid of blocks, each walking rows b, b + G, b + 2G, ...; a thread owns 16
// fixed channels of every row (two 16-byte chunks in bf16), so a row is read once into registers, reduced
// over the block, and written. Small blocks (D/16 threads, 128 at D = 2048) give several resident blocks,
// i.e. several rows in flight, per SM; the forward also issues the next row's loads before the current
// row's reduction (the per-row block reduction is the critical path).
// Backward: xhat = x rstd, g = dout w, dx = rstd (g - xhat mean(g xhat)), dweight += sum_rows dout xhat.
// The weight gradient stays in registers across a block's rows; each block writes one fp32 partial row and
// column_sum adds the partials in order into dweight: no atomics, deterministic.
// v1 (one warp per row forward, 8 channels per thread backward) measured 68% / 53% of copy bandwidth
// (docs/performance.md).
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

constexpr int kPerThread = 16;                  // channels per thread
constexpr int kMaxThreads = 512;                // launch bound: <= 128 registers per thread
constexpr int kMaxWidth = kPerThread * kMaxThreads;

// Channel of slot (k, e), k < 2 chunks, e < 8: vectorised (k*blockDim + t)*8 + e, else (k*8 + e)*blockDim + t
// (coalesced scalar access). Both cover [0, 16 blockDim).
__device__ __forceinline__ int64_t channel(bool vec, int k, int e) {
  return vec ? (static_cast<int64_t>(k) * blockDim.x + threadIdx.x) * 8 + e
             : (static_cast<int64_t>(k) * 8 + e) * blockDim.x + threadIdx.x;
}

// The thread's 16 channels of a row (zeros past D).
__device__ __forceinline__ void load_slots(const char* row, int dt, int64_t D, bool vec, float (&v)[kPerThread]) {
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    if (vec) {
      const int64_t c = channel(true, k, 0);
      float t[8];
      if (c < D) {
        load8(row, dt, c, t);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) t[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) v[k * 8 + e] = t[e];
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t c = channel(false, k, e);
        v[k * 8 + e] = c < D ? load1(row, dt, c) : 0.f;
      }
    }
  }
}

__device__ __forceinline__ void store_slots(char* row, int dt, int64_t D, bool vec, const float (&v)[kPerThread]) {
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    if (vec) {
      const int64_t c = channel(true, k, 0);
      float t[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) t[e] = v[k * 8 + e];
      if (c < D) store8(row, dt, c, t);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t c = channel(false, k, e);
        if (c < D) store1(row, dt, c, v[k * 8 + e]);
      }
    }
  }
}

// out, x (N, D); w (D); rstd (N) f32.
template <bool vec>  // 16-byte accesses (a compile-time switch: the scalar path's addressing costs registers)
__global__ void __launch_bounds__(kMaxThreads) rmsnorm_forward_kernel(void* out, int dto, float* rstd, const void* x,
                                                               int dtx, const void* w, int dtw, int64_t N, int64_t D,
                                                               float eps) {
  __shared__ float scratch[32];
  const int esx = dtx == kBF16 ? 2 : 4, eso = dto == kBF16 ? 2 : 4;
  float wv[kPerThread], xn[kPerThread];
  load_slots(static_cast<const char*>(w), dtw, D, vec, wv);
  int64_t row = blockIdx.x;
  if (row < N) load_slots(static_cast<const char*>(x) + row * D * esx, dtx, D, vec, xn);
  for (; row < N; row += gridDim.x) {
    float xv[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) xv[k] = xn[k];
    const int64_t next = row + gridDim.x;
    if (next < N) load_slots(static_cast<const char*>(x) + next * D * esx, dtx, D, vec, xn);
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) ss += xv[k] * xv[k];
    ss = block_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) xv[k] = xv[k] * r * wv[k];
    store_slots(static_cast<char*>(out) + row * D * eso, dto, D, vec, xv);
    if (threadIdx.x == 0) rstd[row] = r;
  }
}

// partial (gridDim.x, D) f32: this block's share of dweight.
template <bool vec>
__global__ void __launch_bounds__(kMaxThreads) rmsnorm_backward_kernel(void* dx, int dtdx, float* partial,
                                                                const void* dout, int dtd, const void* x, int dtx,
                                                                const void* w, int dtw, const float* rstd, int64_t N,
                                                                int64_t D, bool accumulate_dx) {
  __shared__ float scratch[32];
  const int esx = dtx == kBF16 ? 2 : 4, esd = dtd == kBF16 ? 2 : 4, esdx = dtdx == kBF16 ? 2 : 4;
  float wv[kPerThread], acc[kPerThread];
  load_slots(static_cast<const char*>(w), dtw, D, vec, wv);
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) acc[k] = 0.f;
  // No prefetch here (it would push the kernel past 128 registers): several resident blocks per SM keep
  // enough rows in flight.
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    float xv[kPerThread], dv[kPerThread];
    load_slots(static_cast<const char*>(x) + row * D * esx, dtx, D, vec, xv);
    load_slots(static_cast<const char*>(dout) + row * D * esd, dtd, D, vec, dv);
    const float r = rstd[row];
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      xv[k] *= r;  // xhat
      dot += dv[k] * wv[k] * xv[k];
    }
    dot = block_sum(dot, scratch) / static_cast<float>(D);
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      acc[k] += dv[k] * xv[k];
      dv[k] = r * (dv[k] * wv[k] - xv[k] * dot);  // dx
    }
    char* dx_row = static_cast<char*>(dx) + row * D * esdx;
    if (accumulate_dx) {  // xhat is dead here: its registers take the prior dx
      load_slots(dx_row, dtdx, D, vec, xv);
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) dv[k] += xv[k];
    }
    store_slots(dx_row, dtdx, D, vec, dv);
  }
  float* prow = partial + static_cast<int64_t>(blockIdx.x) * D;
#pragma unroll
  for (int k = 0; k < 2; ++k)
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int64_t c = channel(vec, k, e);
      if (c < D) prow[c] = acc[k * 8 + e];
    }
}

int threads_for(int64_t D) { return static_cast<int>(std::max<int64_t>(32, ((D + kPerThread - 1) / kPerThread + 31) / 32 * 32)); }

// Persistent grid: as many blocks as fit on the GPU at once, at most one per row.
template <typename K>
int64_t grid_for(K kernel, int threads, int64_t N) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  return std::max<int64_t>(1, std::min<int64_t>(N, static_cast<int64_t>(std::max(per_sm, 1)) * sm_count()));
}

}  // namespace

void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) {
  const char* op = "rmsnorm_forward";
  LATTE_CHECK(x.dim() >= 1 && out.shape() == x.shape() && weight.numel() == x.size(-1) &&
                  rstd.numel() * x.size(-1) == x.numel(), op,
              ": x ", x.shape().str(), " out ", out.shape().str(), " weight ", weight.shape().str(), " rstd ",
              rstd.shape().str());
  LATTE_CHECK(rstd.dtype() == DType::F32, op, ": rstd must be f32");
  for (const Tensor* t : {&out, &rstd, &x, &weight}) require_contiguous(*t, op, "operand");
  const int64_t D = x.size(-1), N = D ? x.numel() / D : 0;
  if (N == 0) return;
  LATTE_REQUIRE(D <= kMaxWidth, op, ": CUDA kernel supports widths up to ", kMaxWidth, ", got ", D);
  const bool vec = D % 8 == 0 && aligned16(out.data_ptr()) && aligned16(x.data_ptr()) && aligned16(weight.data_ptr());
  const int threads = threads_for(D);
  auto kernel = vec ? rmsnorm_forward_kernel<true> : rmsnorm_forward_kernel<false>;
  const int64_t grid = grid_for(kernel, threads, N);
  kernel<<<static_cast<unsigned>(grid), threads, 0, current_stream()>>>(
      out.data_ptr(), float_code(out, op), rstd.data<float>(), x.data_ptr(), float_code(x, op), weight.data_ptr(),
      float_code(weight, op), N, D, static_cast<float>(eps));
  CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, bool accumulate_dx) {
  const char* op = "rmsnorm_backward";
  LATTE_CHECK(x.dim() >= 1 && dx.shape() == x.shape() && dout.shape() == x.shape() && weight.numel() == x.size(-1) &&
                  dweight.numel() == x.size(-1) && rstd.numel() * x.size(-1) == x.numel(),
              op, ": x ", x.shape().str(), " dx ", dx.shape().str(), " dout ", dout.shape().str());
  for (const Tensor* t : {&dx, &dweight, &dout, &x, &weight, &rstd}) require_contiguous(*t, op, "operand");
  LATTE_CHECK(rstd.dtype() == DType::F32, op, ": rstd must be f32");
  const int64_t D = x.size(-1), N = D ? x.numel() / D : 0;
  LATTE_REQUIRE(D <= kMaxWidth, op, ": CUDA kernel supports widths up to ", kMaxWidth, ", got ", D);
  if (N == 0 || D == 0) return;
  const bool vec = D % 8 == 0 && aligned16(dx.data_ptr()) && aligned16(dout.data_ptr()) && aligned16(x.data_ptr()) &&
                   aligned16(weight.data_ptr());
  const int threads = threads_for(D);
  auto kernel = vec ? rmsnorm_backward_kernel<true> : rmsnorm_backward_kernel<false>;
  const int64_t grid = grid_for(kernel, threads, N);
  cudaStream_t stream = current_stream();
  Tensor partial = Tensor::empty({grid, D}, DType::F32, x.device());
  kernel<<<static_cast<unsigned>(grid), threads, 0, stream>>>(
      dx.data_ptr(), float_code(dx, op), partial.data<float>(), dout.data_ptr(), float_code(dout, op), x.data_ptr(),
      float_code(x, op), weight.data_ptr(), float_code(weight, op), rstd.data<float>(), N, D, accumulate_dx);
  CUDA_CHECK_LAUNCH("rmsnorm_backward_kernel");
  column_sum(dweight.data_ptr(), float_code(dweight, op), partial.data<float>(), grid, D, true, stream);
}

}  // namespace latte::cuda
