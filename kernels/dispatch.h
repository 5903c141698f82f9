// LATTE_DISPATCH(op, &t1, &t2, ...) picks cpu::op or cuda::op from the tensors' common device
// (throwing a clear error when they differ), timed per op when LATTE_PROFILE_OPS=1 (kernels/op_profiler.h).
// Used only by the kernels/ops_*.cpp dispatchers:
//   void rmsnorm_forward(...) { LATTE_DISPATCH(rmsnorm_forward, &out, &x, &w)(out, rstd, x, w, eps); }
#pragma once
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_profiler.h"
#include "kernels/ops.h"
#ifdef LATTE_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
namespace latte::ops {
template <typename F>
ProfiledOp<F> pick_op(const char* name, Device dev, F* cpu_fn, F* cuda_fn) {
  return ProfiledOp<F>{name, dev.is_cpu() ? cpu_fn : cuda_fn, dev.is_cuda()};
}
}  // namespace latte::ops
#define LATTE_DISPATCH(op, ...) \
  ::latte::ops::pick_op(#op, ::latte::ops::common_device({__VA_ARGS__}, #op), &::latte::cpu::op, &::latte::cuda::op)
#else
namespace latte::ops {
template <typename F>
ProfiledOp<F> pick_op(const char* name, Device, F* cpu_fn) {
  return ProfiledOp<F>{name, cpu_fn, false};
}
}  // namespace latte::ops
#define LATTE_DISPATCH(op, ...) \
  ::latte::ops::pick_op(#op, ::latte::ops::common_device({__VA_ARGS__}, #op), &::latte::cpu::op)
#endif
