// matmul through cuBLASLt: out[b] = alpha op(a[b]) op(b[b]) + beta out[b] for row-major (strided) operands,
// bf16 (fp32 accumulation, bf16 or f32 output) or true f32 (CUBLAS_COMPUTE_32F: no TF32, so CPU parity
// holds at 1e-5). Floor: 2 M N K flops over the measured bf16 GEMM rate (cuBLASLt at 8192^3).
//
// Row-major to column-major: a row-major (r, c) matrix with row stride ld is the column-major (c, r)
// matrix with the same ld, so out (M, N) = op(a) op(b) is computed as the column-major
// out^T (N, M) = op(b)^T op(a)^T: cuBLASLt's A is our b, its B is our a, m = N, n = M.
// A 2-D operand of a batched product has batch stride 0 (broadcast).
//
// Per device and per shape (dtypes, transposes, sizes, leading dims, batch strides, pointer alignment,
// epilogue) the descriptors and an algorithm are cached: after the first step a matmul costs one map
// lookup plus cublasLtMatmul. Each stream gets a 32 MiB workspace from the caching allocator, kept for
// the process.
//
// Algorithm choice (autotuning): the heuristic's first answer is not always the fastest at the model's
// shapes (bench_kernels --gemm-tune: up to 12% slower on the 1.3B FFN's dW and dX). So the first call of a
// shape times each of the heuristic's first 8 algorithms on its own operands (a warm-up, then the median of
// three, CUDA events) and keeps the fastest when it beats the first answer by 3% (noise would otherwise flip
// the choice between runs). Timing writes the output repeatedly, so an in-place accumulation (C = D,
// beta != 0) is timed into a scratch output; a separate addend is only read. LATTE_GEMM_AUTOTUNE=0 or
// LATTE_DETERMINISTIC=1 keeps the heuristic's first answer: the same algorithm, so the same bits, in every
// process. A stream being captured into a CUDA graph is not timed (the shape is tuned at a later call).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/matmul.h"

namespace latte::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kMaxDevices = 64;
constexpr int kTuneCandidates = 8;     // the heuristic's first answers timed on a shape's first call
constexpr float kTuneMargin = 0.97f;   // another algorithm must be 3% faster than the first answer

struct PlanKey {
  int dt_ab, dt_out, dt_bias;  // cudaDataType_t; dt_bias -1 without bias
  int trans_a, trans_b;        // of cuBLASLt's A (= our b) and B (= our a)
  int64_t m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c;
  int align_a, align_b, align_c, align_bias;
  bool operator<(const PlanKey& o) const {
    return std::tie(dt_ab, dt_out, dt_bias, trans_a, trans_b, m, n, k, lda, ldb, ldc, batch, stride_a, stride_b,
                    stride_c, align_a, align_b, align_c, align_bias) <
           std::tie(o.dt_ab, o.dt_out, o.dt_bias, o.trans_a, o.trans_b, o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.batch,
                    o.stride_a, o.stride_b, o.stride_c, o.align_a, o.align_b, o.align_c, o.align_bias);
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};  // the one used
  cublasLtMatmulAlgo_t candidates[kTuneCandidates] = {};
  int n_candidates = 0;
  bool tuned = false;  // candidates timed, or nothing to choose from
};

bool gemm_autotune() {
  static const bool on = [] {
    const char* tune = std::getenv("LATTE_GEMM_AUTOTUNE");
    const char* det = std::getenv("LATTE_DETERMINISTIC");
    return !(tune && std::string(tune) == "0") && !(det && std::string(det) == "1");
  }();
  return on;
}

struct DeviceState {
  std::mutex mu;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  std::map<PlanKey, Plan> plans;
  std::unordered_map<cudaStream_t, void*> workspaces;  // one per stream, never freed
  MatmulTuningStats tuning;
};

DeviceState& state() {
  static DeviceState* states[kMaxDevices] = {};
  static std::mutex mu;
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(mu);
  if (!states[dev]) {
    auto* s = new DeviceState();  // never destroyed: the CUDA context may be gone at exit
    CUBLAS_CHECK(cublasLtCreate(&s->lt));
    CUBLAS_CHECK(cublasCreate(&s->blas));
    CUBLAS_CHECK(cublasSetMathMode(s->blas, CUBLAS_DEFAULT_MATH));  // no TF32 for f32
    states[dev] = s;
  }
  return *states[dev];
}

// Caller holds s.mu.
void* workspace(DeviceState& s, cudaStream_t stream) {
  auto it = s.workspaces.find(stream);
  if (it != s.workspaces.end()) return it->second;
  void* w = cuda_allocate(kWorkspaceBytes, current_device());
  s.workspaces[stream] = w;
  return w;
}

