// RoPE frequencies: inv_j = base^(-2j/r) for a rotary width r, optionally rescaled exactly as HF
// transformers does for Llama 3.x (`rope_scaling: {type: llama3, ...}`), which is what lets latte
// import those checkpoints. The rotation itself is the rope() op (rotate-half, autograd/nn_functions.h).
#pragma once
#include <vector>

#include "core/tensor.h"
#include "layers/model_config.h"

namespace latte {

// The r/2 inverse frequencies in double precision (tests and the PyTorch reference compare these).
std::vector<double> rope_inv_freq_values(int64_t rotary_dim, double base, const RopeScaling& scaling);
// The same as an f32 tensor (r/2) on `device`, the form rope() takes.
Tensor rope_inv_freq(int64_t rotary_dim, double base, const RopeScaling& scaling, Device device);

}  // namespace latte
