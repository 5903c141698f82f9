// Embedding and the vocab-parallel lookup (layers/embedding.h).
#include "layers/embedding.h"

#include "autograd/functions.h"

namespace latte {

Embedding::Embedding(int64_t num_embeddings, int64_t dim, const ParamOptions& options, InitRule init,
                     const TensorParallelContext& tp, bool vocab_parallel)
    : vocab_size_(num_embeddings), vocab_parallel_(vocab_parallel && tp.enabled()), tp_(tp) {
  ParamShard shard{vocab_parallel_ ? ShardLayout::split_dim(0) : ShardLayout::replicated(), tp.tp_rank, tp.tp_size};
  const Shape local = shard_shape({num_embeddings, dim}, shard.layout, tp.tp_size);
  if (vocab_parallel_) vocab_start_ = tp.tp_rank * local[0];
  weight_ = register_parameter("weight", local, options, init, shard);
}

Tensor Embedding::forward(const Tensor& ids) const {
  if (!vocab_parallel_) return embedding(weight_, ids);
  return vocab_parallel_embedding(weight_, ids, vocab_start_, vocab_size_, tp_);
}

Tensor vocab_parallel_embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start, int64_t vocab_size,
                                const TensorParallelContext& tp) {
  LATTE_REQUIRE(ids.dtype() == DType::I32, "embedding: ids must be i32, got ", dtype_name(ids.dtype()));
  const int64_t N = ids.numel(), D = table.size(1), V_local = table.size(0);
  const Device device = table.device();
  // The ids are split on the host (one copy of N ints; the loader produced them there): this rank's rows
  // are looked up compactly, then placed by an inverse index whose extra last entry is a zero row.
  std::vector<double> local_ids, inverse(static_cast<size_t>(N));
  const std::vector<double> all = ids.to_vector();
  for (int64_t n = 0; n < N; ++n) {
    const int64_t id = static_cast<int64_t>(all[static_cast<size_t>(n)]);
    LATTE_REQUIRE(id >= 0 && id < vocab_size, "embedding: token id ", id, " at position ", n, " is out of range [0, ",
                  vocab_size, "); is the model's vocab_size smaller than the tokenizer's?");
    if (id >= vocab_start && id < vocab_start + V_local) {
      inverse[static_cast<size_t>(n)] = static_cast<double>(local_ids.size());
      local_ids.push_back(static_cast<double>(id - vocab_start));
    } else {
      inverse[static_cast<size_t>(n)] = -1;
    }
  }
  const double zero_row = static_cast<double>(local_ids.size());
  for (double& k : inverse)
    if (k < 0) k = zero_row;
  Tensor zero = Tensor::zeros({1, D}, table.dtype(), device);
  Tensor rows = local_ids.empty()
                    ? zero
                    : concat({embedding(table, Tensor::from_vector(local_ids, {static_cast<int64_t>(local_ids.size())},
                                                                   DType::I32, device)),
                              zero},
                             0);                                                            // (n_local + 1, D)
  Tensor out = embedding(rows, Tensor::from_vector(inverse, ids.shape(), DType::I32, device));  // (..., D), zeros elsewhere
  return tp.exit(out);
}

}  // namespace latte
