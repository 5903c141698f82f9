// Tensor parallelism on the model side (spec: "Tensor parallelism (training)"; docs/tensor_parallel.md).
// A TensorParallelContext names the TP group a model is sharded over. Every parallel layer receives it
// at construction and keeps only its own shard (Megatron-Core: parallel layers own their shard);
// modules compute in local head / channel counts.
//
// Where the communication sits (the conjugate pairs of distributed/tp_mappings.h):
//   block:  x = h + reduce_from_tp( attn_shard( attn_norm( copy_to_tp(h) ) ) )    one all-reduce forward,
//           h = x + reduce_from_tp( mlp_shard ( mlp_norm ( copy_to_tp(x) ) ) )    one backward, per sub-block
//   model:  h = reduce_from_tp( vocab-parallel lookup(ids) );
//           loss = vocab-parallel cross-entropy( lm_head_shard( final_norm( copy_to_tp(h) ) ) )
// A TP region opens (copy_to_tp) before the sub-block's norm and closes (reduce_from_tp) in its
// row-parallel output projection. Inside a region every replicated parameter (the pre-norms, final_norm,
// wq_a, q_norm, wkv_a, kv_norm(s), latent-position wgate / gate_norm, gate tables, and wk / wv when
// n_kv < tp) only sees the gradient that flows back through this rank's heads, channels or vocabulary
// rows: a partial sum whose sum over the TP ranks is the full gradient. Hence one rule:
//   after the backward, all-reduce (sum) the gradients of model.tp_replicated_parameters() over the
//   TP group (dist::all_reduce_gradients); the gradients of tp_sharded_parameters() are complete.
// The same two lists feed dist::global_grad_norm(sharded, replicated, tp_group).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace latte {

namespace dist { class ProcessGroup; }
struct ModelConfig;

struct TensorParallelContext {
  dist::ProcessGroup* tp_group = nullptr;  // the TP group (outlives the model and its graphs); null: no communication
  int64_t tp_rank = 0;                     // this rank's index in the group
  int64_t tp_size = 1;                     // TP degree; 1 = no tensor parallelism

  bool enabled() const { return tp_size > 1; }
  // The context of a group (rank and size from the group; a null group or a group of one = no TP).
  static TensorParallelContext of(dist::ProcessGroup* group);
  // Shapes and layouts only, without a group: for checkpoint tools and single-process tests that need
  // rank r's shard shapes or initial values. Forward passes of such a model throw.
  static TensorParallelContext layout_only(int64_t tp_rank, int64_t tp_size);

  // The group, or a clear error naming `what` when this context has none.
  dist::ProcessGroup& group(const char* what) const;
  // Opens a TP region: copy_to_tp (identity forward, all-reduce of the gradient backward); x when tp = 1.
  Tensor enter(const Tensor& x) const;
  // Closes a TP region: reduce_from_tp (all-reduce forward, identity backward); x when tp = 1.
  Tensor exit(const Tensor& x) const;
};

// Throws a latte::Error naming the key and the fix when `config` cannot be split over tp ranks:
// n_heads % tp, n_kv_heads % tp or tp % n_kv_heads, vocab_size % tp, ffn_dim % tp, and for MLRA the
// heads each block serves (H_b = n_heads / (blocks / branches)) % tp.
void check_tensor_parallel(const ModelConfig& config, int64_t tp_size);

}  // namespace latte