int alignment(const void* p) {
  auto v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && (v % static_cast<uintptr_t>(a)) != 0) a /= 2;
  return a;
}

cudaDataType_t cuda_type(const Tensor& t, const char* op) {
  return float_code(t, op) == kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// A row-major operand as cuBLASLt sees it: rows/cols of its column-major view, ld and batch stride.
struct Operand {
  int64_t rows_rm, cols_rm, ld, batch, batch_stride;
};

Operand describe(const Tensor& t, const char* name) {
  LATTE_CHECK(t.dim() == 2 || t.dim() == 3, "matmul: ", name, " must be 2-D or 3-D, got ", t.shape().str());
  Operand o;
  o.rows_rm = t.size(-2);
  o.cols_rm = t.size(-1);
  LATTE_CHECK(t.stride(-1) == 1 || o.cols_rm == 1, "matmul: ", name, " needs a contiguous last dim, strides ",
              t.strides().str());
  o.ld = t.stride(-2);
  if (o.rows_rm <= 1) o.ld = std::max<int64_t>(o.cols_rm, 1);  // a single row's stride is arbitrary
  LATTE_CHECK(o.ld >= o.cols_rm, "matmul: ", name, " rows overlap (row stride ", o.ld, " < ", o.cols_rm,
              "); make it contiguous first");
  o.batch = t.dim() == 3 ? t.size(0) : 1;
  o.batch_stride = t.dim() == 3 && o.batch > 1 ? t.stride(0) : 0;
  return o;
}

Plan make_plan(DeviceState& s, const PlanKey& key) {
  Plan p;
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
  cublasOperation_t ta = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (key.dt_bias >= 0) {
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    int32_t bias_type = key.dt_bias;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                sizeof(bias_type)));
  }
  // Column-major A is (m, k) when not transposed, (k, m) when transposed; B likewise with (k, n).
  auto layout = [&](cublasLtMatrixLayout_t* l, int dt, int64_t rows, int64_t cols, int64_t ld, int64_t stride) {
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, static_cast<cudaDataType_t>(dt), static_cast<uint64_t>(rows),
                                            static_cast<uint64_t>(cols), ld));
    if (key.batch > 1) {
      int32_t count = static_cast<int32_t>(key.batch);
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                    sizeof(stride)));
    }
  };
  layout(&p.la, key.dt_ab, key.trans_a ? key.k : key.m, key.trans_a ? key.m : key.k, key.lda, key.stride_a);
  layout(&p.lb, key.dt_ab, key.trans_b ? key.n : key.k, key.trans_b ? key.k : key.n, key.ldb, key.stride_b);
  layout(&p.lc, key.dt_out, key.m, key.n, key.ldc, key.stride_c);

  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  uint32_t al[3] = {static_cast<uint32_t>(key.align_a), static_cast<uint32_t>(key.align_b),
                    static_cast<uint32_t>(key.align_c)};
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], 4));
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
  int found = 0;
  if (key.dt_bias >= 0) {  // the heuristic reads the bias pointer's alignment from the descriptor
    const void* fake = reinterpret_cast<const void*>(static_cast<uintptr_t>(key.align_bias));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &fake, sizeof(fake)));
  }
  const int want = gemm_autotune() ? kTuneCandidates : 1;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(s.lt, p.desc, p.la, p.lb, p.lc, p.lc, pref, want, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    LATTE_FAIL("matmul: cuBLASLt has no algorithm for m=", key.m, " n=", key.n, " k=", key.k, " lda=", key.lda,
               " ldb=", key.ldb, " ldc=", key.ldc, " batch=", key.batch, " (status ", static_cast<int>(st),
               "); check the operands' dtypes and strides");
  p.algo = results[0].algo;
  p.n_candidates = found;
  for (int i = 0; i < found; ++i) p.candidates[i] = results[i].algo;
  p.tuned = found <= 1;
  return p;
}

// One GEMM of a plan with the given algorithm; its status (an offered algorithm may still refuse operands).
cublasStatus_t run_plan(DeviceState& s, const Plan& p, const cublasLtMatmulAlgo_t& algo, const float* alpha,
                        const void* a, const void* b, const float* beta, const void* c, void* d, cudaStream_t stream) {
  return cublasLtMatmul(s.lt, p.desc, alpha, a, p.la, b, p.lb, beta, c, p.lc, d, p.lc, &algo, workspace(s, stream),
                        kWorkspaceBytes, stream);
}

