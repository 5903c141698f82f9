// Differentiable basics: arithmetic, reductions, matmul/linear, embedding, cross-entropy, concat/split.
// Shapes of a and b must match exactly for elementwise ops (broadcast explicitly with expand()).
#pragma once
#include <vector>

#include "core/tensor.h"

namespace latte {

Tensor add(const Tensor& a, const Tensor& b);               // a + b
Tensor sub(const Tensor& a, const Tensor& b);               // a - b
Tensor mul(const Tensor& a, const Tensor& b);               // a * b (elementwise)
Tensor scale(const Tensor& x, double alpha);                // alpha * x
Tensor sum(const Tensor& x);                                // scalar (shape []), fp32/fp64 accumulation
Tensor mean(const Tensor& x);                               // scalar
Tensor sum_squares(const Tensor& x);                        // scalar

// a (M, K) or (Bt, M, K); b (K, N) or (Bt, K, N) (transposes applied first); 2-D operands broadcast over Bt.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x (..., in), weight (out, in) stored [out, in] as nn.Linear: returns x @ weight^T, shape (..., out).
Tensor linear(const Tensor& x, const Tensor& weight);
// residual + x @ weight^T with the residual added by the GEMM (one pass over the output): a residual stream's
// update; residual has the output's shape (..., out).
Tensor linear_add(const Tensor& x, const Tensor& weight, const Tensor& residual);

// table (V, D), ids i32 of any shape -> (ids.shape..., D).
Tensor embedding(const Tensor& table, const Tensor& ids);

// logits (..., V), targets i32 (...) -> scalar mean loss over targets != ignore_index (fp32).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -1);
// The same, returning the per-token losses (...) f32 (0 where ignored); differentiable.
Tensor cross_entropy_per_token(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -1);

Tensor concat(const std::vector<Tensor>& xs, int dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim);  // views

}  // namespace latte
