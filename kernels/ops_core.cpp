// Dispatchers for the core primitives (fill, copy, axpy) and the shared device check.
#include "kernels/dispatch.h"

namespace latte::ops {

Device common_device(std::initializer_list<const Tensor*> tensors, const char* op) {
  Device dev;
  bool first = true;
  for (const Tensor* t : tensors) {
    if (!t || !t->defined()) continue;
    if (first) {
      dev = t->device();
      first = false;
    } else {
      LATTE_REQUIRE(t->device() == dev, op, ": tensors on different devices (", dev.str(), " and ", t->device().str(),
                    "); move them with .to(device)");
    }
  }
  return dev;
}

void fill(const Tensor& out, double value) { LATTE_DISPATCH(fill, &out)(out, value); }
void copy(const Tensor& out, const Tensor& in) { LATTE_DISPATCH(copy, &out, &in)(out, in); }
void axpy(const Tensor& y, const Tensor& x, double alpha) { LATTE_DISPATCH(axpy, &y, &x)(y, x, alpha); }

}  // namespace latte::ops
