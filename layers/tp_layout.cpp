// Shard layouts, split/merge of named tensors, and their JSON form (layers/tp_layout.h).
//
// Every layout is handled through one 5-D view of the full tensor: (outer, groups, tp, part, inner),
// where outer is the product of the dims before the split dim, inner the product of those after it,
// and part = size(dim) / (groups tp). Rank r's shard is the slice [:, :, r] of that view.
#include "layers/tp_layout.h"

#include <nlohmann/json.hpp>

#include "autograd/node.h"
#include "layers/safetensors.h"

namespace latte {

namespace {

struct FiveD {
  int64_t outer = 1, groups = 1, tp = 1, part = 1, inner = 1;
  Shape shape() const { return {outer, groups, tp, part, inner}; }
};

FiveD five_d(const Shape& full, const ShardLayout& layout, int64_t tp_size) {
  LATTE_REQUIRE(layout.dim >= 0 && layout.dim < full.ndim(), "tensor-parallel layout '", layout.str(), "' does not fit a ",
                full.ndim(), "-D tensor ", full.str());
  LATTE_REQUIRE(layout.groups >= 1 && tp_size >= 1, "bad tensor-parallel layout '", layout.str(), "' for tp = ", tp_size);
  FiveD v;
  for (int d = 0; d < layout.dim; ++d) v.outer *= full[d];
  for (int d = layout.dim + 1; d < full.ndim(); ++d) v.inner *= full[d];
  const int64_t n = full[layout.dim];
  LATTE_REQUIRE(n % (layout.groups * tp_size) == 0, "dimension ", layout.dim, " (", n, ") of ", full.str(),
                " does not divide into ", layout.groups, " group(s) of ", tp_size, " tensor-parallel shards");
  v.groups = layout.groups;
  v.tp = tp_size;
  v.part = n / (layout.groups * tp_size);
  return v;
}

}  // namespace

std::string ShardLayout::str() const {
  if (!split) return "replicated";
  return "split dim " + std::to_string(dim) + (groups > 1 ? " in " + std::to_string(groups) + " groups" : "");
}

Shape shard_shape(const Shape& full, const ShardLayout& layout, int64_t tp_size) {
  if (!layout.split) return full;
  const FiveD v = five_d(full, layout, tp_size);
  Shape local = full;
  local[layout.dim] = v.groups * v.part;
  return local;
}

Shape unshard_shape(const Shape& local, const ShardLayout& layout, int64_t tp_size) {
  if (!layout.split) return local;
  LATTE_REQUIRE(layout.dim >= 0 && layout.dim < local.ndim(), "tensor-parallel layout '", layout.str(),
                "' does not fit a shard of shape ", local.str());
  Shape full = local;
  full[layout.dim] = local[layout.dim] * tp_size;
  five_d(full, layout, tp_size);  // checks the groups divide
  return full;
}

Tensor shard_of(const Tensor& full, const ShardLayout& layout, int64_t tp_rank, int64_t tp_size) {
  autograd::NoGradGuard no_grad;
  LATTE_REQUIRE(tp_rank >= 0 && tp_rank < tp_size, "tensor-parallel rank ", tp_rank, " is not in [0, ", tp_size, ")");
  if (!layout.split) return full.detach().clone();
  const FiveD v = five_d(full.shape(), layout, tp_size);
  Tensor view = full.detach().contiguous().view(v.shape());          // (outer, G, tp, part, inner)
  return view.narrow(2, tp_rank, 1).contiguous().view(shard_shape(full.shape(), layout, tp_size));
}

Tensor merge_shards(const std::vector<Tensor>& shards, const ShardLayout& layout) {
  autograd::NoGradGuard no_grad;
  LATTE_REQUIRE(!shards.empty(), "merge_shards: no shards given");
  const int64_t tp = static_cast<int64_t>(shards.size());
  for (int64_t r = 1; r < tp; ++r)
    LATTE_REQUIRE(shards[r].shape() == shards[0].shape() && shards[r].dtype() == shards[0].dtype(), "tensor-parallel rank ", r,
                  " holds ", shards[r].str(), " but rank 0 holds ", shards[0].str(), "; the shards are of different models");
  if (!layout.split) return shards[0].detach().clone();
  const Shape full_shape = unshard_shape(shards[0].shape(), layout, tp);
  const FiveD v = five_d(full_shape, layout, tp);
  Tensor full = Tensor::empty(full_shape, shards[0].dtype(), shards[0].device());
  Tensor view = full.view(v.shape());  // (outer, G, tp, part, inner)
  for (int64_t r = 0; r < tp; ++r)
    view.narrow(2, r, 1).copy_(shards[r].detach().contiguous().view({v.outer, v.groups, 1, v.part, v.inner}));
  return full;
}

namespace {
const ShardLayout& layout_for(const ShardLayouts& layouts, const std::string& name, const char* what) {
  auto it = layouts.find(name);
  LATTE_REQUIRE(it != layouts.end(), what, ": no tensor-parallel layout for '", name,
                "'; the layouts come from the model that wrote the shards (Module::shard_layouts())");
  return it->second;
}
}  // namespace

NamedTensors merge_tp_shards(const std::vector<NamedTensors>& per_rank, const ShardLayouts& layouts) {
  LATTE_REQUIRE(!per_rank.empty(), "merge_tp_shards: no ranks given");
  const NamedTensors& first = per_rank[0];
  for (size_t r = 1; r < per_rank.size(); ++r) {
    LATTE_REQUIRE(per_rank[r].size() == first.size(), "merge_tp_shards: rank ", r, " has ", per_rank[r].size(),
                  " tensors but rank 0 has ", first.size());
    for (size_t i = 0; i < first.size(); ++i)
      LATTE_REQUIRE(per_rank[r][i].first == first[i].first, "merge_tp_shards: tensor ", i, " is '", per_rank[r][i].first,
                    "' on rank ", r, " but '", first[i].first, "' on rank 0");
  }
  NamedTensors out;
  out.reserve(first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    const std::string& name = first[i].first;
    std::vector<Tensor> shards;
    for (const NamedTensors& rank : per_rank) shards.push_back(rank[i].second);
    try {
      out.emplace_back(name, merge_shards(shards, layout_for(layouts, name, "merge_tp_shards")));
    } catch (const Error& e) {
      LATTE_FAIL("merge_tp_shards: '", name, "': ", e.what());
    }
  }
  return out;
}

NamedTensors split_to_tp(const NamedTensors& full, const ShardLayouts& layouts, int64_t tp_rank, int64_t tp_size) {
  NamedTensors out;
  out.reserve(full.size());
  for (const auto& [name, tensor] : full) {
    try {
      out.emplace_back(name, shard_of(tensor, layout_for(layouts, name, "split_to_tp"), tp_rank, tp_size));
    } catch (const Error& e) {
      LATTE_FAIL("split_to_tp: '", name, "': ", e.what());
    }
  }
  return out;
}

std::string shard_layouts_to_json(const ShardLayouts& layouts, int64_t tp_rank, int64_t tp_size) {
  nlohmann::ordered_json j;
  j["tp_size"] = tp_size;
  j["tp_rank"] = tp_rank;
  nlohmann::ordered_json entries = nlohmann::ordered_json::object();
  for (const auto& [name, l] : layouts) entries[name] = {{"split", l.split}, {"dim", l.dim}, {"groups", l.groups}};
  j["layouts"] = entries;
  return j.dump();
}

ShardFileLayout shard_layouts_from_json(const std::string& json, const std::string& context) {
  ShardFileLayout out;
  try {
    nlohmann::json j = nlohmann::json::parse(json);
    out.tp_size = j.at("tp_size").get<int64_t>();
    out.tp_rank = j.at("tp_rank").get<int64_t>();
    for (const auto& [name, l] : j.at("layouts").items())
      out.layouts[name] = ShardLayout{l.at("split").get<bool>(), l.at("dim").get<int>(), l.at("groups").get<int64_t>()};
  } catch (const nlohmann::json::exception& e) {
    LATTE_FAIL(context, ": the tensor-parallel layout metadata (", kTpLayoutKey, ") is malformed: ", e.what());
  }
  LATTE_REQUIRE(out.tp_size >= 1 && out.tp_rank >= 0 && out.tp_rank < out.tp_size, context, ": tensor-parallel rank ",
                out.tp_rank, " of ", out.tp_size, " in the layout metadata is impossible");
  return out;
}

NamedTensors read_merged_tp_shards(const std::vector<std::string>& shard_paths, Device device) {
  LATTE_REQUIRE(!shard_paths.empty(), "read_merged_tp_shards: no shard files given");
  std::vector<NamedTensors> per_rank;
  ShardLayouts layouts;
  const int64_t tp = static_cast<int64_t>(shard_paths.size());
  for (int64_t r = 0; r < tp; ++r) {
    const std::string& path = shard_paths[static_cast<size_t>(r)];
    SafetensorsFile file = read_safetensors(path, device);
    auto it = file.metadata.find(kTpLayoutKey);
    LATTE_REQUIRE(it != file.metadata.end(), path, ": has no '", kTpLayoutKey,
                  "' metadata, so its tensor-parallel layout is unknown (save shards with tp_layout_metadata())");
    ShardFileLayout fl = shard_layouts_from_json(it->second, path);
    LATTE_REQUIRE(fl.tp_size == tp && fl.tp_rank == r, path, ": is shard ", fl.tp_rank, " of ", fl.tp_size,
                  " but was given as shard ", r, " of ", tp, "; pass model-tp0..tp", tp - 1, " in rank order");
    if (r == 0) layouts = fl.layouts;
    per_rank.push_back(std::move(file.tensors));
  }
  return merge_tp_shards(per_rank, layouts);
}

}  // namespace latte
