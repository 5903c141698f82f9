// Causal softmax attention with GQA and MLRA branches as virtual heads, forward and backward: the
// "correct first" CUDA path (a flash kernel that never stores scores comes later). The matrix products
// run on tensor cores through cuBLAS pointer-array batched GEMMs; the scores live in an fp32 scratch.
//   q (B, T, Hq, Dqk)  k (B, S, R*Hk, Dqk)  v (B, S, R*Hk, Dv)  out (B, T, R*Hq, Dv)  lse (B, R*Hq, T) f32
// Virtual head vh = (b*R + r)*Hq + i (the order of lse's rows) pairs query head i with kv head
// r*Hk + i/(Hq/Hk) and writes out head r*Hq + i. q/k/v/out/dout may be strided in B/T/H: a head's rows
// are a matrix with leading dimension stride(1), so the pointer arrays address them in place.
//
// Forward, per chunk of virtual heads (as many as fit a 1 GiB scratch):
//   S = scale Q K^T            (T, S) fp32, batched GEMM
//   P = softmax(S) (causal)    one warp per row; lse saved; P in the input dtype (bf16 for the PV GEMM)
//   O = P V                    batched GEMM, written straight into out
// Backward, per chunk (P recomputed from lse, as flash attention does):
//   S = scale Q K^T; P = exp(S - lse)        dV += P^T dO          dP = dO V^T
//   dS = P (dP - rowsum(dO o O))             dQ += scale dS K       dK += scale dS^T Q
// dQ sums over the R branches of a query head and dK/dV over the Hq/Hk query heads of a kv head: these
// land in fp32 accumulators with beta = 1, and one batched call never holds two heads that write the
// same accumulator (calls are split into waves), so there are no races and the result is the same on
// every run. bf16 outputs are cast from the accumulators at the end.
// FLOPs (not skipping the masked half): forward 2 B R Hq T S (Dqk + Dv), backward twice that plus the
// recomputed QK^T. Scratch traffic: forward ~10 bytes per score, backward ~26.
#include <cublas_v2.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernels/attention_backend.h"
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/attention_autotune.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cudnn_attention.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/matmul.h"

namespace latte::cuda {

namespace {

constexpr int64_t kScratchBudget = int64_t(1) << 30;  // bytes of score scratch per chunk

// ---- kernels --------------------------------------------------------------------------------------------

// One warp per score row (c, t) of the chunk: rows = n*T, row length S. Causal: keys j <= t + S - T.
// Forward (lse_in null): computes lse (written to lse_out) and P = exp(s - lse). Backward: P from lse_in.
// P goes in place into the fp32 scores when `write_f32`, and to `p` (dtype dtp) when p is not null.
__global__ void attn_softmax_kernel(float* scores, void* p, int dtp, float* lse_out, const float* lse_in, int64_t rows,
                                    int64_t T, int64_t S, bool causal, bool write_f32) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t t = row % T;
  const int64_t limit = causal ? t + S - T + 1 : S;  // keys [0, limit) are visible
  float* srow = scores + row * S;
  float lse;
  if (lse_in) {
    lse = lse_in[row];
  } else {
    float m = -INFINITY, s = 0.f;
    for (int64_t j = lane; j < limit; j += 32) {
      const float x = srow[j];
      if (x > m) {
        s = s * expf(m - x) + 1.f;
        m = x;
      } else {
        s += expf(x - m);
      }
    }
    const float M = warp_max(m);
    const float total = warp_sum(m == -INFINITY ? 0.f : s * expf(m - M));
    lse = M + logf(total);
    if (lane == 0) lse_out[row] = lse;
  }
  for (int64_t j = lane; j < S; j += 32) {
    const float pr = j < limit ? expf(srow[j] - lse) : 0.f;
    if (write_f32) srow[j] = pr;
    if (p) store1(p, dtp, row * S + j, pr);
  }
}

struct HeadRows {  // where row (vh, t) of out/dout lives
  const void* out;
  const void* dout;
  int64_t os0, os1, os2, ds0, ds1, ds2;  // element strides (B, T, head)
};

// dS = P (dP - delta), delta = dout . out of this row; one warp per row. dS to `ds` (dtype dtds; may be dp).
__global__ void attn_softmax_backward_kernel(const float* probs, const float* dp, void* ds, int dtds, HeadRows hr,
                                             int dt, int64_t rows, int64_t T, int64_t S, int64_t v0, int64_t RHq,
                                             int64_t Dv) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t c = row / T, t = row - c * T, vh = v0 + c, b = vh / RHq, head = vh - b * RHq;
  const int64_t oo = b * hr.os0 + t * hr.os1 + head * hr.os2, od = b * hr.ds0 + t * hr.ds1 + head * hr.ds2;
  float delta = 0.f;
  for (int64_t d = lane; d < Dv; d += 32) delta += load1(hr.dout, dt, od + d) * load1(hr.out, dt, oo + d);
  delta = warp_sum(delta);
  for (int64_t j = lane; j < S; j += 32) store1(ds, dtds, row * S + j, probs[row * S + j] * (dp[row * S + j] - delta));
}

