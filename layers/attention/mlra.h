// MLRA, multi-head low-rank attention (spec: "MLRA", arXiv 2603.02188). The latent is split into L
// blocks of d_l = d_c / L channels, each RMS-normed on its own; block b's up-projection wkv_b[b]
// (applied as C @ W) gives K^N/V for the H_b heads it serves. Each head sums `branches` independent
// attentions (one per block serving it), scaled by 1/sqrt(branches). Block b serves head group
// b mod G (G = L / branches): MLRA-4 (L = 4, 4 branches) every block serves every head; MLRA-2
// (L = 4, 2 branches) even blocks the first half of the heads, odd blocks the second.
#pragma once
#include "layers/attention/latent_attention.h"

namespace latte {

class MultiHeadLowRankAttention : public LatentAttention {
 public:
  MultiHeadLowRankAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                            const TensorParallelContext& tp = {});

 protected:
  Tensor latent(const Tensor& c_raw, const AttentionContext& ctx) const override;
  void expand_kv(const Tensor& c, const AttentionContext& ctx, Tensor* k_nope, Tensor* value) const override;
  void absorbed_weights(Tensor* w_uk, Tensor* w_uv) const override;

 private:
  int64_t local_heads_per_block_;   // H_b / tp (heads are split inside each block under TP)
  ModuleList* kv_norms_ = nullptr;  // replicated: kv_norms.b (d_l) for b < L; absent when latent_norm is false
  std::vector<RMSNorm*> kv_norm_list_;
  BlockLinear* wkv_b_ = nullptr;    // column-parallel by head inside each block: (L, d_l, H_b (d_n + d_v) / tp)
};

}  // namespace latte
