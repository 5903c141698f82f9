// TensorParallelContext and the start-up divisibility checks (layers/tensor_parallel.h).
#include "layers/tensor_parallel.h"

#include <algorithm>
#include <set>
#include <string>

#include "distributed/process_group.h"
#include "distributed/tp_mappings.h"
#include "layers/model_config.h"

namespace latte {

const char* mlra_tp_layout_name(MlraTpLayout layout) { return layout == MlraTpLayout::Blocks ? "blocks" : "heads"; }

MlraTpLayout parse_mlra_tp_layout(const std::string& name, const std::string& where) {
  if (name == "heads") return MlraTpLayout::Heads;
  if (name == "blocks") return MlraTpLayout::Blocks;
  LATTE_FAIL(where, ": unknown MLRA tensor-parallel layout '", name,
             "'; use heads (latent replicated, heads split: the training layout) or blocks (latent blocks split: decoding)");
}

TensorParallelContext TensorParallelContext::of(dist::ProcessGroup* group, MlraTpLayout mlra_layout) {
  if (!group || group->size() == 1) return {};
  return {group, group->rank(), group->size(), mlra_layout};
}

TensorParallelContext TensorParallelContext::layout_only(int64_t tp_rank, int64_t tp_size, MlraTpLayout mlra_layout) {
  LATTE_REQUIRE(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "tensor-parallel rank ", tp_rank, " of ", tp_size,
                " is impossible");
  return {nullptr, tp_rank, tp_size, mlra_layout};
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

void check_tensor_parallel(const ModelConfig& config, int64_t tp, MlraTpLayout mlra_layout) {
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
    if (a.kind == AttentionKind::MLRA && mlra_layout == MlraTpLayout::Blocks) {
      const int64_t groups = a.head_groups();
      LATTE_REQUIRE(a.blocks % tp == 0, key, ".blocks (", a.blocks, ") does not divide by tp (", tp,
                    "): the MLRA decode layout 'blocks' puts blocks / tp latent blocks on every rank", fix(a.blocks),
                    ", or use the 'heads' layout");
      LATTE_REQUIRE(tp % groups == 0 || groups % tp == 0, key, ": tp (", tp, ") and the head groups blocks / branches (",
                    groups, ") must divide one another for the MLRA decode layout 'blocks' (every rank then serves whole "
                    "head groups with the same number of branches); use the 'heads' layout");
      continue;
    }
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

MlraShard mlra_shard(const AttentionConfig& a, const TensorParallelContext& tp) {
  MlraShard s;
  if (a.kind != AttentionKind::MLRA) {
    s.heads = a.n_heads / tp.tp_size;
    s.heads_per_block = s.heads;
    s.block_ids = {0};
    return s;
  }
  const int64_t L = a.blocks, G = a.head_groups(), Hb = a.heads_per_block(), n = tp.tp_size;
  if (!tp.mlra_blocks()) {
    s.blocks = L;
    s.branches = a.branches;
    s.heads = a.n_heads / n;
    s.heads_per_block = Hb / n;
    for (int64_t b = 0; b < L; ++b) s.block_ids.push_back(b);
    return s;
  }
  LATTE_CHECK(L % n == 0 && (n % G == 0 || G % n == 0), "MLRA blocks layout: blocks ", L, ", groups ", G, ", tp ", n,
              " (check_tensor_parallel runs first)");
  s.blocks = L / n;
  for (int64_t k = 0; k < s.blocks; ++k) s.block_ids.push_back(tp.tp_rank + k * n);
  // Block b serves head group b mod G; the groups of this rank's blocks, ascending.
  for (int64_t b : s.block_ids) {
    const int64_t g = b % G;
    if (std::find(s.head_groups.begin(), s.head_groups.end(), g) == s.head_groups.end()) s.head_groups.push_back(g);
  }
  std::sort(s.head_groups.begin(), s.head_groups.end());
  s.heads_per_block = Hb;
  s.heads = Hb * static_cast<int64_t>(s.head_groups.size());
  s.branches = s.blocks / static_cast<int64_t>(s.head_groups.size());
  // Local block k must serve local group k mod (groups held): true for both admissible cases.
  for (int64_t k = 0; k < s.blocks; ++k)
    LATTE_CHECK(s.head_groups[static_cast<size_t>(k % static_cast<int64_t>(s.head_groups.size()))] ==
                    s.block_ids[static_cast<size_t>(k)] % G,
                "MLRA blocks layout: block order");
  return s;
}

int64_t local_kv_heads(const AttentionConfig& a, const TensorParallelContext& tp) {
  if (a.is_latent()) return 0;
  return a.n_kv_heads % tp.tp_size == 0 ? a.n_kv_heads / tp.tp_size : 1;  // n_kv < tp: the one shared kv head
}

int64_t local_latent_dim(const AttentionConfig& a, const TensorParallelContext& tp) {
  if (!a.is_latent()) return 0;
  if (a.kind == AttentionKind::MLRA && tp.mlra_blocks()) return a.kv_rank / tp.tp_size;
  return a.kv_rank;
}

int64_t local_kv_elements_per_token(const AttentionConfig& a, const TensorParallelContext& tp) {
  if (a.is_latent()) return local_latent_dim(a, tp) + a.rope_dim;
  return 2 * local_kv_heads(a, tp) * a.head_dim;
}

}  // namespace latte
