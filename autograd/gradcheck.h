// gradcheck: compares the autograd gradients of f against fp64 central finite differences.
// f maps the inputs to one tensor y; the check uses a fixed random projection w (same shape as y),
// so one backward of <w, y> is compared with (L(x+h) - L(x-h)) / 2h for every input element.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace latte::autograd {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  double max_rel_error = 0;
  std::string report;  // the first mismatches, "input 1 [7]: analytic 0.12 numeric 0.13"
};

// Inputs must be f64 CPU tensors; those with requires_grad are checked.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          double eps = 1e-6, double atol = 1e-5, double rtol = 1e-4, uint64_t seed = 1234);

}  // namespace latte::autograd
