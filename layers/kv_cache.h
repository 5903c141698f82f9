// The KV cache for incremental decoding. Each layer keeps what its variant needs per token
// (spec, "KV cache per token per layer"), in preallocated (B, capacity, ...) buffers of the model's
// dtype; entries [0, length) are valid:
//   MHA/GQA/MQA:           key (B, cap, n_kv, d_h) after RoPE, value (B, cap, n_kv, d_h)
//   MLA, MLRA, EG-MLA:     latent c_t (B, cap, d_c) after norm/gate/scale, rope_key k^R_t (B, cap, d_r) after RoPE
//   EG-MLA (kv position):  the same, plus the model-wide token ids (B, cap) i32 to rebuild the gates.
// forward_cached appends t_new positions to every layer, then advance(t_new) moves `length`.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "layers/model_config.h"

namespace latte {

struct LayerKVCache {
  Tensor key;       // MHA family: (B, cap, n_kv, d_h)
  Tensor value;     // MHA family: (B, cap, n_kv, d_h)
  Tensor latent;    // MLA family: (B, cap, d_c)
  Tensor rope_key;  // MLA family: (B, cap, d_r)
};

class KVCache {
 public:
  KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, DType dtype, Device device);

  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // positions cached so far
  LayerKVCache& layer(int64_t i) { return layers_.at(static_cast<size_t>(i)); }
  const LayerKVCache& layer(int64_t i) const { return layers_.at(static_cast<size_t>(i)); }
  bool has_token_ids() const { return token_ids_.defined(); }
  const Tensor& token_ids() const { return token_ids_; }  // (B, cap) i32, EG-MLA(kv) only

  // Stores ids (B, t_new) at positions [length, length + t_new) (a no-op without token ids) and
  // checks the capacity; called by the model before the layers append.
  void write_token_ids(const Tensor& ids);
  void advance(int64_t t_new);
  void reset() { length_ = 0; }
  int64_t bytes() const;  // device memory held by the cache

 private:
  int64_t batch_, capacity_, length_ = 0;
  std::vector<LayerKVCache> layers_;
  Tensor token_ids_;
};

}  // namespace latte
