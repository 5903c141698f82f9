// MHA / GQA / MQA forward (layers/attention/mha.h).
#include "layers/attention/mha.h"

#include "autograd/functions.h"
#include "layers/rope.h"

namespace latte {

MultiHeadAttention::MultiHeadAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                                       const TensorParallelContext& tp)
    : Attention(model, config, tp) {
  const int64_t d = model.d_model, dh = config.head_dim, n_kv = config.n_kv_heads;
  kv_replicated_ = n_kv % tp.tp_size != 0;
  LATTE_CHECK(!kv_replicated_ || tp.tp_size % n_kv == 0, "n_kv_heads ", n_kv, " and tp ", tp.tp_size);
  local_kv_heads_ = kv_replicated_ ? 1 : n_kv / tp.tp_size;
  kv_head_ = kv_replicated_ ? tp.tp_rank / (tp.tp_size / n_kv) : 0;
  const TensorParallel kv_parallel = kv_replicated_ ? TensorParallel::Replicated : TensorParallel::Column;
  const InitRule normal = InitRule::normal(model.init.std);
  wq_ = register_module("wq", std::make_unique<Linear>(d, config.n_heads * dh, options, normal, TensorParallel::Column, tp));
  wk_ = register_module("wk", std::make_unique<Linear>(d, n_kv * dh, options, normal, kv_parallel, tp));
  wv_ = register_module("wv", std::make_unique<Linear>(d, n_kv * dh, options, normal, kv_parallel, tp));
  wo_ = register_module("wo", std::make_unique<Linear>(config.n_heads * dh, d, options,
                                                       model.init.zero_out_proj ? InitRule::zeros() : normal,
                                                       TensorParallel::Row, tp));
  inv_freq_ = rope_inv_freq(dh, model.rope_base, model.rope_scaling, options.device);
}

Tensor MultiHeadAttention::forward(const Tensor& x, const AttentionContext& ctx) const {
  const int64_t B = x.size(0), T = x.size(1), dh = cfg_.head_dim;
  // This rank's kv projection: its shard, or (n_kv < tp) the rows of the one kv head its query heads read.
  auto kv_proj = [&](const Linear* w) {
    return kv_replicated_ ? linear(x, w->weight().narrow(0, kv_head_ * dh, dh)) : w->forward(x);  // (B, T, n_kv d_h / tp)
  };
  // q and k are rotated in place: each projection's output is theirs alone once the statement ends.
  Tensor q = wq_->forward(x).view({B, T, local_heads_, dh});     // (B, T, n_h/tp, d_h)
  Tensor k = kv_proj(wk_).view({B, T, local_kv_heads_, dh});     // (B, T, n_kv/tp, d_h)
  q = rope(std::move(q), inv_freq_, ctx.start_pos);
  k = rope(std::move(k), inv_freq_, ctx.start_pos);
  Tensor v = kv_proj(wv_).view({B, T, local_kv_heads_, dh});                                  // (B, T, n_kv/tp, d_h)
  Tensor o;
  if (ctx.cache) {
    k = append_to_cache(ctx.cache->key, k, ctx.start_pos);    // (B, S, n_kv/tp, d_h)
    v = append_to_cache(ctx.cache->value, v, ctx.start_pos);  // (B, S, n_kv/tp, d_h)
    // One token: the split-K decode op reads the cache in place (undefined when the device has no kernel).
    // Rows before start_pos were written by earlier steps: the kernel may load them while this step's append runs.
    if (T == 1)
      o = decode_attention(q.reshape({B, local_heads_, dh}), k, v, cfg_.softmax_scale(), ctx.start_pos);  // (B, n_h/tp, d_h)
  }
  if (!o.defined()) o = attention(q, k, v, 1, cfg_.softmax_scale(), true);  // (B, T, n_h/tp, d_h)
  o = o.reshape({B, T, local_heads_ * dh});
  return wo_->forward_add(o, ctx.residual);  // (B, T, d) (+ residual), all-reduced over TP
}

}  // namespace latte
