#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/node.h"

namespace latte::autograd {

namespace {
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          double eps, double atol, double rtol, uint64_t seed) {
  for (const Tensor& t : inputs)
    if (t.defined())
      LATTE_REQUIRE((t.dtype() == DType::F64 && t.device().is_cpu()) || !t.requires_grad(),
                    "gradcheck needs f64 CPU inputs, got ", t.str());
  // Analytic: backward of <w, f(x)>.
  for (const Tensor& t : inputs)
    if (t.defined()) t.zero_grad();
  Tensor y = f(inputs);
  Tensor w = Tensor::randn(y.shape(), seed, 0, 1.0, DType::F64);
  const std::vector<double> wv = w.to_vector();
  y.backward(w);

  GradcheckResult result;
  int reported = 0;
  NoGradGuard no_grad;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<double> analytic = g.defined() ? g.to_vector() : std::vector<double>(static_cast<size_t>(x.numel()), 0.0);
    LATTE_CHECK(x.is_contiguous(), "gradcheck perturbs contiguous inputs");
    double* data = x.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double saved = data[i];
      data[i] = saved + eps;
      double plus = dot(f(inputs).to_vector(), wv);
      data[i] = saved - eps;
      double minus = dot(f(inputs).to_vector(), wv);
      data[i] = saved;
      double numeric = (plus - minus) / (2 * eps);
      double a = analytic[static_cast<size_t>(i)];
      double abs_err = std::fabs(a - numeric);
      double rel_err = abs_err / std::max(1e-12, std::fabs(numeric));
      result.max_abs_error = std::max(result.max_abs_error, abs_err);
      if (abs_err > atol) result.max_rel_error = std::max(result.max_rel_error, rel_err);
      if (abs_err > atol + rtol * std::fabs(numeric) || std::isnan(a)) {
        result.ok = false;
        if (reported++ < 8)
          result.report += str("input ", k, " [", i, "]: analytic ", a, " numeric ", numeric, "\n");
      }
    }
  }
  return result;
}

}  // namespace latte::autograd
