// One attention test case and its inputs with the f64 CPU reference, shared by the flash-kernel and cuDNN suites
// (tests/cuda/test_flash_attention.cpp, test_cudnn_attention.cpp).
#pragma once
#include <cmath>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace latte::cudatest {

struct AttentionCase {
  const char* name;
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv;
  bool causal;
  double scale;  // 0: 1/sqrt(Dqk)
  bool strided;  // q/k/v as views of fused projections
};

inline std::string describe(const AttentionCase& c) {
  return str(c.name, " B=", c.B, " T=", c.T, " S=", c.S, " Hq=", c.Hq, " Hk=", c.Hk, " R=", c.R, " D=(", c.Dqk, ",",
             c.Dv, ")", c.causal ? " causal" : " full");
}

// bf16 inputs on the GPU and the CPU reference's outputs and gradients in f64 on the same values.
struct AttentionInputs {
  Tensor q, k, v, dout;  // (B, T, Hq, Dqk), (B, S, R*Hk, Dqk), (B, S, R*Hk, Dv), (B, T, R*Hq, Dv)
  double scale;
  Tensor eout, else_, edq, edk, edv;
};

inline AttentionInputs make_attention_inputs(const AttentionCase& c, uint64_t seed) {
  const DType t = DType::BF16;
  AttentionInputs in;
  if (c.strided) {
    Tensor qf = rnd({c.B, c.T, c.Hq * c.Dqk + 8}, seed, t);  // (B, T, Hq*Dqk + 8): rows strided in B/T
    in.q = qf.narrow(2, 8, c.Hq * c.Dqk).view({c.B, c.T, c.Hq, c.Dqk});
    Tensor kv = rnd({c.B, c.S, c.R * c.Hk, c.Dqk + c.Dv}, seed + 1, t);  // k | v halves: strided in B/S/H
    in.k = kv.narrow(3, 0, c.Dqk);
    in.v = kv.narrow(3, c.Dqk, c.Dv);
  } else {
    in.q = rnd({c.B, c.T, c.Hq, c.Dqk}, seed, t);
    in.k = rnd({c.B, c.S, c.R * c.Hk, c.Dqk}, seed + 1, t);
    in.v = rnd({c.B, c.S, c.R * c.Hk, c.Dv}, seed + 2, t);
  }
  in.dout = rnd({c.B, c.T, c.R * c.Hq, c.Dv}, seed + 3, t);
  in.scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.Dqk));
  Tensor rq = ref(in.q), rk = ref(in.k), rv = ref(in.v);
  in.eout = Tensor::empty({c.B, c.T, c.R * c.Hq, c.Dv}, DType::F64);
  in.else_ = Tensor::empty({c.B, c.R * c.Hq, c.T}, DType::F64);
  cpu::attention_forward(in.eout, in.else_, rq, rk, rv, c.R, in.scale, c.causal);
  in.edq = Tensor::empty(in.q.shape(), DType::F64);
  in.edk = Tensor::empty(in.k.shape(), DType::F64);
  in.edv = Tensor::empty(in.v.shape(), DType::F64);
  cpu::attention_backward(in.edq, in.edk, in.edv, ref(in.dout), rq, rk, rv, in.eout, in.else_, c.R, in.scale,
                          c.causal);
  return in;
}

}  // namespace latte::cudatest
