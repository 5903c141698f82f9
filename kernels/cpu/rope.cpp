// CPU reference rotary position embedding, rotate-half (NeoX / HF-Llama) convention, on a slice of each head:
// MLA/MLRA rotate only the d_r rope channels of a head, so the rotated range [rope_offset, rope_offset + R) is a
// parameter and the other channels are copied. For pair j < R/2 at position p = start_pos + t:
//   y[j] = x[j] cos(p inv_j) - x[j + R/2] sin(p inv_j),  y[j + R/2] = x[j + R/2] cos(p inv_j) + x[j] sin(p inv_j).
// The backward is the transposed rotation (angle -> -angle). Angles are computed in double, so this is the
// reference the fp32 CUDA angles are measured against. x/out are strided in B/T/H (q and k often are views of
// a fused projection) with a contiguous last dim. Each output pair depends only on its own input pair, so
// out may alias x.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
// sign = +1: forward rotation; -1: inverse (the backward).
void rope_apply(const Tensor& out, const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset,
                double sign, const char* op) {
  LATTE_CHECK(x.dim() == 4 && out.shape() == x.shape(), op, ": x ", x.str(), " out ", out.str());
  LATTE_CHECK(x.stride(3) == 1 && out.stride(3) == 1, op, " needs a contiguous last dim");
  LATTE_CHECK(out.dtype() == x.dtype(), op, ": out ", out.str(), " x ", x.str());
  const int64_t batch = x.size(0), seq = x.size(1), heads = x.size(2), width = x.size(3);
  const int64_t half = inv_freq.numel();  // R/2
  LATTE_CHECK(rope_offset >= 0 && rope_offset + 2 * half <= width, op, ": rope channels [", rope_offset, ", ",
              rope_offset + 2 * half, ") outside a head of width ", width);
  // inv_freq is tiny; read it once as double whatever its float dtype.
  const Tensor freq = inv_freq.contiguous();
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) inv[static_cast<size_t>(j)] = load_as_double(freq.data_ptr(), freq.dtype(), j);
  std::vector<double> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    const T* px = x.data<T>();  // (B, T, H, D) strided
    T* py = out.data<T>();      // (B, T, H, D) strided
    for (int64_t t = 0; t < seq; ++t) {
      const double pos = static_cast<double>(start_pos + t);
      for (int64_t j = 0; j < half; ++j) {
        const double angle = pos * inv[static_cast<size_t>(j)];
        cos_t[static_cast<size_t>(j)] = std::cos(angle);
        sin_t[static_cast<size_t>(j)] = sign * std::sin(angle);
      }
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t h = 0; h < heads; ++h) {
          const T* xr = px + b * x.stride(0) + t * x.stride(1) + h * x.stride(2);
          T* yr = py + b * out.stride(0) + t * out.stride(1) + h * out.stride(2);
          for (int64_t d = 0; d < rope_offset; ++d) yr[d] = xr[d];
          for (int64_t j = 0; j < half; ++j) {
            const double x1 = static_cast<double>(xr[rope_offset + j]);
            const double x2 = static_cast<double>(xr[rope_offset + half + j]);
            const double c = cos_t[static_cast<size_t>(j)], s = sin_t[static_cast<size_t>(j)];
            yr[rope_offset + j] = static_cast<T>(x1 * c - x2 * s);
            yr[rope_offset + half + j] = static_cast<T>(x2 * c + x1 * s);
          }
          for (int64_t d = rope_offset + 2 * half; d < width; ++d) yr[d] = xr[d];
        }
      }
    }
  });
}
}  // namespace

void rope_forward(const Tensor& out, const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset) {
  rope_apply(out, x, inv_freq, start_pos, rope_offset, 1.0, "rope_forward");
}

void rope_backward(const Tensor& dx, const Tensor& dout, const Tensor& inv_freq, int64_t start_pos,
                   int64_t rope_offset) {
  rope_apply(dx, dout, inv_freq, start_pos, rope_offset, -1.0, "rope_backward");
}

}  // namespace latte::cpu
