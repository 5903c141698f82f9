// Attention base and factory (layers/attention/attention.h).
#include "layers/attention/attention.h"

#include "layers/attention/egmla.h"
#include "layers/attention/mha.h"
#include "layers/attention/mla.h"
#include "layers/attention/mlra.h"

namespace latte {

Attention::Attention(const ModelConfig& model, const AttentionConfig& config)
    : cfg_(config), d_model_(model.d_model), norm_eps_(model.norm_eps), init_(model.init), local_heads_(config.n_heads) {}

std::unique_ptr<Attention> make_attention(const ModelConfig& model, int64_t layer, const ParamOptions& options) {
  const AttentionConfig& a = model.layer_attention(layer);
  switch (a.kind) {
    case AttentionKind::MHA: return std::make_unique<MultiHeadAttention>(model, a, options);
    case AttentionKind::MLA: return std::make_unique<MultiHeadLatentAttention>(model, a, options);
    case AttentionKind::EGMLA: return std::make_unique<EmbeddingGatedMLA>(model, a, options);
    case AttentionKind::MLRA: return std::make_unique<MultiHeadLowRankAttention>(model, a, options);
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
