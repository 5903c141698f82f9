// KVCache allocation and bookkeeping (layers/kv_cache.h).
#include "layers/kv_cache.h"

namespace latte {

KVCache::KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, DType dtype, Device device,
                 const TensorParallelContext& tp)
    : batch_(batch), capacity_(capacity) {
  LATTE_REQUIRE(batch > 0 && capacity > 0, "KV cache: batch (", batch, ") and capacity (", capacity,
                ") must be positive");
  LATTE_REQUIRE(capacity <= config.max_seq_len, "KV cache: capacity ", capacity, " exceeds model.max_seq_len ",
                config.max_seq_len, "; generate fewer tokens or raise max_seq_len");
  for (int64_t i = 0; i < config.n_layers; ++i) {
    const AttentionConfig& a = config.layer_attention(i);
    LayerKVCache c;
    if (a.is_latent()) {
      c.latent = Tensor::zeros({batch, capacity, local_latent_dim(a, tp)}, dtype, device);
      c.rope_key = Tensor::zeros({batch, capacity, a.rope_dim}, dtype, device);
    } else {
      c.key = Tensor::zeros({batch, capacity, local_kv_heads(a, tp), a.head_dim}, dtype, device);
      c.value = Tensor::zeros({batch, capacity, local_kv_heads(a, tp), a.head_dim}, dtype, device);
    }
    layers_.push_back(c);
  }
  if (config.needs_token_ids_in_cache()) token_ids_ = Tensor::zeros({batch, capacity}, DType::I32, device);
}

void KVCache::write_token_ids(const Tensor& ids) {
  LATTE_REQUIRE(ids.dim() == 2 && ids.size(0) == batch_, "KV cache: ids must be (", batch_, ", t_new), got ",
                ids.shape().str());
  LATTE_REQUIRE(length_ + ids.size(1) <= capacity_, "KV cache is full: ", length_, " cached + ", ids.size(1),
                " new > capacity ", capacity_);
  if (token_ids_.defined()) token_ids_.narrow(1, length_, ids.size(1)).copy_(ids);
}

void KVCache::advance(int64_t t_new) {
  LATTE_CHECK(length_ + t_new <= capacity_);
  length_ += t_new;
}

int64_t KVCache::bytes() const {
  int64_t n = token_ids_.defined() ? static_cast<int64_t>(token_ids_.nbytes()) : 0;
  for (const LayerKVCache& c : layers_)
    for (const Tensor* t : {&c.key, &c.value, &c.latent, &c.rope_key})
      if (t->defined()) n += static_cast<int64_t>(t->nbytes());
  return n;
}

}  // namespace latte