// Times the plan's candidates on these operands (cuBLASLt's A = a, B = b, C = c, D = d; d is written) and keeps
// the fastest per the rule at the top of this file. Caller holds s.mu; synchronises with `stream`.
void tune_plan(DeviceState& s, Plan& p, const float* alpha, const void* a, const void* b, const float* beta,
               const void* c, void* d, cudaStream_t stream) {
  Event start, stop;
  float times[kTuneCandidates];
  for (int i = 0; i < p.n_candidates; ++i) {
    times[i] = -1.f;
    if (run_plan(s, p, p.candidates[i], alpha, a, b, beta, c, d, stream) != CUBLAS_STATUS_SUCCESS) continue;
    float t[3];
    bool ok = true;
    for (float& ti : t) {
      start.record(stream);
      ok = ok && run_plan(s, p, p.candidates[i], alpha, a, b, beta, c, d, stream) == CUBLAS_STATUS_SUCCESS;
      stop.record(stream);
      stop.synchronize();
      ti = stop.elapsed_ms(start);
    }
    std::sort(t, t + 3);
    if (ok) times[i] = t[1];
  }
  CUDA_CHECK(cudaGetLastError());
  int best = 0;
  for (int i = 1; i < p.n_candidates; ++i)
    if (times[i] >= 0 && (times[best] < 0 || times[i] < times[best])) best = i;
  const bool switch_algo = best != 0 && (times[0] < 0 || times[best] < kTuneMargin * times[0]);
  if (switch_algo) p.algo = p.candidates[best];
  s.tuning.plans_timed++;
  if (switch_algo) {
    s.tuning.plans_switched++;
    s.tuning.first_ms += times[0] > 0 ? times[0] : 0;
    s.tuning.chosen_ms += times[best];
  }
  p.tuned = true;
}

// True when every matrix of t is (pointer, ld) with unit column stride and non-overlapping rows.
bool blas_layout(const Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  if (rows == 0 || cols == 0) return true;
  if (cols > 1 && t.stride(-1) != 1) return false;
  return rows == 1 || t.stride(-2) >= cols;
}

