// CPU reference elementwise kernels: add (out = alpha*a + beta*b), mul (out = a*b), scale (out = alpha*in).
// Plain loops over contiguous f32/f64 buffers; the math is done in the tensor's own type (each output
// element depends on one element per input, so there is nothing to accumulate). out may alias an input.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
// The contract: same shape, same float dtype, contiguous. Messages name the op so a user sees which call failed.
void check_elementwise(const char* op, const Tensor& out, const Tensor& a, const Tensor* b) {
  LATTE_REQUIRE(out.shape() == a.shape() && (!b || b->shape() == a.shape()), op, ": shapes differ, out ",
                out.shape().str(), ", a ", a.shape().str(), (b ? ", b " + b->shape().str() : std::string()));
  LATTE_REQUIRE(out.dtype() == a.dtype() && (!b || b->dtype() == a.dtype()), op, ": dtypes differ, out ",
                dtype_name(out.dtype()), ", a ", dtype_name(a.dtype()), (b ? std::string(", b ") + dtype_name(b->dtype()) : ""));
  LATTE_CHECK(out.is_contiguous() && a.is_contiguous() && (!b || b->is_contiguous()), op, " needs contiguous tensors");
}
}  // namespace

void add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  check_elementwise("add", out, a, &b);
  dispatch_float(out.dtype(), "add", [&]<typename T>() {
    T* y = out.data<T>();
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    const T ca = static_cast<T>(alpha), cb = static_cast<T>(beta);
    for (int64_t i = 0; i < out.numel(); ++i) y[i] = ca * pa[i] + cb * pb[i];
  });
}

void mul(const Tensor& out, const Tensor& a, const Tensor& b) {
  check_elementwise("mul", out, a, &b);
  dispatch_float(out.dtype(), "mul", [&]<typename T>() {
    T* y = out.data<T>();
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    for (int64_t i = 0; i < out.numel(); ++i) y[i] = pa[i] * pb[i];
  });
}

void scale(const Tensor& out, const Tensor& in, double alpha) {
  check_elementwise("scale", out, in, nullptr);
  dispatch_float(out.dtype(), "scale", [&]<typename T>() {
    T* y = out.data<T>();
    const T* x = in.data<T>();
    const T c = static_cast<T>(alpha);
    for (int64_t i = 0; i < out.numel(); ++i) y[i] = c * x[i];
  });
}

}  // namespace latte::cpu
