// Kernel benchmark (GPU only): one row per CUDA kernel and direction with its size, median time, achieved
// rate and the ratio to a ceiling measured in the same run:
//   - memory-bound kernels: GB/s of their floor (each input read once, each output written once, see the
//     kernel files) over the device-to-device copy bandwidth (cudaMemcpyAsync of 1 GiB, bytes read + written);
//   - matmuls: TFLOP/s over cuBLASLt's bf16 GEMM at 8192^3, and the latte wrapper (cuda::matmul: plan cache,
//     workspace) over raw cuBLASLt (descriptors and heuristic built outside the timed loop) on the same shape:
//     the 1.3B model's shapes (d 2048, ffn 5504, 8192 tokens, vocab 50304), forward and both backward GEMMs.
// Sizes fill the GPU (activations of 32768 tokens, or the 8192-token LM head), so L2 does not hold the data.
// Timing: CUDA events on latte's stream around each call after warm-up; median of repeats. Inputs are random
// (a Philox normal fill on the GPU), never zeros. The last line counts cudaMalloc calls made inside the timed
// loops: the caching allocator must make none. The wrapper autotunes a shape's algorithm on its first call
// (kernels/cuda/matmul.cu), so it may beat the raw call, which runs the heuristic's first answer.
// Two experiments run alone: `bench_kernels --gemm-tune` (every algorithm of the heuristic's top answers at the
// 1.3B models' GEMMs) and `bench_kernels --overlap` (AdamW on a side stream beside the forward's GEMMs).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/cuda_context.h"
#include "core/device.h"
#include "core/philox.h"
#include "core/tensor.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/optim.h"

using namespace latte;

namespace {

const Device kGpu = Device::cuda(0);
uint64_t g_mallocs_in_loops = 0;

// ---- inputs ---------------------------------------------------------------------------------------------

__global__ void randn_kernel(void* p, bool bf16, int64_t n, uint64_t seed, float stddev) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = stddev * philox::normal(seed, 0, static_cast<uint64_t>(i));
    if (bf16)
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else
      static_cast<float*>(p)[i] = v;
  }
}

__global__ void ids_kernel(int32_t* p, int64_t n, int64_t vocab, uint64_t seed) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<int32_t>(philox::philox4x32(static_cast<uint64_t>(i), seed).x % static_cast<uint32_t>(vocab));
}

Tensor randn(const Shape& s, DType t, uint64_t seed, float stddev = 1.f) {
  Tensor x = Tensor::empty(s, t, kGpu);
  randn_kernel<<<1024, 256, 0, cuda::current_stream()>>>(x.data_ptr(), t == DType::BF16, x.numel(), seed, stddev);
  CUDA_CHECK_LAUNCH("randn_kernel");
  return x;
}

Tensor random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Tensor x = Tensor::empty({n}, DType::I32, kGpu);
  ids_kernel<<<256, 256, 0, cuda::current_stream()>>>(x.data<int32_t>(), n, vocab, seed);
  CUDA_CHECK_LAUNCH("ids_kernel");
  return x;
}

// ---- timing ---------------------------------------------------------------------------------------------

