// GradSync (bucketed, overlapped DP gradient averaging), coalesced gradient all-reduce and the
// global gradient norm (distributed/data_parallel.h).
#include "distributed/data_parallel.h"

#include <cmath>
#include <map>

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte::dist {

namespace {
DType reduction_dtype(DType grad_dtype, bool reduce_in_fp32) {
  const bool half = grad_dtype == DType::BF16 || grad_dtype == DType::F16;
  return half && reduce_in_fp32 ? DType::F32 : grad_dtype;
}

bool same_buffer(const Tensor& a, const Tensor& b) {
  return a.data_ptr() == b.data_ptr() && a.dtype() == b.dtype() && a.device() == b.device();
}
}  // namespace

GradSync::GradSync(std::vector<Tensor> params, std::shared_ptr<ProcessGroup> group, GradSyncOptions options,
                   std::vector<std::string> names)
    : params_(std::move(params)), names_(std::move(names)), group_(std::move(group)), options_(options) {
  LATTE_REQUIRE(group_ != nullptr, "GradSync: no process group");
  LATTE_REQUIRE(names_.empty() || names_.size() == params_.size(), "GradSync: ", names_.size(), " names for ",
                params_.size(), " parameters");
  LATTE_REQUIRE(options_.bucket_bytes > 0, "GradSync: bucket_bytes must be positive");
  const size_t n = params_.size();
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params_[i];
    LATTE_REQUIRE(p.defined() && p.is_leaf() && p.requires_grad(), "GradSync: ", param_name(i),
                  " is not a leaf that requires grad (pass only trainable parameters)");
    LATTE_REQUIRE(p.device() == params_[0].device(), "GradSync: ", param_name(i), " is on ", p.device().str(), " but ",
                  param_name(0), " is on ", params_[0].device().str(), "; all parameters must share one device");
    for (size_t j = 0; j < i; ++j)
      LATTE_REQUIRE(!p.same(params_[j]), "GradSync: ", param_name(i), " is the same tensor as ", param_name(j),
                    " (pass each parameter once; tied weights are one parameter)");
  }

  // Buckets in reverse registration order: the backward finishes the last layers first.
  autograd::NoGradGuard no_grad;
  bucket_of_.assign(n, 0);
  position_in_bucket_.assign(n, 0);
  std::vector<int64_t> bucket_elements;
  std::vector<DType> bucket_dtypes;
  size_t bucket_bytes = 0;
  for (size_t k = n; k-- > 0;) {
    const Tensor& p = params_[k];
    const DType dtype = reduction_dtype(p.dtype(), options_.reduce_in_fp32);
    const size_t bytes = static_cast<size_t>(p.numel()) * dtype_size(dtype);
    const bool start_new = buckets_.empty() || bucket_dtypes.back() != dtype ||
                           (bucket_bytes > 0 && bucket_bytes + bytes > options_.bucket_bytes);
    if (start_new) {
      buckets_.emplace_back();
      bucket_elements.push_back(0);
      bucket_dtypes.push_back(dtype);
      bucket_bytes = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    position_in_bucket_[k] = b.params.size();
    b.params.push_back(k);
    b.offsets.push_back(bucket_elements.back());
    bucket_elements.back() += p.numel();
    bucket_bytes += bytes;
  }
  const Device device = params_.empty() ? Device::cpu() : params_[0].device();
  const int64_t ranks = group_->size();
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    bucket.numel = bucket_elements[b];
    // Sharded buckets are padded to a multiple of the group size: rank r owns [r*S, (r+1)*S).
    const int64_t padded = options_.shard_gradients ? (bucket.numel + ranks - 1) / ranks * ranks : bucket.numel;
    bucket.flat = Tensor::zeros({padded}, bucket_dtypes[b], device);
    if (options_.shard_gradients) bucket.shard = Tensor::zeros({padded / ranks}, bucket_dtypes[b], device);
  }

  count_.assign(n, 0);
  expected_.assign(n, 0);
  previous_hooks_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    TensorImpl& impl = params_[i].impl();
    previous_hooks_[i] = impl.grad_accumulated_hook;
    impl.grad_accumulated_hook = [this, i, previous = previous_hooks_[i]](TensorImpl& leaf) {
      if (previous) previous(leaf);
      on_gradient(i);
    };
  }
  reset_step();
}

