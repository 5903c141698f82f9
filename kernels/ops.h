// Device-dispatching entry points for every kernel (the list is kernels/op_decls.inc). An op checks
// that its tensors live on one device and calls latte::cpu:: or latte::cuda::. Autograd functions
// (autograd/functions.h) call these; models call the autograd functions.
#pragma once
#include "core/tensor.h"

namespace latte::ops {
#include "kernels/op_decls.inc"

// Throws a clear error when the tensors are not all on the same device; returns that device.
Device common_device(std::initializer_list<const Tensor*> tensors, const char* op);
}  // namespace latte::ops
