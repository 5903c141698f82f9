// MHA / GQA / MQA forward (layers/attention/mha.h).
#include "layers/attention/mha.h"

#include "autograd/functions.h"
#include "layers/rope.h"

namespace latte {

MultiHeadAttention::MultiHeadAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options)
    : Attention(model, config), local_kv_heads_(config.n_kv_heads) {
  const int64_t d = model.d_model, dh = config.head_dim;
  const InitRule normal = InitRule::normal(model.init.std);
  wq_ = register_module("wq", std::make_unique<Linear>(d, local_heads_ * dh, options, normal, TensorParallel::Column));
  wk_ = register_module("wk", std::make_unique<Linear>(d, local_kv_heads_ * dh, options, normal, TensorParallel::Column));
  wv_ = register_module("wv", std::make_unique<Linear>(d, local_kv_heads_ * dh, options, normal, TensorParallel::Column));
  wo_ = register_module("wo", std::make_unique<Linear>(local_heads_ * dh, d, options,
                                                       model.init.zero_out_proj ? InitRule::zeros() : normal, TensorParallel::Row));
  inv_freq_ = rope_inv_freq(dh, model.rope_base, model.rope_scaling, options.device);
}

Tensor MultiHeadAttention::forward(const Tensor& x, const AttentionContext& ctx) const {
  const int64_t B = x.size(0), T = x.size(1), dh = cfg_.head_dim;
  Tensor q = rope(wq_->forward(x).view({B, T, local_heads_, dh}), inv_freq_, ctx.start_pos);     // (B, T, n_h, d_h)
  Tensor k = rope(wk_->forward(x).view({B, T, local_kv_heads_, dh}), inv_freq_, ctx.start_pos);  // (B, T, n_kv, d_h)
  Tensor v = wv_->forward(x).view({B, T, local_kv_heads_, dh});                                  // (B, T, n_kv, d_h)
  if (ctx.cache) {
    k = append_to_cache(ctx.cache->key, k, ctx.start_pos);    // (B, S, n_kv, d_h)
    v = append_to_cache(ctx.cache->value, v, ctx.start_pos);  // (B, S, n_kv, d_h)
  }
  Tensor o = attention(q, k, v, 1, cfg_.softmax_scale(), true);  // (B, T, n_h, d_h)
  return wo_->forward(o.reshape({B, T, local_heads_ * dh}));     // (B, T, d)
}

}  // namespace latte
