// Iteration over strided tensors for the CPU reference kernels: visits every index of a shape in
// row-major order and hands the element offsets of up to three tensors that share that shape.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace latte::cpu {

// f(off_a, off_b) for each element, offsets in elements relative to each tensor's data_ptr().
template <typename F>
void for_each_offset(const Shape& shape, const Strides& sa, const Strides& sb, F&& f) {
  const int nd = shape.ndim();
  const int64_t n = shape.numel();
  if (n == 0) return;
  int64_t idx[kMaxDims] = {0};
  int64_t oa = 0, ob = 0;
  for (int64_t k = 0; k < n; ++k) {
    f(oa, ob);
    for (int d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        oa += sa[d];
        ob += sb[d];
        break;
      }
      oa -= sa[d] * (shape[d] - 1);
      ob -= sb[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// Calls f.template operator()<T>() with T = float or double matching dtype (the CPU float types).
template <typename F>
void dispatch_float(DType t, const char* op, F&& f) {
  if (t == DType::F32) {
    f.template operator()<float>();
  } else if (t == DType::F64) {
    f.template operator()<double>();
  } else {
    LATTE_FAIL(op, ": CPU kernels support f32 and f64, got ", dtype_name(t), "; cast with .to(DType::F32)");
  }
}

}  // namespace latte::cpu
