// SwiGLU: out = silu(gate) * up, and its backward
//   dgate = dout up sig(gate) (1 + gate (1 - sig(gate))),  dup = dout silu(gate).
// Elementwise over contiguous tensors, 8 elements (16 bytes of bf16) per thread. Floor: forward 3
// elements per output (2 read, 1 written), backward 5 (3 read, 2 written).
// dgate/dup may alias gate/up (each element is read before it is written by the same thread).
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

__global__ void swiglu_forward_kernel(void* out, int dto, const void* gate, int dtg, const void* up, int dtu, int64_t n,
                                      bool vec) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < (n + 7) / 8;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float g[8], u[8];
    load8_any(gate, dtg, c * 8, n, vec, g);
    load8_any(up, dtu, c * 8, n, vec, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) g[k] = g[k] / (1.f + expf(-g[k])) * u[k];
    store8_any(out, dto, c * 8, n, vec, g);
  }
}

__global__ void swiglu_backward_kernel(void* dgate, int dtdg, void* dup, int dtdu, const void* dout, int dtd,
                                       const void* gate, int dtg, const void* up, int dtu, int64_t n, bool vec) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < (n + 7) / 8;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float d[8], g[8], u[8];
    load8_any(dout, dtd, c * 8, n, vec, d);
    load8_any(gate, dtg, c * 8, n, vec, g);
    load8_any(up, dtu, c * 8, n, vec, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float s = 1.f / (1.f + expf(-g[k])), silu = g[k] * s;
      const float dg = d[k] * u[k] * s * (1.f + g[k] * (1.f - s));
      u[k] = d[k] * silu;  // dup
      g[k] = dg;           // dgate
    }
    store8_any(dgate, dtdg, c * 8, n, vec, g);
    store8_any(dup, dtdu, c * 8, n, vec, u);
  }
}

unsigned grid_for(int64_t n) { return blocks_for((n + 7) / 8, 256, static_cast<int64_t>(sm_count()) * 16); }

}  // namespace

void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_forward";
  check_same_shape(out, gate, op);
  check_same_shape(out, up, op);
  for (const Tensor* t : {&out, &gate, &up}) require_contiguous(*t, op, "operand");
  const int64_t n = out.numel();
  if (n == 0) return;
  const bool vec = aligned16(out.data_ptr()) && aligned16(gate.data_ptr()) && aligned16(up.data_ptr());
  swiglu_forward_kernel<<<grid_for(n), 256, 0, current_stream()>>>(out.data_ptr(), float_code(out, op), gate.data_ptr(),
                                                                   float_code(gate, op), up.data_ptr(),
                                                                   float_code(up, op), n, vec);
  CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_backward";
  for (const Tensor* t : {&dgate, &dup, &dout, &up}) check_same_shape(gate, *t, op);
  for (const Tensor* t : {&dgate, &dup, &dout, &gate, &up}) require_contiguous(*t, op, "operand");
  const int64_t n = gate.numel();
  if (n == 0) return;
  bool vec = true;
  for (const Tensor* t : {&dgate, &dup, &dout, &gate, &up}) vec = vec && aligned16(t->data_ptr());
  swiglu_backward_kernel<<<grid_for(n), 256, 0, current_stream()>>>(
      dgate.data_ptr(), float_code(dgate, op), dup.data_ptr(), float_code(dup, op), dout.data_ptr(),
      float_code(dout, op), gate.data_ptr(), float_code(gate, op), up.data_ptr(), float_code(up, op), n, vec);
  CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace latte::cuda
