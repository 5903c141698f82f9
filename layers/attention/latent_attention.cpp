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
  const MlraShard shard = mlra_shard(config, tp);  // MLA / EG-MLA: one block, one branch
  local_blocks_ = shard.blocks;
  local_branches_ = shard.branches;
  if (config.kind == AttentionKind::MLRA && tp.mlra_blocks()) {
    const int64_t Hb = config.heads_per_block();
    for (int64_t g : shard.head_groups) {
      if (!head_ranges_.empty() && head_ranges_.back().first + head_ranges_.back().second == g * Hb)
        head_ranges_.back().second += Hb;
      else
        head_ranges_.emplace_back(g * Hb, Hb);
    }
  }
}

void LatentAttention::build_query(const ParamOptions& options) {
  const InitRule normal = InitRule::normal(init_.std);
  const int64_t q_out = cfg_.n_heads * cfg_.qk_dim();  // full; this rank keeps its heads' rows
  // MLRA's Blocks layout keeps the whole query projection and uses the rows of the heads it serves.
  const TensorParallel by_head = block_layout() ? TensorParallel::Replicated : TensorParallel::Column;
  if (cfg_.q_rank == 0) {
    wq_ = register_module("wq", std::make_unique<Linear>(d_model_, q_out, options, normal, by_head, tp_, head_groups_));
    return;
  }
  wq_a_ = register_module("wq_a", std::make_unique<Linear>(d_model_, cfg_.q_rank, options, normal,
                                                           TensorParallel::Replicated, tp_));
  if (cfg_.latent_norm) q_norm_ = register_module("q_norm", std::make_unique<RMSNorm>(cfg_.q_rank, norm_eps_, options));
  wq_b_ = register_module("wq_b", std::make_unique<Linear>(cfg_.q_rank, q_out, options, normal, by_head, tp_, head_groups_));
}

void LatentAttention::build_wkv_a(const ParamOptions& options) {
  wkv_a_ = register_module("wkv_a", std::make_unique<Linear>(d_model_, cfg_.kv_rank + cfg_.rope_dim, options,
                                                             InitRule::normal(init_.std), TensorParallel::Replicated, tp_));
}

void LatentAttention::build_wo(const ParamOptions& options) {
  const InitRule rule = init_.zero_out_proj ? InitRule::zeros() : InitRule::normal(init_.std);
  wo_ = register_module("wo", std::make_unique<Linear>(cfg_.n_heads * cfg_.v_dim, d_model_, options, rule,
                                                       block_layout() ? TensorParallel::Replicated : TensorParallel::Row,
                                                       tp_, head_groups_));
}

double LatentAttention::latent_scale_for(int64_t width) const {
  return cfg_.latent_scale ? std::sqrt(static_cast<double>(d_model_) / static_cast<double>(width)) : 1.0;
}

Tensor LatentAttention::scaled(const Tensor& x, int64_t width) const {
  return cfg_.latent_scale ? scale(x, latent_scale_for(width)) : x;
}

Tensor LatentAttention::head_rows(const Tensor& x, const Linear& w, int64_t per_head) const {
  if (!block_layout()) return w.forward(x);
  std::vector<Tensor> parts;
  for (const auto& [first, count] : head_ranges_)
    parts.push_back(linear(x, w.weight().narrow(0, first * per_head, count * per_head)));  // (..., count per_head)
  return parts.size() == 1 ? parts[0] : concat(parts, x.dim() - 1);
}

Tensor LatentAttention::output(const Tensor& o, const Tensor& residual) const {
  if (!block_layout()) return wo_->forward_add(o, residual);  // all-reduced over TP
  // The wo columns of the heads served here; the all-reduce adds the other ranks' heads and branches.
  const int64_t dv = cfg_.v_dim;
  Tensor out;
  int64_t at = 0;  // first local head of the range
  for (const auto& [first, count] : head_ranges_) {
    Tensor part = linear(o.narrow(o.dim() - 1, at * dv, count * dv), wo_->weight().narrow(1, first * dv, count * dv));
    out = out.defined() ? add(out, part) : part;  // (B, T, d)
    at += count;
  }
  out = tp_.exit(out);
  return residual.defined() ? add(residual, out) : out;
}

Tensor LatentAttention::query(const Tensor& x) const {
  const int64_t qk = cfg_.qk_dim();
  if (wq_) return head_rows(x, *wq_, qk);
  Tensor cq = wq_a_->forward(x);              // (B, T, d_cq)
  if (q_norm_) cq = q_norm_->forward(cq);
  return head_rows(scaled(cq, cfg_.q_rank), *wq_b_, qk);  // (B, T, n_h d_qk)
}

