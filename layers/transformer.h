// The decoder LM (spec: "Common to all variants"): token embedding, n_layers pre-norm blocks
// (attention of the layer's kind + SwiGLU MLP), final RMSNorm and the LM head (tok_embed when tied).
// EG-MLA gate tables live at the top (`gates.g.embed.weight`) because consecutive layers share them;
// the lookup e_t is done once per group and handed to its layers. Parameter names are the spec's.
#pragma once
#include <map>
#include <memory>
#include <vector>

#include "layers/attention/attention.h"
#include "layers/embedding.h"
#include "layers/kv_cache.h"
#include "layers/linear.h"
#include "layers/mlp.h"
#include "layers/model_config.h"
#include "layers/norm.h"

namespace latte {

// h = h + Attn(RMSNorm(h)); h = h + MLP(RMSNorm(h)).
class TransformerBlock : public Module {
 public:
  TransformerBlock(const ModelConfig& config, int64_t layer, const ParamOptions& options);
  Tensor forward(const Tensor& h, const AttentionContext& ctx) const;  // (B, T, d) -> (B, T, d)
  const Attention& attn() const { return *attn_; }

 private:
  RMSNorm* attn_norm_;
  Attention* attn_;
  RMSNorm* mlp_norm_;
  SwiGLUMLP* mlp_;
};

// One EG-MLA gate table, `gates.g.embed.weight` (V, d_e).
class GateTable : public Module {
 public:
  GateTable(int64_t vocab_size, const AttentionConfig& egmla, double init_std, const ParamOptions& options);
  Tensor lookup(const Tensor& ids) const { return embed_->forward(ids); }  // (B, T) -> (B, T, d_e)

 private:
  Embedding* embed_;
};

class TransformerLM : public Module {
 public:
  // Builds the model and initialises every parameter from `seed` (values depend on (seed, name) only).
  TransformerLM(const ModelConfig& config, uint64_t seed, DType param_dtype, Device device);

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return options_.dtype; }
  Device device() const { return options_.device; }

  // ids (B, T) i32 -> final-normed hidden states (B, T, d).
  Tensor hidden(const Tensor& ids) const;
  // ids (B, T) i32 -> logits (B, T, V) in the parameter dtype.
  Tensor logits(const Tensor& ids) const;
  // Mean cross-entropy (f32 scalar) over targets != -1. The LM head and the loss run fused in chunks of
  // rows (layers/lm_head_loss.h), so no [B T, V] logits tensor outlives its chunk.
  Tensor loss(const Tensor& ids, const Tensor& targets) const;
  // Rows per LM-head/loss chunk (default: about 2^25 logits per chunk).
  void set_loss_chunk_rows(int64_t rows) { loss_chunk_rows_ = rows; }
  int64_t loss_chunk_rows() const;

  // Decoding (no grad): appends ids (B, t_new) to `cache` and returns the logits (B, t_new, V) of the new
  // positions. absorbed selects the absorbed path for MLA / EG-MLA(latent) / MLRA layers.
  Tensor forward_cached(const Tensor& ids, KVCache& cache, bool absorbed = false) const;
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // The LM head weight (V, d): lm_head.weight, or tok_embed.weight when tied.
  const Tensor& output_weight() const;
  const TransformerBlock& block(int64_t i) const { return *blocks_.at(static_cast<size_t>(i)); }
  int64_t num_gate_tables() const { return static_cast<int64_t>(gate_tables_.size()); }

 private:
  void check_ids(const Tensor& ids, const char* what) const;
  // Runs the blocks; cache/absorbed only when decoding.
  Tensor run_blocks(Tensor h, const Tensor& ids, KVCache* cache, bool absorbed) const;

  ModelConfig config_;
  ParamOptions options_;
  int64_t loss_chunk_rows_ = 0;  // 0: automatic
  Embedding* tok_embed_;
  std::map<int64_t, GateTable*> gate_tables_;  // by group index
  std::vector<TransformerBlock*> blocks_;
  RMSNorm* final_norm_;
  Linear* lm_head_ = nullptr;  // untied only; column-parallel (by vocab)
};

}  // namespace latte
