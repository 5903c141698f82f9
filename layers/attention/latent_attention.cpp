// Shared MLA-family forward: query path, latent/rope-key split, plain and absorbed attention
// (layers/attention/latent_attention.h).
#include "layers/attention/latent_attention.h"

#include <cmath>

#include "autograd/functions.h"
#include "layers/rope.h"

namespace latte {

Tensor replicate_heads(const Tensor& x, int64_t branches) {
  if (branches == 1) return x;
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  return x.unsqueeze(2).expand({B, T, branches, H, D}).reshape({B, T, branches * H, D});
}

LatentAttention::LatentAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                                 const TensorParallelContext& tp)
    : Attention(model, config, tp) {
  inv_freq_ = rope_inv_freq(config.rope_dim, model.rope_base, model.rope_scaling, options.device);
}

void LatentAttention::build_query(const ParamOptions& options) {
  const InitRule normal = InitRule::normal(init_.std);
  const int64_t q_out = cfg_.n_heads * cfg_.qk_dim();  // full; this rank keeps its heads' rows
  if (cfg_.q_rank == 0) {
    wq_ = register_module("wq", std::make_unique<Linear>(d_model_, q_out, options, normal, TensorParallel::Column, tp_,
                                                         head_groups_));
    return;
  }
  wq_a_ = register_module("wq_a", std::make_unique<Linear>(d_model_, cfg_.q_rank, options, normal,
                                                           TensorParallel::Replicated, tp_));
  if (cfg_.latent_norm) q_norm_ = register_module("q_norm", std::make_unique<RMSNorm>(cfg_.q_rank, norm_eps_, options));
  wq_b_ = register_module("wq_b", std::make_unique<Linear>(cfg_.q_rank, q_out, options, normal, TensorParallel::Column, tp_,
                                                           head_groups_));
}

void LatentAttention::build_wkv_a(const ParamOptions& options) {
  wkv_a_ = register_module("wkv_a", std::make_unique<Linear>(d_model_, cfg_.kv_rank + cfg_.rope_dim, options,
                                                             InitRule::normal(init_.std), TensorParallel::Replicated, tp_));
}

void LatentAttention::build_wo(const ParamOptions& options) {
  const InitRule rule = init_.zero_out_proj ? InitRule::zeros() : InitRule::normal(init_.std);
  wo_ = register_module("wo", std::make_unique<Linear>(cfg_.n_heads * cfg_.v_dim, d_model_, options, rule, TensorParallel::Row,
                                                       tp_, head_groups_));
}

double LatentAttention::latent_scale_for(int64_t width) const {
  return cfg_.latent_scale ? std::sqrt(static_cast<double>(d_model_) / static_cast<double>(width)) : 1.0;
}

Tensor LatentAttention::scaled(const Tensor& x, int64_t width) const {
  return cfg_.latent_scale ? scale(x, latent_scale_for(width)) : x;
}

Tensor LatentAttention::query(const Tensor& x) const {
  if (wq_) return wq_->forward(x);
  Tensor cq = wq_a_->forward(x);              // (B, T, d_cq)
  if (q_norm_) cq = q_norm_->forward(cq);
  return wq_b_->forward(scaled(cq, cfg_.q_rank));  // (B, T, n_h d_qk)
}

