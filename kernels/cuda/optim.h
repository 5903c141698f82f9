// Multi-tensor optimizer kernels for CUDA training: AdamW over every parameter in a few launches, and
// the global gradient norm (plus the clipping factor) computed on the device, so an optimizer step
// needs no host synchronisation. The CPU counterpart is train/adamw.cpp; the math is the same:
//   g = grad * grad_scale [* *grad_scale_device]
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   w = w (1 - lr wd) - lr (m / bc1) / (sqrt(v / bc2) + eps),  bc1 = 1 - b1^step, bc2 = 1 - b2^step
// with fp32 master weights w and moments m, v; the model's (bf16) parameter is rewritten from w.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace latte::cuda {

struct AdamWTensors {
  Tensor master;      // f32, updated in place
  Tensor exp_avg;     // f32 m
  Tensor exp_avg_sq;  // f32 v
  Tensor grad;        // bf16 or f32, same numel
  Tensor param;       // bf16 or f32 copy written from master; undefined or the master itself: skipped
  bool decay = true;  // weight decay applies
};

struct AdamWHyper {
  double lr = 0.0;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  int64_t step = 1;  // 1-based step number, for the bias corrections
  // Blocks per tensor at most (0: enough to cover the GPU). A small cap leaves most SMs to kernels running
  // beside the update on another stream (the overlapped optimizer step).
  int max_blocks_per_tensor = 0;
};

// One AdamW step over all tensors (contiguous, on the current device). grad_scale_device, when defined,
// is a one-element f32 device tensor multiplied into every gradient (the clipping factor below).
void adamw_step(const std::vector<AdamWTensors>& tensors, const AdamWHyper& hyper, double grad_scale = 1.0,
                const Tensor& grad_scale_device = Tensor());

// out (one f32 element on the device) = sum over tensors of sum(t^2), fp32, fixed order (deterministic).
void sum_squares_multi(const Tensor& out, const std::vector<Tensor>& tensors);

// Global-norm clipping without a host sync: norm_out = sqrt(sum of squares of grads), and
// factor_out = min(1, max_norm / (norm + 1e-6)) (both one-element f32 device tensors). Pass factor_out
// to adamw_step as grad_scale_device, or apply it with scale_multi.
void clip_grad_norm(const std::vector<Tensor>& grads, double max_norm, const Tensor& norm_out, const Tensor& factor_out);

// t *= factor for every tensor (bf16 or f32); factor a one-element f32 device tensor.
void scale_multi(const std::vector<Tensor>& tensors, const Tensor& factor);

}  // namespace latte::cuda
