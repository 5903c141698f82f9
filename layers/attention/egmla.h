// EG-MLA, embedding-gated MLA (spec: "EG-MLA"; our reconstruction, switches in GateConfig). MLA plus
// a per-token gate g_t = wgate e_t, where e_t = gates.g.embed[x_t] is looked up by the model once per
// group of share_layers layers and handed in through AttentionContext.
//   latent position: c_t = Norm(c~_t * g_t) * s_kv (gate_norm replaces kv_norm); decoding absorbs as MLA.
//   kv position:     k^N = Norm_k(k^N * g^K), v = Norm_v(v * g^V) per head after wkv_b; decoding rebuilds
//                    K/V from the cached latents and the cached token ids' gate embeddings.
#pragma once
#include "layers/attention/mla.h"

namespace latte {

class EmbeddingGatedMLA : public MultiHeadLatentAttention {
 public:
  EmbeddingGatedMLA(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                    const TensorParallelContext& tp = {});

 protected:
  Tensor latent(const Tensor& c_raw, const AttentionContext& ctx) const override;
  void expand_kv(const Tensor& c, const AttentionContext& ctx, Tensor* k_nope, Tensor* value) const override;
  bool can_absorb() const override { return !cfg_.gate_on_kv(); }

 private:
  Linear* wgate_ = nullptr;           // latent: replicated (d_c, d_e); kv: column-parallel (n_h (d_n + d_v) / tp, d_e)
  GroupNorm* gate_norm_ = nullptr;    // latent position, replicated (d_c)
  GroupNorm* gate_norm_k_ = nullptr;  // kv position, per head, split by head (n_h d_n / tp)
  GroupNorm* gate_norm_v_ = nullptr;  // kv position, per head, split by head (n_h d_v / tp)
};

}  // namespace latte
