// Module registry and name-keyed initialisation (layers/module.h).
#include "layers/module.h"

#include <algorithm>

#include "autograd/node.h"

namespace latte {

Tensor Module::register_parameter(const std::string& name, const Shape& shape, const ParamOptions& options, InitRule rule,
                                  const ParamShard& shard) {
  LATTE_CHECK(name.find('.') == std::string::npos, "parameter names are single components, got ", name);
  for (const Entry& e : entries_) LATTE_CHECK(e.name != name, "duplicate module entry ", name);
  Tensor t = Tensor::zeros(shape, options.dtype, options.device);
  t.set_requires_grad(true);
  Entry e;
  e.name = name;
  e.parameter = t;
  e.rule = rule;
  e.shard = shard;
  if (shard.sharded()) unshard_shape(shape, shard.layout, shard.tp_size);  // checks the layout fits the shape
  entries_.push_back(std::move(e));
  return t;
}

void Module::add_child(const std::string& name, std::unique_ptr<Module> child) {
  LATTE_CHECK(child != nullptr && name.find('.') == std::string::npos, "bad child module ", name);
  for (const Entry& e : entries_) LATTE_CHECK(e.name != name, "duplicate module entry ", name);
  Entry e;
  e.name = name;
  e.child = std::move(child);
  entries_.push_back(std::move(e));
}

void Module::collect(const std::string& prefix, std::vector<NamedParameter>* out, std::vector<const Entry*>* entries) const {
  for (const Entry& e : entries_) {
    if (e.child) {
      e.child->collect(prefix + e.name + ".", out, entries);
    } else {
      out->push_back({prefix + e.name, e.parameter});
      if (entries) entries->push_back(&e);
    }
  }
}

ShardLayouts Module::shard_layouts() const {
  std::vector<NamedParameter> params;
  std::vector<const Entry*> entries;
  collect("", &params, &entries);
  ShardLayouts out;
  for (size_t i = 0; i < params.size(); ++i)
    out[params[i].name] = entries[i]->shard.sharded() ? entries[i]->shard.layout : ShardLayout::replicated();
  return out;
}

ShardLayout Module::shard_layout(const std::string& name) const {
  ShardLayouts all = shard_layouts();
  auto it = all.find(name);
  if (it == all.end()) {
    parameter(name);  // throws naming the close names
    LATTE_FAIL("no parameter named '", name, "'");
  }
  return it->second;
}

std::vector<NamedParameter> Module::named_parameters() const {
  std::vector<NamedParameter> out;
  collect("", &out, nullptr);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (const NamedParameter& p : named_parameters()) out.push_back(p.tensor);
  return out;
}

bool Module::has_parameter(const std::string& name) const {
  for (const NamedParameter& p : named_parameters())
    if (p.name == name) return true;
  return false;
}

Tensor Module::parameter(const std::string& name) const {
  std::vector<NamedParameter> all = named_parameters();
  for (const NamedParameter& p : all)
    if (p.name == name) return p.tensor;
  // Name the parameters that share the longest prefix, which is almost always the intended one.
  size_t best = 0;
  for (const NamedParameter& p : all) {
    size_t k = 0;
    while (k < p.name.size() && k < name.size() && p.name[k] == name[k]) ++k;
    best = std::max(best, k);
  }
  std::string close;
  for (const NamedParameter& p : all)
    if (best > 0 && p.name.compare(0, best, name, 0, best) == 0) close += " " + p.name;
  LATTE_FAIL("no parameter named '", name, "'", close.empty() ? std::string() : "; close names:" + close);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const NamedParameter& p : named_parameters()) n += p.tensor.numel();
  return n;
}

void Module::zero_grad() const {
  for (const NamedParameter& p : named_parameters()) p.tensor.zero_grad();
}

uint64_t Module::name_offset(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h & 0xFFFFFFFF00000000ull;
}

namespace {

// Fills `local` with rank shard.tp_rank's slice of the full tensor randn(full, seed, offset, std). Philox
// element i depends on (seed, offset + i) only, and the shard is a set of equal runs of the full tensor
// (viewed as (outer, G, tp, run), run r of every (outer, G) row), so each run is drawn on its own at its
// offset. Many short runs (a row-parallel split of a wide matrix) are drawn as the full tensor instead.
void fill_normal_shard(const Tensor& local, const ParamShard& shard, uint64_t seed, uint64_t offset, double std) {
  const Shape full = unshard_shape(local.shape(), shard.layout, shard.tp_size);
  const int64_t tp = shard.tp_size, rows_per_group = shard.layout.groups;
  int64_t outer = 1;
  for (int d = 0; d < shard.layout.dim; ++d) outer *= full[d];
  const int64_t rows = outer * rows_per_group;  // runs in this shard
  const int64_t run = full.numel() / (rows * tp);
  if (rows > 64) {
    local.copy_(shard_of(Tensor::randn(full, seed, offset, std, local.dtype(), local.device()), shard.layout, shard.tp_rank, tp));
    return;
  }
  Tensor runs = local.view({rows, run});  // (outer G, run)
  for (int64_t k = 0; k < rows; ++k) {
    const uint64_t start = static_cast<uint64_t>((k * tp + shard.tp_rank) * run);
    runs.narrow(0, k, 1).copy_(Tensor::randn({1, run}, seed, offset + start, std, local.dtype(), local.device()));
  }
}

}  // namespace

void Module::initialize(uint64_t seed) const {
  autograd::NoGradGuard no_grad;
  std::vector<NamedParameter> params;
  std::vector<const Entry*> entries;
  collect("", &params, &entries);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor& t = params[i].tensor;
    const InitRule& rule = entries[i]->rule;
    switch (rule.kind) {
      case InitRule::Zeros: t.fill_(0.0); break;
      case InitRule::Ones: t.fill_(1.0); break;
      case InitRule::Normal:
        if (entries[i]->shard.sharded())
          fill_normal_shard(t, entries[i]->shard, seed, name_offset(params[i].name), rule.std);
        else
          t.copy_(Tensor::randn(t.shape(), seed, name_offset(params[i].name), rule.std, t.dtype(), t.device()));
        break;
    }
  }
}

}  // namespace latte
