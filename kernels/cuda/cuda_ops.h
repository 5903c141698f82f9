// CUDA kernels (bf16 storage, fp32 math; f32 accepted too). Host launchers run on the current stream.
#pragma once
#include "core/tensor.h"

namespace latte::cuda {
#include "kernels/op_decls.inc"
}  // namespace latte::cuda
