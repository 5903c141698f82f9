// TensorParallelContext and the start-up divisibility checks (layers/tensor_parallel.h).
#include "layers/tensor_parallel.h"

#include <set>
#include <string>

#include "distributed/process_group.h"
#include "distributed/tp_mappings.h"
#include "layers/model_config.h"

namespace latte {

TensorParallelContext TensorParallelContext::of(dist::ProcessGroup* group) {
  if (!group || group->size() == 1) return {};
  return {group, group->rank(), group->size()};
}

TensorParallelContext TensorParallelContext::layout_only(int64_t tp_rank, int64_t tp_size) {
  LATTE_REQUIRE(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "tensor-parallel rank ", tp_rank, " of ", tp_size,
                " is impossible");
  return {nullptr, tp_rank, tp_size};
}

dist::ProcessGroup& TensorParallelContext::group(const char* what) const {
  LATTE_REQUIRE(tp_group != nullptr, what, ": this model was built for tensor-parallel rank ", tp_rank, " of ", tp_size,
                " without a process group (TensorParallelContext::layout_only); it holds shards but cannot run. "
                "Build it with TensorParallelContext::of(topology.tp_group().get())");
  LATTE_CHECK(tp_group->size() == tp_size && tp_group->rank() == tp_rank, "TP group ", tp_group->name(), " is rank ",
              tp_group->rank(), " of ", tp_group->size(), " but the context says ", tp_rank, " of ", tp_size);
  return *tp_group;
}

Tensor TensorParallelContext::enter(const Tensor& x) const {
  return enabled() ? dist::copy_to_tp(x, group("copy_to_tp")) : x;
}

Tensor TensorParallelContext::exit(const Tensor& x) const {
  return enabled() ? dist::reduce_from_tp(x, group("reduce_from_tp")) : x;
}

void check_tensor_parallel(const ModelConfig& config, int64_t tp) {
  LATTE_REQUIRE(tp >= 1, "parallel.tp must be >= 1, got ", tp);
  if (tp == 1) return;
  auto fix = [&](int64_t value) {
    std::string divisors;
    for (int64_t k = 1; k <= value; ++k)
      if (value % k == 0) divisors += (divisors.empty() ? "" : ", ") + std::to_string(k);
    return "; parallel.tp must divide it (one of " + divisors + ")";
  };
  LATTE_REQUIRE(config.vocab_size % tp == 0, "model.vocab_size (", config.vocab_size, ") does not divide by parallel.tp (", tp,
                "): the embedding and the LM head are split by vocabulary; pad the vocabulary to a multiple of ", tp,
                " (e.g. of 128)");
  LATTE_REQUIRE(config.ffn_dim % tp == 0, "model.ffn_dim (", config.ffn_dim, ") does not divide by parallel.tp (", tp, ")",
                fix(config.ffn_dim));
  std::set<const AttentionConfig*> seen;
  for (int64_t i = 0; i < config.n_layers; ++i) {
    const AttentionConfig& a = config.layer_attention(i);
    if (!seen.insert(&a).second) continue;
    const std::string key = a.kind == config.attention.kind
                                ? std::string("model.attention")
                                : std::string("model.attention_overrides.") + attention_kind_name(a.kind);
    LATTE_REQUIRE(a.n_heads % tp == 0, key, ".n_heads (", a.n_heads, ") does not divide by parallel.tp (", tp,
                  "): each rank holds n_heads / tp query heads", fix(a.n_heads));
    if (a.kind == AttentionKind::MHA)
      LATTE_REQUIRE(a.n_kv_heads % tp == 0 || tp % a.n_kv_heads == 0, key, ".n_kv_heads (", a.n_kv_heads,
                    ") and parallel.tp (", tp, ") must divide one another: either each rank holds n_kv_heads / tp kv heads, "
                    "or tp / n_kv_heads ranks share a replicated kv head");
    if (a.kind == AttentionKind::MLRA)
      LATTE_REQUIRE(a.heads_per_block() % tp == 0, key, ": each latent block serves ", a.heads_per_block(),
                    " heads (n_heads / (blocks / branches)), which does not divide by parallel.tp (", tp,
                    "); MLRA splits the heads inside every block", fix(a.heads_per_block()));
  }
}

}  // namespace latte
