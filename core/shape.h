// Shapes and strides: small fixed-capacity arrays (tensors are at most 5-D).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace latte {

constexpr int kMaxDims = 5;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int ndim() const { return ndim_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t& operator[](int i) { return dims_[static_cast<size_t>(i)]; }
  int64_t numel() const;
  std::vector<int64_t> vec() const { return {dims_.begin(), dims_.begin() + ndim_}; }
  std::string str() const;  // "[2, 3, 4]"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  void push_back(int64_t d);
  int64_t back() const { return dims_[static_cast<size_t>(ndim_ - 1)]; }

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int ndim_ = 0;
};

using Strides = Shape;  // same container, in elements

Strides contiguous_strides(const Shape& shape);

}  // namespace latte
