// A copy that is still running when the stream's next kernel starts (kernels/cuda/delayed_copy.cu): for tests of
// what a programmatic dependent launch may read before its griddepcontrol.wait (tests/cuda/test_decode_attention.cpp).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace latte::cuda {

// dst = src (contiguous CUDA tensors of one dtype and size) by one warp that first lets the stream's next kernel
// start (griddepcontrol.launch_dependents, sm_90+), then spins for `ns` nanoseconds. A dependent that reads dst
// before waiting for this kernel sees the old values.
void delayed_copy(const Tensor& dst, const Tensor& src, int64_t ns);

}  // namespace latte::cuda
