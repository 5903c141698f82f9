// How each parameter is laid out over the tensor-parallel ranks (spec: "Tensor parallelism"), and
// the checkpoint tools built on that: a TP model saves one file per TP rank (model-tp{r}.safetensors,
// the spec's names with local shapes); merge_tp_shards() rebuilds the full tp = 1 tensors from those
// files and split_to_tp() cuts full tensors (an export, an HF import, a tp = 1 checkpoint) into the
// shard of one rank. A layout is one of:
//   replicated  every rank holds the full tensor (norms, wq_a, wkv_a, gate tables, wk/wv when n_kv < tp)
//   split       dimension `dim` is cut into tp equal parts, rank r holding part r (column-parallel:
//               dim 0 of [out, in]; row-parallel: dim 1; MLRA's wkv_b [L, d_l, H_b (d_n+d_v)]: dim 2).
//               With groups > 1 the dimension is first cut into `groups` equal consecutive groups and
//               each group into tp parts; rank r holds part r of every group, in group order. MLRA-2
//               needs it: its heads form G = blocks/branches groups (the heads a block serves) and each
//               rank must hold a slice of every group, so wq/wq_b rows and wo columns split per group.
// Layouts come from the model that owns the parameters (Module::shard_layouts()), and travel with a
// checkpoint as JSON in the safetensors metadata (tp_layout_metadata / shard_layouts_from_metadata), so
// merging needs only the files.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace latte {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;  // as in layers/safetensors.h

struct ShardLayout {
  bool split = false;   // false: replicated
  int dim = 0;          // the split dimension
  int64_t groups = 1;   // see the file comment; 1 for a plain contiguous split

  static ShardLayout replicated() { return {}; }
  static ShardLayout split_dim(int dim, int64_t groups = 1) { return {true, dim, groups}; }
  bool operator==(const ShardLayout& o) const = default;
  std::string str() const;  // "replicated", "split dim 0", "split dim 1 in 2 groups"
};

// By full parameter name.
using ShardLayouts = std::map<std::string, ShardLayout>;

// Local (one rank's) shape of a full shape, and back. Throw when the split dimension does not divide.
Shape shard_shape(const Shape& full, const ShardLayout& layout, int64_t tp_size);
Shape unshard_shape(const Shape& local, const ShardLayout& layout, int64_t tp_size);

// Rank tp_rank's shard of a full tensor, as a fresh contiguous tensor (replicated: a copy of `full`).
Tensor shard_of(const Tensor& full, const ShardLayout& layout, int64_t tp_rank, int64_t tp_size);
// The full tensor from the shards of ranks 0..tp-1 (replicated: rank 0's, after checking every rank's shape).
Tensor merge_shards(const std::vector<Tensor>& shards, const ShardLayout& layout);

// per_rank[r]: rank r's named tensors (same names in the same order on every rank). Returns the full
// tensors in that order. Every name needs a layout; errors name the tensor and the rank.
NamedTensors merge_tp_shards(const std::vector<NamedTensors>& per_rank, const ShardLayouts& layouts);
// Rank tp_rank's shards of full tensors, in the same order.
NamedTensors split_to_tp(const NamedTensors& full, const ShardLayouts& layouts, int64_t tp_rank, int64_t tp_size);

// Layouts as JSON text {"tp_size": n, "tp_rank": r, "layouts": {name: {"split": b, "dim": d, "groups": g}}}
// for a shard file's safetensors metadata (key kTpLayoutKey), and back.
inline constexpr const char* kTpLayoutKey = "latte_tp_layout";
std::string shard_layouts_to_json(const ShardLayouts& layouts, int64_t tp_rank, int64_t tp_size);
struct ShardFileLayout {
  int64_t tp_rank = 0, tp_size = 1;
  ShardLayouts layouts;
};
ShardFileLayout shard_layouts_from_json(const std::string& json, const std::string& context);

// Reads the shard files model-tp0..tp{n-1}.safetensors of one checkpoint (in rank order; each written
// with the kTpLayoutKey metadata) and returns the merged full tensors. Errors name the file.
NamedTensors read_merged_tp_shards(const std::vector<std::string>& shard_paths, Device device = Device::cpu());

}  // namespace latte
