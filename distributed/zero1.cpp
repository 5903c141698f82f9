// ZeRO-1: fp32 master shards, their pieces per parameter, the weight all-gather and the sharded
// gradient norm (distributed/zero1.h).
#include "distributed/zero1.h"

#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte::dist {

Zero1::Zero1(GradSync& sync) : sync_(sync) {
  LATTE_REQUIRE(sync.options().shard_gradients, "Zero1 needs a GradSync built with shard_gradients = true");
  autograd::NoGradGuard no_grad;
  const int rank = sync.group().rank();
  for (size_t b = 0; b < sync.num_buckets(); ++b) {
    const GradSync::Bucket& bucket = sync.bucket(b);
    const int64_t shard_size = bucket.shard.numel();
    const int64_t shard_begin = rank * shard_size, shard_end = shard_begin + shard_size;
    const DType grad_dtype = bucket.shard.dtype();
    LATTE_REQUIRE(grad_dtype == DType::F32 || grad_dtype == DType::F64, "Zero1: the gradient shards are ",
                  dtype_name(grad_dtype), "; reduce bf16/f16 gradients in f32 (GradSyncOptions::reduce_in_fp32 = true)");
    Tensor master = Tensor::zeros({shard_size}, grad_dtype, bucket.flat.device());  // f32 (f64 for f64 models)
    for (size_t pos = 0; pos < bucket.params.size(); ++pos) {
      const size_t index = bucket.params[pos];
      const Tensor& p = sync.params()[index];
      // The overlap of [offset, offset + numel) with this rank's [shard_begin, shard_end).
      const int64_t begin = std::max(bucket.offsets[pos], shard_begin);
      const int64_t end = std::min(bucket.offsets[pos] + p.numel(), shard_end);
      if (begin >= end) continue;
      ShardPiece piece;
      piece.param = index;
      piece.first = begin - bucket.offsets[pos];
      piece.length = end - begin;
      const std::string& name = sync.name_of(index);
      piece.name = str(name.empty() ? str("param", index) : name, "[", piece.first, ":", piece.first + piece.length, "]");
      piece.master = master.narrow(0, begin - shard_begin, piece.length);
      ops::copy(piece.master, p.detach().reshape({p.numel()}).narrow(0, piece.first, piece.length));
      piece.master.set_grad(bucket.shard.narrow(0, begin - shard_begin, piece.length));
      pieces_.push_back(std::move(piece));
    }
    master_shards_.push_back(master);
  }
}

void Zero1::gather_parameters() {
  autograd::NoGradGuard no_grad;
  ProcessGroup& group = *sync_.group_ptr();
  const int rank = group.rank();
  for (size_t b = 0; b < sync_.num_buckets(); ++b) {
    const GradSync::Bucket& bucket = sync_.bucket(b);
    // Gather in the parameters' dtype when the bucket has one (half the bytes for bf16), else f32.
    DType dtype = sync_.params()[bucket.params[0]].dtype();
    for (size_t index : bucket.params)
      if (sync_.params()[index].dtype() != dtype) dtype = DType::F32;
    const int64_t shard_size = master_shards_[b].numel();
    Tensor full = Tensor::empty({shard_size * group.size()}, dtype, bucket.flat.device());
    Tensor mine = full.narrow(0, rank * shard_size, shard_size);
    ops::copy(mine, master_shards_[b]);
    group.all_gather(full, mine);  // in place: this rank's slice is already there
    for (size_t pos = 0; pos < bucket.params.size(); ++pos) {
      const Tensor& p = sync_.params()[bucket.params[pos]];
      ops::copy(p.detach().view({p.numel()}), full.narrow(0, bucket.offsets[pos], p.numel()));
    }
  }
}

double Zero1::global_grad_norm(const std::vector<bool>& tp_replicated, ProcessGroup& tp_group) const {
  autograd::NoGradGuard no_grad;
  const size_t n = sync_.params().size();
  LATTE_REQUIRE(tp_replicated.empty() || tp_replicated.size() == n, "Zero1::global_grad_norm: ", tp_replicated.size(),
                " replicated flags for ", n, " parameters");
  const Device device = master_shards_.empty() ? Device::cpu() : master_shards_[0].device();
  const DType acc = device.is_cpu() ? DType::F64 : DType::F32;
  Tensor total = Tensor::zeros({1}, acc, device);
  std::vector<Tensor> grads;
  for (const ShardPiece& piece : pieces_) {
    const bool replicated = !tp_replicated.empty() && tp_replicated[piece.param];
    if (!replicated || tp_group.rank() == 0) grads.push_back(piece.master.grad());
  }
  if (!grads.empty()) {
    Tensor partial = Tensor::empty({static_cast<int64_t>(grads.size())}, acc, device);
    for (size_t i = 0; i < grads.size(); ++i) ops::sum_squares(partial.narrow(0, static_cast<int64_t>(i), 1), grads[i]);
    ops::sum(total, partial);
  }
  sync_.group_ptr()->all_reduce(total, ReduceOp::Sum);
  tp_group.all_reduce(total, ReduceOp::Sum);
  return std::sqrt(total.item());
}

}  // namespace latte::dist
