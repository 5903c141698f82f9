// Rotary position embedding (rotate-half, NeoX / HF-Llama) on the channel slice [rope_offset, rope_offset + R)
// of every head of x (B, T, H, D), strided in B/T/H, last dim contiguous; the other channels are copied.
// Floor: 2 B T H D elements (read + write); the angles are recomputed, not read.
//   y[j] = x[j] cos - x[j + R/2] sin,  y[j + R/2] = x[j + R/2] cos + x[j] sin,  angle = (start_pos + t) inv_freq[j]
// The backward is the inverse rotation (sin negated).
// One thread takes W consecutive pairs (W = 4 when every row start and the slice allow 8-byte bf16 /
// 16-byte f32 accesses, else 1) of one position (b, t), computes their cos/sin once and applies them to
// all H heads; copied channels are handled the same way, W at a time. Angles and sin/cos are computed in
// double (an fp32 angle at position ~8000 is off by ~5e-4 rad, far above the fp32 parity bound): sharing
// them over the heads keeps that cost small. Each thread reads its elements before writing them, so out
// may alias x (in-place RoPE); the copies are skipped then.
// v1 (one thread per pair and head, 2-byte accesses, sin/cos per head) measured 26% of copy bandwidth.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

struct Strides3 {
  int64_t b, t, h;
};

// W (1 or 4) consecutive elements.
__device__ __forceinline__ void load_w(const void* p, int dt, int64_t i, int W, float (&v)[4]) {
  if (W == 4) {
    if (dt == kBF16) {
      uint2 u = *reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(p) + i);
      float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
      float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
      v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
    } else {
      float4 f = *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
      v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    }
  } else {
    v[0] = load1(p, dt, i);
  }
}

__device__ __forceinline__ void store_w(void* p, int dt, int64_t i, int W, const float (&v)[4]) {
  if (W == 4) {
    if (dt == kBF16) {
      uint2 u;
      *reinterpret_cast<__nv_bfloat162*>(&u.x) = __floats2bfloat162_rn(v[0], v[1]);
      *reinterpret_cast<__nv_bfloat162*>(&u.y) = __floats2bfloat162_rn(v[2], v[3]);
      *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(p) + i) = u;
    } else {
      *reinterpret_cast<float4*>(static_cast<float*>(p) + i) = make_float4(v[0], v[1], v[2], v[3]);
    }
  } else {
    store1(p, dt, i, v[0]);
  }
}

// Items per position (b, t): half/W rotation groups, then (copy_rest ? (D - 2 half)/W : 0) copy groups.
__global__ void rope_kernel(void* out, int dto, Strides3 so, const void* x, int dtx, Strides3 sx, const float* inv_freq,
                            int64_t B, int64_t T, int64_t H, int64_t D, int64_t half, int64_t offset, int64_t start_pos,
                            float sign, bool copy_rest, int W) {
  const int64_t rot = half / W, per_pos = rot + (copy_rest ? (D - 2 * half) / W : 0);
  const int64_t total = B * T * per_pos;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < total;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bt = item / per_pos, j = item - bt * per_pos, b = bt / T, t = bt - b * T;
    const int64_t xo = b * sx.b + t * sx.t, oo = b * so.b + t * so.t;
    if (j < rot) {
      float cf[4] = {0.f, 0.f, 0.f, 0.f}, sf[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k >= W) continue;
        double sd, cd;
        sincos(static_cast<double>(start_pos + t) * static_cast<double>(inv_freq[j * W + k]), &sd, &cd);
        cf[k] = static_cast<float>(cd);
        sf[k] = sign * static_cast<float>(sd);
      }
      const int64_t i1 = offset + j * W, i2 = i1 + half;
      for (int64_t h0 = 0; h0 < H; h0 += 2) {  // two heads' loads in flight before their stores
        const int nh = h0 + 1 < H ? 2 : 1;
        float x1[2][4], x2[2][4];
#pragma unroll
        for (int u = 0; u < 2; ++u)
          if (u < nh) {
            load_w(x, dtx, xo + (h0 + u) * sx.h + i1, W, x1[u]);
            load_w(x, dtx, xo + (h0 + u) * sx.h + i2, W, x2[u]);
          }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          if (u >= nh) continue;
          float y1[4], y2[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            y1[k] = x1[u][k] * cf[k] - x2[u][k] * sf[k];
            y2[k] = x2[u][k] * cf[k] + x1[u][k] * sf[k];
          }
          store_w(out, dto, oo + (h0 + u) * so.h + i1, W, y1);
          store_w(out, dto, oo + (h0 + u) * so.h + i2, W, y2);
        }
      }
    } else {
      int64_t ch = (j - rot) * W;
      if (ch >= offset) ch += 2 * half;
      for (int64_t h = 0; h < H; ++h) {
        float v[4];
        load_w(x, dtx, xo + h * sx.h + ch, W, v);
        store_w(out, dto, oo + h * so.h + ch, W, v);
      }
    }
  }
}

void rope_apply(const Tensor& out, const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t offset,
                float sign, const char* op) {
  LATTE_CHECK(x.dim() == 4 && out.shape() == x.shape(), op, ": x ", x.shape().str(), " out ", out.shape().str());
  LATTE_CHECK(x.stride(3) == 1 && out.stride(3) == 1, op, " needs a contiguous last dim");
  LATTE_CHECK(inv_freq.dtype() == DType::F32 && inv_freq.is_contiguous(), op, ": inv_freq must be contiguous f32");
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = inv_freq.numel();
  LATTE_CHECK(offset >= 0 && offset + 2 * half <= D, op, ": rope channels [", offset, ", ", offset + 2 * half,
              ") outside a head of width ", D);
  const bool in_place = out.data_ptr() == x.data_ptr() && out.strides() == x.strides() && out.dtype() == x.dtype();
  // 4-wide groups need every group start aligned: slice bounds, strides and bases multiples of 4 elements.
  auto aligned4 = [](const Tensor& t) {
    const uintptr_t bytes = 4 * t.element_size();
    return reinterpret_cast<uintptr_t>(t.data_ptr()) % bytes == 0 && t.stride(0) % 4 == 0 && t.stride(1) % 4 == 0 &&
           t.stride(2) % 4 == 0;
  };
  const int W = (half % 4 == 0 && offset % 4 == 0 && D % 4 == 0 && aligned4(x) && aligned4(out)) ? 4 : 1;
  const int64_t per_pos = half / W + (in_place ? 0 : (D - 2 * half) / W);
  const int64_t total = B * T * per_pos;
  if (total == 0 || H == 0) return;
  const int threads = 256;
  rope_kernel<<<blocks_for(total, threads, static_cast<int64_t>(sm_count()) * 16), threads, 0, current_stream()>>>(
      out.data_ptr(), float_code(out, op), {out.stride(0), out.stride(1), out.stride(2)}, x.data_ptr(),
      float_code(x, op), {x.stride(0), x.stride(1), x.stride(2)}, inv_freq.data<float>(), B, T, H, D, half, offset,
      start_pos, sign, !in_place, W);
  CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace

void rope_forward(const Tensor& out, const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset) {
  rope_apply(out, x, inv_freq, start_pos, rope_offset, 1.f, "rope_forward");
}

void rope_backward(const Tensor& dx, const Tensor& dout, const Tensor& inv_freq, int64_t start_pos,
                   int64_t rope_offset) {
  rope_apply(dx, dout, inv_freq, start_pos, rope_offset, -1.f, "rope_backward");
}

}  // namespace latte::cuda
