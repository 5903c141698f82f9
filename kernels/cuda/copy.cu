// fill and copy: the primitives Tensor uses on the GPU (factories, .contiguous(), .to(dtype), views
// written through). Both are pure data movement; the floor is bytes written (+ bytes read for copy)
// over copy bandwidth.
//  - fill: memset when the pattern is one repeated byte (zeros), else 16-byte stores of the repeated
//    element pattern; strided outputs element by element.
//  - copy: same dtype and both contiguous: cudaMemcpyAsync. Same dtype strided: dims are merged where
//    both layouts allow, and when the innermost dim is contiguous in both and 16-byte aligned the
//    copy moves 16-byte units. bf16<->f32 contiguous: 8 elements per thread, vectorised. Any other
//    cast (f64, f16, i32, i64, u16, u8): element by element through double, rounding as the CPU does
//    (llround for integers).
#include <cuda_fp16.h>

#include <cstring>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

// A shape with the strides of two tensors (elements), merged to as few dims as possible.
struct Layout {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t so[kMaxDims] = {};  // out strides
  int64_t si[kMaxDims] = {};  // in strides
};

Layout make_layout(const Shape& shape, const Strides& so, const Strides& si) {
  Layout L;
  for (int d = 0; d < shape.ndim(); ++d) {
    if (shape[d] == 1) continue;
    if (L.ndim > 0) {
      int p = L.ndim - 1;  // merge into the previous dim when both tensors step over it contiguously
      if (L.so[p] == so[d] * shape[d] && L.si[p] == si[d] * shape[d]) {
        L.size[p] *= shape[d];
        L.so[p] = so[d];
        L.si[p] = si[d];
        continue;
      }
    }
    L.size[L.ndim] = shape[d];
    L.so[L.ndim] = so[d];
    L.si[L.ndim] = si[d];
    L.ndim++;
  }
  if (L.ndim == 0) {  // a single element
    L.ndim = 1;
    L.size[0] = 1;
    L.so[0] = L.si[0] = 1;
  }
  return L;
}

// Element offsets of linear index i (row-major over L.size). 32-bit division when everything fits.
// The loops run over all kMaxDims with constant indices so the layout stays in the parameter bank
// (a runtime index would copy it to local memory).
__device__ __forceinline__ void layout_offsets(const Layout& L, int64_t i, bool small, int64_t& oo, int64_t& oi) {
  oo = 0;
  oi = 0;
  if (small) {
    uint32_t r = static_cast<uint32_t>(i);
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      if (d >= L.ndim) continue;
      uint32_t s = static_cast<uint32_t>(L.size[d]);
      uint32_t q = r / s, m = r - q * s;
      oo += static_cast<int64_t>(m) * L.so[d];
      oi += static_cast<int64_t>(m) * L.si[d];
      r = q;
    }
    return;
  }
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; --d) {
    if (d >= L.ndim) continue;
    int64_t s = L.size[d];
    int64_t q = i / s, m = i - q * s;
    oo += m * L.so[d];
    oi += m * L.si[d];
    i = q;
  }
}

// Runtime dtype codes for the generic cast path (values of latte::DType).
__device__ __forceinline__ double load_any(const void* p, int t, int64_t i) {
  switch (static_cast<DType>(t)) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::I64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DType::U16: return static_cast<const uint16_t*>(p)[i];
    case DType::U8: return static_cast<const uint8_t*>(p)[i];
  }
  return 0.0;
}

__device__ __forceinline__ void store_any(void* p, int t, int64_t i, double v) {
  switch (static_cast<DType>(t)) {
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::F64: static_cast<double*>(p)[i] = v; break;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); break;
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(llround(v)); break;
    case DType::I64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(llround(v)); break;
    case DType::U16: static_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(llround(v)); break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(llround(v)); break;
  }
}

// Moves one element of `bytes` bytes (1, 2, 4, 8 or 16).
__device__ __forceinline__ void move_bytes(char* dst, const char* src, int bytes) {
  switch (bytes) {
    case 1: *dst = *src; break;
    case 2: *reinterpret_cast<uint16_t*>(dst) = *reinterpret_cast<const uint16_t*>(src); break;
    case 4: *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(src); break;
    case 8: *reinterpret_cast<uint64_t*>(dst) = *reinterpret_cast<const uint64_t*>(src); break;
    default: *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src); break;
  }
}

// ---- kernels ----------------------------------------------------------------------------------------

// Contiguous fill of n elements of `es` bytes: head/tail element-wise, 16-byte stores in between.
// pattern16 holds the element pattern repeated; `head` elements precede the first aligned 16 bytes.
__global__ void fill_contiguous_kernel(char* base, int64_t n, int es, uint4 pattern16, int64_t head) {
  const int64_t nvec = (n - head) * es / 16;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const char* pat = reinterpret_cast<const char*>(&pattern16);
  for (int64_t v = tid; v < nvec; v += stride) reinterpret_cast<uint4*>(base + head * es)[v] = pattern16;
  const int64_t tail_start = head + nvec * 16 / es;
  for (int64_t i = tid; i < head + (n - tail_start); i += stride) {
    int64_t e = i < head ? i : tail_start + (i - head);
    move_bytes(base + e * es, pat, es);
  }
}

__global__ void fill_strided_kernel(char* base, Layout L, bool small, int64_t n, int es, uint4 pattern16) {
  const char* pat = reinterpret_cast<const char*>(&pattern16);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t oo, oi;
    layout_offsets(L, i, small, oo, oi);
    move_bytes(base + oo * es, pat, es);
  }
}

