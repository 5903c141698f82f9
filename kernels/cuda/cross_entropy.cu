// Cross-entropy over the vocabulary fused with its softmax and gradient: for each row of logits (N, V),
//   loss = logsumexp(x) - x[target],  dlogits = grad_scale (softmax(x) - onehot(target)),
// in one kernel, so no probability tensor (N, V) is ever stored. Math in fp32.
//
// Floor: read the logits once and write dlogits once, 2 N V elements: at N = 8192, V = 50304 in bf16 that is
// 1.65 GB, 0.554 ms at the 2.97 TB/s copy rate of the H100 here (forward only: 0.82 GB, 0.277 ms). The
// arithmetic is not free next to it: two exponentials per element (one for the sum, one for the gradient)
// on the 16-per-clock special-function unit are 0.22 ms over the whole GPU, and ~10 fp32/integer
// instructions per element another ~0.15 ms of issue; both overlap the memory traffic only if the loads of
// the next row are already in flight while a row is computed.
//
// Fast path (sm_90, V % 8 == 0, V >= 1024, two rows fit in shared memory: bf16 up to V ~ 58000, f32 up to
// ~29000): a persistent grid whose blocks each keep two row buffers in shared memory (2 x 100 KB at V = 50304
// in bf16, so one 1024-thread block per SM there; narrower rows get ~V/48 threads and several blocks per SM).
// One thread loads a whole row with bulk copies (cp.async.bulk, the copy engine, completing on an mbarrier)
// while the block computes the previous row, so DRAM sees every logit read once and ~100 KB of loads are in
// flight per SM at all times. Per row: one pass over the shared-memory row keeps a running (max, sum of exp)
// per thread, one block reduction merges the pairs in a fixed order, and a second pass over the
// shared-memory row writes dlogits with 16-byte stores. Per SM and row at V = 50304: ~8.9 us of DRAM time at
// the copy rate against ~4 us of exponentials and ~2 us of other issue, so the loads should stay the limit.
// exp(x - m) is ex2.approx(x log2e - m log2e) (1 FFMA + 1 MUFU, relative error ~2^-22, instead of expf's ~8
// instructions). The loss is the same function as before (lse - x[target] in fp32, ignore_index rows 0,
// grad_scale on the gradient only); only the last bits of the exponentials and the summation order differ.
// Loss-only calls (no dlogits) take the same path (it depends on the logits only) and the same first pass,
// so their losses are bitwise those of the fused call.
// Fallback (other sizes, other GPUs): v1 below, one 512-thread block per row that reads the row twice (the
// second read mostly from DRAM): 62% fwd+bwd / 74% fwd-only of copy bandwidth (docs/performance.md). Two
// variants bounding the rows in flight (a persistent grid of 2 x 512 threads per SM; 2 x 768-thread blocks
// with pass 2 back to front) measured 55-63% / 56-66% and were dropped.
//
// Both paths read the target logit before writing anything, and each block writes only its own rows after
// reading them, so dlogits may alias logits (the gradient overwrites the logits in place). Rows whose target
// is ignore_index get loss 0 and a zero gradient row (the fast path does not load them); an out-of-range
// target gives a NaN loss (a data bug should be loud).
#include <algorithm>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/smem_staging.cuh"

