// MLRA (layers/attention/mlra.h).
#include "layers/attention/mlra.h"

#include "autograd/functions.h"

namespace latte {

MultiHeadLowRankAttention::MultiHeadLowRankAttention(const ModelConfig& model, const AttentionConfig& config,
                                                     const ParamOptions& options, const TensorParallelContext& tp)
    : LatentAttention(model, config, options, tp), local_heads_per_block_(mlra_shard(config, tp).heads_per_block) {
  build_query(options);
  build_wkv_a(options);
  if (config.latent_norm) {
    kv_norms_ = register_module("kv_norms", std::make_unique<ModuleList>());
    for (int64_t b = 0; b < config.blocks; ++b)
      kv_norm_list_.push_back(kv_norms_->add(std::make_unique<RMSNorm>(config.block_dim(), norm_eps_, options)));
  }
  wkv_b_ = register_module("wkv_b", std::make_unique<BlockLinear>(config.blocks, config.block_dim(),
                                                                  config.heads_per_block() * (config.nope_dim + config.v_dim),
                                                                  options, InitRule::normal(init_.std), TensorParallel::Column,
                                                                  tp, /*split_blocks=*/tp.mlra_blocks()));
  build_wo(options);
}

Tensor MultiHeadLowRankAttention::latent(const Tensor& c_raw, const AttentionContext&) const {
  Tensor c = c_raw;  // (B, T, d_c) = L blocks of d_l
  if (!kv_norm_list_.empty()) {
    // One grouped RMSNorm with the blocks' gains side by side: block b is normalised over its own d_l channels.
    std::vector<Tensor> gains;
    for (RMSNorm* n : kv_norm_list_) gains.push_back(n->weight());
    c = group_norm(c_raw, concat(gains, 0), Tensor(), cfg_.blocks, norm_eps_, /*rms=*/true);
  }
  c = scaled(c, cfg_.block_dim());  // s_b = sqrt(d / d_l)
  if (!tp_.mlra_blocks()) return c;
  // Blocks layout: keep (and cache) only this rank's blocks r, r + tp, ...: (B, T, L/tp d_l).
  const int64_t B = c.size(0), T = c.size(1), n = tp_.tp_size;
  return c.contiguous().view({B, T, cfg_.blocks / n, n, cfg_.block_dim()}).narrow(3, tp_.tp_rank, 1).reshape(
      {B, T, local_blocks_ * cfg_.block_dim()});
}

void MultiHeadLowRankAttention::expand_kv(const Tensor& c, const AttentionContext&, Tensor* k_nope, Tensor* value) const {
  const int64_t B = c.size(0), S = c.size(1), L = local_blocks_, dn = cfg_.nope_dim, dv = cfg_.v_dim;
  Tensor kv = wkv_b_->forward(c.reshape({B, S, L, cfg_.block_dim()}));  // (B, S, L, H_b (d_n + d_v))
  // Block b, head h is virtual head j = b H_b + h = r n_h + i: the branch-major order attention() expects.
  kv = kv.reshape({B, S, L * local_heads_per_block_, dn + dv});          // (B, S, R n_h, d_n + d_v)
  *k_nope = kv.narrow(3, 0, dn);                                         // (B, S, R n_h, d_n)
  *value = kv.narrow(3, dn, dv);                                         // (B, S, R n_h, d_v)
}

void MultiHeadLowRankAttention::absorbed_weights(Tensor* w_uk, Tensor* w_uv) const {
  const int64_t L = local_blocks_, Hb = local_heads_per_block_, dl = cfg_.block_dim(), dn = cfg_.nope_dim, dv = cfg_.v_dim;
  Tensor w = wkv_b_->weight().view({L, dl, Hb, dn + dv});                        // (L, d_l, H_b, d_n + d_v)
  *w_uk = w.narrow(3, 0, dn).permute({0, 2, 3, 1}).reshape({L * Hb, dn, dl});   // (R n_h, d_n, d_l)
  *w_uv = w.narrow(3, dn, dv).permute({0, 2, 3, 1}).reshape({L * Hb, dv, dl});  // (R n_h, d_v, d_l)
}

}  // namespace latte