// Same-dtype strided copy of `es`-byte units.
__global__ void copy_strided_kernel(char* dst, const char* src, Layout L, bool small, int64_t n, int es) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t oo, oi;
    layout_offsets(L, i, small, oo, oi);
    move_bytes(dst + oo * es, src + oi * es, es);
  }
}

// Contiguous bf16/f32 <-> bf16/f32, 8 elements per thread (vectorised when `vec`).
__global__ void cast_float_kernel(void* dst, int dto, const void* src, int dti, int64_t n, bool vec) {
  const int64_t nchunks = (n + 7) / 8;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < nchunks;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8];
    load8_any(src, dti, c * 8, n, vec, v);
    store8_any(dst, dto, c * 8, n, vec, v);
  }
}

// Any dtype to any dtype, any layout.
__global__ void cast_strided_kernel(void* dst, int to, const void* src, int from, Layout L, bool small, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t oo, oi;
    layout_offsets(L, i, small, oo, oi);
    store_any(dst, to, oo, load_any(src, from, oi));
  }
}

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) { return blocks_for(n, kThreads, static_cast<int64_t>(sm_count()) * 16); }

bool layout_small(const Layout& L, int64_t n) { return n < (int64_t(1) << 32) && L.ndim > 0; }

}  // namespace

// ---- host launchers -----------------------------------------------------------------------------------

void fill(const Tensor& out, double value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int es = static_cast<int>(out.element_size());
  unsigned char elem[8] = {};
  store_from_double(elem, out.dtype(), 0, value);
  uint4 pattern16;
  for (int k = 0; k < 16; k += es) std::memcpy(reinterpret_cast<char*>(&pattern16) + k, elem, static_cast<size_t>(es));
  bool one_byte = true;  // the element is one byte repeated: memset does it
  for (int k = 1; k < es; ++k) one_byte = one_byte && elem[k] == elem[0];
  char* base = static_cast<char*>(out.data_ptr());
  cudaStream_t stream = current_stream();
  if (out.is_contiguous()) {
    if (one_byte) {
      CUDA_CHECK(cudaMemsetAsync(base, elem[0], out.nbytes(), stream));
      return;
    }
    int64_t head = static_cast<int64_t>((16 - (reinterpret_cast<uintptr_t>(base) & 15u)) & 15u) / es;
    if (head > n) head = n;
    fill_contiguous_kernel<<<grid_for((n - head) * es / 16 + 16), kThreads, 0, stream>>>(base, n, es, pattern16, head);
    CUDA_CHECK_LAUNCH("fill_contiguous_kernel");
    return;
  }
  Layout L = make_layout(out.shape(), out.strides(), out.strides());
  fill_strided_kernel<<<grid_for(n), kThreads, 0, stream>>>(base, L, layout_small(L, n), n, es, pattern16);
  CUDA_CHECK_LAUNCH("fill_strided_kernel");
}

void copy(const Tensor& out, const Tensor& in) {
  check_same_shape(out, in, "copy");
  const int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t stream = current_stream();
  char* dst = static_cast<char*>(out.data_ptr());
  const char* src = static_cast<const char*>(in.data_ptr());
  const bool contiguous = out.is_contiguous() && in.is_contiguous();
  if (out.dtype() == in.dtype()) {
    if (contiguous) {
      if (dst != src) CUDA_CHECK(cudaMemcpyAsync(dst, src, out.nbytes(), cudaMemcpyDeviceToDevice, stream));
      return;
    }
    int es = static_cast<int>(out.element_size());
    Layout L = make_layout(out.shape(), out.strides(), in.strides());
    int64_t units = n;
    // Innermost dim contiguous in both, every stride and both bases 16-byte friendly: move 16 bytes.
    const int last = L.ndim - 1;
    const int w = 16 / es;
    bool wide = es < 16 && L.so[last] == 1 && L.si[last] == 1 && L.size[last] % w == 0 && aligned16(dst) && aligned16(src);
    for (int d = 0; wide && d < last; ++d) wide = L.so[d] % w == 0 && L.si[d] % w == 0;
    if (wide) {
      L.size[last] /= w;
      for (int d = 0; d < last; ++d) {
        L.so[d] /= w;
        L.si[d] /= w;
      }
      units = n / w;
      es = 16;
    }
    copy_strided_kernel<<<grid_for(units), kThreads, 0, stream>>>(dst, src, L, layout_small(L, units), units, es);
    CUDA_CHECK_LAUNCH("copy_strided_kernel");
    return;
  }
  const bool float_pair = (out.dtype() == DType::BF16 || out.dtype() == DType::F32) &&
                          (in.dtype() == DType::BF16 || in.dtype() == DType::F32);
  if (contiguous && float_pair) {
    const bool vec = aligned16(dst) && aligned16(src);
    cast_float_kernel<<<grid_for((n + 7) / 8), kThreads, 0, stream>>>(dst, float_code(out, "copy"), src,
                                                                       float_code(in, "copy"), n, vec);
    CUDA_CHECK_LAUNCH("cast_float_kernel");
    return;
  }
  Layout L = make_layout(out.shape(), out.strides(), in.strides());
  cast_strided_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, static_cast<int>(out.dtype()), src,
                                                            static_cast<int>(in.dtype()), L, layout_small(L, n), n);
  CUDA_CHECK_LAUNCH("cast_strided_kernel");
}

}  // namespace latte::cuda
