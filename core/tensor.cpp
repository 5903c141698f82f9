#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "autograd/node.h"
#include "autograd/view_nodes.h"
#include "core/parallel.h"
#include "core/philox.h"
#include "kernels/ops.h"

namespace latte {

// ---- Storage ----------------------------------------------------------------------------------------

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  data_ = device.is_cpu() ? cpu_allocate(bytes) : cuda_allocate(bytes, device.index);
}

Storage::~Storage() {
  if (!data_) return;
  if (device_.is_cpu())
    cpu_free(data_);
  else
    cuda_free(data_, device_.index);
}

// ---- factories --------------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int i = 0; i < shape.ndim(); ++i)
    LATTE_REQUIRE(shape[i] >= 0, "negative dimension in shape ", shape.str());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape.numel()) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  ops::fill(t, value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype, Device device) { return full(Shape{}, value, dtype, device); }

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  Tensor t = empty({n}, dtype, Device::cpu());
  for (int64_t i = 0; i < n; ++i) store_from_double(t.data_ptr(), dtype, i, static_cast<double>(i));
  return device.is_cpu() ? t : t.to(device);
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  LATTE_REQUIRE(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
                " values for shape ", shape.str());
  Tensor t = empty(shape, dtype, Device::cpu());
  for (size_t i = 0; i < values.size(); ++i) store_from_double(t.data_ptr(), dtype, static_cast<int64_t>(i), values[i]);
  return device.is_cpu() ? t : t.to(device);
}

namespace {
// Fills a CPU f32 buffer from a Philox stream, then converts to the requested dtype/device.
Tensor philox_fill(const Shape& shape, DType dtype, Device device, bool normal, uint64_t seed, uint64_t offset,
                   double a, double b) {
  Tensor t = Tensor::empty(shape, dtype == DType::F64 ? DType::F64 : DType::F32, Device::cpu());
  const int64_t n = shape.numel();
  auto fill = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double v = normal ? a * philox::normal(seed, offset, static_cast<uint64_t>(i))
                        : a + (b - a) * philox::uniform(seed, offset, static_cast<uint64_t>(i));
      store_from_double(t.data_ptr(), t.dtype(), i, v);
    }
  };
  // Element i depends on (seed, offset, i) only, so threads over disjoint ranges give the same tensor; a
  // 1.3B-parameter model's initialisation is ~10^9 Philox draws (about a minute on one core).
  parallel_ranges(n, int64_t{1} << 22, fill);
  if (t.dtype() != dtype) t = t.to(dtype);
  return device.is_cpu() ? t : t.to(device);
}
}  // namespace

Tensor Tensor::randn(const Shape& shape, uint64_t seed, uint64_t offset, double stddev, DType dtype, Device device) {
  return philox_fill(shape, dtype, device, true, seed, offset, stddev, 0.0);
}

Tensor Tensor::rand(const Shape& shape, uint64_t seed, uint64_t offset, double low, double high, DType dtype,
                    Device device) {
  return philox_fill(shape, dtype, device, false, seed, offset, low, high);
}

// ---- metadata ---------------------------------------------------------------------------------------

namespace {
int wrap_dim(int d, int ndim, const char* what) {
  int w = d < 0 ? d + ndim : d;
  LATTE_REQUIRE(w >= 0 && w < ndim, what, ": dimension ", d, " out of range for a ", ndim, "-D tensor");
  return w;
}
}  // namespace

int64_t Tensor::size(int d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (shape()[i] != 1 && strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return latte::str("Tensor(", dtype_name(dtype()), ", ", device().str(), ", ", shape().str(), ")");
}

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl().storage->data()) + impl().offset * static_cast<int64_t>(element_size());
}

// ---- element access ---------------------------------------------------------------------------------

std::vector<double> Tensor::to_vector() const {
  Tensor c = device().is_cpu() ? detach().contiguous() : detach().to(Device::cpu());
  std::vector<double> out(static_cast<size_t>(c.numel()));
  for (int64_t i = 0; i < c.numel(); ++i) out[static_cast<size_t>(i)] = load_as_double(c.data_ptr(), c.dtype(), i);
  return out;
}

std::vector<float> Tensor::to_floats() const {
  std::vector<double> d = to_vector();
  return {d.begin(), d.end()};
}

double Tensor::item() const {
  LATTE_REQUIRE(numel() == 1, "item() needs a one-element tensor, got shape ", shape().str());
  return to_vector()[0];
}

double Tensor::at(std::initializer_list<int64_t> index) const {
  LATTE_REQUIRE(static_cast<int>(index.size()) == dim(), "at(): ", index.size(), " indices for a ", dim(), "-D tensor");
  Tensor c = device().is_cpu() ? detach() : detach().to(Device::cpu());
  int64_t off = 0;
  int i = 0;
  for (int64_t idx : index) {
    LATTE_REQUIRE(idx >= 0 && idx < c.size(i), "at(): index ", idx, " out of range for dim ", i, " of size ", c.size(i));
    off += idx * c.stride(i);
    ++i;
  }
  return load_as_double(c.data_ptr(), c.dtype(), off);
}