Tensor LatentAttention::forward(const Tensor& x, const AttentionContext& ctx) const {
  const int64_t B = x.size(0), T = x.size(1), H = local_heads_;
  const int64_t dn = cfg_.nope_dim, dr = cfg_.rope_dim, dc = cfg_.kv_rank;
  // Queries [q^N | RoPE(q^R)] per head, rotated in place: the projection's output is q's alone.
  Tensor q = query(x).view({B, T, H, dn + dr});       // (B, T, n_h, d_qk)
  q = rope(std::move(q), inv_freq_, ctx.start_pos, dn);
  std::vector<Tensor> kv_a = split(wkv_a_->forward(x), {dc, dr}, 2);                // (B, T, d_c), (B, T, d_r)
  Tensor k_rope = rope(kv_a[1].unsqueeze(2), inv_freq_, ctx.start_pos);               // (B, T, 1, d_r)
  Tensor c = latent(kv_a[0], ctx);                                                    // (B, T, d_c)
  if (ctx.cache) {
    c = append_to_cache(ctx.cache->latent, c, ctx.start_pos);                                   // (B, S, d_c)
    k_rope = append_to_cache(ctx.cache->rope_key, k_rope.view({B, T, dr}), ctx.start_pos).unsqueeze(2);  // (B, S, 1, d_r)
  }
  const bool absorb = ctx.cache && ctx.absorbed && can_absorb();
  // (B, T, R' n_h, d_v); absorbed decode: the cache rows before start_pos were written by earlier steps
  Tensor o = absorb ? attend_absorbed(q, c, k_rope, ctx.start_pos) : attend_plain(q, c, k_rope, ctx);
  // 1/sqrt(R) over all R branches of a head; those held on other ranks (MLRA Blocks) come with wo's all-reduce.
  const double branch_scale = 1.0 / std::sqrt(static_cast<double>(cfg_.branches));
  if (local_branches_ > 1) o = branch_sum(o, local_branches_, branch_scale);  // (B, T, n_h, d_v)
  else if (cfg_.branches > 1) o = scale(o, branch_scale);
  return output(o.reshape({B, T, H * cfg_.v_dim}), ctx.residual);  // (B, T, d), all-reduced over TP
}

Tensor LatentAttention::attend_plain(const Tensor& q, const Tensor& c, const Tensor& k_rope,
                                     const AttentionContext& ctx) const {
  const int64_t B = c.size(0), S = c.size(1), RH = local_branches_ * local_heads_;
  Tensor k_nope, value;
  expand_kv(c, ctx, &k_nope, &value);                                                // (B, S, R n_h, d_n), (B, S, R n_h, d_v)
  Tensor k = concat({k_nope, k_rope.expand({B, S, RH, cfg_.rope_dim})}, 3);          // (B, S, R n_h, d_qk)
  return attention(q, k, value, local_branches_, cfg_.softmax_scale(), true);        // (B, T, R n_h, d_v)
}

Tensor LatentAttention::attend_absorbed(const Tensor& q, const Tensor& c, const Tensor& k_rope, int64_t ready_rows) const {
  const int64_t B = q.size(0), T = q.size(1), S = c.size(1);
  const int64_t R = local_branches_, RH = R * local_heads_, L = local_blocks_, dl = cfg_.block_dim();
  const int64_t dn = cfg_.nope_dim, dr = cfg_.rope_dim, dv = cfg_.v_dim;
  Tensor w_uk, w_uv;
  absorbed_weights(&w_uk, &w_uv);  // (R n_h, d_n, d_l), (R n_h, d_v, d_l)
  // qa_j = q^N_i W_UK,j for virtual head j = r n_h + i, batched over j.
  Tensor q_nope = replicate_heads(q.narrow(3, 0, dn), R);                            // (B, T, R n_h, d_n)
  Tensor qa = matmul(q_nope.permute({2, 0, 1, 3}).reshape({RH, B * T, dn}), w_uk);  // (R n_h, B T, d_l)
  qa = qa.view({RH, B, T, dl}).permute({1, 2, 0, 3});                                // (B, T, R n_h, d_l)
  Tensor q_rope = replicate_heads(q.narrow(3, dn, dr), R);                           // (B, T, R n_h, d_r)
  Tensor latents = c.reshape({B, S, L, dl});                                          // (B, S, L, d_l), a view of the cache
  Tensor z;                                                                           // (B, T, R n_h, d_l)
  if (T == 1) {
    // One token: the split-K decode op per latent block, which reads the cache in place (no [c | k^R] copy).
    // Block k serves the virtual heads [k H_b, (k+1) H_b).
    const int64_t Hb = RH / L;
    Tensor qa3 = qa.reshape({B, RH, dl}), qr3 = q_rope.reshape({B, RH, dr}), kr = k_rope.reshape({B, S, dr});
    std::vector<Tensor> per_block;
    for (int64_t k = 0; k < L; ++k) {
      Tensor zk = decode_attention_latent(qa3.narrow(1, k * Hb, Hb), qr3.narrow(1, k * Hb, Hb), latents.select(2, k), kr,
                                          cfg_.softmax_scale(), ready_rows);  // (B, H_b, d_l)
      if (!zk.defined()) break;  // no kernel for these tensors on this device
      per_block.push_back(zk);
    }
    if (static_cast<int64_t>(per_block.size()) == L)
      z = (L == 1 ? per_block[0] : concat(per_block, 1)).view({B, 1, RH, dl});
  }
  if (!z.defined()) {
    Tensor q_abs = concat({qa, q_rope}, 3);                                           // (B, T, R n_h, d_l + d_r)
    Tensor k_abs = concat({latents, k_rope.expand({B, S, L, dr})}, 3);               // (B, S, L, d_l + d_r)
    // Virtual head j reads kv head j / (R n_h / L) = its block: the GQA mapping, one branch.
    z = attention(q_abs, k_abs, latents, 1, cfg_.softmax_scale(), true);             // (B, T, R n_h, d_l)
  }
  Tensor o = matmul(z.permute({2, 0, 1, 3}).reshape({RH, B * T, dl}), w_uv, false, true);  // (R n_h, B T, d_v)
  return o.view({RH, B, T, dv}).permute({1, 2, 0, 3});                               // (B, T, R n_h, d_v)
}

}  // namespace latte
