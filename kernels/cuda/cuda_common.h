// Shared pieces of latte's CUDA kernels (included by kernels/cuda/*.cu only).
//
// Float storage is bf16 or f32. Rather than one template instantiation per dtype combination (compile
// time on the 2-core CI machine matters), kernels take `const void*` plus a runtime dtype code and go
// through the load/store helpers below: the branch is uniform across the grid and costs a few
// instructions in kernels that wait on memory. Math is always fp32.
//
// Vector access: `load8`/`store8` move 8 consecutive elements (16 bytes of bf16, 2x16 bytes of f32);
// callers use them only when the element index is a multiple of 8 and the base pointer is 16-byte
// aligned (`aligned16`), and fall back to scalar access otherwise (odd sizes, offset views).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/cuda_context.h"
#include "core/tensor.h"

namespace latte::cuda {

// ---- dtypes -----------------------------------------------------------------------------------------
enum : int { kF32 = 0, kBF16 = 1 };

// The dtype code of a float tensor CUDA kernels accept (bf16 or f32); throws a clear error otherwise.
inline int float_code(const Tensor& t, const char* op) {
  if (t.dtype() == DType::BF16) return kBF16;
  if (t.dtype() == DType::F32) return kF32;
  LATTE_FAIL(op, ": CUDA kernels take bf16 or f32 tensors, got ", dtype_name(t.dtype()), " ", t.shape().str(),
             "; cast with .to(DType::BF16)");
}

inline void require_contiguous(const Tensor& t, const char* op, const char* name) {
  LATTE_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous, got shape ", t.shape().str(), " strides ",
              t.strides().str());
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// A comparison switch of the attention kernels (LATTE_DECODE_TMA=0, LATTE_FLASH_OVERLAP=0, ...): false when the
// environment variable is "0"; callers read it once into a static.
inline bool switch_on(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::string(v) == "0");
}

inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 1 << 30) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b < cap ? b : cap);
}

// Lets `kernel` launch on the current device with `bytes` of dynamic shared memory (more than the 48 KB a kernel
// may take by default): raises its limit the first time a launch on that device needs more than it was raised to,
// else only looks it up (under a lock). Every launcher of a kernel with more than 48 KB calls it. dynamic_smem.cu.
void allow_dynamic_smem(const void* kernel, size_t bytes);
template <typename... Args>
void allow_dynamic_smem(void (*kernel)(Args...), size_t bytes) {
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}

// dst (cols) (+)= sum over rows of partials (rows, cols) fp32, rows added in a fixed order (deterministic).
// dst is bf16 or f32 (code dt); `accumulate` adds into dst instead of overwriting. Defined in reduce.cu.
void column_sum(void* dst, int dt, const float* partials, int64_t rows, int64_t cols, bool accumulate,
                cudaStream_t stream);

// ---- device helpers ---------------------------------------------------------------------------------
__device__ __forceinline__ float bf2f(__nv_bfloat16 h) { return __bfloat162float(h); }
__device__ __forceinline__ __nv_bfloat16 f2bf(float f) { return __float2bfloat16_rn(f); }

__device__ __forceinline__ float load1(const void* p, int dt, int64_t i) {
  return dt == kBF16 ? bf2f(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store1(void* p, int dt, int64_t i, float v) {
  if (dt == kBF16)
    static_cast<__nv_bfloat16*>(p)[i] = f2bf(v);
  else
    static_cast<float*>(p)[i] = v;
}

// 8 elements starting at i (i % 8 == 0, base 16-byte aligned).
__device__ __forceinline__ void load8(const void* p, int dt, int64_t i, float (&v)[8]) {
  if (dt == kBF16) {
    uint4 u = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p) + i);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float2 f = __bfloat1622float2(h[k]);
      v[2 * k] = f.x;
      v[2 * k + 1] = f.y;
    }
  } else {
    const float4* q = reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    float4 a = q[0], b = q[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  }
}

__device__ __forceinline__ void store8(void* p, int dt, int64_t i, const float (&v)[8]) {
  if (dt == kBF16) {
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p) + i) = u;
  } else {
    float4* q = reinterpret_cast<float4*>(static_cast<float*>(p) + i);
    q[0] = make_float4(v[0], v[1], v[2], v[3]);
    q[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
}

// Loads 8 elements at i..i+7 of a row of length n: vectorised when `vec`, else scalar with bounds.
__device__ __forceinline__ void load8_any(const void* p, int dt, int64_t i, int64_t n, bool vec, float (&v)[8]) {
  if (vec && i + 8 <= n) {
    load8(p, dt, i, v);
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = i + k < n ? load1(p, dt, i + k) : 0.f;
  }
}

__device__ __forceinline__ void store8_any(void* p, int dt, int64_t i, int64_t n, bool vec, const float (&v)[8]) {
  if (vec && i + 8 <= n) {
    store8(p, dt, i, v);
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (i + k < n) store1(p, dt, i + k, v[k]);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
// Fixed reduction tree: deterministic. `scratch` holds 32 floats; the call ends with a barrier, so
// scratch may be reused right after.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? scratch[lane] : 0.f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? scratch[lane] : -INFINITY;
  t = warp_max(t);
  __syncthreads();
  return t;
}

}  // namespace latte::cuda
