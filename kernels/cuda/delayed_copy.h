// Kernels that take a set time on the device (kernels/cuda/delayed_copy.cu): a copy that is still running when the
// stream's next kernel starts, for tests of what a programmatic dependent launch may read before its
// griddepcontrol.wait (tests/cuda/test_decode_attention.cpp), and a plain wait (bench/attention.cu's host timing).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace latte::cuda {

// dst = src (contiguous CUDA tensors of one dtype and size) by one warp that first lets the stream's next kernel
// start (griddepcontrol.launch_dependents, sm_90+), then spins for `ns` nanoseconds. A dependent that reads dst
// before waiting for this kernel sees the old values.
void delayed_copy(const Tensor& dst, const Tensor& src, int64_t ns);

// Keeps the current device busy for `ns` nanoseconds (one warp) on the current stream, so that work enqueued
// behind it starts only once the host has long finished enqueueing it.
void busy_wait(int64_t ns);

}  // namespace latte::cuda
