// ZeRO stage 1 (Rajbhandari et al. 2020): the optimizer state is sharded over the data-parallel
// group. Each DP rank keeps fp32 master weights and AdamW moments only for its 1/dp slice of every
// gradient bucket, updates that slice, and all-gathers the updated weights into every replica.
// Gradients are reduce-scattered instead of all-reduced (GradSync with shard_gradients = true), which
// moves half the bytes of an all-reduce; the all-gather of the weights moves the other half.
//
// Use (the optimizer is unchanged: it sees the pieces as ordinary f32 parameters):
//
//   GradSyncOptions o;  o.shard_gradients = true;  o.reduce_in_fp32 = true;  // fp32 gradient shards
//   GradSync sync(params, topo.dp_group(), o, names);
//   Zero1 zero(sync);
//   std::vector<OptimParam> shards;
//   for (const ShardPiece& piece : zero.pieces())
//     shards.push_back({piece.name, piece.master, decay_of(piece.param)});
//   AdamW optimizer(shards, adamw_config);
//   ... each step: micro-batches as with plain GradSync, then
//   sync.finish();                                        // reduce-scatter: piece.master.grad() = averaged slice
//   double norm = zero.global_grad_norm(tp_replicated, *topo.tp_group());
//   optimizer.step(lr, clip_scale(norm));                 // updates this rank's masters
//   zero.gather_parameters();                             // every replica gets the new weights
//
// The pieces' names are "<param name>[<first>:<end>]" (flattened element range). Optimizer state is
// per DP rank and only reloads onto the same dp and bucket size.
#pragma once
#include <string>
#include <vector>

#include "distributed/data_parallel.h"

namespace latte::dist {

// The part of one parameter that falls in this rank's shard of one bucket.
struct ShardPiece {
  std::string name;       // "<param name>[first:end]"
  size_t param = 0;       // index into GradSync::params()
  int64_t first = 0;      // first element of the parameter (flattened) in this piece
  int64_t length = 0;
  Tensor master;          // (length) f32 (f64 for f64 models) view of this rank's master shard;
                          // .grad() = its slice of the averaged gradient shard
};

class Zero1 {
 public:
  // `sync` must use shard_gradients = true (with f32/f64 buckets: reduce_in_fp32 for bf16 models) and
  // outlive this object. Copies the parameters' current values into the master shards (every rank
  // must start from the same weights).
  explicit Zero1(GradSync& sync);

  const std::vector<ShardPiece>& pieces() const { return pieces_; }
  // After the optimizer updated the masters: all-gathers them over the DP group and writes every
  // parameter (cast to its dtype). One collective per bucket.
  void gather_parameters();
  // The L2 norm of the whole model's averaged gradient from the shards: squares of this rank's
  // pieces (of TP-replicated parameters, tp_replicated[param], only on TP rank 0), summed over the
  // DP group and then over `tp_group` (pass a one-rank group without TP).
  double global_grad_norm(const std::vector<bool>& tp_replicated, ProcessGroup& tp_group) const;

 private:
  GradSync& sync_;
  std::vector<Tensor> master_shards_;  // per bucket: (S) f32
  std::vector<ShardPiece> pieces_;
};

}  // namespace latte::dist
