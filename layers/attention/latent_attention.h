// The part MLA, EG-MLA and MLRA share (spec: "MLA"): the query path (wq, or wq_a -> q_norm -> wq_b),
// the down-projection wkv_a to [c~_t | k^R_t], the shared rotary key, the output projection wo,
// and the two ways of attending:
//   plain     rebuild per-head K^N/V from the latents (variant hook expand_kv), attend with
//             k = [k^N | k^R], then sum the branches (MLRA);
//   absorbed  (decoding) fold W_UK into the query and W_UV into the output and attend directly over
//             the cached latents: qa = q^N W_UK (width d_l), score qa.c_j + q^R.k^R_j, z = sum p c_j,
//             o = W_UV z. Every (branch, head) pair is a virtual head j = r n_h + i whose latent block
//             is j / H_b, which is exactly attention()'s GQA mapping with one kv head per block.
// Variants supply the latent c_t (norm / gate / scale), the K^N/V expansion and W_UK/W_UV.
// Tensor parallelism: the query projection (wq / wq_b) and wo are split by head (MLRA: by head inside
// each head group, see head_groups_); the latent path (wq_a, q_norm, wkv_a, the latent norms) and the
// shared rope key are replicated: every rank computes c_t and k^R_t in full and expands only its heads.
// MLRA's decode layout (MlraTpLayout::Blocks) keeps wq / wq_b / wo whole instead and uses the rows /
// columns of the head groups its latent blocks serve (head_ranges_), then all-reduces wo's output.
// Decoding one token per step (T = 1) runs the absorbed path through the split-K latent decode op, one
// call per latent block held, and MHA through the GQA decode op, where the device supports the shapes.
#pragma once
#include <utility>
#include <vector>

#include "layers/attention/attention.h"
#include "layers/linear.h"
#include "layers/norm.h"

namespace latte {

class LatentAttention : public Attention {
 public:
  LatentAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                  const TensorParallelContext& tp);
  Tensor forward(const Tensor& x, const AttentionContext& ctx) const override;

 protected:
  // Variant hooks.
  // c_raw (B, T, d_c) = c~_t -> c_t (B, T, d_c), the cached latent.
  virtual Tensor latent(const Tensor& c_raw, const AttentionContext& ctx) const = 0;
  // c (B, S, d_c) -> k_nope (B, S, R n_h, d_n), value (B, S, R n_h, d_v), virtual head j = r n_h + i.
  virtual void expand_kv(const Tensor& c, const AttentionContext& ctx, Tensor* k_nope, Tensor* value) const = 0;
  // W_UK (R n_h, d_n, d_l) and W_UV (R n_h, d_v, d_l) per virtual head.
  virtual void absorbed_weights(Tensor* w_uk, Tensor* w_uv) const = 0;
  virtual bool can_absorb() const { return true; }

  // Builders, called by the variant constructors in the order the parameters should be listed.
  void build_query(const ParamOptions& options);
  void build_wkv_a(const ParamOptions& options);
  void build_wo(const ParamOptions& options);
  // sqrt(d / width) when latent_scale, else 1 (the MLRA paper's variance scaling).
  double latent_scale_for(int64_t width) const;
  Tensor scaled(const Tensor& x, int64_t width) const;

  // What this rank holds of the latent (MlraShard; 1 and 1 for MLA / EG-MLA): local blocks L' and branches R'.
  int64_t local_blocks_ = 1;
  int64_t local_branches_ = 1;
  // MLRA Blocks layout: the query heads served here as (first head, count) ranges of the full head list;
  // empty otherwise (wq / wo are then this rank's shards and used whole).
  std::vector<std::pair<int64_t, int64_t>> head_ranges_;
  bool block_layout() const { return !head_ranges_.empty(); }

  Tensor inv_freq_;          // (d_r / 2) f32
  // Query: wq (d_cq = 0) or wq_a -> q_norm -> wq_b.
  Linear* wq_ = nullptr;     // column-parallel (n_h (d_n + d_r) / tp, d)
  Linear* wq_a_ = nullptr;   // replicated (d_cq, d)
  RMSNorm* q_norm_ = nullptr;  // replicated (d_cq); absent when latent_norm is false
  Linear* wq_b_ = nullptr;   // column-parallel (n_h (d_n + d_r) / tp, d_cq)
  Linear* wkv_a_ = nullptr;  // replicated (d_c + d_r, d)
  Linear* wo_ = nullptr;     // row-parallel (d, n_h d_v / tp)

 private:
  Tensor query(const Tensor& x) const;  // (B, T, d) -> (B, T, n_h (d_n + d_r))
  // x (..., in) through the rows of `w` (out, in) that belong to the local heads, per_head rows each.
  Tensor head_rows(const Tensor& x, const Linear& w, int64_t per_head) const;
  // (B, T, n_h d_v) -> (B, T, d), all-reduced over TP; plus `residual` when defined
  Tensor output(const Tensor& o, const Tensor& residual) const;
  Tensor attend_plain(const Tensor& q, const Tensor& c, const Tensor& k_rope, const AttentionContext& ctx) const;
  // ready_rows: cache rows written before this step (its start position), which the decode kernel may load early.
  Tensor attend_absorbed(const Tensor& q, const Tensor& c, const Tensor& k_rope, int64_t ready_rows) const;
};

// x (B, T, H, D) -> (B, T, R H, D) with slot r H + i = x[..., i, :] (query heads shared by the branches).
Tensor replicate_heads(const Tensor& x, int64_t branches);

}  // namespace latte
