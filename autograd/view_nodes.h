// Backward nodes for Tensor's view and copy methods (reshape, transpose, narrow, expand, casts...).
// core/tensor.cpp calls record_* after building the view when autograd::needs_grad says so.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace latte::autograd {

void record_reshape(const Tensor& in, const Tensor& out);
void record_permute(const Tensor& in, const Tensor& out, const std::vector<int>& order);
void record_slice(const Tensor& in, const Tensor& out, int dim, int64_t start, int64_t step);
void record_select(const Tensor& in, const Tensor& out, int dim, int64_t index);
void record_expand(const Tensor& in, const Tensor& out);
void record_identity(const Tensor& in, const Tensor& out);  // contiguous/clone: gradient passes through
void record_cast(const Tensor& in, const Tensor& out);      // dtype or device change

}  // namespace latte::autograd
