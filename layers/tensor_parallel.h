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
//
// Decoding under TP (forward_cached / KVCache) uses the same regions: each rank caches what its shard
// attends over (MHA/GQA: its kv heads; MLA, EG-MLA: the whole latent, its query heads) and wo's
// all-reduce sums the heads. MLRA has a second layout for decoding, MlraTpLayout::Blocks (spec, "MLRA":
// "under decode tensor parallelism each of L ranks holds one block"), chosen per model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace latte {

namespace dist { class ProcessGroup; }
struct ModelConfig;
struct AttentionConfig;

// How MLRA layers are split over the TP ranks (other kinds ignore it).
enum class MlraTpLayout {
  // Training (the default): every rank computes and caches the whole latent (d_c + d_r per token per layer)
  // and holds H_b / tp heads of every block (wq / wo split by head inside each head group, wkv_b dim 2).
  Heads,
  // Decoding: rank r holds the latent blocks r, r + tp, r + 2 tp, ... (blocks / tp of them: one block per
  // rank at tp = blocks) and caches only those, d_c / tp + d_r per token per layer. It attends with them for
  // every head they serve (absorbed decode per block, as MLA), sums its branches, applies the wo columns of
  // those heads, and wo's all-reduce (reduce_from_tp, as in training) adds the other ranks' branches.
  // wkv_b is split by block (dim 0); wq / wq_b / wo are replicated (rows / columns of the served heads used);
  // the rest as in Heads. Needs blocks % tp == 0 and tp, G = blocks / branches dividing one another:
  // tp % G == 0 (MLRA-4; MLRA-2 at tp 2 or 4): rank r serves head group r mod G with blocks / tp branches;
  // G % tp == 0: rank r serves the G / tp head groups r, r + tp, ... with all `branches` branches each.
  Blocks,
};
const char* mlra_tp_layout_name(MlraTpLayout layout);              // "heads" | "blocks"
MlraTpLayout parse_mlra_tp_layout(const std::string& name, const std::string& where);

struct TensorParallelContext {
  dist::ProcessGroup* tp_group = nullptr;  // the TP group (outlives the model and its graphs); null: no communication
  int64_t tp_rank = 0;                     // this rank's index in the group
  int64_t tp_size = 1;                     // TP degree; 1 = no tensor parallelism
  MlraTpLayout mlra_layout = MlraTpLayout::Heads;  // MLRA layers' split (decode: Blocks)

  bool enabled() const { return tp_size > 1; }
  bool mlra_blocks() const { return enabled() && mlra_layout == MlraTpLayout::Blocks; }
  // The context of a group (rank and size from the group; a null group or a group of one = no TP).
  static TensorParallelContext of(dist::ProcessGroup* group, MlraTpLayout mlra_layout = MlraTpLayout::Heads);
  // Shapes and layouts only, without a group: for checkpoint tools and single-process tests that need
  // rank r's shard shapes or initial values. Forward passes of such a model throw.
  static TensorParallelContext layout_only(int64_t tp_rank, int64_t tp_size, MlraTpLayout mlra_layout = MlraTpLayout::Heads);

  // The group, or a clear error naming `what` when this context has none.
  dist::ProcessGroup& group(const char* what) const;
  // Opens a TP region: copy_to_tp (identity forward, all-reduce of the gradient backward); x when tp = 1.
  Tensor enter(const Tensor& x) const;
  // Closes a TP region: reduce_from_tp (all-reduce forward, identity backward); x when tp = 1.
  Tensor exit(const Tensor& x) const;
};

// Throws a latte::Error naming the key and the fix when `config` cannot be split over tp ranks:
// n_heads % tp, n_kv_heads % tp or tp % n_kv_heads, vocab_size % tp, ffn_dim % tp, and for MLRA the
// heads each block serves (H_b = n_heads / (blocks / branches)) % tp (Heads layout) or blocks % tp and
// tp, blocks / branches dividing one another (Blocks layout; n_heads need not divide by tp there).
void check_tensor_parallel(const ModelConfig& config, int64_t tp_size, MlraTpLayout mlra_layout = MlraTpLayout::Heads);

// What one rank holds of an MLRA layer. Locally the layer is an MLRA with `blocks` blocks, `heads` query
// heads and `branches` branches per head, local block k serving local head group k mod (blocks / branches):
// the virtual-head order k * heads_per_block + h = branch * heads + head holds with the local counts.
struct MlraShard {
  int64_t blocks = 1;           // latent blocks held and cached: L (Heads), L / tp (Blocks)
  int64_t branches = 1;         // branches summed here per head: R (Heads), see MlraTpLayout::Blocks
  int64_t heads = 1;            // query heads attended here: n_h / tp (Heads); H_b * (groups held) (Blocks)
  int64_t heads_per_block = 1;  // heads each held block serves: H_b / tp (Heads), H_b (Blocks)
  std::vector<int64_t> head_groups;  // Blocks: the global head groups held (ascending; group g = heads
                                     // [g H_b, (g+1) H_b)); empty under Heads
  std::vector<int64_t> block_ids;    // the global latent blocks held, in local order
};
MlraShard mlra_shard(const AttentionConfig& mlra, const TensorParallelContext& tp);

// What a rank caches per token for one layer: kv heads of width head_dim (MHA family: n_kv / tp, or the one
// shared kv head when n_kv < tp) or the latent width (MLA family: d_c; MLRA Blocks: d_c / tp), plus d_r.
int64_t local_kv_heads(const AttentionConfig& a, const TensorParallelContext& tp);
int64_t local_latent_dim(const AttentionConfig& a, const TensorParallelContext& tp);
// Elements cached per token for one layer on this rank: 2 local_kv_heads d_h, or local_latent_dim + d_r.
int64_t local_kv_elements_per_token(const AttentionConfig& a, const TensorParallelContext& tp);

}  // namespace latte