GradSync::~GradSync() {
  for (Bucket& b : buckets_) {
    try {
      if (b.work) b.work->wait();
    } catch (...) {
      // A destructor must not throw; the error already surfaced (or the process is unwinding).
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) params_[i].impl().grad_accumulated_hook = previous_hooks_[i];
}

const std::string& GradSync::name_of(size_t param) const {
  static const std::string none;
  return param < names_.size() ? names_[param] : none;
}

std::string GradSync::param_name(size_t param) const {
  return param < names_.size() ? "parameter '" + names_[param] + "'" : str("parameter #", param);
}

Tensor GradSync::slice_of(const Bucket& bucket, size_t position) const {
  const Tensor& p = params_[bucket.params[position]];
  return bucket.flat.narrow(0, bucket.offsets[position], p.numel()).view(p.shape());
}

void GradSync::reset_step() {
  std::fill(count_.begin(), count_.end(), 0);
  for (Bucket& b : buckets_) {
    b.pending = 0;
    for (size_t i : b.params) b.pending += expected_[i] > 0 ? 1 : 0;
  }
  next_to_launch_ = 0;
  launched_in_backward_ = 0;
}

void GradSync::set_sync_enabled(bool enabled) {
  if (enabled == enabled_) return;
  LATTE_REQUIRE(next_to_launch_ == 0, "GradSync: set_sync_enabled(", enabled ? "true" : "false",
                ") while a synchronised backward has buckets in flight; call finish() first");
  enabled_ = enabled;
  reset_step();  // counting starts afresh with the first synchronised backward
}

void GradSync::on_gradient(size_t param) {
  if (!enabled_) return;
  ++count_[param];
  if (!learned_ || !options_.overlap) return;
  if (count_[param] > expected_[param])
    LATTE_FAIL("GradSync: ", param_name(param), " received ", count_[param], " gradient contributions in this backward "
               "but ", expected_[param], " in the first synchronised one, so its bucket may already have been "
               "all-reduced; the parameters a step uses must not change between steps (or construct GradSync with "
               "overlap = false), and every micro-batch but the last needs set_sync_enabled(false)");
  if (count_[param] == expected_[param] && --buckets_[bucket_of_[param]].pending == 0) launch_ready_buckets(true);
  // MPI advances nonblocking collectives only inside MPI calls: poke the ones in flight.
  for (size_t b = 0; b < next_to_launch_; ++b)
    if (buckets_[b].work) buckets_[b].work->test();
}

void GradSync::launch_ready_buckets(bool from_backward) {
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].pending == 0) {
    launch(buckets_[next_to_launch_++]);
    if (from_backward) ++launched_in_backward_;
  }
}

void GradSync::launch(Bucket& bucket) {
  autograd::NoGradGuard no_grad;
  for (size_t pos = 0; pos < bucket.params.size(); ++pos) {
    const Tensor grad = params_[bucket.params[pos]].grad();
    const Tensor slice = slice_of(bucket, pos);
    if (!grad.defined())
      ops::fill(slice, 0.0);
    else if (!same_buffer(grad, slice))
      ops::copy(slice, grad);
  }
  bucket.work = options_.shard_gradients ? group_->reduce_scatter_async(bucket.shard, bucket.flat, ReduceOp::Avg)
                                         : group_->all_reduce_async(bucket.flat, ReduceOp::Avg);
}

void GradSync::complete(Bucket& bucket) {
  autograd::NoGradGuard no_grad;
  bucket.work->wait();
  bucket.work.reset();
  if (options_.shard_gradients) return;  // the averages live in bucket.shard (ZeRO-1)
  for (size_t pos = 0; pos < bucket.params.size(); ++pos) {
    Tensor& p = params_[bucket.params[pos]];
    const Tensor grad = p.grad();
    const Tensor slice = slice_of(bucket, pos);
    if (!grad.defined()) {
      Tensor fresh = Tensor::empty(p.shape(), p.dtype(), p.device());
      ops::copy(fresh, slice);
      p.set_grad(fresh);
    } else if (!same_buffer(grad, slice)) {
      ops::copy(grad, slice);
    }
  }
}

