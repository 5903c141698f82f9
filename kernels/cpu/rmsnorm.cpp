// CPU reference RMSNorm over the last dim (spec/attention.md: y = x / sqrt(mean(x^2) + eps) * w), forward and
// backward, f32/f64 with double accumulation. The CUDA kernel is checked against this one, so it stays a plain
// per-row loop. rstd is saved per row so the backward need not recompute the reduction; it is f32 as the
// contract says, or f64 when x is f64 (keeps gradcheck exact) — written and read through load/store_as_double so
// either works. An undefined weight means gain 1 (and no dweight).
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
// The weight must match x's dtype on CPU (one template parameter); say so clearly instead of a data<T>() check.
void check_weight_dtype(const Tensor& x, const Tensor& weight, const char* op) {
  if (weight.defined())
    LATTE_REQUIRE(weight.dtype() == x.dtype(), op, ": weight is ", dtype_name(weight.dtype()), " but x is ",
                  dtype_name(x.dtype()), "; cast one of them");
}
}  // namespace

void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) {
  LATTE_CHECK(x.dim() == 2 && out.is_contiguous() && x.is_contiguous(), "rmsnorm_forward wants contiguous (N, D), got ",
              x.str());
  check_weight_dtype(x, weight, "rmsnorm_forward");
  const int64_t N = x.size(0), D = x.size(1);
  dispatch_float(x.dtype(), "rmsnorm_forward", [&]<typename T>() {
    const T* px = x.data<T>();             // (N, D)
    T* py = out.data<T>();                 // (N, D)
    const T* pw = weight.defined() ? weight.data<T>() : nullptr;  // (D)
    void* prstd = rstd.data_ptr();         // (N) f32 or f64
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * D;
      T* yr = py + n * D;
      double ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xr[d]) * static_cast<double>(xr[d]);
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
      for (int64_t d = 0; d < D; ++d) {
        const double w = pw ? static_cast<double>(pw[d]) : 1.0;
        yr[d] = static_cast<T>(static_cast<double>(xr[d]) * r * w);
      }
      store_from_double(prstd, rstd.dtype(), n, r);
    }
  });
}

// With xhat = x * r and g = dout * w:  dx = r * (g - xhat * mean(g * xhat));  dweight += sum_n dout * xhat.
void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout, const Tensor& x,
                      const Tensor& weight, const Tensor& rstd, bool accumulate_dx) {
  LATTE_CHECK(x.dim() == 2 && x.is_contiguous() && dx.is_contiguous() && dout.is_contiguous(),
              "rmsnorm_backward wants contiguous (N, D)");
  check_weight_dtype(x, weight, "rmsnorm_backward");
  check_weight_dtype(x, dweight, "rmsnorm_backward (dweight)");
  const int64_t N = x.size(0), D = x.size(1);
  dispatch_float(x.dtype(), "rmsnorm_backward", [&]<typename T>() {
    const T* px = x.data<T>();        // (N, D)
    const T* pdy = dout.data<T>();    // (N, D)
    T* pdx = dx.data<T>();            // (N, D)
    const T* pw = weight.defined() ? weight.data<T>() : nullptr;  // (D)
    const void* prstd = rstd.data_ptr();                          // (N)
    // dweight is summed over all rows in double, then added once, so the result does not depend on N's order.
    std::vector<double> dw(dweight.defined() ? static_cast<size_t>(D) : 0, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * D;
      const T* gr = pdy + n * D;
      T* dxr = pdx + n * D;
      const double r = load_as_double(prstd, rstd.dtype(), n);
      double dot = 0;  // sum_d g * xhat
      for (int64_t d = 0; d < D; ++d) {
        const double w = pw ? static_cast<double>(pw[d]) : 1.0;
        dot += static_cast<double>(gr[d]) * w * static_cast<double>(xr[d]) * r;
      }
      const double mean_gx = dot / static_cast<double>(D);
      for (int64_t d = 0; d < D; ++d) {
        const double w = pw ? static_cast<double>(pw[d]) : 1.0;
        const double xhat = static_cast<double>(xr[d]) * r;
        const double prior = accumulate_dx ? static_cast<double>(dxr[d]) : 0.0;
        dxr[d] = static_cast<T>(prior + r * (static_cast<double>(gr[d]) * w - xhat * mean_gx));
        if (!dw.empty()) dw[static_cast<size_t>(d)] += static_cast<double>(gr[d]) * xhat;
      }
    }
    if (!dw.empty()) {
      T* pdw = dweight.data<T>();
      for (int64_t d = 0; d < D; ++d) pdw[d] = static_cast<T>(static_cast<double>(pdw[d]) + dw[static_cast<size_t>(d)]);
    }
  });
}

}  // namespace latte::cpu
