// MLRA, multi-head low-rank attention (spec: "MLRA", arXiv 2603.02188). The latent is split into L
// blocks of d_l = d_c / L channels, each RMS-normed on its own; block b's up-projection wkv_b[b]
// (applied as C @ W) gives K^N/V for the H_b heads it serves. Each head sums `branches` independent
// attentions (one per block serving it), scaled by 1/sqrt(branches). Block b serves head group
// b mod G (G = L / branches): MLRA-4 (L = 4, 4 branches) every block serves every head; MLRA-2
// (L = 4, 2 branches) even blocks the first half of the heads, odd blocks the second.
// Tensor parallelism: Heads layout (training) splits the heads inside every block; Blocks layout (decoding,
// MlraTpLayout::Blocks) gives rank r the whole blocks r, r + tp, ... and only those are cached (latent()
// returns this rank's blocks); the module then computes as an MLRA with the local counts of MlraShard.
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
  int64_t local_heads_per_block_;   // H_b / tp (Heads layout: heads split inside each block), H_b (Blocks)
  ModuleList* kv_norms_ = nullptr;  // replicated: kv_norms.b (d_l) for b < L; absent when latent_norm is false
  std::vector<RMSNorm*> kv_norm_list_;
  BlockLinear* wkv_b_ = nullptr;    // column-parallel by head inside each block: (L, d_l, H_b (d_n + d_v) / tp);
                                    // Blocks layout: this rank's blocks whole, (L / tp, d_l, H_b (d_n + d_v))
};

}  // namespace latte
