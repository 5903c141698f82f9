// The LM head fused with the cross-entropy, chunked over rows: for each chunk of rows the logits are
// computed, the loss and its gradient come out of one kernel pass, and the chunk's contributions to
// d(hidden) and d(W) are formed at once, so no [N, V] logits tensor ever exists and no logits are
// recomputed in the backward. The backward only scales the saved gradients by the incoming one.
// d(W) is accumulated in fp32 (bf16 GEMM inputs, f32 output) across chunks.
#pragma once
#include "core/tensor.h"

namespace latte {

// hidden (N, d), weight (V, d), targets (N) i32 (-1 = ignored), `counted` = number of targets != -1.
// Returns the mean loss (f32; f64 for f64 inputs) over the counted targets.
Tensor lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, int64_t counted,
                             int64_t chunk_rows);

}  // namespace latte
