// Module registry and name-keyed initialisation (layers/module.h).
#include "layers/module.h"

#include <algorithm>

#include "autograd/node.h"

namespace latte {

Tensor Module::register_parameter(const std::string& name, const Shape& shape, const ParamOptions& options, InitRule rule) {
  LATTE_CHECK(name.find('.') == std::string::npos, "parameter names are single components, got ", name);
  for (const Entry& e : entries_) LATTE_CHECK(e.name != name, "duplicate module entry ", name);
  Tensor t = Tensor::zeros(shape, options.dtype, options.device);
  t.set_requires_grad(true);
  Entry e;
  e.name = name;
  e.parameter = t;
  e.rule = rule;
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

void Module::collect(const std::string& prefix, std::vector<NamedParameter>* out, std::vector<InitRule>* rules) const {
  for (const Entry& e : entries_) {
    if (e.child) {
      e.child->collect(prefix + e.name + ".", out, rules);
    } else {
      out->push_back({prefix + e.name, e.parameter});
      if (rules) rules->push_back(e.rule);
    }
  }
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

void Module::initialize(uint64_t seed) const {
  autograd::NoGradGuard no_grad;
  std::vector<NamedParameter> params;
  std::vector<InitRule> rules;
  collect("", &params, &rules);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor& t = params[i].tensor;
    switch (rules[i].kind) {
      case InitRule::Zeros: t.fill_(0.0); break;
      case InitRule::Ones: t.fill_(1.0); break;
      case InitRule::Normal:
        t.copy_(Tensor::randn(t.shape(), seed, name_offset(params[i].name), rules[i].std, t.dtype(), t.device()));
        break;
    }
  }
}

}  // namespace latte