// ---- host side ----------------------------------------------------------------------------------------------

struct Dims {
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv, G;  // G = Hq / Hk
  int64_t VH() const { return B * R * Hq; }
  int64_t kv_head(int64_t r, int64_t i) const { return r * Hk + i / G; }
};

Dims check_dims(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                int64_t branches, bool causal, const char* op) {
  LATTE_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && out.dim() == 4, op, ": q ", q.shape().str(), " k ",
              k.shape().str(), " v ", v.shape().str(), " out ", out.shape().str());
  Dims d{q.size(0), q.size(1), k.size(1), q.size(2), 0, branches, q.size(3), v.size(3), 1};
  LATTE_CHECK(branches >= 1 && k.size(2) % branches == 0, op, ": ", k.size(2), " kv heads for ", branches, " branches");
  d.Hk = k.size(2) / branches;
  LATTE_CHECK(d.Hk >= 1 && d.Hq % d.Hk == 0, op, ": ", d.Hq, " query heads for ", d.Hk, " kv heads");
  d.G = d.Hq / d.Hk;
  LATTE_CHECK(k.size(0) == d.B && v.size(0) == d.B && k.size(3) == d.Dqk && v.size(1) == d.S && v.size(2) == k.size(2),
              op, ": q ", q.shape().str(), " k ", k.shape().str(), " v ", v.shape().str());
  LATTE_CHECK(out.shape() == Shape({d.B, d.T, d.R * d.Hq, d.Dv}), op, ": out ", out.shape().str());
  LATTE_CHECK(lse.shape() == Shape({d.B, d.R * d.Hq, d.T}) && lse.is_contiguous() && lse.dtype() == DType::F32, op,
              ": lse ", lse.shape().str(), " must be contiguous f32 (B, R*Hq, T)");
  LATTE_CHECK(!causal || d.S >= d.T, op, ": causal attention needs S >= T, got S=", d.S, " T=", d.T);
  LATTE_CHECK(d.T == 0 || d.S >= 1, op, ": no keys");
  LATTE_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && out.stride(3) == 1, op,
              " needs a contiguous last dim");
  LATTE_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype() && out.dtype() == q.dtype(), op, ": mixed dtypes");
  float_code(q, op);
  LATTE_CHECK(d.T * d.S < (int64_t(1) << 31) && d.S < (int64_t(1) << 31), op, ": sequence too long for this path");
  return d;
}

// Leading dimension of a head's (rows, width) matrix inside a 4-D tensor: stride(1), or width when one row.
int row_ld(const Tensor& t) {
  int64_t ld = t.size(1) <= 1 ? std::max<int64_t>(t.stride(1), t.size(3)) : t.stride(1);
  return static_cast<int>(std::max<int64_t>(ld, t.size(3)));
}

const char* at(const Tensor& t, int64_t b, int64_t h) {
  return static_cast<const char*>(t.data_ptr()) + (b * t.stride(0) + h * t.stride(2)) * static_cast<int64_t>(t.element_size());
}

