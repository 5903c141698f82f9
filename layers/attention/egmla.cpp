// EG-MLA (layers/attention/egmla.h).
#include "layers/attention/egmla.h"

#include <cmath>

#include "autograd/functions.h"

namespace latte {

EmbeddingGatedMLA::EmbeddingGatedMLA(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                                     const TensorParallelContext& tp)
    : MultiHeadLatentAttention(model, config, options, tp, /*with_kv_norm=*/config.gate_on_kv()) {
  const GateConfig& g = config.gate;
  // unit: wgate ~ N(0, 1/sqrt(d_e)) so that g_t (with e_t ~ N(0, 1)) starts at unit scale.
  const InitRule gate_init = g.init == GateInit::Unit ? InitRule::normal(1.0 / std::sqrt(static_cast<double>(g.embed_dim)))
                                                      : InitRule::normal(init_.std);
  const bool rms = g.norm == GateNormKind::RMSNorm;
  if (!config.gate_on_kv()) {
    wgate_ = register_module("wgate", std::make_unique<Linear>(g.embed_dim, config.kv_rank, options, gate_init,
                                                               TensorParallel::Replicated, tp));
    gate_norm_ = register_module("gate_norm", std::make_unique<GroupNorm>(config.kv_rank, 1, norm_eps_, rms, options));
  } else {
    const int64_t dn = config.nope_dim, dv = config.v_dim;
    const int64_t H = config.n_heads;  // full; the gate rows and the per-head norms are split by head like wkv_b
    wgate_ = register_module("wgate", std::make_unique<Linear>(g.embed_dim, H * (dn + dv), options, gate_init,
                                                               TensorParallel::Column, tp));
    gate_norm_k_ = register_module("gate_norm_k", std::make_unique<GroupNorm>(H * dn, H, norm_eps_, rms, options, tp, true));
    gate_norm_v_ = register_module("gate_norm_v", std::make_unique<GroupNorm>(H * dv, H, norm_eps_, rms, options, tp, true));
  }
}

Tensor EmbeddingGatedMLA::latent(const Tensor& c_raw, const AttentionContext& ctx) const {
  if (cfg_.gate_on_kv()) return MultiHeadLatentAttention::latent(c_raw, ctx);
  LATTE_CHECK(ctx.gate_embed.defined(), "EG-MLA needs the gate embeddings of its group");
  Tensor gate = wgate_->forward(ctx.gate_embed);               // (B, T, d_c)
  Tensor c = gate_norm_->forward(mul(c_raw.contiguous(), gate));  // (B, T, d_c)
  return scaled(c, cfg_.kv_rank);
}

void EmbeddingGatedMLA::expand_kv(const Tensor& c, const AttentionContext& ctx, Tensor* k_nope, Tensor* value) const {
  MultiHeadLatentAttention::expand_kv(c, ctx, k_nope, value);  // (B, S, n_h, d_n), (B, S, n_h, d_v)
  if (!cfg_.gate_on_kv()) return;
  // The gates of every key position: the whole context when decoding, the call's tokens in training.
  const Tensor& e = ctx.cache ? ctx.gate_embed_context : ctx.gate_embed;  // (B, S, d_e)
  LATTE_CHECK(e.defined() && e.size(1) == c.size(1), "EG-MLA(kv) needs gate embeddings for all ", c.size(1), " keys");
  const int64_t B = c.size(0), S = c.size(1), H = local_heads_, dn = cfg_.nope_dim, dv = cfg_.v_dim;
  // (B, S, n_h/tp, d_n), (B, S, n_h/tp, d_v): rows [g^K | g^V] per head
  std::vector<Tensor> gate = split(wgate_->forward(e).view({B, S, H, dn + dv}), {dn, dv}, 3);
  Tensor k = mul(k_nope->contiguous(), gate[0].contiguous()).reshape({B, S, H * dn});
  Tensor v = mul(value->contiguous(), gate[1].contiguous()).reshape({B, S, H * dv});
  *k_nope = gate_norm_k_->forward(k).view({B, S, H, dn});  // (B, S, n_h, d_n)
  *value = gate_norm_v_->forward(v).view({B, S, H, dv});   // (B, S, n_h, d_v)
}

}  // namespace latte