// Median of `reps` timed calls after `warmup` untimed ones; `each` (optional) sees every timed call's ms.
double median_ms(const std::function<void()>& f, int warmup = 3, int reps = 15,
                 const std::function<void(float)>& each = nullptr) {
  cudaStream_t s = cuda::current_stream();
  for (int i = 0; i < warmup; ++i) {
    f();
    if (each) each(-1.f);
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  const uint64_t mallocs = cuda::allocator_stats().cuda_mallocs;
  cuda::Event a, b;
  std::vector<float> ts;
  for (int i = 0; i < reps; ++i) {
    a.record(s);
    f();
    b.record(s);
    b.synchronize();
    ts.push_back(b.elapsed_ms(a));
    if (each) each(ts.back());
  }
  g_mallocs_in_loops += cuda::allocator_stats().cuda_mallocs - mallocs;
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

struct Row {
  std::string kernel, dir, size;
  double ms, rate;
  const char* unit;
  double ratio;        // to the ceiling
  double vs_raw = -1;  // matmul: wrapper time / raw cuBLASLt time, as raw/wrapper speed
};
std::vector<Row> rows;
double g_copy_gbs = 0, g_gemm_tflops = 0;

void mem_row(const std::string& kernel, const std::string& dir, const std::string& size, double bytes,
             const std::function<void()>& f) {
  const double ms = median_ms(f);
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  rows.push_back({kernel, dir, size, ms, gbs, "GB/s", gbs / g_copy_gbs});
}

// ---- raw cuBLASLt (the reference the wrapper is measured against) -------------------------------------

// Row-major out (M, N) = op(a) op(b), a (M, K) or (K, M), b (K, N) or (N, K): the same column-major mapping as
// kernels/cuda/matmul.cu, built once.
struct RawGemm {
  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  // The heuristic's first `want` algorithms (algo = the first) as raw bytes: cublasLtMatmulAlgo_t is 8 uint64, and a
  // std::vector of the struct itself trips an nvcc 13 front-end assertion.
  std::vector<std::array<uint64_t, 8>> candidates;
  Tensor workspace;
  static constexpr size_t kWs = size_t(32) << 20;

  RawGemm(int64_t M, int64_t N, int64_t K, bool ta, bool tb, cudaDataType_t in, cudaDataType_t out, int want = 1) {
    CUBLAS_CHECK(cublasLtCreate(&lt));
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
    // cuBLASLt A = our b: (N, K) col-major when !tb (ld N), (K, N) when tb (ld K)
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, in, tb ? K : N, tb ? N : K, tb ? K : N));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, in, ta ? M : K, ta ? K : M, ta ? M : K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, out, N, M, N));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = kWs;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasLtMatmulHeuristicResult_t r[16] = {};
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, std::min(want, 16), r, &found));
    LATTE_CHECK(found > 0, "no cuBLASLt algorithm");
    for (int i = 0; i < found; ++i) {
      std::array<uint64_t, 8> raw_algo;
      std::memcpy(raw_algo.data(), &r[i].algo, sizeof(raw_algo));
      candidates.push_back(raw_algo);
    }
    algo = r[0].algo;
    cublasLtMatmulPreferenceDestroy(pref);
    workspace = Tensor::empty({int64_t(kWs)}, DType::U8, kGpu);
  }
  ~RawGemm() {
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(lt);
  }
  void run(const Tensor& out, const Tensor& a, const Tensor& b, float beta, const std::array<uint64_t, 8>* with = nullptr) {
    const float alpha = 1.f;
    CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, b.data_ptr(), la, a.data_ptr(), lb, &beta, out.data_ptr(), lc,
                                out.data_ptr(), lc, with ? reinterpret_cast<const cublasLtMatmulAlgo_t*>(with->data()) : &algo, workspace.data_ptr(), kWs, cuda::current_stream()));
  }
};

void ceilings() {
  const int64_t n = int64_t(1) << 29;  // 1 GiB of bf16
  Tensor a = randn({n}, DType::BF16, 1), b = Tensor::empty({n}, DType::BF16, kGpu);
  const double ms = median_ms([&] {
    CUDA_CHECK(cudaMemcpyAsync(b.data_ptr(), a.data_ptr(), a.nbytes(), cudaMemcpyDeviceToDevice, cuda::current_stream()));
  });
  g_copy_gbs = 2.0 * static_cast<double>(a.nbytes()) / (ms * 1e-3) / 1e9;
  rows.push_back({"ceiling: copy d2d", "", "1 GiB", ms, g_copy_gbs, "GB/s", 1.0});

  const int64_t S = 8192;
  Tensor x = randn({S, S}, DType::BF16, 2), w = randn({S, S}, DType::BF16, 3), y = Tensor::empty({S, S}, DType::BF16, kGpu);
  RawGemm g(S, S, S, false, true, CUDA_R_16BF, CUDA_R_16BF);
  const double gms = median_ms([&] { g.run(y, x, w, 0.f); });
  g_gemm_tflops = 2.0 * S * S * S / (gms * 1e-3) / 1e12;
  rows.push_back({"ceiling: cuBLASLt bf16 GEMM", "", "8192^3", gms, g_gemm_tflops, "TFLOP/s", 1.0});
}

