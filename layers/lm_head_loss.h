// The LM head fused with the cross-entropy, chunked over rows: for each chunk of rows the logits are
// computed, the loss and its gradient come out of one kernel pass, and the chunk's contributions to
// d(hidden) and d(W) are formed at once, so no [N, V] logits tensor ever exists and no logits are
// recomputed in the backward. The backward only scales the saved gradients by the incoming one.
// d(W) is accumulated in fp32 (bf16 GEMM inputs, f32 output) across chunks.
//
// Vocab-parallel (tensor parallelism, docs/distributed.md "Vocab-parallel cross-entropy"): rank r holds
// rows [r V/tp, (r+1) V/tp) of the head and computes only its logits; the logits are never gathered.
// Per row, with the kernels latte already has (no kernel of its own yet):
//   1. local: logits_r = h W_r^T; the cross-entropy kernel against the local target gives
//      lse_r - logit[t] and P_r = softmax_r - onehot(t); the target logit itself is gathered from logits_r.
//   2. one all-gather of (lse_r, t_r) (2 floats per row; t_r = target logit on the owning rank, else 0).
//   3. lse = log sum_r exp(lse_r) (the cross-entropy kernel again, over the tp values); t = sum_r t_r;
//      loss = lse - t, the same bits on every rank.
//   4. backward, no communication: dlogits_r = w_r softmax_r - onehot_r(t) with w_r = exp(lse_r - lse),
//      i.e. w_r P_r + (w_r - [t here]) onehot(t); the row scales are applied to the (N, d) operands of the
//      two GEMMs, never to the (N, V/tp) logits.
// The hidden rows must be inside a TP region (copy_to_tp): their gradient is this rank's share.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "layers/tensor_parallel.h"

namespace latte {

// hidden (N, d), weight (V, d), targets (N) i32 (-1 = ignored), `counted` = number of targets != -1.
// Returns the mean loss (f32; f64 for f64 inputs) over the counted targets.
Tensor lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, int64_t counted,
                             int64_t chunk_rows);

// The vocab-parallel version: weight (V/tp, d) holds rows [vocab_start, vocab_start + V/tp) of a vocab_size
// head; targets (N) i32 in [0, vocab_size) or -1, with their host copy host_targets (the caller already read
// them to count). Returns the mean loss over the counted targets, identical on every TP rank.
Tensor vocab_parallel_lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                            const std::vector<double>& host_targets, int64_t vocab_start,
                                            int64_t vocab_size, int64_t counted, int64_t chunk_rows,
                                            const TensorParallelContext& tp);

}  // namespace latte
