// Token (and EG-MLA gate) embedding tables: weight (V, D), looked up by i32 ids.
#pragma once
#include "layers/module.h"

namespace latte {

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, const ParamOptions& options, InitRule init);
  Tensor forward(const Tensor& ids) const;  // ids i32 (...) -> (..., D)
  const Tensor& weight() const { return weight_; }  // (V, D)

 private:
  Tensor weight_;
};

}  // namespace latte
