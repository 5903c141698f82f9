// Token (and EG-MLA gate) embedding tables: weight (V, D), looked up by i32 ids.
// Vocab-parallel (the token embedding under tensor parallelism, Megatron's VocabParallelEmbedding):
// rank r holds rows [r V/tp, (r+1) V/tp); it looks up the ids in its range, leaves zeros elsewhere and
// the ranks' partial results are summed with reduce_from_tp, so every rank gets the full (..., D).
// The same shard serves as the tied LM head, which is split by vocabulary the same way.
#pragma once
#include "layers/module.h"
#include "layers/tensor_parallel.h"

namespace latte {

class Embedding : public Module {
 public:
  // num_embeddings is the full V. vocab_parallel with tp > 1: this rank holds V / tp rows.
  Embedding(int64_t num_embeddings, int64_t dim, const ParamOptions& options, InitRule init,
            const TensorParallelContext& tp = {}, bool vocab_parallel = false);
  Tensor forward(const Tensor& ids) const;  // ids i32 (...) -> (..., D)
  const Tensor& weight() const { return weight_; }  // (V_local, D)
  int64_t vocab_start() const { return vocab_start_; }  // first row held here (0 unless vocab-parallel)

 private:
  int64_t vocab_size_;       // full V
  int64_t vocab_start_ = 0;
  bool vocab_parallel_;
  TensorParallelContext tp_;
  Tensor weight_;
};

// The vocab-parallel lookup with its all-reduce: table (V_local, D) holds rows [vocab_start, vocab_start + V_local)
// of a V-row table; ids (...) in [0, V) -> (..., D) summed over the TP group.
Tensor vocab_parallel_embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start, int64_t vocab_size,
                                const TensorParallelContext& tp);

}  // namespace latte
