// The KV cache for incremental decoding. Each layer keeps what its variant needs per token
// (spec, "KV cache per token per layer"), in preallocated (B, capacity, ...) buffers of the model's
// dtype; entries [0, length) are valid:
//   MHA/GQA/MQA:           key (B, cap, n_kv, d_h) after RoPE, value (B, cap, n_kv, d_h)
//   MLA, MLRA, EG-MLA:     latent c_t (B, cap, d_c) after norm/gate/scale, rope_key k^R_t (B, cap, d_r) after RoPE
//   EG-MLA (kv position):  the same, plus the model-wide token ids (B, cap) i32 to rebuild the gates.
// forward_cached appends t_new positions to every layer, then advance(t_new) moves `length`.
// Under tensor parallelism (layers/tensor_parallel.h) each rank allocates what its shard attends over:
// n_kv / tp kv heads (1 when n_kv < tp), the whole latent (MLA, EG-MLA, MLRA Heads layout) or its latent
// blocks, d_c / tp channels (MLRA Blocks layout: d_l + d_r per token per layer at tp = blocks); the rope
// key and the token ids are on every rank. local_kv_elements_per_token() is the per-rank width.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "layers/model_config.h"
#include "layers/tensor_parallel.h"

namespace latte {

struct LayerKVCache {
  Tensor key;       // MHA family: (B, cap, n_kv / tp, d_h)
  Tensor value;     // MHA family: (B, cap, n_kv / tp, d_h)
  Tensor latent;    // MLA family: (B, cap, d_c) (MLRA Blocks layout: (B, cap, d_c / tp), this rank's blocks)
  Tensor rope_key;  // MLA family: (B, cap, d_r)
};

class KVCache {
 public:
  // tp: the TP rank's share (TransformerLM::make_cache passes the model's context); default: the whole cache.
  KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, DType dtype, Device device,
          const TensorParallelContext& tp = {});

  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // positions cached so far
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  LayerKVCache& layer(int64_t i) { return layers_.at(static_cast<size_t>(i)); }
  const LayerKVCache& layer(int64_t i) const { return layers_.at(static_cast<size_t>(i)); }
  bool has_token_ids() const { return token_ids_.defined(); }
  const Tensor& token_ids() const { return token_ids_; }  // (B, cap) i32, EG-MLA(kv) only

  // Stores ids (B, t_new) at positions [length, length + t_new) (a no-op without token ids) and
  // checks the capacity; called by the model before the layers append.
  void write_token_ids(const Tensor& ids);
  void advance(int64_t t_new);
  void reset() { length_ = 0; }
  int64_t bytes() const;  // device memory held by the cache (this rank's under TP)
  // bytes() per position of the capacity (all layers, the whole batch, token ids included): a context of N
  // positions needs N * bytes_per_position() on this device.
  int64_t bytes_per_position() const { return bytes() / capacity_; }

 private:
  int64_t batch_, capacity_, length_ = 0;
  std::vector<LayerKVCache> layers_;
  Tensor token_ids_;
};

}  // namespace latte
