// Activation checkpointing: run a function's forward without keeping its intermediate activations,
// and recompute them during backward. Used per transformer block when `model.recompute: true`.
#pragma once
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace latte::autograd {

using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// Returns fn(inputs), recording one node that holds only `inputs`. During backward it re-runs fn with
// grad enabled on detached copies of the inputs and back-propagates through the recomputed graph;
// parameters captured by fn receive their gradients then. fn must be deterministic.
std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

}  // namespace latte::autograd