namespace latte::cuda {

namespace {

// ---- fallback (v1): one block per row, the row read twice from global memory --------------------------

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

// ---- fast path: rows staged in shared memory by the copy engine ----------------------------------------

constexpr int kSmemThreads = 1024;       // at most; ~6 units of 8 logits per thread below that
constexpr int64_t kSmemMinVocab = 1024;  // narrower rows (e.g. the tensor-parallel lse over ranks) stay on v1
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float fast_exp2(float x) {  // 2^x; ex2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}


// Merges the running softmax statistics (m, s) with (m2, s2): s counts sum exp(x - m).
__device__ __forceinline__ void merge_stats(float& m, float& s, float m2, float s2) {
  const float M = fmaxf(m, m2);
  const float a = m == -INFINITY ? 0.f : s * fast_exp2((m - M) * kLog2e);
  const float b = m2 == -INFINITY ? 0.f : s2 * fast_exp2((m2 - M) * kLog2e);
  m = M;
  s = a + b;
}

// Block-wide merge of every thread's (m, s) in a fixed tree (xor butterflies give every lane the same
// result: the merge is commutative in fp32). `scratch` holds 32 pairs; ends with a barrier.
__device__ __forceinline__ void block_merge(float& m, float& s, float2* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    merge_stats(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  if (lane == 0) scratch[warp] = make_float2(m, s);
  __syncthreads();
  const float2 t = lane < nwarps ? scratch[lane] : make_float2(-INFINITY, 0.f);
  m = t.x;
  s = t.y;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    merge_stats(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  __syncthreads();
}

// losses (N) f32; dlogits (N, V) dtype dtd or null; logits (N, V) dtype dtl, V % 8 == 0, 16-byte aligned;
// row_bytes = V * sizeof(logit). Dynamic shared memory: two row buffers of row_bytes.
__global__ void __launch_bounds__(kSmemThreads, 1)
    cross_entropy_smem_kernel(float* losses, void* dlogits, int dtd, bool vecd, const void* logits, int dtl,
                              const int32_t* targets, int64_t N, int64_t V, int64_t ignore_index, float grad_scale,
                              uint32_t row_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char rows_smem[];  // 2 x row_bytes
  __shared__ uint64_t full[2];                                 // buffer b holds its row
  __shared__ float2 scratch[32];
  const int esd = dtd == kBF16 ? 2 : 4;
  const int units = static_cast<int>(V / 8);  // 8 logits each
  const int nthreads = blockDim.x;
  const int64_t stride = gridDim.x;
  if (threadIdx.x == 0) {
    mbar_init(&full[0], 1);
    mbar_init(&full[1], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  // Row `row` (target t) into buffer b, unless it is past the end or ignored (then nobody waits for it).
  auto issue = [&](int64_t row, int64_t t, int b) {
    if (row < N && t != ignore_index) {
      mbar_arrive_expect(&full[b], row_bytes);
      bulk_copy(rows_smem + b * row_bytes, static_cast<const char*>(logits) + row * static_cast<int64_t>(row_bytes),
                row_bytes, &full[b]);
    }
  };
  auto target_of = [&](int64_t row) -> int64_t { return row < N ? targets[row] : 0; };
  if (threadIdx.x == 0) {
    issue(blockIdx.x, target_of(blockIdx.x), 0);
    issue(blockIdx.x + stride, target_of(blockIdx.x + stride), 1);
  }
  uint32_t parity = 0;  // bit b: the phase buffer b completes next
  int b = 0;
  int64_t target = target_of(blockIdx.x);
  for (int64_t row = blockIdx.x; row < N; row += stride, b ^= 1) {
    // Targets of the next row and of the row after (thread 0 stages it at the end): loaded now, used later,
    // so their latency is off the row's critical path.
    const int64_t target_next = target_of(row + stride);
    const int64_t target_refill = threadIdx.x == 0 ? target_of(row + 2 * stride) : 0;
    char* dx = dlogits ? static_cast<char*>(dlogits) + row * V * esd : nullptr;
    if (target == ignore_index) {
      if (threadIdx.x == 0) losses[row] = 0.f;
      if (dx) {
        const float zero[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (int u = threadIdx.x; u < units; u += nthreads) store8_any(dx, dtd, u * 8, V, vecd, zero);
      }
    } else {
      const unsigned char* buf = rows_smem + b * row_bytes;
      mbar_wait(&full[b], (parity >> b) & 1u);
      parity ^= 1u << b;
      // Pass 1: running (max, sum of exp) over this thread's units.
      float m = -INFINITY, s = 0.f;
      for (int u = threadIdx.x; u < units; u += nthreads) {
        float v[8];
        load8(buf, dtl, u * 8, v);
        float cm = fmaxf(fmaxf(fmaxf(v[0], v[1]), fmaxf(v[2], v[3])), fmaxf(fmaxf(v[4], v[5]), fmaxf(v[6], v[7])));
        if (cm > m) {  // rare after the first units: rescale the sum to the new max
          s = m == -INFINITY ? 0.f : s * fast_exp2((m - cm) * kLog2e);
          m = cm;
        }
        const float nm = m == -INFINITY ? 0.f : -m * kLog2e;  // -inf logits (a masked vocabulary) add 0
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = fast_exp2(fmaf(v[k], kLog2e, nm));
        s += ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
      }
      block_merge(m, s, scratch);
      const float lse = m + logf(s);
      const bool valid = target >= 0 && target < V;
      if (threadIdx.x == 0) losses[row] = valid ? lse - load1(buf, dtl, target) : __int_as_float(0x7fc00000);
      if (dx) {
        // Pass 2: dlogits = grad_scale (exp(x - lse) - onehot), from the same shared-memory row.
        const float nl = -lse * kLog2e;
        for (int u = threadIdx.x; u < units; u += nthreads) {
          float v[8];
          load8(buf, dtl, u * 8, v);
#pragma unroll
          for (int k = 0; k < 8; ++k) v[k] = fast_exp2(fmaf(v[k], kLog2e, nl));
          if (static_cast<uint64_t>(target - u * 8) < 8u) {  // the unit holding the target
#pragma unroll
            for (int k = 0; k < 8; ++k)
              if (u * 8 + k == target) v[k] -= 1.f;
          }
#pragma unroll
          for (int k = 0; k < 8; ++k) v[k] *= grad_scale;
          store8_any(dx, dtd, u * 8, V, vecd, v);
        }
      }
    }
    __syncthreads();  // every thread is done with buffer b: refill it with the row after next
    if (threadIdx.x == 0) {
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      issue(row + 2 * stride, target_refill, b);
    }
    target = target_next;
  }
#endif
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
  const int dtl = float_code(logits, op), dtd = dlogits.defined() ? float_code(dlogits, op) : kF32;
  void* dx = dlogits.defined() ? dlogits.data_ptr() : nullptr;
  cudaStream_t stream = current_stream();
  // The path depends on the logits only, so a loss-only call takes the same path (same bits) as a fused one.
  const cudaDeviceProp& prop = device_properties();
  const int64_t row_bytes = V * (dtl == kBF16 ? 2 : 4);
  const int64_t smem = 2 * row_bytes;
  if (prop.major >= 9 && V % 8 == 0 && V >= kSmemMinVocab && aligned16(logits.data_ptr()) &&
      smem + 1024 <= static_cast<int64_t>(prop.sharedMemPerBlockOptin)) {
    // Persistent grid: as many blocks as fit (one per SM at V = 50304 in bf16), at most one per row.
    const int threads = static_cast<int>((std::clamp<int64_t>((V / 8 + 5) / 6, 128, kSmemThreads) + 31) / 32 * 32);
    const int per_sm = blocks_per_sm(cross_entropy_smem_kernel, threads, static_cast<size_t>(smem));
    const int64_t grid = std::min<int64_t>(N, static_cast<int64_t>(per_sm) * sm_count());
    cross_entropy_smem_kernel<<<static_cast<unsigned>(grid), threads, static_cast<size_t>(smem), stream>>>(
        losses.data<float>(), dx, dtd, dx && aligned16(dx), logits.data_ptr(), dtl, targets.data<int32_t>(), N, V,
        ignore_index, static_cast<float>(grad_scale), static_cast<uint32_t>(row_bytes));
    CUDA_CHECK_LAUNCH("cross_entropy_smem_kernel");
    return;
  }
  const bool vec = V % 8 == 0 && aligned16(logits.data_ptr()) && (!dx || aligned16(dx));
  cross_entropy_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
      losses.data<float>(), dx, dtd, logits.data_ptr(), dtl, targets.data<int32_t>(), V, ignore_index,
      static_cast<float>(grad_scale), vec);
  CUDA_CHECK_LAUNCH("cross_entropy_kernel");
}

}  // namespace latte::cuda
