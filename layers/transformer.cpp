// TransformerLM: forward, chunked LM-head loss (vocab-parallel under TP), per-block recomputation and
// cached decoding (layers/transformer.h).
#include "layers/transformer.h"

#include <cmath>

#include "autograd/checkpoint.h"
#include "autograd/functions.h"
#include "autograd/node.h"
#include "distributed/tp_mappings.h"
#include "layers/lm_head_loss.h"

namespace latte {

// ---- block --------------------------------------------------------------------------------------------

TransformerBlock::TransformerBlock(const ModelConfig& config, int64_t layer, const ParamOptions& options,
                                   const TensorParallelContext& tp)
    : tp_(tp) {
  attn_norm_ = register_module("attn_norm", std::make_unique<RMSNorm>(config.d_model, config.norm_eps, options));
  attn_ = register_module("attn", make_attention(config, layer, options, tp));
  mlp_norm_ = register_module("mlp_norm", std::make_unique<RMSNorm>(config.d_model, config.norm_eps, options));
  mlp_ = register_module("mlp", std::make_unique<SwiGLUMLP>(config.d_model, config.ffn_dim, config.init.std,
                                                            config.init.zero_out_proj, options, tp));
}

Tensor TransformerBlock::forward(const Tensor& h, const AttentionContext& ctx) const {
  // Under TP each sub-block is one region: copy_to_tp before the norm, reduce_from_tp inside wo / w_down.
  // The residual adds ride in the output projections' GEMMs (Linear::forward_add): x = h + attn(norm(h)).
  AttentionContext with_residual = ctx;
  with_residual.residual = h;
  Tensor x = attn_->forward(attn_norm_->forward(tp_.enter(h)), with_residual);  // (B, T, d)
  return mlp_->forward(mlp_norm_->forward(tp_.enter(x)), x);                    // (B, T, d)
}

GateTable::GateTable(int64_t vocab_size, const AttentionConfig& egmla, double init_std, const ParamOptions& options,
                     const TensorParallelContext& tp) {
  // unit init: e_t ~ N(0, 1) so that the gate starts at unit scale (spec: "Gate init").
  const double std = egmla.gate.init == GateInit::Unit ? 1.0 : init_std;
  embed_ = register_module("embed", std::make_unique<Embedding>(vocab_size, egmla.gate.embed_dim, options, InitRule::normal(std),
                                                                tp, /*vocab_parallel=*/false));
}

// ---- model --------------------------------------------------------------------------------------------

TransformerLM::TransformerLM(const ModelConfig& config, uint64_t seed, DType param_dtype, Device device,
                             const TensorParallelContext& tp)
    : config_(config), options_{param_dtype, device}, tp_(tp) {
  config_.validate();
  LATTE_REQUIRE(is_floating(param_dtype), "model parameters must be a float dtype, got ", dtype_name(param_dtype));
  check_tensor_parallel(config_, tp.tp_size, tp.mlra_layout);
  const int64_t d = config.d_model, V = config.vocab_size;
  tok_embed_ = register_module("tok_embed", std::make_unique<Embedding>(V, d, options_, InitRule::normal(config.init.std), tp,
                                                                        /*vocab_parallel=*/true));
  if (const AttentionConfig* eg = config.egmla_attention()) {
    auto gates = std::make_unique<ModuleList>();
    for (int64_t g : config.gate_groups())
      gate_tables_[g] = gates->add_at(g, std::make_unique<GateTable>(V, *eg, config.init.std, options_, tp));
    register_module("gates", std::move(gates));
  }
  auto layers = std::make_unique<ModuleList>();
  for (int64_t i = 0; i < config.n_layers; ++i)
    blocks_.push_back(layers->add(std::make_unique<TransformerBlock>(config, i, options_, tp)));
  register_module("layers", std::move(layers));
  final_norm_ = register_module("final_norm", std::make_unique<RMSNorm>(d, config.norm_eps, options_));
  if (!config.tie_embeddings)
    lm_head_ = register_module("lm_head", std::make_unique<Linear>(d, V, options_, InitRule::normal(config.init.std),
                                                                   TensorParallel::Column, tp));  // by vocabulary
  initialize(seed);
}

std::vector<Tensor> TransformerLM::tp_sharded_parameters() const {
  const ShardLayouts layouts = shard_layouts();
  std::vector<Tensor> out;
  for (const NamedParameter& p : named_parameters())
    if (layouts.at(p.name).split) out.push_back(p.tensor);
  return out;
}

std::vector<Tensor> TransformerLM::tp_replicated_parameters() const {
  const ShardLayouts layouts = shard_layouts();
  std::vector<Tensor> out;
  for (const NamedParameter& p : named_parameters())
    if (!layouts.at(p.name).split) out.push_back(p.tensor);
  return out;
}

std::map<std::string, std::string> TransformerLM::tp_layout_metadata() const {
  return {{kTpLayoutKey, shard_layouts_to_json(shard_layouts(), tp_.tp_rank, tp_.tp_size)}};
}

const Tensor& TransformerLM::output_weight() const { return lm_head_ ? lm_head_->weight() : tok_embed_->weight(); }

int64_t TransformerLM::loss_chunk_rows(int64_t total_rows) const {
  if (loss_chunk_rows_ > 0) return loss_chunk_rows_;
  const int64_t budget = options_.device.is_cuda() ? int64_t{1} << 29 : int64_t{1} << 25;  // logits per chunk
  const int64_t vocab = std::max<int64_t>(1, config_.vocab_size / tp_.tp_size);              // this rank's columns
  const int64_t max_rows = std::max<int64_t>(1, budget / vocab);
  const int64_t rows = std::max<int64_t>(1, total_rows);
  const int64_t chunks = (rows + max_rows - 1) / max_rows;
  const int64_t even = (rows + chunks - 1) / chunks;
  // A multiple of 64 rows (GEMM tiles) when that stays within the budget.
  const int64_t rounded = (even + 63) / 64 * 64;
  return rounded <= max_rows ? rounded : even;
}

void TransformerLM::check_ids(const Tensor& ids, const char* what) const {
  LATTE_REQUIRE(ids.dim() == 2 && ids.dtype() == DType::I32, what, ": ids must be (B, T) i32, got ", ids.str());
  LATTE_REQUIRE(ids.device() == options_.device, what, ": ids on ", ids.device().str(), " but the model is on ",
                options_.device.str());
}

KVCache TransformerLM::make_cache(int64_t batch, int64_t capacity) const {
  return KVCache(config_, batch, capacity, options_.dtype, options_.device, tp_);
}

Tensor TransformerLM::run_blocks(Tensor h, const Tensor& ids, KVCache* cache, bool absorbed) const {
  const int64_t start = cache ? cache->length() : 0;
  const bool recompute = config_.recompute && !cache && autograd::grad_enabled();
  int64_t group = -1;
  Tensor gate_embed, gate_embed_context;  // (B, T, d_e), (B, S, d_e): looked up once per gate group
  for (int64_t i = 0; i < config_.n_layers; ++i) {
    const int64_t g = config_.gate_group(i);
    if (g >= 0 && g != group) {
      group = g;
      const GateTable& table = *gate_tables_.at(g);
      gate_embed = table.lookup(ids);
      gate_embed_context = Tensor();
      if (cache && cache->has_token_ids())
        gate_embed_context = table.lookup(cache->token_ids().narrow(1, 0, start + ids.size(1)));
    }
    AttentionContext ctx;
    ctx.start_pos = start;
    ctx.cache = cache ? &cache->layer(i) : nullptr;
    ctx.absorbed = absorbed;
    if (g >= 0) {
      ctx.gate_embed = gate_embed;
      ctx.gate_embed_context = gate_embed_context;
    }
    const TransformerBlock* block = blocks_[static_cast<size_t>(i)];
    if (!recompute) {
      h = block->forward(h, ctx);
      continue;
    }
    // Recompute: keep only the block's inputs (h and the group's gate embeddings); the gate embeddings are
    // a checkpoint input so that their gradient reaches the shared table through the recomputed graph.
    AttentionContext recompute_ctx = ctx;
    recompute_ctx.gate_embed = Tensor();  // handed in as in[1]; the closure must not pin the forward graph
    autograd::CheckpointFn fn = [block, recompute_ctx](const std::vector<Tensor>& in) {
      AttentionContext c = recompute_ctx;
      c.gate_embed = in[1];
      return std::vector<Tensor>{block->forward(in[0], c)};
    };
    h = autograd::checkpoint(fn, {h, ctx.gate_embed})[0];
  }
  return h;
}

Tensor TransformerLM::hidden(const Tensor& ids) const {
  check_ids(ids, "TransformerLM");
  LATTE_REQUIRE(ids.size(1) <= config_.max_seq_len, "sequence length ", ids.size(1), " exceeds model.max_seq_len ",
                config_.max_seq_len);
  Tensor h = tok_embed_->forward(ids);  // (B, T, d) (vocab-parallel under TP: summed over the ranks)
  h = run_blocks(h, ids, nullptr, false);
  return final_norm_->forward(tp_.enter(h));  // (B, T, d); the LM head's TP region opens before final_norm
}

Tensor TransformerLM::local_logits(const Tensor& ids) const { return linear(hidden(ids), output_weight()); }

Tensor TransformerLM::logits(const Tensor& ids) const {
  Tensor local = local_logits(ids);  // (B, T, V/tp)
  return tp_.enabled() ? dist::gather_from_tp(local, tp_.group("logits")) : local;  // (B, T, V)
}

Tensor TransformerLM::loss(const Tensor& ids, const Tensor& targets) const {
  LATTE_REQUIRE(targets.shape() == ids.shape() && targets.dtype() == DType::I32, "loss: targets must be i32 with the ids' shape ",
                ids.shape().str(), ", got ", targets.str());
  const int64_t N = ids.numel();
  Tensor flat_targets = targets.reshape({N});  // (N)
  // Counted on the host before the forward is queued, so the copy does not wait for the GPU.
  const std::vector<double> host_targets = flat_targets.to_vector();
  int64_t counted = 0;
  for (double t : host_targets) counted += t != -1;
  LATTE_REQUIRE(counted > 0, "loss: every target is -1 (ignored); the batch has nothing to learn from");
  Tensor h = hidden(ids);                          // (B, T, d)
  Tensor rows = h.reshape({N, config_.d_model});  // (N, d)
  if (tp_.enabled())
    return vocab_parallel_lm_head_cross_entropy(rows, output_weight(), flat_targets, host_targets, vocab_start(),
                                                config_.vocab_size, counted, loss_chunk_rows(N), tp_);
  return lm_head_cross_entropy(rows, output_weight(), flat_targets, counted, loss_chunk_rows(N));
}

Tensor TransformerLM::forward_cached(const Tensor& ids, KVCache& cache, bool absorbed) const {
  check_ids(ids, "forward_cached");
  LATTE_REQUIRE(cache.num_layers() == config_.n_layers, "forward_cached: the cache has ", cache.num_layers(),
                " layers but the model ", config_.n_layers, "; make the cache with model.make_cache()");
  for (int64_t i = 0; i < config_.n_layers; ++i) {
    const AttentionConfig& a = config_.layer_attention(i);
    const LayerKVCache& c = cache.layer(i);
    const int64_t have = a.is_latent() ? c.latent.size(2) : c.key.size(2);
    const int64_t want = a.is_latent() ? local_latent_dim(a, tp_) : local_kv_heads(a, tp_);
    LATTE_REQUIRE(have == want, "forward_cached: layer ", i, "'s cache holds ", have, a.is_latent() ? " latent channels" : " kv heads",
                  " but this model (tp rank ", tp_.tp_rank, " of ", tp_.tp_size, ", MLRA layout ",
                  mlra_tp_layout_name(tp_.mlra_layout), ") needs ", want, "; make the cache with model.make_cache()");
  }
  autograd::NoGradGuard no_grad;
  cache.write_token_ids(ids);  // checks batch and capacity
  Tensor h = tok_embed_->forward(ids);  // (B, t_new, d) (vocab-parallel under TP: summed over the ranks)
  h = run_blocks(h, ids, &cache, absorbed);
  cache.advance(ids.size(1));
  Tensor local = linear(final_norm_->forward(h), output_weight());  // (B, t_new, V/tp)
  return tp_.enabled() ? dist::gather_from_tp(local, tp_.group("forward_cached")) : local;  // (B, t_new, V)
}

}  // namespace latte
