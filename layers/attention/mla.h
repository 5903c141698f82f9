// MLA, DeepSeek-V2 (spec: "MLA"): one latent c_t = RMSNorm(c~_t) * s_kv per token, up-projected by
// wkv_b into per-head [k^N | v] rows, plus one rotary key shared by all heads. Cache: d_c + d_r.
#pragma once
#include "layers/attention/latent_attention.h"

namespace latte {

class MultiHeadLatentAttention : public LatentAttention {
 public:
  MultiHeadLatentAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                           const TensorParallelContext& tp = {});

 protected:
  // For EG-MLA: with_kv_norm = false leaves kv_norm out (the latent-position gate norm replaces it).
  MultiHeadLatentAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                           const TensorParallelContext& tp, bool with_kv_norm);
  Tensor latent(const Tensor& c_raw, const AttentionContext& ctx) const override;
  void expand_kv(const Tensor& c, const AttentionContext& ctx, Tensor* k_nope, Tensor* value) const override;
  void absorbed_weights(Tensor* w_uk, Tensor* w_uv) const override;

  RMSNorm* kv_norm_ = nullptr;  // replicated (d_c); absent when latent_norm is false
  Linear* wkv_b_ = nullptr;     // column-parallel by head (n_h (d_n + d_v) / tp, d_c), per-head rows [k^N | v]
};

}  // namespace latte
