// Embedding (layers/embedding.h).
#include "layers/embedding.h"

#include "autograd/functions.h"

namespace latte {

Embedding::Embedding(int64_t num_embeddings, int64_t dim, const ParamOptions& options, InitRule init) {
  weight_ = register_parameter("weight", {num_embeddings, dim}, options, init);
}

Tensor Embedding::forward(const Tensor& ids) const { return embedding(weight_, ids); }

}  // namespace latte