// A GEMM of the model: the wrapper and raw cuBLASLt on the same tensors.
void gemm_row(const std::string& name, int64_t M, int64_t N, int64_t K, bool ta, bool tb, DType out_t, double beta) {
  Tensor a = ta ? randn({K, M}, DType::BF16, 10) : randn({M, K}, DType::BF16, 10);
  Tensor b = tb ? randn({N, K}, DType::BF16, 11, 0.02f) : randn({K, N}, DType::BF16, 11, 0.02f);
  Tensor c = randn({M, N}, out_t, 12);
  RawGemm raw(M, N, K, ta, tb, CUDA_R_16BF, out_t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F);
  // Raw and wrapper calls alternate, so that clock and power drift hit both alike (v1 timed them one after
  // the other and saw the second lose up to 10% on the longest GEMM).
  bool wrapper = false;
  std::vector<float> t_raw, t_wrap;
  const double both = median_ms(
      [&] {
        if (wrapper) cuda::matmul(c, a, b, ta, tb, 1.0, beta); else raw.run(c, a, b, static_cast<float>(beta));
      },
      4, 40, [&](float ms) {
        if (ms >= 0) (wrapper ? t_wrap : t_raw).push_back(ms);
        wrapper = !wrapper;
      });
  (void)both;
  std::sort(t_raw.begin(), t_raw.end());
  std::sort(t_wrap.begin(), t_wrap.end());
  const double raw_ms = t_raw[t_raw.size() / 2], ms = t_wrap[t_wrap.size() / 2];
  const double tflops = 2.0 * M * N * K / (ms * 1e-3) / 1e12;
  char size[96];
  std::snprintf(size, sizeof(size), "%ldx%ldx%ld%s%s", static_cast<long>(M), static_cast<long>(N), static_cast<long>(K),
                ta ? " aT" : "", tb ? " bT" : "");
  rows.push_back({"matmul " + name, out_t == DType::F32 ? "f32 out" : "bf16", size, ms, tflops, "TFLOP/s",
                  tflops / g_gemm_tflops, raw_ms / ms});
}

void bench_matmuls() {
  const int64_t tok = 8192, d = 2048, ffn = 5504, V = 50304;
  gemm_row("qkv/wo fwd", tok, d, d, false, true, DType::BF16, 0.0);
  gemm_row("w_up fwd", tok, ffn, d, false, true, DType::BF16, 0.0);
  gemm_row("w_down fwd", tok, d, ffn, false, true, DType::BF16, 0.0);
  gemm_row("lm_head fwd", tok, V, d, false, true, DType::BF16, 0.0);
  gemm_row("w_down dX", tok, ffn, d, false, false, DType::BF16, 0.0);
  gemm_row("w_down dW", d, ffn, tok, true, false, DType::F32, 1.0);
  gemm_row("lm_head dX", tok, d, V, false, false, DType::BF16, 0.0);
  gemm_row("lm_head dW", V, d, tok, true, false, DType::F32, 1.0);
}

