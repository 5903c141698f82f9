// The decoder LM (spec: "Common to all variants"): token embedding, n_layers pre-norm blocks
// (attention of the layer's kind + SwiGLU MLP), final RMSNorm and the LM head (tok_embed when tied).
// EG-MLA gate tables live at the top (`gates.g.embed.weight`) because consecutive layers share them;
// the lookup e_t is done once per group and handed to its layers. Parameter names are the spec's.
// Tensor parallelism (layers/tensor_parallel.h, docs/tensor_parallel.md): built with a
// TensorParallelContext, every rank holds the spec's parameter names with local shapes (its heads,
// ffn channels and vocabulary rows); the token embedding and the loss are vocab-parallel; loss() is
// identical on every TP rank. After the backward the trainer all-reduces the gradients of
// tp_replicated_parameters() over the TP group. Decoding (KV cache) works under TP too: every TP rank
// calls forward_cached with the same ids and gets the same gathered logits; its cache holds its shard
// (layers/kv_cache.h). Build with TensorParallelContext::of(group, MlraTpLayout::Blocks) for MLRA's
// block-per-rank decode layout.
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
  TransformerBlock(const ModelConfig& config, int64_t layer, const ParamOptions& options,
                   const TensorParallelContext& tp = {});
  Tensor forward(const Tensor& h, const AttentionContext& ctx) const;  // (B, T, d) -> (B, T, d)
  const Attention& attn() const { return *attn_; }

 private:
  TensorParallelContext tp_;
  RMSNorm* attn_norm_;
  Attention* attn_;
  RMSNorm* mlp_norm_;
  SwiGLUMLP* mlp_;
};

// One EG-MLA gate table, `gates.g.embed.weight` (V, d_e).
class GateTable : public Module {
 public:
  GateTable(int64_t vocab_size, const AttentionConfig& egmla, double init_std, const ParamOptions& options,
            const TensorParallelContext& tp = {});  // replicated under TP
  Tensor lookup(const Tensor& ids) const { return embed_->forward(ids); }  // (B, T) -> (B, T, d_e)

 private:
  Embedding* embed_;
};

class TransformerLM : public Module {
 public:
  // Builds the model and initialises every parameter from `seed` (values depend on (seed, name) only).
  // With tp (tp_size > 1) this rank holds its shards, initialised to exactly its slice of the full
  // weights of the tp = 1 model with the same seed; the config is checked (check_tensor_parallel).
  TransformerLM(const ModelConfig& config, uint64_t seed, DType param_dtype, Device device,
                const TensorParallelContext& tp = {});

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return options_.dtype; }
  Device device() const { return options_.device; }
  const TensorParallelContext& tensor_parallel() const { return tp_; }

  // ids (B, T) i32 -> final-normed hidden states (B, T, d). Under TP the result is inside the LM head's
  // TP region (its gradient is all-reduced on the way back): feed it to this rank's output_weight() only.
  Tensor hidden(const Tensor& ids) const;
  // ids (B, T) i32 -> logits (B, T, V) in the parameter dtype (under TP gathered from the vocab shards).
  Tensor logits(const Tensor& ids) const;
  // Under TP: this rank's vocabulary slice of the logits, (B, T, V/tp) for ids [vocab_start, vocab_start + V/tp).
  Tensor local_logits(const Tensor& ids) const;
  // Mean cross-entropy (f32 scalar) over targets != -1. The LM head and the loss run fused in chunks of
  // rows (layers/lm_head_loss.h), so no [B T, V] logits tensor outlives its chunk.
  Tensor loss(const Tensor& ids, const Tensor& targets) const;
  // Rows per LM-head/loss chunk when the loss covers `total_rows` rows. Default: the fewest chunks of at most
  // 2^25 logits (CPU) or 2^29 (GPU: 1 GiB of bf16, the gradient overwrites them) split evenly, so that no
  // chunk is a sliver and each costs one read-modify-write of the f32 d(W) (V, d) -- with 667-row chunks at
  // V = 50304 that traffic was ~40% of the LM head's GEMM time on an H100.
  void set_loss_chunk_rows(int64_t rows) { loss_chunk_rows_ = rows; }
  int64_t loss_chunk_rows(int64_t total_rows) const;

  // Decoding (no grad): appends ids (B, t_new) to `cache` and returns the logits (B, t_new, V) of the new
  // positions. absorbed selects the absorbed path for MLA / EG-MLA(latent) / MLRA layers. Under TP every TP
  // rank must call it with the same ids (it contains collectives); the logits are gathered from the vocab
  // shards (the same bits on every rank).
  Tensor forward_cached(const Tensor& ids, KVCache& cache, bool absorbed = false) const;
  // A cache for this model: under TP this rank's share (per-rank bytes: cache.bytes()).
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // The LM head weight (V, d): lm_head.weight, or tok_embed.weight when tied. Under TP this rank's
  // (V/tp, d) rows starting at vocab_start().
  const Tensor& output_weight() const;
  int64_t vocab_start() const { return tok_embed_->vocab_start(); }

  // Tensor parallelism: the parameters split over the TP ranks (complete gradients; each rank's norm
  // counts) and those every TP rank holds in full (partial gradients: all-reduce them over TP after the
  // backward; count them once). Both in registration order; together they are parameters(). With tp = 1
  // every parameter is replicated.
  std::vector<Tensor> tp_sharded_parameters() const;
  std::vector<Tensor> tp_replicated_parameters() const;
  // Safetensors metadata of this rank's shard file (kTpLayoutKey: the layouts as JSON), for
  // save_state(model, "model-tp{r}.safetensors", tp_layout_metadata()); read_merged_tp_shards() reads them back.
  std::map<std::string, std::string> tp_layout_metadata() const;
  const TransformerBlock& block(int64_t i) const { return *blocks_.at(static_cast<size_t>(i)); }
  int64_t num_gate_tables() const { return static_cast<int64_t>(gate_tables_.size()); }

 private:
  void check_ids(const Tensor& ids, const char* what) const;
  // Runs the blocks; cache/absorbed only when decoding.
  Tensor run_blocks(Tensor h, const Tensor& ids, KVCache* cache, bool absorbed) const;

  ModelConfig config_;
  ParamOptions options_;
  TensorParallelContext tp_;
  int64_t loss_chunk_rows_ = 0;  // 0: automatic
  Embedding* tok_embed_;
  std::map<int64_t, GateTable*> gate_tables_;  // by group index
  std::vector<TransformerBlock*> blocks_;
  RMSNorm* final_norm_;
  Linear* lm_head_ = nullptr;  // untied only; column-parallel (by vocab)
};

}  // namespace latte
