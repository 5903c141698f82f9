// The interface every attention variant implements (spec/attention.md), and the factory that builds
// the one a layer's config names. One forward serves training (no cache: attend within the call)
// and decoding (a cache: append this call's entries, attend over everything cached, query rows
// being the last positions). Modules are written in terms of local head counts: under tensor
// parallelism (layers/tensor_parallel.h) each rank holds n_heads / tp query heads and the matching
// shards of the column-parallel projections and of the row-parallel wo; the input x is inside a TP
// region (the block opened it) and the output is already all-reduced by wo. Decoding works the same way
// under TP: each rank caches and attends with its shard (MLRA can instead split its latent blocks,
// MlraTpLayout::Blocks); a decode step of one token uses the split-K decode kernels where they apply.
#pragma once
#include <memory>

#include "layers/kv_cache.h"
#include "layers/model_config.h"
#include "layers/module.h"
#include "layers/tensor_parallel.h"

namespace latte {

// What a layer gets besides its input, per forward call.
struct AttentionContext {
  int64_t start_pos = 0;           // absolute position of the first query row (= cached length when decoding)
  Tensor gate_embed;               // EG-MLA: e_t = gates.g.embed[x_t] of this layer's group, query tokens (B, T, d_e)
  Tensor gate_embed_context;       // EG-MLA(kv) decoding: e_t of every cached token, (B, start_pos + T, d_e)
  LayerKVCache* cache = nullptr;   // decoding: this layer's cache (entries [0, start_pos) valid)
  bool absorbed = false;           // decoding, MLA family: absorbed path (attend in latent space)
  Tensor residual;                 // when defined, forward returns residual + attention: the residual stream's add,
                                   // done by the output projection's GEMM (Linear::forward_add)
};

class Attention : public Module {
 public:
  Attention(const ModelConfig& model, const AttentionConfig& config, const TensorParallelContext& tp = {});
  // x (B, T, d) -> (B, T, d)
  virtual Tensor forward(const Tensor& x, const AttentionContext& ctx) const = 0;
  const AttentionConfig& config() const { return cfg_; }

 protected:
  AttentionConfig cfg_;
  int64_t d_model_;
  double norm_eps_;
  InitConfig init_;
  TensorParallelContext tp_;
  // Query heads attended by this rank: n_heads / tp (MLRA's Blocks layout: see MlraShard).
  int64_t local_heads_;
  // Groups of heads whose slices each rank holds (ShardLayout::groups): MLRA's blocks / branches (the
  // heads a block serves form one group), 1 otherwise.
  int64_t head_groups_;
};

std::unique_ptr<Attention> make_attention(const ModelConfig& model, int64_t layer, const ParamOptions& options,
                                          const TensorParallelContext& tp = {});

// Decoding helper: writes `fresh` (B, T, ...) into buffer (B, cap, ...) at [start, start + T) and returns
// the valid prefix view (B, start + T, ...) of the buffer.
Tensor append_to_cache(const Tensor& buffer, const Tensor& fresh, int64_t start);

}  // namespace latte