void bench_memory_bound() {
  const int64_t N = 32768, D = 2048, n = N * D;  // 64M elements: 128 MiB in bf16
  const std::string nd = "32768x2048";
  Tensor x = randn({N, D}, DType::BF16, 20), y = randn({N, D}, DType::BF16, 21), z = Tensor::empty({N, D}, DType::BF16, kGpu);
  Tensor xf = randn({N, D}, DType::F32, 22);
  mem_row("fill", "bf16", nd, 2.0 * n, [&] { cuda::fill(z, 1.5); });
  mem_row("copy", "bf16 contiguous", nd, 4.0 * n, [&] { cuda::copy(z, x); });
  {
    Tensor src = x.view({4, 8192, 16, 128}).permute({0, 2, 1, 3});  // (B, H, T, D) view of (B, T, H, D)
    Tensor dst = Tensor::empty(src.shape(), DType::BF16, kGpu);
    mem_row("copy", "bf16 permute BTHD->BHTD", "4x16x8192x128", 4.0 * n, [&] { cuda::copy(dst, src); });
  }
  mem_row("copy", "bf16->f32 cast", nd, 6.0 * n, [&] { cuda::copy(xf, x); });
  mem_row("add", "bf16", nd, 6.0 * n, [&] { cuda::add(z, x, y, 1.0, -1.0); });
  mem_row("axpy", "f32 += bf16", nd, 10.0 * n, [&] { cuda::axpy(xf, x, 1e-3); });
  {
    Tensor s = Tensor::empty({}, DType::F32, kGpu);
    mem_row("sum_squares", "bf16", nd, 2.0 * n, [&] { cuda::sum_squares(s, x); });
    Tensor bias = Tensor::empty({1, D}, DType::BF16, kGpu);
    mem_row("sum_to", "bf16 (N,D)->(1,D)", nd, 2.0 * n, [&] { cuda::sum_to(bias, x); });
  }
  {
    Tensor w = randn({D}, DType::BF16, 23), rstd = Tensor::empty({N}, DType::F32, kGpu);
    Tensor dw = Tensor::zeros({D}, DType::F32, kGpu);
    mem_row("rmsnorm", "fwd", nd, 4.0 * n, [&] { cuda::rmsnorm_forward(z, rstd, x, w, 1e-6); });
    mem_row("rmsnorm", "bwd", nd, 6.0 * n, [&] { cuda::rmsnorm_backward(z, dw, y, x, w, rstd, false); });
  }
  {
    const int64_t G = 16;  // EG-MLA kv-position gate norm: 16 heads of 128
    Tensor w = randn({D}, DType::BF16, 24), b = randn({D}, DType::BF16, 25);
    Tensor mean = Tensor::empty({N, G}, DType::F32, kGpu), rstd = Tensor::empty({N, G}, DType::F32, kGpu);
    Tensor dw = Tensor::zeros({D}, DType::F32, kGpu), db = Tensor::zeros({D}, DType::F32, kGpu);
    mem_row("group_norm LN G=16", "fwd", nd, 4.0 * n, [&] { cuda::group_norm_forward(z, mean, rstd, x, w, b, G, 1e-5, false); });
    mem_row("group_norm LN G=16", "bwd", nd, 6.0 * n,
            [&] { cuda::group_norm_backward(z, dw, db, y, x, w, mean, rstd, G, false); });
  }
  {
    const int64_t Nl = 131072, C = 512;  // EG-MLA latent gate norm: one group of d_c = 512
    Tensor xl = x.view({Nl, C}), yl = y.view({Nl, C}), zl = z.view({Nl, C});
    Tensor w = randn({C}, DType::BF16, 33), b = randn({C}, DType::BF16, 34);
    Tensor mean = Tensor::empty({Nl, 1}, DType::F32, kGpu), rstd = Tensor::empty({Nl, 1}, DType::F32, kGpu);
    Tensor dw = Tensor::zeros({C}, DType::F32, kGpu), db = Tensor::zeros({C}, DType::F32, kGpu);
    mem_row("group_norm LN G=1", "fwd", "131072x512", 4.0 * n, [&] { cuda::group_norm_forward(zl, mean, rstd, xl, w, b, 1, 1e-5, false); });
    mem_row("group_norm LN G=1", "bwd", "131072x512", 6.0 * n,
            [&] { cuda::group_norm_backward(zl, dw, db, yl, xl, w, mean, rstd, 1, false); });
  }
  {
    // q of (B=16, T=2048, H=16, D=128) rotated over its whole head width
    Tensor q = x.view({16, 2048, 16, 128}), out = z.view({16, 2048, 16, 128});
    std::vector<double> f(64);
    for (int j = 0; j < 64; ++j) f[static_cast<size_t>(j)] = std::pow(10000.0, -2.0 * j / 128);
    Tensor inv = Tensor::from_vector(f, {64}, DType::F32, kGpu);
    mem_row("rope", "fwd", "16x2048x16x128", 4.0 * n, [&] { cuda::rope_forward(out, q, inv, 0, 0); });
    mem_row("rope", "bwd", "16x2048x16x128", 4.0 * n, [&] { cuda::rope_backward(out, q, inv, 0, 0); });
  }
  {
    const int64_t F = 5504, m = 16384 * F;  // 16384 tokens of the MLP hidden width
    Tensor g = randn({16384, F}, DType::BF16, 26), u = randn({16384, F}, DType::BF16, 27);
    Tensor o = Tensor::empty({16384, F}, DType::BF16, kGpu), dg = Tensor::empty({16384, F}, DType::BF16, kGpu),
           du = Tensor::empty({16384, F}, DType::BF16, kGpu);
    mem_row("swiglu", "fwd", "16384x5504", 6.0 * m, [&] { cuda::swiglu_forward(o, g, u); });
    mem_row("swiglu", "bwd", "16384x5504", 10.0 * m, [&] { cuda::swiglu_backward(dg, du, o, g, u); });
  }
  {
    const int64_t V = 50304, T = 32768;
    Tensor table = randn({V, D}, DType::BF16, 28), ids = random_ids(T, V, 29);
    Tensor dtable = Tensor::zeros({V, D}, DType::F32, kGpu);
    mem_row("embedding", "fwd", "32768 of 50304x2048", 4.0 * n, [&] { cuda::embedding_forward(z, table, ids); });
    // distinct ids among T uniform draws: V (1 - exp(-T/V)); each touched f32 row is read and written once
    const double unique = V * (1.0 - std::exp(-static_cast<double>(T) / V));
    mem_row("embedding", "bwd (f32 dtable)", "32768 of 50304x2048", 2.0 * n + 8.0 * unique * D,
            [&] { cuda::embedding_backward(dtable, y, ids); });
  }
  {
    const int64_t R = 4;  // MLRA-4: (B*T, 4*16, 128) -> (B*T, 16, 128)
    Tensor in = randn({2, 4096, R * 16, 128}, DType::BF16, 30), out = Tensor::empty({2, 4096, 16, 128}, DType::BF16, kGpu);
    const double e = 2.0 * 4096 * 16 * 128;
    mem_row("branch_sum R=4", "fwd", "2x4096x64x128", 2.0 * (R + 1) * e, [&] { cuda::branch_sum_forward(out, in, R, 0.5); });
    mem_row("branch_sum R=4", "bwd", "2x4096x64x128", 2.0 * (R + 1) * e, [&] { cuda::branch_sum_backward(in, out, R, 0.5); });
  }
  {
    const int64_t Nt = 8192, V = 50304;
    Tensor logits = randn({Nt, V}, DType::BF16, 31, 2.f), dlogits = Tensor::empty({Nt, V}, DType::BF16, kGpu);
    Tensor targets = random_ids(Nt, V, 32), losses = Tensor::empty({Nt}, DType::F32, kGpu);
    mem_row("cross_entropy", "fwd+bwd", "8192x50304", 4.0 * Nt * V,
            [&] { cuda::cross_entropy_forward_backward(losses, dlogits, logits, targets, -100, 1.0 / Nt); });
    mem_row("cross_entropy", "fwd only", "8192x50304", 2.0 * Nt * V,
            [&] { cuda::cross_entropy_forward_backward(losses, Tensor(), logits, targets, -100, 1.0); });
    // one rank's vocabulary shard under 8-way tensor parallelism (narrower rows: several blocks per SM)
    const int64_t Vs = V / 8;
    Tensor shard = randn({Nt, Vs}, DType::BF16, 35, 2.f), dshard = Tensor::empty({Nt, Vs}, DType::BF16, kGpu);
    Tensor shard_targets = random_ids(Nt, Vs, 36);
    mem_row("cross_entropy", "fwd+bwd", "8192x6288 (TP=8 shard)", 4.0 * Nt * Vs,
            [&] { cuda::cross_entropy_forward_backward(losses, dshard, shard, shard_targets, -100, 1.0 / Nt); });
  }
}

