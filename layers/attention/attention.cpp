// Attention base and factory (layers/attention/attention.h).
#include "layers/attention/attention.h"

#include "layers/attention/egmla.h"
#include "layers/attention/mha.h"
#include "layers/attention/mla.h"
#include "layers/attention/mlra.h"

namespace latte {

Attention::Attention(const ModelConfig& model, const AttentionConfig& config, const TensorParallelContext& tp)
    : cfg_(config),
      d_model_(model.d_model),
      norm_eps_(model.norm_eps),
      init_(model.init),
      tp_(tp),
      local_heads_(mlra_shard(config, tp).heads),
      head_groups_(config.kind == AttentionKind::MLRA ? config.head_groups() : 1) {
  LATTE_CHECK(config.n_heads % tp.tp_size == 0 || (config.kind == AttentionKind::MLRA && tp.mlra_blocks()), "n_heads ",
              config.n_heads, " over tp ", tp.tp_size, " (check_tensor_parallel runs first)");
}

std::unique_ptr<Attention> make_attention(const ModelConfig& model, int64_t layer, const ParamOptions& options,
                                          const TensorParallelContext& tp) {
  const AttentionConfig& a = model.layer_attention(layer);
  switch (a.kind) {
    case AttentionKind::MHA: return std::make_unique<MultiHeadAttention>(model, a, options, tp);
    case AttentionKind::MLA: return std::make_unique<MultiHeadLatentAttention>(model, a, options, tp);
    case AttentionKind::EGMLA: return std::make_unique<EmbeddingGatedMLA>(model, a, options, tp);
    case AttentionKind::MLRA: return std::make_unique<MultiHeadLowRankAttention>(model, a, options, tp);
  }
  LATTE_FAIL("unknown attention kind");
}

Tensor append_to_cache(const Tensor& buffer, const Tensor& fresh, int64_t start) {
  const int64_t t_new = fresh.size(1);
  LATTE_CHECK(start + t_new <= buffer.size(1), "KV cache overflow: ", start, " + ", t_new, " > ", buffer.size(1));
  buffer.narrow(1, start, t_new).copy_(fresh.detach());
  return buffer.narrow(1, 0, start + t_new);
}

}  // namespace latte