// Pointer arrays for all batched calls of one op, built on the host and uploaded once.
class PtrTable {
 public:
  size_t add(const std::vector<const void*>& v) {
    size_t at = host_.size();
    host_.insert(host_.end(), v.begin(), v.end());
    return at;
  }
  void upload(Device dev) {
    dev_ = Tensor::empty({static_cast<int64_t>(host_.size())}, DType::I64, dev);
    copy_bytes(dev_.data_ptr(), dev, host_.data(), Device::cpu(), host_.size() * sizeof(void*));
  }
  const void* const* at(size_t off) const { return static_cast<const void* const*>(dev_.data_ptr()) + off; }
  void* const* at_mut(size_t off) const { return static_cast<void* const*>(dev_.data_ptr()) + off; }

 private:
  std::vector<const void*> host_;
  Tensor dev_;
};

cudaDataType_t cu_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// C = alpha op(A) op(B) + beta C, column-major, over `count` pointer triples.
void gemm_batched(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                  const void* const* A, cudaDataType_t at, int lda, const void* const* B, cudaDataType_t bt, int ldb,
                  float beta, void* const* C, cudaDataType_t ct, int ldc, int64_t count) {
  if (count == 0) return;
  CUBLAS_CHECK(cublasGemmBatchedEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha, A, at, lda, B,
                                   bt, ldb, &beta, C, ct, ldc, static_cast<int>(count), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
}

int64_t chunk_heads(const Dims& d, int64_t bytes_per_score) {
  const int64_t per_head = std::max<int64_t>(1, d.T * d.S * bytes_per_score);
  return std::max<int64_t>(1, std::min<int64_t>(d.VH(), kScratchBudget / per_head));
}

}  // namespace

// Which implementation runs a call (kernels/attention_backend.h): the backend setting, what supports the
// shape, and under `auto` the fastest measured (attention_autotune.h).
enum class Impl { Flash, Cudnn, Reference };

static const char* impl_name(Impl i) { return i == Impl::Flash ? "latte" : i == Impl::Cudnn ? "cudnn" : "reference"; }

static std::string call_key(const char* pass, const Dims& d, bool causal) {
  return str(pass, " B=", d.B, " T=", d.T, " S=", d.S, " Hq=", d.Hq, " Hk=", d.Hk, " R=", d.R, " D=(", d.Dqk, ",",
             d.Dv, ")", causal ? " causal" : "");
}

// Whether cuDNN's support check is needed for this call: not when `auto` has already chosen the flash kernels
// for the call's shape (the check builds cuDNN's plan key, host time on every call).
static bool cudnn_check_needed(AttentionBackend backend, bool flash, const std::string& key) {
  if (backend == AttentionBackend::Cudnn) return true;
  if (backend != AttentionBackend::Auto) return false;
  return !(flash && attention_autotune_choice(key) == 0);  // 0: Impl::Flash, the first option in pick_impl
}

// `flash` / `cudnn_why`: whether each fused path supports the call (cudnn_why empty when it does); `run`
// runs one implementation. Returns the one to use.
template <typename Run>
static Impl pick_impl(const char* op, const std::string& key, const Tensor& q, const Tensor& v, bool flash,
                      const std::string& cudnn_why, Run run) {
  switch (attention_backend()) {
    case AttentionBackend::Reference:
      return Impl::Reference;
    case AttentionBackend::Latte:
      LATTE_REQUIRE(flash, op, ": attention_backend latte does not support q ", q.shape().str(), " v ",
                    v.shape().str(), " ", dtype_name(q.dtype()), "; use auto");
      return Impl::Flash;
    case AttentionBackend::Cudnn:
      LATTE_REQUIRE(cudnn_why.empty(), op, ": attention_backend cudnn cannot run q ", q.shape().str(), " v ",
                    v.shape().str(), ": ", cudnn_why, "; use auto");
      return Impl::Cudnn;
    case AttentionBackend::Auto:
      break;
  }
  if (flash && cudnn_why.empty()) {
    const Impl options[] = {Impl::Flash, Impl::Cudnn};
    return options[attention_autotune(key, {impl_name(options[0]), impl_name(options[1])},
                                      [&](size_t i) { run(options[i]); })];
  }
  return flash ? Impl::Flash : cudnn_why.empty() ? Impl::Cudnn : Impl::Reference;
}

