// Tensor-parallel communication as differentiable functions: Megatron-Core's conjugate pairs
// (megatron/core/tensor_parallel/mappings.py). Each one's backward is the other's forward:
//
//   copy_to_tp      forward: identity                      backward: all-reduce (sum) of the gradient
//   reduce_from_tp  forward: all-reduce (sum)              backward: identity
//   scatter_to_tp   forward: keep this rank's slice of     backward: all-gather along the last dim
//                            the last dim
//   gather_from_tp  forward: all-gather along the last dim backward: keep this rank's slice
//
// How a TP block uses them (x replicated on the TP ranks, weights sharded):
//   column-parallel linear:  y_shard = linear(copy_to_tp(x, tp), w_rows_shard)        (..., out/tp)
//   row-parallel linear:     y = reduce_from_tp(linear(x_shard, w_cols_shard), tp)    (..., out)
//   so an MLP is  reduce_from_tp(w_down_shard(act(w_up_shard(copy_to_tp(x))))), one all-reduce each way.
//   gather_from_tp turns a column-parallel output back into the full tensor (e.g. logits for a plain
//   loss); scatter_to_tp hands a replicated tensor's slice to a row-parallel layer.
// The slice of rank r along the last dim D is [r*D/tp, (r+1)*D/tp): D must divide by the group size.
// With a group of one rank every function returns its input unchanged.
//
// Every rank of the group must run the same sequence of these in forward and backward (they are
// collectives). The group must outlive the autograd graph (nodes keep a shared_ptr to it).
#pragma once
#include "core/tensor.h"
#include "distributed/process_group.h"

namespace latte::dist {

Tensor copy_to_tp(const Tensor& x, ProcessGroup& tp);
Tensor reduce_from_tp(const Tensor& x, ProcessGroup& tp);
Tensor scatter_to_tp(const Tensor& x, ProcessGroup& tp);   // (..., D) -> (..., D/tp)
Tensor gather_from_tp(const Tensor& x, ProcessGroup& tp);  // (..., d) -> (..., tp*d)

}  // namespace latte::dist
