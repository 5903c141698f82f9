// CUDA attention (forward and backward) against the CPU reference: MHA, GQA, MQA, MLRA branches as virtual
// heads, S > T (queries at the end of a longer key sequence), non-causal, strided q/k/v views of fused
// projections, Dqk != Dv (MLA), bf16 and f32.
#include "tests/cuda/cuda_test_util.h"

#ifdef LATTE_WITH_CUDA
#include <cmath>

#include "kernels/attention_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

struct Case {
  const char* name;
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv;
  bool causal;
};

void run_case(const Case& c, DType t, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << c.name << " " << dtype_name(t));
  // q from a fused (B, T, Hq*Dqk + 8) projection: strided in B/T
  Tensor qf = rnd({c.B, c.T, c.Hq * c.Dqk + 8}, seed, t);
  Tensor q = qf.narrow(2, 8, c.Hq * c.Dqk).view({c.B, c.T, c.Hq, c.Dqk});
  // k and v as the two halves of one (B, S, R*Hk, Dqk + Dv) tensor: strided in B/S/H
  Tensor kv = rnd({c.B, c.S, c.R * c.Hk, c.Dqk + c.Dv}, seed + 1, t);
  Tensor k = kv.narrow(3, 0, c.Dqk), v = kv.narrow(3, c.Dqk, c.Dv);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dqk));
  const Shape oshape{c.B, c.T, c.R * c.Hq, c.Dv}, lshape{c.B, c.R * c.Hq, c.T};
  Tensor out = poisoned(oshape, t), lse = poisoned(lshape, DType::F32);
  cuda::attention_forward(out, lse, q, k, v, c.R, scale, c.causal);
  Tensor rq = ref(q), rk = ref(k), rv = ref(v);
  Tensor eout = Tensor::empty(oshape, DType::F64), else_ref = Tensor::empty(lshape, DType::F64);
  cpu::attention_forward(eout, else_ref, rq, rk, rv, c.R, scale, c.causal);
  EXPECT_CLOSE(out, eout, t);
  EXPECT_CLOSE(lse, else_ref, DType::F32);

  Tensor dout = rnd(oshape, seed + 2, t);
  Tensor dq = poisoned(q.shape(), t), dk = poisoned(k.shape(), t), dv = poisoned(v.shape(), t);
  cuda::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, c.R, scale, c.causal);
  Tensor edq = Tensor::empty(q.shape(), DType::F64), edk = Tensor::empty(k.shape(), DType::F64),
         edv = Tensor::empty(v.shape(), DType::F64);
  // The reference backward uses its own forward's output and lse (f64).
  cpu::attention_backward(edq, edk, edv, ref(dout), rq, rk, rv, eout, else_ref, c.R, scale, c.causal);
  EXPECT_CLOSE(dq, edq, t);
  EXPECT_CLOSE(dk, edk, t);
  EXPECT_CLOSE(dv, edv, t);
  // run-to-run determinism of the backward
  Tensor dq2 = poisoned(q.shape(), t), dk2 = poisoned(k.shape(), t), dv2 = poisoned(v.shape(), t);
  cuda::attention_backward(dq2, dk2, dv2, dout, q, k, v, out, lse, c.R, scale, c.causal);
  EXPECT_TRUE(same_bits(dq, dq2) && same_bits(dk, dk2) && same_bits(dv, dv2));
}

TEST(CudaAttention, MatchesCpu) {
  LATTE_REQUIRE_CUDA();
  const Case cases[] = {
      {"mha", 2, 33, 33, 4, 4, 1, 32, 32, true},
      {"gqa", 2, 40, 40, 6, 2, 1, 16, 16, true},
      {"mqa", 1, 17, 17, 4, 1, 1, 24, 24, true},
      {"mla dims", 2, 29, 29, 3, 3, 1, 48, 32, true},
      {"mlra-4", 1, 21, 21, 4, 4, 4, 16, 16, true},
      {"mlra-2 gqa", 2, 19, 19, 4, 2, 2, 16, 8, true},
      {"S > T (cached)", 2, 7, 30, 4, 2, 1, 16, 16, true},
      {"decode T=1", 3, 1, 25, 2, 2, 2, 16, 16, true},
      {"non-causal", 2, 11, 23, 2, 1, 1, 16, 16, false},
      {"longer", 1, 300, 300, 2, 2, 1, 64, 64, true},
  };
  // The reference (batched-cuBLAS) path, then the dispatcher's auto choice (the flash kernels for the
  // bf16 shapes they support) through the same entry points.
  for (AttentionBackend backend : {AttentionBackend::Reference, AttentionBackend::Auto}) {
    set_attention_backend(backend);
    uint64_t seed = 500;
    for (DType t : {DType::F32, DType::BF16})
      for (const Case& c : cases) run_case(c, t, seed += 10);
  }
  set_attention_backend(AttentionBackend::Auto);
}

}  // namespace
#endif  // LATTE_WITH_CUDA