Tensor LatentAttention::forward(const Tensor& x, const AttentionContext& ctx) const {
  const int64_t B = x.size(0), T = x.size(1), H = local_heads_;
  const int64_t dn = cfg_.nope_dim, dr = cfg_.rope_dim, dc = cfg_.kv_rank;
  // Queries [q^N | RoPE(q^R)] per head.
  Tensor q = rope(query(x).view({B, T, H, dn + dr}), inv_freq_, ctx.start_pos, dn);  // (B, T, n_h, d_qk)
  Tensor kv_a = wkv_a_->forward(x);                                                  // (B, T, d_c + d_r)
  Tensor k_rope = rope(kv_a.narrow(2, dc, dr).unsqueeze(2), inv_freq_, ctx.start_pos);  // (B, T, 1, d_r)
  Tensor c = latent(kv_a.narrow(2, 0, dc), ctx);                                     // (B, T, d_c)
  if (ctx.cache) {
    c = append_to_cache(ctx.cache->latent, c, ctx.start_pos);                                   // (B, S, d_c)
    k_rope = append_to_cache(ctx.cache->rope_key, k_rope.view({B, T, dr}), ctx.start_pos).unsqueeze(2);  // (B, S, 1, d_r)
  }
  const bool absorb = ctx.cache && ctx.absorbed && can_absorb();
  Tensor o = absorb ? attend_absorbed(q, c, k_rope) : attend_plain(q, c, k_rope, ctx);  // (B, T, R n_h, d_v)
  if (cfg_.branches > 1) o = branch_sum(o, cfg_.branches, 1.0 / std::sqrt(static_cast<double>(cfg_.branches)));
  return wo_->forward(o.reshape({B, T, H * cfg_.v_dim}));  // (B, T, d), all-reduced over TP
}

Tensor LatentAttention::attend_plain(const Tensor& q, const Tensor& c, const Tensor& k_rope,
                                     const AttentionContext& ctx) const {
  const int64_t B = c.size(0), S = c.size(1), RH = cfg_.branches * local_heads_;
  Tensor k_nope, value;
  expand_kv(c, ctx, &k_nope, &value);                                                // (B, S, R n_h, d_n), (B, S, R n_h, d_v)
  Tensor k = concat({k_nope, k_rope.expand({B, S, RH, cfg_.rope_dim})}, 3);          // (B, S, R n_h, d_qk)
  return attention(q, k, value, cfg_.branches, cfg_.softmax_scale(), true);          // (B, T, R n_h, d_v)
}

Tensor LatentAttention::attend_absorbed(const Tensor& q, const Tensor& c, const Tensor& k_rope) const {
  const int64_t B = q.size(0), T = q.size(1), S = c.size(1);
  const int64_t R = cfg_.branches, RH = R * local_heads_, L = cfg_.blocks, dl = cfg_.block_dim();
  const int64_t dn = cfg_.nope_dim, dr = cfg_.rope_dim, dv = cfg_.v_dim;
  Tensor w_uk, w_uv;
  absorbed_weights(&w_uk, &w_uv);  // (R n_h, d_n, d_l), (R n_h, d_v, d_l)
  // qa_j = q^N_i W_UK,j for virtual head j = r n_h + i, batched over j.
  Tensor q_nope = replicate_heads(q.narrow(3, 0, dn), R);                            // (B, T, R n_h, d_n)
  Tensor qa = matmul(q_nope.permute({2, 0, 1, 3}).reshape({RH, B * T, dn}), w_uk);  // (R n_h, B T, d_l)
  qa = qa.view({RH, B, T, dl}).permute({1, 2, 0, 3});                                // (B, T, R n_h, d_l)
  Tensor q_abs = concat({qa, replicate_heads(q.narrow(3, dn, dr), R)}, 3);           // (B, T, R n_h, d_l + d_r)
  Tensor latents = c.reshape({B, S, L, dl});                                          // (B, S, L, d_l)
  Tensor k_abs = concat({latents, k_rope.expand({B, S, L, dr})}, 3);                 // (B, S, L, d_l + d_r)
  // Virtual head j reads kv head j / (R n_h / L) = its block: the GQA mapping, one branch.
  Tensor z = attention(q_abs, k_abs, latents, 1, cfg_.softmax_scale(), true);        // (B, T, R n_h, d_l)
  Tensor o = matmul(z.permute({2, 0, 1, 3}).reshape({RH, B * T, dl}), w_uv, false, true);  // (R n_h, B T, d_v)
  return o.view({RH, B, T, dv}).permute({1, 2, 0, 3});                               // (B, T, R n_h, d_v)
}

}  // namespace latte
