// LATTE_DISPATCH(op, &t1, &t2, ...) picks cpu::op or cuda::op from the tensors' common device
// (throwing a clear error when they differ). Used only by the kernels/ops_*.cpp dispatchers:
//   void rmsnorm_forward(...) { LATTE_DISPATCH(rmsnorm_forward, &out, &x, &w)(out, rstd, x, w, eps); }
#pragma once
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#ifdef LATTE_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#define LATTE_DISPATCH(op, ...) \
  (::latte::ops::common_device({__VA_ARGS__}, #op).is_cpu() ? ::latte::cpu::op : ::latte::cuda::op)
#else
#define LATTE_DISPATCH(op, ...) (::latte::ops::common_device({__VA_ARGS__}, #op), ::latte::cpu::op)
#endif
