// CPU fill / strided copy with dtype conversion / axpy: the primitives core/ and the autograd engine use.
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

void fill(const Tensor& out, double value) {
  char* base = static_cast<char*>(out.data_ptr());
  const size_t es = out.element_size();
  alignas(8) unsigned char pattern[8];
  store_from_double(pattern, out.dtype(), 0, value);
  if (out.is_contiguous()) {
    if (value == 0.0) {
      std::memset(base, 0, out.nbytes());
      return;
    }
    for (int64_t i = 0; i < out.numel(); ++i) std::memcpy(base + static_cast<size_t>(i) * es, pattern, es);
    return;
  }
  for_each_offset(out.shape(), out.strides(), out.strides(),
                  [&](int64_t o, int64_t) { std::memcpy(base + o * static_cast<int64_t>(es), pattern, es); });
}

void copy(const Tensor& out, const Tensor& in) {
  check_same_shape(out, in, "copy");
  char* dst = static_cast<char*>(out.data_ptr());
  const char* src = static_cast<const char*>(in.data_ptr());
  const int64_t es_out = static_cast<int64_t>(out.element_size());
  if (out.dtype() == in.dtype()) {
    if (out.is_contiguous() && in.is_contiguous()) {
      std::memmove(dst, src, out.nbytes());
      return;
    }
    for_each_offset(out.shape(), out.strides(), in.strides(),
                    [&](int64_t o, int64_t i) { std::memcpy(dst + o * es_out, src + i * es_out, static_cast<size_t>(es_out)); });
    return;
  }
  const DType to = out.dtype(), from = in.dtype();
  if (to == DType::F32 && from == DType::F64 && out.is_contiguous() && in.is_contiguous()) {
    auto* d = reinterpret_cast<float*>(dst);
    auto* s = reinterpret_cast<const double*>(src);
    for (int64_t i = 0; i < out.numel(); ++i) d[i] = static_cast<float>(s[i]);
    return;
  }
  for_each_offset(out.shape(), out.strides(), in.strides(),
                  [&](int64_t o, int64_t i) { store_from_double(dst, to, o, load_as_double(src, from, i)); });
}

void axpy(const Tensor& y, const Tensor& x, double alpha) {
  check_same_shape(y, x, "axpy");
  LATTE_CHECK(y.is_contiguous() && x.is_contiguous(), "axpy needs contiguous tensors");
  const int64_t n = y.numel();
  if (y.dtype() == DType::F32 && x.dtype() == DType::F32) {
    float* py = y.data<float>();
    const float* px = x.data<float>();
    const float a = static_cast<float>(alpha);
    for (int64_t i = 0; i < n; ++i) py[i] += a * px[i];
  } else if (y.dtype() == DType::F64 && x.dtype() == DType::F64) {
    double* py = y.data<double>();
    const double* px = x.data<double>();
    for (int64_t i = 0; i < n; ++i) py[i] += alpha * px[i];
  } else {
    void* py = y.data_ptr();
    const void* px = x.data_ptr();
    for (int64_t i = 0; i < n; ++i)
      store_from_double(py, y.dtype(), i, load_as_double(py, y.dtype(), i) + alpha * load_as_double(px, x.dtype(), i));
  }
}

}  // namespace latte::cpu
