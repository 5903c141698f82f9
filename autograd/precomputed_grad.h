// Losses whose gradients come out of the forward pass: fused loss kernels (the chunked LM-head
// cross-entropy, the distillation KL) compute d loss / d input next to the loss, so the graph only has to
// scale them by the incoming gradient.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace latte::autograd {

// Records `loss` (0-d) as a function of `inputs`. grads[i] is d loss / d inputs[i] for a unit incoming
// gradient (undefined: no gradient for that input). The backward multiplies each by the incoming gradient
// on the device, without reading it on the host (no sync). Call only when needs_grad(inputs) is true.
void record_precomputed_gradients(const Tensor& loss, const std::vector<Tensor>& inputs, std::vector<Tensor> grads,
                                  std::string name);

}  // namespace latte::autograd