// ---- views ------------------------------------------------------------------------------------------

Tensor Tensor::make_view(const Shape& shape, const Strides& strides, int64_t offset) const {
  auto v = std::make_shared<TensorImpl>();
  v->storage = impl().storage;
  v->shape = shape;
  v->strides = strides;
  v->offset = offset;
  v->dtype = impl().dtype;
  return Tensor(std::move(v));
}

namespace {
Shape infer_shape(const Shape& requested, int64_t numel) {
  Shape s = requested;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < s.ndim(); ++i) {
    if (s[i] == -1) {
      LATTE_REQUIRE(infer < 0, "reshape: only one -1 allowed in ", requested.str());
      infer = i;
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    LATTE_REQUIRE(known > 0 && numel % known == 0, "reshape: cannot infer -1 in ", requested.str(), " for ", numel, " elements");
    s[infer] = numel / known;
  }
  LATTE_REQUIRE(s.numel() == numel, "reshape: shape ", requested.str(), " does not hold ", numel, " elements");
  return s;
}

// Strides for viewing a tensor (shape, strides) as new_shape without copying, if possible
// (the algorithm PyTorch's computeStride uses: match chunks of contiguous dims).
bool view_strides(const Shape& shape, const Strides& strides, const Shape& new_shape, Strides* out) {
  *out = new_shape;
  if (shape.numel() == 0 || shape.ndim() == 0) {  // empty or 0-d: any shape of the same numel is a view
    *out = contiguous_strides(new_shape);
    return true;
  }
  int view_d = new_shape.ndim() - 1;
  int64_t chunk_base_stride = shape.ndim() ? strides[shape.ndim() - 1] : 1;
  int64_t tensor_numel = 1, view_numel = 1;
  for (int d = shape.ndim() - 1; d >= 0; --d) {
    tensor_numel *= shape[d];
    if (d == 0 || (shape[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        (*out)[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}
}  // namespace

Tensor Tensor::view(const Shape& requested) const {
  Shape s = infer_shape(requested, numel());
  Strides st;
  LATTE_REQUIRE(view_strides(shape(), strides(), s, &st), "view: a tensor of shape ", shape().str(), " and strides ",
                strides().str(), " cannot be viewed as ", s.str(), " without a copy; use reshape()");
  Tensor v = make_view(s, st, offset());
  if (autograd::needs_grad({this})) autograd::record_reshape(*this, v);
  return v;
}

Tensor Tensor::reshape(const Shape& requested) const {
  Shape s = infer_shape(requested, numel());
  Strides st;
  if (view_strides(shape(), strides(), s, &st)) {
    Tensor v = make_view(s, st, offset());
    if (autograd::needs_grad({this})) autograd::record_reshape(*this, v);
    return v;
  }
  return contiguous().view(s);
}

Tensor Tensor::transpose(int d0, int d1) const {
  std::vector<int> order(static_cast<size_t>(dim()));
  for (int i = 0; i < dim(); ++i) order[static_cast<size_t>(i)] = i;
  std::swap(order[static_cast<size_t>(wrap_dim(d0, dim(), "transpose"))], order[static_cast<size_t>(wrap_dim(d1, dim(), "transpose"))]);
  return permute(order);
}

Tensor Tensor::permute(const std::vector<int>& order) const {
  LATTE_REQUIRE(static_cast<int>(order.size()) == dim(), "permute: ", order.size(), " dims for a ", dim(), "-D tensor");
  Shape s = shape();
  Strides st = strides();
  std::vector<bool> seen(order.size(), false);
  std::vector<int> wrapped(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    int d = wrap_dim(order[i], dim(), "permute");
    LATTE_REQUIRE(!seen[static_cast<size_t>(d)], "permute: dimension ", d, " repeated");
    seen[static_cast<size_t>(d)] = true;
    wrapped[i] = d;
    s[static_cast<int>(i)] = shape()[d];
    st[static_cast<int>(i)] = strides()[d];
  }
  Tensor v = make_view(s, st, offset());
  if (autograd::needs_grad({this})) autograd::record_permute(*this, v, wrapped);
  return v;
}

Tensor Tensor::narrow(int d, int64_t start, int64_t length) const { return slice(d, start, start + length); }

Tensor Tensor::slice(int d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  LATTE_REQUIRE(step >= 1, "slice: step must be >= 1, got ", step);
  LATTE_REQUIRE(start >= 0 && start <= end && end <= size(d), "slice: range [", start, ", ", end, ") out of bounds for dim ",
                d, " of size ", size(d));
  Shape s = shape();
  Strides st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] = strides()[d] * step;
  Tensor v = make_view(s, st, offset() + start * strides()[d]);
  if (autograd::needs_grad({this})) autograd::record_slice(*this, v, d, start, step);
  return v;
}

Tensor Tensor::select(int d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  LATTE_REQUIRE(index >= 0 && index < size(d), "select: index ", index, " out of range for dim ", d, " of size ", size(d));
  Shape s;
  Strides st;
  for (int i = 0; i < dim(); ++i) {
    if (i == d) continue;
    s.push_back(shape()[i]);
    st.push_back(strides()[i]);
  }
  Tensor v = make_view(s, st, offset() + index * strides()[d]);
  if (autograd::needs_grad({this})) autograd::record_select(*this, v, d, index);
  return v;
}

Tensor Tensor::expand(const Shape& target) const {
  LATTE_REQUIRE(target.ndim() >= dim(), "expand: target ", target.str(), " has fewer dims than ", shape().str());
  Shape s = target;
  Strides st = target;
  int lead = target.ndim() - dim();
  for (int i = 0; i < target.ndim(); ++i) {
    if (i < lead) {
      st[i] = 0;
      continue;
    }
    int64_t src = shape()[i - lead];
    if (target[i] == -1) s[i] = src;
    LATTE_REQUIRE(src == s[i] || src == 1, "expand: cannot expand dim ", i - lead, " of size ", src, " to ", s[i],
                  " (", shape().str(), " -> ", target.str(), ")");
    st[i] = (src == 1 && s[i] != 1) ? 0 : strides()[i - lead];
  }
  Tensor v = make_view(s, st, offset());
  if (autograd::needs_grad({this})) autograd::record_expand(*this, v);
  return v;
}

Tensor Tensor::unsqueeze(int d) const {
  int nd = dim() + 1;
  int w = d < 0 ? d + nd : d;
  LATTE_REQUIRE(w >= 0 && w < nd, "unsqueeze: dimension ", d, " out of range");
  std::vector<int64_t> s = shape().vec();
  s.insert(s.begin() + w, 1);
  return reshape(Shape(s));
}

Tensor Tensor::squeeze(int d) const {
  d = wrap_dim(d, dim(), "squeeze");
  LATTE_REQUIRE(size(d) == 1, "squeeze: dimension ", d, " has size ", size(d), ", not 1");
  std::vector<int64_t> s = shape().vec();
  s.erase(s.begin() + d);
  return reshape(Shape(s));
}

// ---- copies -----------------------------------------------------------------------------------------

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  ops::copy(out, *this);
  if (autograd::needs_grad({this})) autograd::record_identity(*this, out);
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), t, device());
  ops::copy(out, *this);
  if (autograd::needs_grad({this})) autograd::record_cast(*this, out);
  return out;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = empty(shape(), dtype(), d);
  out.copy_(*this);
  if (autograd::needs_grad({this})) autograd::record_cast(*this, out);
  return out;
}

const Tensor& Tensor::copy_(const Tensor& src) const {
  LATTE_REQUIRE(src.shape() == shape(), "copy_: source shape ", src.shape().str(), " differs from ", shape().str());
  if (src.device() == device()) {
    ops::copy(*this, src);
    return *this;
  }
  // Across devices: make the source contiguous and of our dtype on its own device, move the bytes,
  // then scatter into our layout if we are strided.
  Tensor s = src.detach().contiguous();
  if (s.dtype() != dtype()) {
    Tensor cast = empty(s.shape(), dtype(), s.device());
    ops::copy(cast, s);
    s = cast;
  }
  if (is_contiguous()) {
    copy_bytes(data_ptr(), device(), s.data_ptr(), s.device(), nbytes());
  } else {
    Tensor staged = empty(shape(), dtype(), device());
    copy_bytes(staged.data_ptr(), device(), s.data_ptr(), s.device(), nbytes());
    ops::copy(*this, staged);
  }
  return *this;
}

const Tensor& Tensor::fill_(double value) const {
  ops::fill(*this, value);
  return *this;
}

// ---- autograd ---------------------------------------------------------------------------------------

const Tensor& Tensor::set_requires_grad(bool value) const {
  LATTE_REQUIRE(is_leaf(), "set_requires_grad on a non-leaf tensor; use detach() first");
  LATTE_REQUIRE(!value || is_floating(dtype()), "only floating-point tensors can require grad, this is ", dtype_name(dtype()));
  impl().requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const {
  if (!defined() || !impl().grad) return Tensor();
  return Tensor(impl().grad);
}

void Tensor::set_grad(const Tensor& g) const {
  if (!g.defined()) {
    impl().grad.reset();
    return;
  }
  LATTE_REQUIRE(g.shape() == shape(), "set_grad: gradient shape ", g.shape().str(), " differs from ", shape().str());
  impl().grad = g.impl_ptr();
}

void Tensor::retain_grad() const {
  if (is_leaf()) return;
  auto& r = impl().grad_fn->retained;
  size_t slot = static_cast<size_t>(impl().output_nr);
  if (r.size() <= slot) r.resize(slot + 1);
  r[slot] = impl_;
  impl().retains_grad = true;
}

Tensor Tensor::detach() const { return make_view(shape(), strides(), offset()); }

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  autograd::run_backward({*this}, {grad}, retain_graph);
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* what) {
  LATTE_REQUIRE(a.shape() == b.shape(), what, ": shapes differ, ", a.shape().str(), " vs ", b.shape().str());
}

}  // namespace latte
