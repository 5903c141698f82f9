#include "core/shape.h"

#include "core/error.h"

namespace latte {

Shape::Shape(std::initializer_list<int64_t> dims) {
  LATTE_REQUIRE(dims.size() <= kMaxDims, "tensors have at most ", kMaxDims, " dimensions, got ", dims.size());
  for (int64_t d : dims) dims_[static_cast<size_t>(ndim_++)] = d;
}

Shape::Shape(const std::vector<int64_t>& dims) {
  LATTE_REQUIRE(dims.size() <= kMaxDims, "tensors have at most ", kMaxDims, " dimensions, got ", dims.size());
  for (int64_t d : dims) dims_[static_cast<size_t>(ndim_++)] = d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim_; ++i) s += (i ? ", " : "") + std::to_string(dims_[static_cast<size_t>(i)]);
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (ndim_ != o.ndim_) return false;
  for (int i = 0; i < ndim_; ++i)
    if (dims_[static_cast<size_t>(i)] != o.dims_[static_cast<size_t>(i)]) return false;
  return true;
}

void Shape::push_back(int64_t d) {
  LATTE_REQUIRE(ndim_ < kMaxDims, "tensors have at most ", kMaxDims, " dimensions");
  dims_[static_cast<size_t>(ndim_++)] = d;
}

Strides contiguous_strides(const Shape& shape) {
  Strides s = shape;
  int64_t acc = 1;
  for (int i = shape.ndim() - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

}  // namespace latte
