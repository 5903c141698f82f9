// MHA / GQA / MQA (spec: "MHA / GQA / MQA"): RoPE over the whole head, query head i reads kv head
// floor(i / (n_h / n_kv)). Cache: post-RoPE keys and values, 2 n_kv d_h elements per token.
// Tensor parallelism: rank r holds query heads [r n_h/tp, (r+1) n_h/tp). With n_kv % tp == 0 it also
// holds kv heads [r n_kv/tp, ...) (wk, wv column-parallel). With n_kv < tp (tp % n_kv == 0) all of
// rank r's query heads read the single kv head r / (tp / n_kv): wk and wv are then replicated (they are
// at most tp - 1 heads) and each rank projects only the rows of its kv head; their gradients are
// partial sums like every replicated parameter's (layers/tensor_parallel.h).
#pragma once
#include "layers/attention/attention.h"
#include "layers/linear.h"

namespace latte {

class MultiHeadAttention : public Attention {
 public:
  MultiHeadAttention(const ModelConfig& model, const AttentionConfig& config, const ParamOptions& options,
                     const TensorParallelContext& tp = {});
  Tensor forward(const Tensor& x, const AttentionContext& ctx) const override;

 private:
  bool kv_replicated_ = false;  // n_kv < tp: full wk / wv on every rank, rows of kv head kv_head_ used
  int64_t kv_head_ = 0;         // the kv head this rank reads when kv_replicated_
  int64_t local_kv_heads_;      // n_kv / tp, or 1 when kv_replicated_
  Tensor inv_freq_;             // (d_h / 2) f32
  // Column-parallel by head:
  Linear* wq_;  // (n_h d_h / tp, d)
  Linear* wk_;  // (n_kv d_h / tp, d); replicated (n_kv d_h, d) when kv_replicated_
  Linear* wv_;  // as wk
  // Row-parallel:
  Linear* wo_;  // (d, n_h d_h / tp)
};

}  // namespace latte
