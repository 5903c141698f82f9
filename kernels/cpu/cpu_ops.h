// CPU reference kernels (f32 and f64): plain loops, readable first, OpenBLAS for matmul.
#pragma once
#include "core/tensor.h"

namespace latte::cpu {
#include "kernels/op_decls.inc"
}  // namespace latte::cpu