void bench_optimizer() {
  // 200M parameters in 100 tensors of 2M (bf16 params and grads, f32 master and moments)
  std::vector<cuda::AdamWTensors> ts;
  std::vector<Tensor> grads;
  for (int i = 0; i < 100; ++i) {
    cuda::AdamWTensors t;
    t.param = randn({2 << 20}, DType::BF16, 100 + static_cast<uint64_t>(i), 0.02f);
    t.master = t.param.to(DType::F32);
    t.exp_avg = Tensor::zeros({2 << 20}, DType::F32, kGpu);
    t.exp_avg_sq = Tensor::zeros({2 << 20}, DType::F32, kGpu);
    t.grad = randn({2 << 20}, DType::BF16, 300 + static_cast<uint64_t>(i), 1e-3f);
    grads.push_back(t.grad);
    ts.push_back(t);
  }
  const double params = 100.0 * (2 << 20);
  cuda::AdamWHyper h;
  h.lr = 1e-4;
  int64_t step = 0;
  Tensor norm = Tensor::empty({}, DType::F32, kGpu), factor = Tensor::empty({}, DType::F32, kGpu);
  mem_row("grad norm + clip factor", "100 tensors", "200M bf16", 2.0 * params,
          [&] { cuda::clip_grad_norm(grads, 1.0, norm, factor); });
  mem_row("adamw", "100 tensors", "200M params", 28.0 * params, [&] {
    h.step = ++step;
    cuda::adamw_step(ts, h, 1.0, factor);
  });
}

