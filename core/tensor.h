// Tensor: a strided view (shape, strides, offset, dtype) of reference-counted storage on a device,
// plus the autograd fields (requires_grad, grad, grad_fn). Copies of a Tensor share the same impl;
// views share storage. View methods (reshape, transpose, ...) are differentiable: when the source
// requires grad and grad mode is on, the view records a backward node (autograd/view_ops.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/shape.h"

namespace latte {

namespace autograd { struct Node; }

// Owns one allocation on one device.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;               // accumulated gradient of a leaf
  std::shared_ptr<autograd::Node> grad_fn;        // node that produced this tensor (non-leaf)
  int output_nr = 0;                              // which output of grad_fn
  bool retains_grad = false;                      // non-leaf that also stores .grad
  // Called after each gradient contribution is added into this leaf's .grad (data-parallel bucketing
  // uses it to start all-reducing gradients while the rest of the backward still runs).
  std::function<void(TensorImpl&)> grad_accumulated_hook;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories -------------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::I64, Device device = Device::cpu());
  // Values given as doubles, converted to dtype (handy in tests and for small constants).
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::F32,
                            Device device = Device::cpu());
  // Philox fills: element i (row-major) depends only on (seed, offset, i); see core/philox.h.
  static Tensor randn(const Shape& shape, uint64_t seed, uint64_t offset = 0, double stddev = 1.0,
                      DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor rand(const Shape& shape, uint64_t seed, uint64_t offset = 0, double low = 0.0, double high = 1.0,
                     DType dtype = DType::F32, Device device = Device::cpu());

  // ---- metadata --------------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int dim() const { return impl().shape.ndim(); }
  int64_t size(int d) const;  // negative d counts from the end
  int64_t stride(int d) const;
  int64_t numel() const { return impl().shape.numel(); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  size_t element_size() const { return dtype_size(dtype()); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  std::string str() const;  // "Tensor(bf16, cuda:0, [2, 3])"

  // Raw pointer to the first element (offset applied). data<T>() also checks dtype.
  void* data_ptr() const;
  template <typename T> T* data() const {
    LATTE_CHECK(dtype_of<T>() == dtype(), "data<", dtype_name(dtype_of<T>()), ">() on a ", dtype_name(dtype()), " tensor");
    return static_cast<T*>(data_ptr());
  }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }

  // ---- element access (CPU, slow; for tests and small host-side logic) --------------------------
  double item() const;                                  // single-element tensor
  double at(std::initializer_list<int64_t> index) const;
  std::vector<double> to_vector() const;               // row-major
  std::vector<float> to_floats() const;

  // ---- views (share storage; differentiable) ----------------------------------------------------
  Tensor reshape(const Shape& shape) const;             // view when possible, else copy; one -1 allowed
  Tensor view(const Shape& shape) const;                // must be viewable, else throws
  Tensor transpose(int d0, int d1) const;
  Tensor permute(const std::vector<int>& order) const;
  Tensor narrow(int d, int64_t start, int64_t length) const;
  Tensor slice(int d, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int d, int64_t index) const;           // drops dimension d
  Tensor expand(const Shape& shape) const;              // broadcast size-1 dims (stride 0)
  Tensor unsqueeze(int d) const;
  Tensor squeeze(int d) const;
  Tensor flatten() const { return reshape({numel()}); }

  // ---- copies ------------------------------------------------------------------------------------
  Tensor contiguous() const;                            // self when already contiguous
  Tensor clone() const;                                 // always a fresh contiguous copy
  Tensor to(DType dtype) const;                         // differentiable cast
  Tensor to(Device device) const;                       // differentiable move
  Tensor cpu() const { return to(Device::cpu()); }
  // In-place (not recorded by autograd): copy values from src (same shape; dtype/device may differ).
  // Const because a Tensor is a handle: these change the data, not which tensor the handle names.
  const Tensor& copy_(const Tensor& src) const;
  const Tensor& fill_(double value) const;
  const Tensor& zero_() const { return fill_(0.0); }

  // ---- autograd ----------------------------------------------------------------------------------
  bool requires_grad() const { return defined() && impl().requires_grad; }
  const Tensor& set_requires_grad(bool value = true) const;  // leaves only
  Tensor grad() const;                                  // undefined Tensor when no gradient yet
  void set_grad(const Tensor& g) const;
  void zero_grad() const { if (defined()) impl().grad.reset(); }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  void retain_grad() const;
  Tensor detach() const;                                // same storage, no autograd history
  // Runs the backward pass from this tensor. A scalar gets gradient 1 when `grad` is undefined.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  TensorImpl& impl() const {
    LATTE_CHECK(impl_ != nullptr, "use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  Tensor make_view(const Shape& shape, const Strides& strides, int64_t offset) const;
  std::shared_ptr<TensorImpl> impl_;
};

// Shape helpers shared by ops.
void check_same_shape(const Tensor& a, const Tensor& b, const char* what);

}  // namespace latte
