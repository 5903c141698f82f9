// CPU reference group norm: each row of x (N, G*Dg) is split into G groups of Dg channels, each normalised on
// its own (LayerNorm: subtract the mean, divide by the std; RMSNorm when `rms`: divide by the root mean square),
// then a per-channel affine y = xhat * weight + bias. EG-MLA needs all three shapes of it: the latent gate norm
// (G = 1, LayerNorm or RMSNorm) and the per-head K/V gate norms (G = n_h). f32/f64, double accumulation.
// mean/rstd (N, G) are saved for the backward: f32 per the contract, or f64 when x is f64 (gradcheck precision);
// they are accessed through load/store_as_double so either dtype works. mean is written as 0 when rms.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
void check_param(const Tensor& x, const Tensor& p, const char* what) {
  if (!p.defined()) return;
  LATTE_REQUIRE(p.dtype() == x.dtype(), "group_norm: ", what, " is ", dtype_name(p.dtype()), " but x is ",
                dtype_name(x.dtype()), "; cast one of them");
  LATTE_CHECK(p.numel() == x.size(1) && p.is_contiguous(), "group_norm: ", what, " ", p.str(), " for x ", x.str());
}
}  // namespace

void group_norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                        const Tensor& weight, const Tensor& bias, int64_t groups, double eps, bool rms) {
  LATTE_CHECK(x.dim() == 2 && x.is_contiguous() && out.is_contiguous(), "group_norm_forward wants contiguous (N, C)");
  LATTE_CHECK(groups > 0 && x.size(1) % groups == 0, "group_norm_forward: ", groups, " groups for ", x.str());
  check_param(x, weight, "weight");
  check_param(x, bias, "bias");
  const int64_t N = x.size(0), C = x.size(1), Dg = C / groups;
  dispatch_float(x.dtype(), "group_norm_forward", [&]<typename T>() {
    const T* px = x.data<T>();  // (N, G*Dg)
    T* py = out.data<T>();      // (N, G*Dg)
    const T* pw = weight.defined() ? weight.data<T>() : nullptr;  // (G*Dg)
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;      // (G*Dg)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * Dg;
        const T* xg = px + n * C + c0;
        T* yg = py + n * C + c0;
        double mu = 0;
        if (!rms) {
          for (int64_t d = 0; d < Dg; ++d) mu += static_cast<double>(xg[d]);
          mu /= static_cast<double>(Dg);
        }
        // Two passes (mean, then centred squares) rather than E[x^2] - mu^2, which cancels badly.
        double var = 0;
        for (int64_t d = 0; d < Dg; ++d) {
          const double c = static_cast<double>(xg[d]) - mu;
          var += c * c;
        }
        var /= static_cast<double>(Dg);
        const double r = 1.0 / std::sqrt(var + eps);
        for (int64_t d = 0; d < Dg; ++d) {
          double y = (static_cast<double>(xg[d]) - mu) * r;
          if (pw) y *= static_cast<double>(pw[c0 + d]);
          if (pb) y += static_cast<double>(pb[c0 + d]);
          yg[d] = static_cast<T>(y);
        }
        store_from_double(mean.data_ptr(), mean.dtype(), n * groups + g, mu);
        store_from_double(rstd.data_ptr(), rstd.dtype(), n * groups + g, r);
      }
    }
  });
}

// Per (row, group), with xhat = (x - mean) * r and gx = dout * weight:
//   LayerNorm: dx = r * (gx - mean(gx) - xhat * mean(gx * xhat))
//   RMSNorm:   dx = r * (gx - xhat * mean(gx * xhat))
// dweight += sum_n dout * xhat, dbias += sum_n dout.
void group_norm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias, const Tensor& dout,
                         const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                         int64_t groups, bool rms) {
  LATTE_CHECK(x.dim() == 2 && x.is_contiguous() && dx.is_contiguous() && dout.is_contiguous(),
              "group_norm_backward wants contiguous (N, C)");
  LATTE_CHECK(groups > 0 && x.size(1) % groups == 0, "group_norm_backward: ", groups, " groups for ", x.str());
  check_param(x, weight, "weight");
  check_param(x, dweight, "dweight");
  check_param(x, dbias, "dbias");
  const int64_t N = x.size(0), C = x.size(1), Dg = C / groups;
  dispatch_float(x.dtype(), "group_norm_backward", [&]<typename T>() {
    const T* px = x.data<T>();        // (N, C)
    const T* pdy = dout.data<T>();    // (N, C)
    T* pdx = dx.data<T>();            // (N, C)
    const T* pw = weight.defined() ? weight.data<T>() : nullptr;  // (C)
    std::vector<double> dw(dweight.defined() ? static_cast<size_t>(C) : 0, 0.0);
    std::vector<double> db(dbias.defined() ? static_cast<size_t>(C) : 0, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * Dg;
        const double mu = rms ? 0.0 : load_as_double(mean.data_ptr(), mean.dtype(), n * groups + g);
        const double r = load_as_double(rstd.data_ptr(), rstd.dtype(), n * groups + g);
        const T* xg = px + n * C + c0;
        const T* dyg = pdy + n * C + c0;
        T* dxg = pdx + n * C + c0;
        double sum_gx = 0, sum_gx_xhat = 0;
        for (int64_t d = 0; d < Dg; ++d) {
          const double gx = static_cast<double>(dyg[d]) * (pw ? static_cast<double>(pw[c0 + d]) : 1.0);
          const double xhat = (static_cast<double>(xg[d]) - mu) * r;
          sum_gx += gx;
          sum_gx_xhat += gx * xhat;
        }
        const double mean_gx = rms ? 0.0 : sum_gx / static_cast<double>(Dg);
        const double mean_gx_xhat = sum_gx_xhat / static_cast<double>(Dg);
        for (int64_t d = 0; d < Dg; ++d) {
          const double dy = static_cast<double>(dyg[d]);
          const double gx = dy * (pw ? static_cast<double>(pw[c0 + d]) : 1.0);
          const double xhat = (static_cast<double>(xg[d]) - mu) * r;
          dxg[d] = static_cast<T>(r * (gx - mean_gx - xhat * mean_gx_xhat));
          if (!dw.empty()) dw[static_cast<size_t>(c0 + d)] += dy * xhat;
          if (!db.empty()) db[static_cast<size_t>(c0 + d)] += dy;
        }
      }
    }
    if (!dw.empty()) {
      T* p = dweight.data<T>();
      for (int64_t c = 0; c < C; ++c) p[c] = static_cast<T>(static_cast<double>(p[c]) + dw[static_cast<size_t>(c)]);
    }
    if (!db.empty()) {
      T* p = dbias.data<T>();
      for (int64_t c = 0; c < C; ++c) p[c] = static_cast<T>(static_cast<double>(p[c]) + db[static_cast<size_t>(c)]);
    }
  });
}

}  // namespace latte::cpu
