// CPU reference SwiGLU, the MLP nonlinearity of spec/attention.md: out = silu(gate) * up, silu(g) = g sigmoid(g).
// Backward: dup = dout * silu(gate); dgate = dout * up * sigmoid(g) * (1 + g (1 - sigmoid(g))).
// Elementwise over contiguous tensors of one shape; f32/f64 with the math in double.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
// Written as 1 / (1 + exp(-g)) for g >= 0 and exp(g) / (1 + exp(g)) otherwise, so neither side overflows.
inline double sigmoid(double g) {
  if (g >= 0) return 1.0 / (1.0 + std::exp(-g));
  const double e = std::exp(g);
  return e / (1.0 + e);
}
}  // namespace

void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  LATTE_CHECK(out.shape() == gate.shape() && up.shape() == gate.shape(), "swiglu_forward: out ", out.str(), " gate ",
              gate.str(), " up ", up.str());
  LATTE_CHECK(out.is_contiguous() && gate.is_contiguous() && up.is_contiguous(), "swiglu_forward wants contiguous");
  const int64_t n = gate.numel();
  dispatch_float(gate.dtype(), "swiglu_forward", [&]<typename T>() {
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    T* py = out.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      const double g = static_cast<double>(pg[i]);
      py[i] = static_cast<T>(g * sigmoid(g) * static_cast<double>(pu[i]));
    }
  });
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout, const Tensor& gate,
                     const Tensor& up) {
  LATTE_CHECK(dgate.shape() == gate.shape() && dup.shape() == gate.shape() && dout.shape() == gate.shape() &&
                  up.shape() == gate.shape(),
              "swiglu_backward: shapes differ");
  LATTE_CHECK(dgate.is_contiguous() && dup.is_contiguous() && dout.is_contiguous() && gate.is_contiguous() &&
                  up.is_contiguous(),
              "swiglu_backward wants contiguous");
  const int64_t n = gate.numel();
  dispatch_float(gate.dtype(), "swiglu_backward", [&]<typename T>() {
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    const T* pdy = dout.data<T>();
    T* pdg = dgate.data<T>();
    T* pdu = dup.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      const double g = static_cast<double>(pg[i]), u = static_cast<double>(pu[i]), dy = static_cast<double>(pdy[i]);
      const double s = sigmoid(g);
      pdg[i] = static_cast<T>(dy * u * s * (1.0 + g * (1.0 - s)));
      pdu[i] = static_cast<T>(dy * g * s);
    }
  });
}

}  // namespace latte::cpu