// addend: C of the epilogue D = alpha AB + beta C when it is not out itself (same layout as out).
void matmul_impl(const Tensor& out, const Tensor& a_in, const Tensor& b_in, const Tensor* bias, bool trans_a,
                 bool trans_b, double alpha, double beta, const Tensor* addend = nullptr) {
  const char* op = bias ? "matmul_bias" : "matmul";
  // Inputs outside the contract's layout (a transposed view, say) are copied, as the CPU kernel does.
  const Tensor a = a_in.dim() >= 2 && !blas_layout(a_in) ? a_in.detach().contiguous() : a_in;
  const Tensor b = b_in.dim() >= 2 && !blas_layout(b_in) ? b_in.detach().contiguous() : b_in;
  Operand oa = describe(a, "a"), ob = describe(b, "b"), oc = describe(out, "out");
  const int64_t M = trans_a ? oa.cols_rm : oa.rows_rm, K = trans_a ? oa.rows_rm : oa.cols_rm;
  const int64_t Kb = trans_b ? ob.cols_rm : ob.rows_rm, N = trans_b ? ob.rows_rm : ob.cols_rm;
  LATTE_CHECK(K == Kb && oc.rows_rm == M && oc.cols_rm == N, op, ": shapes do not match: a ", a.shape().str(),
              trans_a ? "^T" : "", " b ", b.shape().str(), trans_b ? "^T" : "", " out ", out.shape().str());
  const int64_t batch = oc.batch;
  LATTE_CHECK((oa.batch == batch || oa.batch == 1) && (ob.batch == batch || ob.batch == 1), op,
              ": batch sizes differ: a ", a.shape().str(), " b ", b.shape().str(), " out ", out.shape().str());
  LATTE_CHECK(out.dim() == 3 || (a.dim() == 2 && b.dim() == 2) || (oa.batch == 1 && ob.batch == 1), op,
              ": a 2-D out needs 2-D operands");
  const int dt_ab = cuda_type(a, op);
  LATTE_CHECK(cuda_type(b, op) == dt_ab, op, ": a and b must have one dtype, got ", dtype_name(a.dtype()), " and ",
              dtype_name(b.dtype()));
  const int dt_out = cuda_type(out, op);
  LATTE_CHECK(!(dt_ab == CUDA_R_32F && dt_out == CUDA_R_16BF), op, ": f32 operands need an f32 output");
  if (M == 0 || N == 0 || batch == 0) return;
  if (K == 0) {  // an empty sum: out = beta * out
    if (beta == 0.0) fill(out, 0.0); else scale(out, out, beta);
    LATTE_CHECK(!bias, "matmul_bias with K = 0");
    return;
  }

  PlanKey key{};
  key.dt_ab = dt_ab;
  key.dt_out = dt_out;
  key.dt_bias = bias ? cuda_type(*bias, op) : -1;
  key.trans_a = trans_b;
  key.trans_b = trans_a;
  key.m = N;
  key.n = M;
  key.k = K;
  key.lda = ob.ld;
  key.ldb = oa.ld;
  key.ldc = oc.ld;
  key.batch = batch;
  key.stride_a = batch > 1 ? ob.batch_stride : 0;
  key.stride_b = batch > 1 ? oa.batch_stride : 0;
  key.stride_c = batch > 1 ? oc.batch_stride : 0;
  key.align_a = alignment(b.data_ptr());
  key.align_b = alignment(a.data_ptr());
  key.align_c = addend ? std::min(alignment(out.data_ptr()), alignment(addend->data_ptr())) : alignment(out.data_ptr());
  key.align_bias = bias ? alignment(bias->data_ptr()) : 0;

  DeviceState& s = state();
  std::unique_lock<std::mutex> lock(s.mu);
  auto it = s.plans.find(key);
  if (it == s.plans.end()) {
    try {
      it = s.plans.emplace(key, make_plan(s, key)).first;
    } catch (const Error&) {
      if (batch == 1) throw;
      // No batched algorithm for this layout (e.g. a broadcast operand's zero batch stride): one GEMM per batch.
      lock.unlock();
      for (int64_t i = 0; i < batch; ++i) {
        const Tensor addend_i = addend ? addend->select(0, i) : Tensor();
        matmul_impl(out.select(0, i), a.dim() == 3 ? a.select(0, oa.batch > 1 ? i : 0) : a,
                    b.dim() == 3 ? b.select(0, ob.batch > 1 ? i : 0) : b, bias, trans_a, trans_b, alpha, beta,
                    addend ? &addend_i : nullptr);
      }
      return;
    }
  }
  Plan& p = it->second;
  if (bias) {
    const void* ptr = bias->data_ptr();
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr, sizeof(ptr)));
  }
  cudaStream_t stream = current_stream();
  const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
  const void* c = addend ? addend->data_ptr() : out.data_ptr();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (!p.tuned) CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (!p.tuned && capture == cudaStreamCaptureStatusNone) {
    // Accumulating in place: time into a scratch output spanning out's rows and batches, so out keeps its sum.
    Tensor scratch;
    if (c == out.data_ptr() && beta != 0.0) {
      const int64_t span = (batch > 1 ? oc.batch_stride * (batch - 1) : 0) + oc.ld * (M - 1) + N;
      scratch = Tensor::empty({span}, out.dtype(), out.device());
    }
    tune_plan(s, p, &al, b.data_ptr(), a.data_ptr(), &be, c, scratch.defined() ? scratch.data_ptr() : out.data_ptr(),
              stream);
  }
  CUBLAS_CHECK(run_plan(s, p, p.algo, &al, b.data_ptr(), a.data_ptr(), &be, c, out.data_ptr(), stream));
}

}  // namespace

void matmul(const Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
            double beta) {
  matmul_impl(out, a, b, nullptr, trans_a, trans_b, alpha, beta);
}

void matmul_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& addend, bool trans_a, bool trans_b) {
  LATTE_CHECK(addend.shape() == out.shape() && addend.strides() == out.strides() && addend.dtype() == out.dtype(),
              "matmul_add: addend ", addend.str(), " must have out's layout ", out.str());
  if (out.numel() > 0 && (trans_a ? a.size(-2) : a.size(-1)) == 0) {  // an empty product: out = addend
    if (addend.data_ptr() != out.data_ptr()) copy(out, addend);
    return;
  }
  matmul_impl(out, a, b, nullptr, trans_a, trans_b, 1.0, 1.0, &addend);
}

void matmul_bias(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias, bool trans_a, bool trans_b) {
  LATTE_CHECK(bias.dim() == 1 && bias.size(0) == out.size(-1) && bias.is_contiguous(), "matmul_bias: bias ",
              bias.shape().str(), " must be contiguous with out's last dim ", out.shape().str());
  matmul_impl(out, a, b, &bias, trans_a, trans_b, 1.0, 0.0);
}

size_t matmul_plan_count() {
  DeviceState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.plans.size();
}

MatmulTuningStats matmul_tuning_stats() {
  DeviceState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.tuning;
}

cublasLtHandle_t lt_handle() { return state().lt; }

cublasHandle_t blas_handle() {
  DeviceState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  cudaStream_t stream = current_stream();
  CUBLAS_CHECK(cublasSetStream(s.blas, stream));
  CUBLAS_CHECK(cublasSetWorkspace(s.blas, workspace(s, stream), kWorkspaceBytes));
  return s.blas;
}

}  // namespace latte::cuda
