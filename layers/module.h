// Module: the base of every layer. It owns named parameters and child modules in registration order,
// so `named_parameters()` yields the spec's full dotted names (`layers.3.attn.wkv_a.weight`) in a
// stable order: what safetensors export/import, the optimizer and gradient sync iterate over.
// Parameters are registered with an init rule and filled by `initialize(seed)`, which draws each
// one from a Philox stream whose offset is a hash of its full name: the values depend on
// (seed, name) only, never on construction order, device or which other parameters exist.
// Under tensor parallelism a parameter is registered with its local (shard) shape and a ShardLayout
// (layers/tp_layout.h); initialize() then gives it exactly its slice of the full tensor's stream, so
// the full weights are the same for every tp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/tp_layout.h"

namespace latte {

// dtype/device of a model's parameters: f32/f64 on CPU, bf16 on CUDA (the trainer keeps fp32 masters).
struct ParamOptions {
  DType dtype = DType::F32;
  Device device = Device::cpu();
};

// How a parameter starts.
struct InitRule {
  enum Kind { Normal, Zeros, Ones } kind = Normal;
  double std = 0.02;  // Normal only
  static InitRule normal(double std) { return {Normal, std}; }
  static InitRule zeros() { return {Zeros, 0.0}; }
  static InitRule ones() { return {Ones, 0.0}; }
};

// How a registered parameter is sharded: its layout over tp_size ranks and which shard this is.
struct ParamShard {
  ShardLayout layout;   // replicated by default
  int64_t tp_rank = 0;
  int64_t tp_size = 1;
  bool sharded() const { return layout.split && tp_size > 1; }
};

struct NamedParameter {
  std::string name;  // full dotted name
  Tensor tensor;     // leaf, requires_grad
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter of this module and its children, depth first in registration order.
  std::vector<NamedParameter> named_parameters() const;
  std::vector<Tensor> parameters() const;
  // The parameter with this full dotted name (relative to this module); throws listing close names.
  Tensor parameter(const std::string& name) const;
  bool has_parameter(const std::string& name) const;
  int64_t num_parameters() const;
  void zero_grad() const;
  // Tensor-parallel layout of every parameter (replicated unless registered as a shard), by full name.
  ShardLayouts shard_layouts() const;
  ShardLayout shard_layout(const std::string& name) const;
  // Fills every parameter by its rule. Normal draws use Philox (seed, offset = name_offset(full name)).
  void initialize(uint64_t seed) const;
  // The Philox counter offset for a parameter name: high 32 bits of its FNV-1a hash, shifted up, so
  // every parameter owns a disjoint 2^32-element window of the stream.
  static uint64_t name_offset(const std::string& name);

 protected:
  // Registers a parameter (allocated zero, then filled by initialize()). `shape` is the local shape: for a
  // sharded parameter, its shard of the full shape unshard_shape(shape, shard.layout, shard.tp_size).
  Tensor register_parameter(const std::string& name, const Shape& shape, const ParamOptions& options, InitRule rule,
                            const ParamShard& shard = {});
  template <typename M>
  M* register_module(const std::string& name, std::unique_ptr<M> module) {
    M* raw = module.get();
    add_child(name, std::move(module));
    return raw;
  }

 private:
  struct Entry {
    std::string name;
    Tensor parameter;                // set for a parameter entry
    InitRule rule;
    ParamShard shard;
    std::unique_ptr<Module> child;   // set for a child entry
  };
  void add_child(const std::string& name, std::unique_ptr<Module> child);
  void collect(const std::string& prefix, std::vector<NamedParameter>* out, std::vector<const Entry*>* entries) const;
  std::vector<Entry> entries_;
};

// A list of child modules named "0", "1", ... (or by an explicit index, e.g. gate groups).
class ModuleList : public Module {
 public:
  template <typename M>
  M* add(std::unique_ptr<M> module) {
    return add_at(static_cast<int64_t>(items_.size()), std::move(module));
  }
  template <typename M>
  M* add_at(int64_t index, std::unique_ptr<M> module) {
    M* raw = register_module(std::to_string(index), std::move(module));
    items_.push_back(raw);
    return raw;
  }
  size_t size() const { return items_.size(); }
  Module* at(size_t i) const { return items_.at(i); }

 private:
  std::vector<Module*> items_;
};

}  // namespace latte