// --gemm-tune: is cuBLASLt's first heuristic choice the fastest at the 1.3B models' training GEMMs? Each
// linear (out, in) of MLA / EG-MLA / MHA at 8192 tokens in its three GEMMs (forward x W^T, dX = g W,
// dW = g^T x; bf16 out), every algorithm of the heuristic's top 16 timed (median of 9); printed: the first
// one's time, the best one's, its rank, and the time a step would save over all 24 layers.
struct TunedLinear { const char* name; int64_t out, in; };
struct TunedGemm { const char* kind; int64_t M, N, K; bool ta, tb; };

void bench_gemm_tuning() {
  const int64_t tok = 8192;
  const std::vector<TunedLinear> lins = {{"mla wq", 3072, 2048},     {"mla wkv_a", 576, 2048}, {"mla wkv_b", 4096, 512},
                                 {"wo", 2048, 2048},         {"ffn up", 5632, 2048},   {"ffn gate+up", 11264, 2048},
                                 {"ffn down", 2048, 5632},   {"egmla wkv_a", 256, 2048}, {"egmla wkv_b", 4096, 192},
                                 {"mha wqkv", 6144, 2048}};
  std::printf("\n| linear (out, in) | GEMM | first algo ms | best ms | best rank / tried | gain | ms per step (24 layers) |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  double total_first = 0, total_best = 0;
  for (const TunedLinear& l : lins) {
    const TunedGemm gemms[] = {{"fwd", tok, l.out, l.in, false, true}, {"dX", tok, l.in, l.out, false, false},
                       {"dW", l.out, l.in, tok, true, false}};
    for (const TunedGemm& g : gemms) {
      Tensor a = g.ta ? randn({g.K, g.M}, DType::BF16, 70) : randn({g.M, g.K}, DType::BF16, 70);
      Tensor b = g.tb ? randn({g.N, g.K}, DType::BF16, 71, 0.02f) : randn({g.K, g.N}, DType::BF16, 71, 0.02f);
      Tensor c = Tensor::empty({g.M, g.N}, DType::BF16, kGpu);
      RawGemm raw(g.M, g.N, g.K, g.ta, g.tb, CUDA_R_16BF, CUDA_R_16BF, 16);
      double first = 0, best = 1e30;
      size_t best_i = 0;
      for (size_t i = 0; i < raw.candidates.size(); ++i) {
        double ms = 0;
        try {
          ms = median_ms([&] { raw.run(c, a, b, 0.f, &raw.candidates[i]); }, 2, 9);
        } catch (const std::exception&) {
          continue;  // an algorithm the heuristic offers may still refuse these operands
        }
        if (i == 0) first = ms;
        if (ms < best) best = ms, best_i = i;
      }
      total_first += 24 * first;
      total_best += 24 * best;
      std::printf("| %s (%lld, %lld) | %s | %.4f | %.4f | %zu / %zu | %.1f%% | %.3f |\n", l.name,
                  static_cast<long long>(l.out), static_cast<long long>(l.in), g.kind, first, best, best_i + 1,
                  raw.candidates.size(), 100.0 * (first - best) / first, 24 * (first - best));
    }
  }
  std::printf("all rows: %.2f -> %.2f ms per 24 layers\n", total_first, total_best);
}

// --overlap: can an optimizer step hide behind the next step's forward? A 1.3B-class MLA model's weights
// (24 blocks of six linears, ~1.16B parameters, f32 master and moments, bf16 params and grads) are updated
// block by block on a side stream while the main stream runs each block's forward GEMMs (8192 tokens) as
// soon as that block's update is done. Printed: each schedule's time and the share of the update it hides,
// (serial - overlapped) / update alone.
void bench_optimizer_overlap() {
  const int64_t tok = 8192, d = 2048, ffn = 5632, L = 24;
  struct Lin { int64_t out, in; };
  const std::vector<Lin> lins = {{3072, d}, {576, d}, {4096, 512}, {d, d}, {2 * ffn, d}, {d, ffn}};
  std::vector<std::vector<cuda::AdamWTensors>> chunks(L);
  std::vector<cuda::AdamWTensors> all;
  double params = 0;
  uint64_t seed = 500;
  for (int64_t b = 0; b < L; ++b)
    for (const Lin& l : lins) {
      cuda::AdamWTensors t;
      t.param = randn({l.out, l.in}, DType::BF16, seed++, 0.02f);
      t.master = t.param.to(DType::F32);
      t.exp_avg = Tensor::zeros(t.param.shape(), DType::F32, kGpu);
      t.exp_avg_sq = Tensor::zeros(t.param.shape(), DType::F32, kGpu);
      t.grad = randn(t.param.shape(), DType::BF16, seed++, 1e-3f);
      chunks[b].push_back(t);
      all.push_back(t);
      params += static_cast<double>(l.out * l.in);
    }
  Tensor x_d = randn({tok, d}, DType::BF16, 600), x_512 = randn({tok, 512}, DType::BF16, 601),
         x_ffn = randn({tok, ffn}, DType::BF16, 602), y = Tensor::empty({tok, 2 * ffn}, DType::BF16, kGpu);
  auto block_gemms = [&](int64_t b) {
    for (const cuda::AdamWTensors& t : chunks[b]) {
      const int64_t in = t.param.size(1), out = t.param.size(0);
      const Tensor& x = in == d ? x_d : in == 512 ? x_512 : x_ffn;
      cuda::matmul(y.narrow(1, 0, out), x, t.param, false, true, 1.0, 0.0);
    }
  };
  int least = 0, greatest = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  auto make_stream = [](int priority) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, priority));
    return s;
  };
  cudaStream_t main_lo = make_stream(least), main_hi = make_stream(greatest), side_lo = make_stream(least),
               side_hi = make_stream(greatest);
  cuda::AdamWHyper h;
  h.lr = 1e-4;
  std::vector<std::unique_ptr<cuda::Event>> done;
  for (int64_t b = 0; b < L; ++b) done.push_back(std::make_unique<cuda::Event>(false));
  cuda::Event go(false);
  // One schedule: side == nullptr runs everything on `main` (update first, or none).
  auto run = [&](cudaStream_t main, cudaStream_t side, bool update, int cap) {
    cuda::StreamGuard on_main(main);
    h.step++;
    h.max_blocks_per_tensor = cap;
    if (update && !side) cuda::adamw_step(all, h, 1.0);
    if (update && side) {
      go.record(main);
      go.wait(side);
      cuda::StreamGuard on_side(side);
      for (int64_t b = 0; b < L; ++b) {
        cuda::adamw_step(chunks[b], h, 1.0);
        done[b]->record(side);
      }
    }
    for (int64_t b = 0; b < L; ++b) {
      if (update && side) done[b]->wait(main);
      block_gemms(b);
    }
  };
  auto time = [&](cudaStream_t main, cudaStream_t side, bool update, int cap) {
    cuda::StreamGuard on_main(main);
    return median_ms([&] { run(main, side, update, cap); }, 2, 7);
  };
  const double gemms = time(main_lo, nullptr, false, 0);
  const double serial = time(main_lo, nullptr, true, 0);
  const double update = serial - gemms;
  std::printf("\noptimizer overlap (%.2fB params, %lld blocks, %lld tokens): forward GEMMs %.2f ms, update %.2f ms "
              "(%.0f GB/s), serial %.2f ms\n", params / 1e9, static_cast<long long>(L), static_cast<long long>(tok),
              gemms, update, 28.0 * params / (update * 1e-3) / 1e9, serial);
  std::printf("| schedule | blocks/tensor | ms | hidden share of the update |\n|---|---:|---:|---:|\n");
  struct Case { const char* name; cudaStream_t main, side; int cap; };
  const std::vector<Case> cases = {{"side stream, equal priority", main_lo, side_lo, 0},
                                   {"side stream, forward first", main_hi, side_lo, 0},
                                   {"side stream, update first", main_lo, side_hi, 0},
                                   {"side stream, forward first", main_hi, side_lo, 16},
                                   {"side stream, forward first", main_hi, side_lo, 4},
                                   {"side stream, forward first", main_hi, side_lo, 2},
                                   {"side stream, equal priority", main_lo, side_lo, 4},
                                   {"side stream, equal priority", main_lo, side_lo, 2}};
  for (const Case& c : cases) {
    const double ms = time(c.main, c.side, true, c.cap);
    std::printf("| %s | %d | %.2f | %.0f%% |\n", c.name, c.cap > 0 ? c.cap : 1024, ms, 100.0 * (serial - ms) / update);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  for (cudaStream_t s : {main_lo, main_hi, side_lo, side_hi}) CUDA_CHECK(cudaStreamDestroy(s));
}