void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       int64_t branches, double softmax_scale, bool causal) {
  const char* op = "attention_forward";
  const Dims d = check_dims(q, k, v, out, lse, branches, causal, op);
  if (d.VH() == 0 || d.T == 0) return;
  const bool flash = flash_attention_supported(q, k, v, out);
  const AttentionBackend backend = attention_backend();
  const std::string key = call_key("fwd", d, causal);
  const std::string cudnn_why = cudnn_check_needed(backend, flash, key)
                                    ? cudnn_attention_forward_unsupported(q, k, v, out, lse, branches, causal)
                                    : "not asked for";
  auto run = [&](Impl i) {
    if (i == Impl::Flash) flash_attention_forward(out, lse, q, k, v, branches, softmax_scale, causal);
    if (i == Impl::Cudnn) cudnn_attention_forward(out, lse, q, k, v, branches, softmax_scale, causal);
  };
  const Impl impl = pick_impl(op, key, q, v, flash, cudnn_why, run);
  if (impl != Impl::Reference) {
    run(impl);
    return;
  }
  const bool bf16 = q.dtype() == DType::BF16;
  const cudaDataType_t dt = cu_type(q.dtype());
  const int64_t C = chunk_heads(d, bf16 ? 6 : 4);
  const Device dev = q.device();
  Tensor scores = Tensor::empty({C, d.T, d.S}, DType::F32, dev);
  Tensor probs = bf16 ? Tensor::empty({C, d.T, d.S}, DType::BF16, dev) : scores;

  // Per virtual head: Q, K, V, O; per chunk slot: S, P.
  std::vector<const void*> Q, K, V, O, Sc, P;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t r = 0; r < d.R; ++r)
      for (int64_t i = 0; i < d.Hq; ++i) {
        Q.push_back(at(q, b, i));
        K.push_back(at(k, b, d.kv_head(r, i)));
        V.push_back(at(v, b, d.kv_head(r, i)));
        O.push_back(at(out, b, r * d.Hq + i));
      }
  for (int64_t c = 0; c < C; ++c) {
    Sc.push_back(scores.data<float>() + c * d.T * d.S);
    P.push_back(static_cast<const char*>(probs.data_ptr()) + c * d.T * d.S * static_cast<int64_t>(probs.element_size()));
  }
  PtrTable tab;
  const size_t oQ = tab.add(Q), oK = tab.add(K), oV = tab.add(V), oO = tab.add(O), oS = tab.add(Sc), oP = tab.add(P);
  tab.upload(dev);

  cublasHandle_t h = blas_handle();
  cudaStream_t stream = current_stream();
  const int ldq = row_ld(q), ldk = row_ld(k), ldv = row_ld(v), ldo = row_ld(out), lds = static_cast<int>(d.S);
  for (int64_t v0 = 0; v0 < d.VH(); v0 += C) {
    const int64_t n = std::min(C, d.VH() - v0);
    // S (T, S) = scale Q K^T: column-major S^T (S, T) = K^T(S, D) Q^T(D, T)
    gemm_batched(h, true, false, d.S, d.T, d.Dqk, static_cast<float>(softmax_scale), tab.at(oK + v0), dt, ldk,
                 tab.at(oQ + v0), dt, ldq, 0.f, tab.at_mut(oS), CUDA_R_32F, lds, n);
    const int64_t rows = n * d.T;
    attn_softmax_kernel<<<blocks_for(rows, 8), 256, 0, stream>>>(scores.data<float>(), bf16 ? probs.data_ptr() : nullptr,
                                                                 kBF16, lse.data<float>() + v0 * d.T, nullptr, rows,
                                                                 d.T, d.S, causal, !bf16);
    CUDA_CHECK_LAUNCH("attn_softmax_kernel");
    // O (T, Dv) = P V: column-major O^T (Dv, T) = V^T (Dv, S) P^T (S, T)
    gemm_batched(h, false, false, d.Dv, d.T, d.S, 1.f, tab.at(oV + v0), dt, ldv, tab.at(oP), dt, lds, 0.f,
                 tab.at_mut(oO + v0), dt, ldo, n);
  }
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, int64_t branches,
                        double softmax_scale, bool causal) {
  const char* op = "attention_backward";
  const Dims d = check_dims(q, k, v, out, lse, branches, causal, op);
  LATTE_CHECK(dout.shape() == out.shape() && dout.stride(3) == 1 && dout.dtype() == q.dtype(), op, ": dout ",
              dout.shape().str());
  LATTE_CHECK(dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape() && dq.is_contiguous() &&
                  dk.is_contiguous() && dv.is_contiguous(),
              op, ": dq/dk/dv must be contiguous with q/k/v's shapes");
  LATTE_CHECK(dq.dtype() == q.dtype() && dk.dtype() == q.dtype() && dv.dtype() == q.dtype(), op, ": mixed dtypes");
  const bool flash = flash_attention_supported(q, k, v, out);
  const AttentionBackend backend = attention_backend();
  LATTE_REQUIRE(!(backend == AttentionBackend::Cudnn && deterministic_attention()), op,
                ": LATTE_DETERMINISTIC=1 with attention_backend cudnn: cuDNN's backward accumulates dQ with "
                "atomics; use auto or latte");
  const std::string key = call_key("bwd", d, causal);
  std::string cudnn_why = "not asked for";
  if (!deterministic_attention() && cudnn_check_needed(backend, flash, key))
    cudnn_why = cudnn_attention_backward_unsupported(dq, dk, dv, dout, q, k, v, out, lse, branches, causal);
  auto run = [&](Impl i) {
    if (i == Impl::Flash)
      flash_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, branches, softmax_scale, causal,
                               deterministic_attention());
    if (i == Impl::Cudnn) cudnn_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, branches, softmax_scale, causal);
  };
  const Impl impl = pick_impl(op, key, q, v, flash, cudnn_why, run);
  if (impl != Impl::Reference) {
    run(impl);
    return;
  }
  const Device dev = q.device();
  // fp32 accumulators: the outputs themselves when f32.
  const bool bf16 = q.dtype() == DType::BF16;
  Tensor gq = bf16 ? Tensor::empty(dq.shape(), DType::F32, dev) : dq;
  Tensor gk = bf16 ? Tensor::empty(dk.shape(), DType::F32, dev) : dk;
  Tensor gv = bf16 ? Tensor::empty(dv.shape(), DType::F32, dev) : dv;
  fill(gq, 0.0);
  fill(gk, 0.0);
  fill(gv, 0.0);
  if (d.VH() > 0 && d.T > 0) {
    const cudaDataType_t dt = cu_type(q.dtype());
    const int64_t C = chunk_heads(d, bf16 ? 10 : 8);
    Tensor scores = Tensor::empty({C, d.T, d.S}, DType::F32, dev);  // S, then P in place
    Tensor dprob = Tensor::empty({C, d.T, d.S}, DType::F32, dev);   // dP (f32: then dS in place)
    Tensor pb = bf16 ? Tensor::empty({C, d.T, d.S}, DType::BF16, dev) : Tensor();  // P, then dS (bf16)
    const int64_t Hkv = d.R * d.Hk;

    std::vector<const void*> Q, K, V, dO, dQ, dK, dV, Sc, dP, Pm;
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t r = 0; r < d.R; ++r)
        for (int64_t i = 0; i < d.Hq; ++i) {
          const int64_t kvh = d.kv_head(r, i);
          Q.push_back(at(q, b, i));
          K.push_back(at(k, b, kvh));
          V.push_back(at(v, b, kvh));
          dO.push_back(at(dout, b, r * d.Hq + i));
          dQ.push_back(gq.data<float>() + (b * d.T * d.Hq + i) * d.Dqk);
          dK.push_back(gk.data<float>() + (b * d.S * Hkv + kvh) * d.Dqk);
          dV.push_back(gv.data<float>() + (b * d.S * Hkv + kvh) * d.Dv);
        }
    for (int64_t c = 0; c < C; ++c) {
      Sc.push_back(scores.data<float>() + c * d.T * d.S);
      dP.push_back(dprob.data<float>() + c * d.T * d.S);
      Pm.push_back(bf16 ? static_cast<const void*>(static_cast<const uint16_t*>(pb.data_ptr()) + c * d.T * d.S)
                        : Sc.back());
    }
    PtrTable tab;
    const size_t oQ = tab.add(Q), oK = tab.add(K), oV = tab.add(V), odO = tab.add(dO), odQ = tab.add(dQ),
                 oS = tab.add(Sc), odP = tab.add(dP), oPm = tab.add(Pm);
    // dS lives in pb (bf16) or in place of dP (f32).
    const size_t odS = bf16 ? oPm : odP;
    const cudaDataType_t ds_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    // Waves of the chunk [v0, v0+n): dQ per (b, r) segment (distinct query heads); dK/dV per (b, r, i % G)
    // (distinct kv heads). Each wave: offsets of its A (Q or dO), B (dS or P) and C (dK or dV) lists.
    struct Wave {        // table offsets of the wave's pointer lists
      size_t a, b, c;      // dK += dS^T Q: A = Q, B = dS, C = dK
      size_t a2, bp, c2;   // dV += P^T dO: A = dO, B = P, C = dV
      int64_t count;
    };
    struct Segment {
      int64_t v_begin, count;  // contiguous virtual heads with one (b, r)
    };
    std::vector<std::vector<Segment>> seg_per_chunk;
    std::vector<std::vector<Wave>> waves_per_chunk;
    for (int64_t v0 = 0; v0 < d.VH(); v0 += C) {
      const int64_t n = std::min(C, d.VH() - v0);
      std::vector<Segment> segs;
      std::vector<Wave> waves;
      for (int64_t s0 = v0; s0 < v0 + n;) {
        const int64_t seg_end = std::min(v0 + n, (s0 / d.Hq + 1) * d.Hq);  // end of this (b, r)
        segs.push_back({s0, seg_end - s0});
        for (int64_t m = 0; m < d.G; ++m) {
          std::vector<const void*> qa, dsb, dkc, doa, pbb, dvc;
          for (int64_t vh = s0; vh < seg_end; ++vh) {
            if ((vh % d.Hq) % d.G != m) continue;
            const size_t c = static_cast<size_t>(vh - v0);
            qa.push_back(Q[static_cast<size_t>(vh)]);
            dsb.push_back(bf16 ? Pm[c] : dP[c]);
            dkc.push_back(dK[static_cast<size_t>(vh)]);
            doa.push_back(dO[static_cast<size_t>(vh)]);
            pbb.push_back(Pm[c]);
            dvc.push_back(dV[static_cast<size_t>(vh)]);
          }
          if (qa.empty()) continue;
          Wave w;
          w.a = tab.add(qa);
          w.b = tab.add(dsb);
          w.c = tab.add(dkc);
          w.a2 = tab.add(doa);
          w.bp = tab.add(pbb);
          w.c2 = tab.add(dvc);
          w.count = static_cast<int64_t>(qa.size());
          waves.push_back(w);
        }
        s0 = seg_end;
      }
      seg_per_chunk.push_back(std::move(segs));
      waves_per_chunk.push_back(std::move(waves));
    }
    tab.upload(dev);

    cublasHandle_t h = blas_handle();
    cudaStream_t stream = current_stream();
    const int ldq = row_ld(q), ldk = row_ld(k), ldv = row_ld(v), ldd = row_ld(dout), lds = static_cast<int>(d.S);
    const int ldgq = static_cast<int>(d.Hq * d.Dqk), ldgk = static_cast<int>(Hkv * d.Dqk),
              ldgv = static_cast<int>(Hkv * d.Dv);
    const float scale = static_cast<float>(softmax_scale);
    HeadRows hr{out.data_ptr(), dout.data_ptr(), out.stride(0), out.stride(1), out.stride(2),
                dout.stride(0), dout.stride(1), dout.stride(2)};
    size_t chunk = 0;
    for (int64_t v0 = 0; v0 < d.VH(); v0 += C, ++chunk) {
      const int64_t n = std::min(C, d.VH() - v0), rows = n * d.T;
      // S = scale Q K^T, then P = exp(S - lse) (in place, fp32; plus a bf16 copy for the GEMMs)
      gemm_batched(h, true, false, d.S, d.T, d.Dqk, scale, tab.at(oK + v0), dt, ldk, tab.at(oQ + v0), dt, ldq, 0.f,
                   tab.at_mut(oS), CUDA_R_32F, lds, n);
      attn_softmax_kernel<<<blocks_for(rows, 8), 256, 0, stream>>>(scores.data<float>(),
                                                                   bf16 ? pb.data_ptr() : nullptr, kBF16, nullptr,
                                                                   lse.data<float>() + v0 * d.T, rows, d.T, d.S, causal,
                                                                   true);
      CUDA_CHECK_LAUNCH("attn_softmax_kernel");
      // dV (S, Dv) += P^T dO: column-major dV^T (Dv, S) = dO^T (Dv, T) P (T, S)
      for (const Wave& w : waves_per_chunk[chunk])
        gemm_batched(h, false, true, d.Dv, d.S, d.T, 1.f, tab.at(w.a2), dt, ldd, tab.at(w.bp), dt, lds, 1.f,
                     tab.at_mut(w.c2), CUDA_R_32F, ldgv, w.count);
      // dP (T, S) = dO V^T: column-major dP^T (S, T) = V (S, Dv) dO^T (Dv, T)
      gemm_batched(h, true, false, d.S, d.T, d.Dv, 1.f, tab.at(oV + v0), dt, ldv, tab.at(odO + v0), dt, ldd, 0.f,
                   tab.at_mut(odP), CUDA_R_32F, lds, n);
      // dS = P (dP - delta)
      attn_softmax_backward_kernel<<<blocks_for(rows, 8), 256, 0, stream>>>(
          scores.data<float>(), dprob.data<float>(), bf16 ? pb.data_ptr() : dprob.data_ptr(), bf16 ? kBF16 : kF32, hr,
          bf16 ? kBF16 : kF32, rows, d.T, d.S, v0, d.R * d.Hq, d.Dv);
      CUDA_CHECK_LAUNCH("attn_softmax_backward_kernel");
      // dQ (T, Dqk) += scale dS K: column-major dQ^T (Dqk, T) = K^T (Dqk, S) dS^T (S, T); one call per (b, r)
      for (const Segment& s : seg_per_chunk[chunk])
        gemm_batched(h, false, false, d.Dqk, d.T, d.S, scale, tab.at(oK + static_cast<size_t>(s.v_begin)), dt, ldk,
                     tab.at(odS + static_cast<size_t>(s.v_begin - v0)), ds_type, lds, 1.f,
                     tab.at_mut(odQ + static_cast<size_t>(s.v_begin)), CUDA_R_32F, ldgq, s.count);
      // dK (S, Dqk) += scale dS^T Q: column-major dK^T (Dqk, S) = Q^T (Dqk, T) dS (T, S)
      for (const Wave& w : waves_per_chunk[chunk])
        gemm_batched(h, false, true, d.Dqk, d.S, d.T, scale, tab.at(w.a), dt, ldq, tab.at(w.b), ds_type, lds, 1.f,
                     tab.at_mut(w.c), CUDA_R_32F, ldgk, w.count);
    }
  }
  if (bf16) {
    copy(dq, gq);
    copy(dk, gk);
    copy(dv, gv);
  }
}

}  // namespace latte::cuda
