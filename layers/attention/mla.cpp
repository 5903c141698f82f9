// MLA (layers/attention/mla.h).
#include "layers/attention/mla.h"

#include "autograd/functions.h"

namespace latte {

MultiHeadLatentAttention::MultiHeadLatentAttention(const ModelConfig& model, const AttentionConfig& config,
                                                   const ParamOptions& options, const TensorParallelContext& tp)
    : MultiHeadLatentAttention(model, config, options, tp, true) {}

MultiHeadLatentAttention::MultiHeadLatentAttention(const ModelConfig& model, const AttentionConfig& config,
                                                   const ParamOptions& options, const TensorParallelContext& tp,
                                                   bool with_kv_norm)
    : LatentAttention(model, config, options, tp) {
  build_query(options);
  build_wkv_a(options);
  if (with_kv_norm && config.latent_norm)
    kv_norm_ = register_module("kv_norm", std::make_unique<RMSNorm>(config.kv_rank, norm_eps_, options));
  wkv_b_ = register_module("wkv_b", std::make_unique<Linear>(config.kv_rank, config.n_heads * (config.nope_dim + config.v_dim),
                                                             options, InitRule::normal(init_.std), TensorParallel::Column, tp));
  build_wo(options);
}

Tensor MultiHeadLatentAttention::latent(const Tensor& c_raw, const AttentionContext&) const {
  Tensor c = kv_norm_ ? kv_norm_->forward(c_raw) : c_raw;  // (B, T, d_c)
  return scaled(c, cfg_.kv_rank);
}

void MultiHeadLatentAttention::expand_kv(const Tensor& c, const AttentionContext&, Tensor* k_nope, Tensor* value) const {
  const int64_t B = c.size(0), S = c.size(1), dn = cfg_.nope_dim, dv = cfg_.v_dim;
  std::vector<Tensor> kv = split(wkv_b_->forward(c).view({B, S, local_heads_, dn + dv}), {dn, dv}, 3);
  *k_nope = kv[0];  // (B, S, n_h/tp, d_n)
  *value = kv[1];   // (B, S, n_h/tp, d_v)
}

void MultiHeadLatentAttention::absorbed_weights(Tensor* w_uk, Tensor* w_uv) const {
  const int64_t dn = cfg_.nope_dim, dv = cfg_.v_dim;
  Tensor w = wkv_b_->weight().view({local_heads_, dn + dv, cfg_.kv_rank});  // (n_h, d_n + d_v, d_c)
  *w_uk = w.narrow(1, 0, dn);                                                // (n_h, d_n, d_c)
  *w_uv = w.narrow(1, dn, dv);                                               // (n_h, d_v, d_c)
}

}  // namespace latte