// cuda::attention_* here is the simple cuBLAS + fp32-scratch path; FLOPs counted dense (it computes the
// masked half too): forward 4 T S D per head, backward 10 T S D (QK^T recomputed, dV, dP, dQ, dK).
void bench_attention() {
  const int64_t B = 2, T = 2048, H = 16, D = 128;
  Tensor q = randn({B, T, H, D}, DType::BF16, 40), k = randn({B, T, H, D}, DType::BF16, 41),
         v = randn({B, T, H, D}, DType::BF16, 42);
  Tensor out = Tensor::empty({B, T, H, D}, DType::BF16, kGpu), lse = Tensor::empty({B, H, T}, DType::F32, kGpu);
  Tensor dout = randn({B, T, H, D}, DType::BF16, 43);
  Tensor dq = Tensor::empty(q.shape(), DType::BF16, kGpu), dk = Tensor::empty(k.shape(), DType::BF16, kGpu),
         dv = Tensor::empty(v.shape(), DType::BF16, kGpu);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D)), per = static_cast<double>(B * H * T * T * D);
  const double fms = median_ms([&] { cuda::attention_forward(out, lse, q, k, v, 1, scale, true); }, 2, 7);
  rows.push_back({"attention (simple path)", "fwd", "2x2048x16x128", fms, 4.0 * per / (fms * 1e-3) / 1e12, "TFLOP/s",
                  4.0 * per / (fms * 1e-3) / 1e12 / g_gemm_tflops});
  const double bms = median_ms([&] { cuda::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, 1, scale, true); }, 2, 7);
  rows.push_back({"attention (simple path)", "bwd", "2x2048x16x128", bms, 10.0 * per / (bms * 1e-3) / 1e12, "TFLOP/s",
                  10.0 * per / (bms * 1e-3) / 1e12 / g_gemm_tflops});
}

