// Helpers shared by the train suite's tests.
#pragma once
#include "layers/safetensors.h"
#include "layers/transformer.h"

namespace latte::test {

// The model's parameters by name, detached and contiguous: what a weights file of it would hold.
inline NamedTensors weights_of(const TransformerLM& model) {
  NamedTensors out;
  for (const NamedParameter& p : model.named_parameters()) out.emplace_back(p.name, p.tensor.detach().contiguous());
  return out;
}

}  // namespace latte::test