void GradSync::finish() {
  LATTE_REQUIRE(enabled_, "GradSync::finish() while sync is disabled: call set_sync_enabled(true) before the last "
                          "micro-batch's backward");
  if (!learned_) {
    expected_ = count_;
    learned_ = true;
  }
  while (next_to_launch_ < buckets_.size()) launch(buckets_[next_to_launch_++]);
  for (Bucket& b : buckets_) complete(b);
  last_launched_in_backward_ = launched_in_backward_;
  reset_step();
}

void GradSync::zero_grad() {
  LATTE_REQUIRE(next_to_launch_ == 0, "GradSync::zero_grad() while buckets are in flight; call finish() first");
  autograd::NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    ops::fill(b.flat, 0.0);
    for (size_t pos = 0; pos < b.params.size(); ++pos) {
      Tensor& p = params_[b.params[pos]];
      if (b.flat.dtype() == p.dtype())
        p.set_grad(slice_of(b, pos));
      else
        p.zero_grad();
    }
  }
}

// ---- helpers ------------------------------------------------------------------------------------------

void all_reduce_gradients(const std::vector<Tensor>& params, ProcessGroup& group, ReduceOp op) {
  if (params.empty() || group.size() == 1) return;
  autograd::NoGradGuard no_grad;
  std::map<DType, std::vector<Tensor>> by_dtype;  // ordered: the same collective order on every rank
  for (const Tensor& p : params) {
    LATTE_REQUIRE(p.device() == params[0].device(), "all_reduce_gradients: parameters on ", p.device().str(), " and ",
                  params[0].device().str(), "; all must share one device");
    by_dtype[p.dtype()].push_back(p);
  }
  for (auto& [dtype, group_params] : by_dtype) {
    int64_t total = 0;
    for (const Tensor& p : group_params) total += p.numel();
    Tensor flat = Tensor::empty({total}, dtype, group_params[0].device());
    int64_t offset = 0;
    for (const Tensor& p : group_params) {
      Tensor slice = flat.narrow(0, offset, p.numel()).view(p.shape());
      if (p.grad().defined()) ops::copy(slice, p.grad()); else ops::fill(slice, 0.0);
      offset += p.numel();
    }
    group.all_reduce(flat, op);
    offset = 0;
    for (Tensor p : group_params) {
      Tensor slice = flat.narrow(0, offset, p.numel()).view(p.shape());
      if (!p.grad().defined()) p.set_grad(Tensor::empty(p.shape(), p.dtype(), p.device()));
      ops::copy(p.grad(), slice);
      offset += p.numel();
    }
  }
}

double global_grad_norm(const std::vector<Tensor>& sharded, const std::vector<Tensor>& replicated,
                        ProcessGroup& tp_group) {
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const Tensor& p : sharded)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (tp_group.rank() == 0)
    for (const Tensor& p : replicated)
      if (p.grad().defined()) grads.push_back(p.grad());
  // Every rank must take the same path (NCCL or MPI): the device comes from the parameter lists,
  // which have the same structure on every rank, not from which gradients happen to exist here.
  Device device = !sharded.empty() ? sharded[0].device() : !replicated.empty() ? replicated[0].device() : Device::cpu();
  const DType acc = device.is_cpu() ? DType::F64 : DType::F32;
  Tensor total = Tensor::zeros({1}, acc, device);
  if (!grads.empty()) {
    Tensor partial = Tensor::empty({static_cast<int64_t>(grads.size())}, acc, device);  // one sum per tensor
    for (size_t i = 0; i < grads.size(); ++i) {
      LATTE_REQUIRE(grads[i].device() == device, "global_grad_norm: gradients on ", grads[i].device().str(), " and ",
                    device.str(), "; all must share one device");
      ops::sum_squares(partial.narrow(0, static_cast<int64_t>(i), 1), grads[i]);
    }
    ops::sum(total, partial);
  }
  tp_group.all_reduce(total, ReduceOp::Sum);
  return std::sqrt(total.item());
}

}  // namespace latte::dist
