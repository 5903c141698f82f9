// MHA / GQA / MQA (spec: "MHA / GQA / MQA"): RoPE over the whole head, query head i reads kv head
// floor(i / (n_h / n_kv)). Cache: post-RoPE keys and values, 2 n_kv d_h elements per token.
#pragma once
#include "layers/attention/attention.h"
#include "layers/linear.h"

namespace latte {

class MultiHeadAttention : public Attention {
 public:
  MultiHeadAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options);
  Tensor forward(const Tensor& x, const AttentionContext& ctx) const override;

 private:
  int64_t local_kv_heads_;  // n_kv / tp (tp = 1 now)
  Tensor inv_freq_;         // (d_h / 2) f32
  // Column-parallel by head:
  Linear* wq_;  // (n_h d_h, d)
  Linear* wk_;  // (n_kv d_h, d)
  Linear* wv_;  // (n_kv d_h, d)
  // Row-parallel:
  Linear* wo_;  // (d, n_h d_h)
};

}  // namespace latte