void print_table() {
  std::printf("\n| kernel | direction | size | median ms | rate | of ceiling | wrapper vs raw cuBLASLt |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    char raw[32] = "";
    if (r.vs_raw > 0) std::snprintf(raw, sizeof(raw), "%.1f%%", 100.0 * r.vs_raw);
    std::printf("| %s | %s | %s | %.4f | %.1f %s | %.0f%% | %s |\n", r.kernel.c_str(), r.dir.c_str(), r.size.c_str(),
                r.ms, r.rate, r.unit, 100.0 * r.ratio, raw);
  }
  cuda::AllocatorStats s = cuda::allocator_stats();
  std::printf("\ncudaMalloc calls inside timed loops: %llu (allocator: %llu allocations, %llu cache hits, peak %.2f GiB)\n",
              static_cast<unsigned long long>(g_mallocs_in_loops), static_cast<unsigned long long>(s.allocations),
              static_cast<unsigned long long>(s.cache_hits), s.peak_allocated / 1073741824.0);
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::printf("bench_kernels: no CUDA device, nothing to measure\n");
    return 0;
  }
  try {
    const cudaDeviceProp& p = cuda::device_properties();
    std::printf("device: %s, %d SMs, %.0f GiB\n", p.name, p.multiProcessorCount, p.totalGlobalMem / 1073741824.0);
    if (argc > 1 && std::string(argv[1]) == "--overlap") {
      bench_optimizer_overlap();
      return 0;
    }
    if (argc > 1 && std::string(argv[1]) == "--gemm-tune") {
      bench_gemm_tuning();
      return 0;
    }
    ceilings();
    bench_memory_bound();
    cuda::empty_cache();
    bench_matmuls();
    cuda::empty_cache();
    bench_optimizer();
    cuda::empty_cache();
    bench_attention();
    print_table();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    print_table();
    return 1;
  }
  return 0;
}
