// cuDNN SDPA backend (see cudnn_attention.h): the forward and backward graphs, the plan cache, and the calls.
#include "kernels/cuda/cudnn_attention.h"

#include <limits>

#include "core/error.h"

#ifdef LATTE_WITH_CUDNN
#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <vector>

#include "core/cuda_context.h"
#include "core/log.h"
#include "kernels/cuda/attention_autotune.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cudnn_graph.h"
#endif

namespace latte::cuda {

#ifndef LATTE_WITH_CUDNN

std::string cudnn_attention_forward_unsupported(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                const Tensor&, int64_t, bool) {
  return "latte was built without cuDNN (no cudnn.h / libcudnn found by CMake)";
}
std::vector<CudnnPlanInfo> cudnn_attention_forward_plans(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                         int64_t, bool) {
  return {};
}
std::vector<CudnnPlanInfo> cudnn_attention_backward_plans(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                          const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                          int64_t, bool) {
  return {};
}
void cudnn_attention_use_plan(int) {}
std::string cudnn_attention_backward_unsupported(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                 const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                 const Tensor&, int64_t, bool) {
  return "latte was built without cuDNN (no cudnn.h / libcudnn found by CMake)";
}
void cudnn_attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, double,
                             bool) {
  LATTE_FAIL("cudnn_attention_forward: latte was built without cuDNN");
}
void cudnn_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&, const Tensor&, int64_t, double, bool) {
  LATTE_FAIL("cudnn_attention_backward: latte was built without cuDNN");
}

#else

namespace {

using cudnn::Dims;
using cudnn::Graph;
using cudnn::Plan;
using cudnn::TensorRef;

// Variant-pack uids.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV, kScale, kMaskValue, kOne, kdQAccum, kDelta };

// cuDNN before 9.6 takes the SDPA backward's dQ accumulator F16x16-reordered and zeroed by the caller; from 9.6 on
// cudnn_frontend gives it plain and does not zero it (cuDNN clears it; the cuDNN test calls the backward twice).
bool legacy_dq_accum() { return cudnnGetVersion() < 90600; }

// One call's geometry: the per-branch view cuDNN sees (Hk kv heads of one branch, Hq query heads).
struct Geometry {
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv;
};

// A (B, L, H, D) latte tensor as cuDNN's (B, H, L, D) dims and strides.
Dims bhsd_dims(const Tensor& t) { return {t.size(0), t.size(2), t.size(1), t.size(3)}; }
Dims bhsd_strides(const Tensor& t) { return {t.stride(0), t.stride(2), t.stride(1), t.stride(3)}; }
// The same tensor transposed in its last two dims: (B, H, D, L), for cuDNN's K^T / V^T operands.
Dims bhds_dims(const Tensor& t) { return {t.size(0), t.size(2), t.size(3), t.size(1)}; }
Dims bhds_strides(const Tensor& t) { return {t.stride(0), t.stride(2), t.stride(3), t.stride(1)}; }

Dims packed(const Dims& d) {
  Dims s(d.size(), 1);
  for (size_t i = d.size() - 1; i-- > 0;) s[i] = s[i + 1] * d[i + 1];
  return s;
}

// Scores S = scale Q K^T (minus `shift` per row when given: the backward's S - lse) with the causal mask applied
// (row >= column kept, else `mask_value`, which exp turns into 0): the first steps of both graphs. The backward
// subtracts before masking because cudnn_frontend's graph does, and cuDNN's fused engine runs that pattern faster
// (with the rest of its pattern, session 9: 2.28 -> 2.08 ms at B=4, T=4096, 16 heads, (192,128)).
TensorRef masked_scores(Graph& g, const Geometry& d, const TensorRef& q, const TensorRef& kt, const TensorRef& scale,
                        const TensorRef& mask_value, bool causal, const TensorRef* shift = nullptr) {
  const Dims sd{d.B, d.Hq, d.T, d.S};
  TensorRef s = g.virt(CUDNN_DATA_FLOAT, sd, packed(sd));
  g.matmul(s, q, kt);
  TensorRef scaled = g.pointwise(CUDNN_POINTWISE_MUL, s, &scale);
  if (shift) scaled = g.pointwise(CUDNN_POINTWISE_SUB, scaled, shift);
  if (!causal) return scaled;
  TensorRef row = g.like(scaled, CUDNN_DATA_INT32), col = g.like(scaled, CUDNN_DATA_INT32);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, row, scaled, nullptr, nullptr, CUDNN_DATA_INT32, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, col, scaled, nullptr, nullptr, CUDNN_DATA_INT32, 3);
  TensorRef keep = g.like(scaled, CUDNN_DATA_BOOLEAN);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, keep, row, &col, nullptr, CUDNN_DATA_BOOLEAN);
  return g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, scaled, &mask_value, &keep);
}

// Per-row (B, Hq, T, 1) fp32 intermediate.
// A bf16 (B, L, H, D) latte tensor in the graph: as (B, H, L, D), or transposed to (B, H, D, L) (K^T, V^T).
TensorRef bf16_input(Graph& g, int64_t uid, const Tensor& t, bool transposed = false) {
  return g.tensor(uid, CUDNN_DATA_BFLOAT16, transposed ? bhds_dims(t) : bhsd_dims(t),
                  transposed ? bhds_strides(t) : bhsd_strides(t));
}

// lse rows (B, Hq, T, 1) of one branch: consecutive in T, `batch_stride` apart in B.
TensorRef stats_tensor(Graph& g, const Geometry& d, int64_t batch_stride) {
  return g.tensor(kStats, CUDNN_DATA_FLOAT, {d.B, d.Hq, d.T, 1}, {batch_stride, d.T, 1, 1});
}

TensorRef row_stat(Graph& g, const Geometry& d) {
  const Dims rd{d.B, d.Hq, d.T, 1};
  return g.virt(CUDNN_DATA_FLOAT, rd, packed(rd));
}

using Plans = std::vector<std::unique_ptr<Plan>>;

// Engine configurations tried per graph: cuDNN 9.19 on the H100 lists one to three for these graphs (engines 1
// and 2, the second sometimes twice with other knobs).
constexpr size_t kMaxPlans = 3;

Plans build_forward(const Geometry& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                    int64_t lse_batch_stride, bool causal, std::string* why) {
  Graph g;
  const cudnnDataType_t io = CUDNN_DATA_BFLOAT16;
  TensorRef tq = bf16_input(g, kQ, q), tkt = bf16_input(g, kK, k, true), tv = bf16_input(g, kV, v);
  TensorRef to = bf16_input(g, kO, out), stats = stats_tensor(g, d, lse_batch_stride);
  TensorRef scale = g.scalar(kScale, CUDNN_DATA_FLOAT);
  TensorRef mask_value = g.scalar(kMaskValue, CUDNN_DATA_FLOAT);

  TensorRef s = masked_scores(g, d, tq, tkt, scale, mask_value, causal);
  TensorRef mx = row_stat(g, d), sum = row_stat(g, d), log_sum = row_stat(g, d);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, mx, s);
  TensorRef shifted = g.pointwise(CUDNN_POINTWISE_SUB, s, &mx);
  TensorRef e = g.pointwise(CUDNN_POINTWISE_EXP, shifted);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, sum, e);
  g.pointwise(CUDNN_POINTWISE_LOG, log_sum, sum);
  g.pointwise(CUDNN_POINTWISE_ADD, stats, mx, &log_sum);  // lse = max + log(sum)
  TensorRef p = g.like(e, io);                             // P in bf16: the P V GEMM's A operand
  g.pointwise(CUDNN_POINTWISE_DIV, p, e, &sum);
  g.matmul(to, p, tv);
  return g.build(cudnn::handle(), kMaxPlans, why);
}

// dW = A^T-like product into a kv-head gradient: straight into `grad` when every query head has its own kv
// head, else into a (B, Hq, S, D) bf16 intermediate summed over each kv head's query heads.
void kv_grad(Graph& g, const Geometry& d, const TensorRef& grad, const TensorRef& a, const TensorRef& b, int64_t width) {
  if (d.Hq == d.Hk) {
    g.matmul(grad, a, b);
    return;
  }
  const Dims pd{d.B, d.Hq, d.S, width};
  TensorRef per_head = g.virt(CUDNN_DATA_BFLOAT16, pd, packed(pd));
  g.matmul(per_head, a, b);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, grad, per_head);
}

Plans build_backward(const Geometry& d, const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                     const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, int64_t lse_batch_stride,
                     bool causal, std::string* why) {
  Graph g;
  const cudnnDataType_t io = CUDNN_DATA_BFLOAT16;
  TensorRef tq = bf16_input(g, kQ, q), tkt = bf16_input(g, kK, k, true), tvt = bf16_input(g, kV, v, true);
  TensorRef to = bf16_input(g, kO, out), tdo = bf16_input(g, kdO, dout), stats = stats_tensor(g, d, lse_batch_stride);
  TensorRef tdq = bf16_input(g, kdQ, dq), tdk = bf16_input(g, kdK, dk), tdv = bf16_input(g, kdV, dv);
  // The dQ accumulator: fp32, packed; F16x16-reordered and zeroed by latte before cuDNN 9.6 (what cudnn_frontend
  // did for those versions), plain and cleared by cuDNN itself from 9.6 on.
  const Dims qd{d.B, d.Hq, d.T, d.Dqk};
  TensorRef dq_accum = g.tensor(kdQAccum, CUDNN_DATA_FLOAT, qd, packed(qd), /*reorder_f16x16=*/legacy_dq_accum());
  TensorRef scale = g.scalar(kScale, CUDNN_DATA_FLOAT);
  TensorRef mask_value = g.scalar(kMaskValue, CUDNN_DATA_FLOAT);
  TensorRef one = g.scalar(kOne, CUDNN_DATA_FLOAT);

  // delta = rowsum(dO o O) times the dropout keep-probability (1 here: the fused engine expects the factor), kept
  // in memory (kDelta) as cudnn_frontend's softmax_sum is.
  TensorRef dodo = g.virt(CUDNN_DATA_FLOAT, {d.B, d.Hq, d.T, d.Dv}, {d.Hq * d.T * d.Dv, d.T * d.Dv, d.Hq * d.Dv, 1});
  g.pointwise(CUDNN_POINTWISE_MUL, dodo, tdo, &to);
  TensorRef delta0 = row_stat(g, d);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, delta0, dodo);
  TensorRef delta = g.tensor(kDelta, CUDNN_DATA_FLOAT, {d.B, d.Hq, d.T, 1}, {d.Hq * d.T, d.T, 1, 1});
  g.pointwise(CUDNN_POINTWISE_MUL, delta, delta0, &one);

  // P = exp(S - lse); dV = P^T dO
  TensorRef p = g.pointwise(CUDNN_POINTWISE_EXP, masked_scores(g, d, tq, tkt, scale, mask_value, causal, &stats));
  const Dims td{d.B, d.Hq, d.S, d.T}, ts{d.Hq * d.T * d.S, d.T * d.S, 1, d.S};  // (., ., S, T) views of (T, S)
  TensorRef pt = g.virt(io, td, ts);
  g.reshape(pt, p);
  kv_grad(g, d, tdv, pt, tdo, d.Dv);

  // dS = P (dO V^T - delta) scale; dK = dS^T Q; dQ = dS K
  const Dims sd{d.B, d.Hq, d.T, d.S};
  TensorRef dp = g.virt(CUDNN_DATA_FLOAT, sd, packed(sd));
  g.matmul(dp, tdo, tvt);
  TensorRef centered = g.pointwise(CUDNN_POINTWISE_SUB, dp, &delta);
  TensorRef ds = g.pointwise(CUDNN_POINTWISE_MUL, g.pointwise(CUDNN_POINTWISE_MUL, centered, &p), &scale);
  TensorRef dst = g.virt(io, td, ts);
  g.reshape(dst, ds);
  kv_grad(g, d, tdk, dst, tq, d.Dqk);
  TensorRef kk = g.virt(io, {tkt.dims[0], tkt.dims[1], tkt.dims[3], tkt.dims[2]},
                        {tkt.strides[0], tkt.strides[1], tkt.strides[3], tkt.strides[2]});  // K from K^T
  g.reshape(kk, tkt);
  g.matmul(dq_accum, ds, kk);
  g.pointwise(CUDNN_POINTWISE_IDENTITY, tdq, dq_accum);
  return g.build(cudnn::handle(), kMaxPlans, why);
}

// The plans of one graph (shape and strides). With more than one, the first call checks them against the first
// on its real tensors, times those that agree (attention_autotune, key "cudnn engines <key>") and runs the
// fastest from then on (run_fastest).
struct CachedPlan {
  std::string key;
  Plans plans;
  // The plans that agree with the first on the first call's tensors (agreeing_plans), set once under g_check_mu.
  mutable std::vector<size_t> agreeing;
  mutable bool checked = false;
  std::vector<std::string> names;  // "engine E#R cfg K": cuDNN engine E, R-th in the heuristics' list, knob K
  std::string why;                 // set when there is no plan
};

std::mutex g_mu;
std::map<std::string, CachedPlan> g_plans;

void describe(std::ostringstream& key, const Tensor& t) {
  for (int i = 0; i < t.dim(); ++i) key << t.size(i) << ',';
  key << '/';
  for (int i = 0; i < t.dim(); ++i) key << t.stride(i) << ',';
  key << ';';
}

// Shape checks every call needs before a plan; empty when fine.
std::string basic_reason(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, int64_t branches,
                         bool causal) {
  if (!q.device().is_cuda()) return "tensors are not on a CUDA device";
  if (q.size(1) == 0 || k.size(1) == 0) return "empty sequence";
  if (device_properties(q.device().index).major < 8) return "cuDNN SDPA needs an sm_80+ GPU";
  if (q.dtype() != DType::BF16 || k.dtype() != DType::BF16 || v.dtype() != DType::BF16 || out.dtype() != DType::BF16)
    return str("dtype ", dtype_name(q.dtype()), ": the cuDNN backend runs bf16 only");
  const int64_t dqk = q.size(3), dv = v.size(3);
  if (dqk % 8 || dv % 8 || dqk > 256 || dv > 256)
    return str("head dims (", dqk, ", ", dv, "): cuDNN needs multiples of 8 up to 256");
  if (causal && q.size(1) != k.size(1))
    return str("causal with T=", q.size(1), " != S=", k.size(1), ": cuDNN's causal diagonal is top-left");
  if (branches < 1 || k.size(2) % branches) return "kv heads not divisible by branches";
  for (const Tensor* t : {&q, &k, &v, &out}) {
    if (t->stride(3) != 1) return "a tensor's last dim is not contiguous";
    for (int i = 0; i < 3; ++i)
      if (t->stride(i) % 8) return str("stride ", t->stride(i), " is not a multiple of 8 elements");
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % 16) return "a tensor is not 16-byte aligned";
  }
  return "";
}

// The per-branch views of a call (branch r: kv heads [r Hk, (r+1) Hk), out heads [r Hq, (r+1) Hq)).
Tensor branch_view(const Tensor& t, int64_t r, int64_t heads) { return t.narrow(2, r * heads, heads); }

Geometry geometry(const Tensor& q, const Tensor& k, const Tensor& v, int64_t branches) {
  return Geometry{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2) / branches, branches, q.size(3), v.size(3)};
}

// The plan cached under `key`, built by build(&why) on first use; a failure is cached too, with its reason.
template <typename Build>
const CachedPlan& cached_plan(const std::string& key, Build build) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_plans.find(key);
  if (it != g_plans.end()) return it->second;
  CachedPlan c;
  c.key = key;
  try {
    c.plans = build(&c.why);
  } catch (const std::exception& e) {
    c.plans.clear();
    c.why = e.what();
  }
  for (const auto& p : c.plans)
    c.names.push_back(str("engine ", p->engine(), '#', p->heuristic_rank(), " cfg ", p->kernel_cfg()));
  return g_plans.emplace(key, std::move(c)).first->second;
}

std::atomic<int> g_use_plan{-1};  // cudnn_attention_use_plan
std::mutex g_check_mu;

// ||t - ref|| / ||ref|| on the device (ref: a contiguous copy of an earlier t).
double relative_difference(const Tensor& t, const Tensor& ref) {
  Tensor d = Tensor::empty(t.shape(), DType::F32, t.device());
  copy(d, t);
  add(d, d, ref, 1.0, -1.0);
  Tensor num = Tensor::empty({1}, DType::F32, t.device()), den = Tensor::empty({1}, DType::F32, t.device());
  sum_squares(num, d);
  sum_squares(den, ref);
  return std::sqrt(num.item() / std::max(den.item(), 1e-30));
}

// The plans whose outputs agree with the first plan's (the heuristics' choice: cudnn_frontend's default, so
// PyTorch's) on this call's tensors, within rounding (bf16 outputs, fp32 sums in another order: ~1e-3). A plan
// that disagrees is dropped with a warning: on the H100 with cuDNN 9.19, engine 1 gave dQ and dK 61% off in the
// MLRA-2 GQA backward test (B=2, T=100, Hq=4, Hk=2, (128,128)) while right in every single-branch case.
template <typename Run>
std::vector<size_t> agreeing_plans(const CachedPlan& c, const std::vector<Tensor>& outputs, Run run) {
  constexpr double kAgree = 2e-2;
  run(*c.plans[0]);
  std::vector<Tensor> ref;
  for (const Tensor& t : outputs) {
    ref.push_back(Tensor::empty(t.shape(), t.dtype(), t.device()));
    copy(ref.back(), t);
  }
  std::vector<size_t> agree{0};
  for (size_t i = 1; i < c.plans.size(); ++i) {
    run(*c.plans[i]);
    double worst = 0.0;
    for (size_t o = 0; o < outputs.size(); ++o) {
      const double e = relative_difference(outputs[o], ref[o]);
      worst = std::isnan(e) ? e : std::max(worst, e);
      if (std::isnan(worst)) break;
    }
    if (worst <= kAgree)
      agree.push_back(i);
    else
      log::warn(str("cudnn attention: ", c.names[i], " disagrees with ", c.names[0], " (relative difference ", worst,
                    ") for ", c.key, "; not used"));
  }
  return agree;
}

// Runs `run` with the fastest of c's plans that agree with the first (checked and timed on the first call when
// there are several). `outputs`: what a run writes, compared between plans.
template <typename Run>
void run_fastest(const CachedPlan& c, const std::vector<Tensor>& outputs, Run run) {
  if (const int forced = g_use_plan.load(); forced >= 0)
    return run(*c.plans[std::min(c.plans.size() - 1, static_cast<size_t>(forced))]);
  if (c.plans.size() == 1) return run(*c.plans[0]);
  {
    std::lock_guard<std::mutex> lock(g_check_mu);
    if (!c.checked) {
      c.agreeing = agreeing_plans(c, outputs, run);
      c.checked = true;
    }
  }
  if (c.agreeing.size() == 1) return run(*c.plans[c.agreeing[0]]);
  std::vector<const char*> names;
  for (size_t i : c.agreeing) names.push_back(c.names[i].c_str());
  const size_t best =
      attention_autotune("cudnn engines " + c.key, names, [&](size_t i) { run(*c.plans[c.agreeing[i]]); });
  run(*c.plans[c.agreeing[best]]);
}

// The forward plans for this call, or null with *why saying why cuDNN does not run it.
const CachedPlan* forward_plan(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               int64_t branches, bool causal, std::string* why) {
  *why = basic_reason(q, k, v, out, branches, causal);
  if (!why->empty()) return nullptr;
  const Geometry d = geometry(q, k, v, branches);
  const Tensor kb = branch_view(k, 0, d.Hk), vb = branch_view(v, 0, d.Hk), ob = branch_view(out, 0, d.Hq);
  std::ostringstream key;
  key << "fwd dev" << q.device().index << (causal ? " causal " : " full ") << branches << ' ';
  for (const Tensor* t : {&q, &kb, &vb, &ob}) describe(key, *t);
  const CachedPlan& c = cached_plan(key.str(), [&](std::string* w) {
    return build_forward(d, q, kb, vb, ob, d.R * d.Hq * d.T, causal, w);
  });
  if (c.plans.empty()) *why = c.why;
  return c.plans.empty() ? nullptr : &c;
}

// The backward plans for this call, or null with *why.
const CachedPlan* backward_plan(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, int64_t branches,
                                bool causal, std::string* why) {
  *why = basic_reason(q, k, v, out, branches, causal);
  if (why->empty()) *why = basic_reason(dq, dk, dv, dout, branches, causal);
  if (!why->empty()) return nullptr;
  const Geometry d = geometry(q, k, v, branches);
  const Tensor kb = branch_view(k, 0, d.Hk), vb = branch_view(v, 0, d.Hk), ob = branch_view(out, 0, d.Hq),
               dob = branch_view(dout, 0, d.Hq), dkb = branch_view(dk, 0, d.Hk), dvb = branch_view(dv, 0, d.Hk);
  std::ostringstream key;
  key << "bwd dev" << q.device().index << (causal ? " causal " : " full ") << branches << ' ';
  for (const Tensor* t : {&q, &kb, &vb, &ob, &dob, &dq, &dkb, &dvb}) describe(key, *t);
  const CachedPlan& c = cached_plan(key.str(), [&](std::string* w) {
    return build_backward(d, dq, dkb, dvb, dob, q, kb, vb, ob, d.R * d.Hq * d.T, causal, w);
  });
  if (c.plans.empty()) *why = c.why;
  return c.plans.empty() ? nullptr : &c;
}

std::vector<CudnnPlanInfo> plan_infos(const CachedPlan* c) {
  std::vector<CudnnPlanInfo> infos;
  if (!c) return infos;
  std::lock_guard<std::mutex> lock(g_check_mu);
  for (size_t i = 0; i < c->plans.size(); ++i)
    infos.push_back({c->names[i], !c->checked || std::find(c->agreeing.begin(), c->agreeing.end(), i) !=
                                                     c->agreeing.end()});
  return infos;
}

// Scratch for one execution: cuDNN's workspace (+ the dQ accumulator), from the caching allocator.
Tensor scratch_floats(int64_t bytes, Device dev) { return Tensor::empty({std::max<int64_t>(1, (bytes + 3) / 4)}, DType::F32, dev); }

void* ptr(const Tensor& t) { return t.data_ptr(); }

}  // namespace

std::string cudnn_attention_forward_unsupported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                                const Tensor&, int64_t branches, bool causal) {
  std::string why;
  forward_plan(q, k, v, out, branches, causal, &why);
  return why;
}

std::string cudnn_attention_backward_unsupported(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                                 const Tensor& dout, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& out, const Tensor&,
                                                 int64_t branches, bool causal) {
  std::string why;
  backward_plan(dq, dk, dv, dout, q, k, v, out, branches, causal, &why);
  return why;
}

std::vector<CudnnPlanInfo> cudnn_attention_forward_plans(const Tensor& q, const Tensor& k, const Tensor& v,
                                                         const Tensor& out, int64_t branches, bool causal) {
  std::string why;
  return plan_infos(forward_plan(q, k, v, out, branches, causal, &why));
}

std::vector<CudnnPlanInfo> cudnn_attention_backward_plans(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                                          const Tensor& dout, const Tensor& q, const Tensor& k,
                                                          const Tensor& v, const Tensor& out, int64_t branches,
                                                          bool causal) {
  std::string why;
  return plan_infos(backward_plan(dq, dk, dv, dout, q, k, v, out, branches, causal, &why));
}

void cudnn_attention_use_plan(int index) { g_use_plan.store(index < 0 ? -1 : index); }

void cudnn_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                             int64_t branches, double softmax_scale, bool causal) {
  std::string why;
  const CachedPlan* found = forward_plan(q, k, v, out, branches, causal, &why);
  LATTE_REQUIRE(found, "cudnn attention forward: ", why);
  const Geometry d = geometry(q, k, v, branches);
  cudnnHandle_t h = cudnn::handle();
  float scale = static_cast<float>(softmax_scale), mask_value = std::numeric_limits<float>::lowest();
  run_fastest(*found, {out, lse}, [&](const Plan& plan) {
    Tensor ws = scratch_floats(plan.workspace_bytes(), q.device());
    for (int64_t r = 0; r < d.R; ++r) {
      float* stats = lse.data<float>() + r * d.Hq * d.T;
      std::vector<int64_t> uids{kQ, kK, kV, kO, kStats, kScale};
      std::vector<void*> ptrs{ptr(q), ptr(branch_view(k, r, d.Hk)), ptr(branch_view(v, r, d.Hk)),
                              ptr(branch_view(out, r, d.Hq)), stats, &scale};
      if (causal) uids.push_back(kMaskValue), ptrs.push_back(&mask_value);  // the pack must name only graph tensors
      plan.execute(h, uids, ptrs, ptr(ws));
    }
  });
}

void cudnn_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                              const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              int64_t branches, double softmax_scale, bool causal) {
  std::string why;
  const CachedPlan* found = backward_plan(dq, dk, dv, dout, q, k, v, out, branches, causal, &why);
  LATTE_REQUIRE(found, "cudnn attention backward: ", why);
  const Geometry d = geometry(q, k, v, branches);
  cudnnHandle_t h = cudnn::handle();
  const Device dev = q.device();
  Tensor accum = Tensor::empty({d.B, d.Hq, d.T, d.Dqk}, DType::F32, dev);
  Tensor delta = Tensor::empty({d.B, d.Hq, d.T}, DType::F32, dev);
  Tensor dq_branch = d.R > 1 ? Tensor::empty(dq.shape(), dq.dtype(), dev) : Tensor();
  float scale = static_cast<float>(softmax_scale), one = 1.f;
  float mask_value = -std::numeric_limits<float>::infinity();  // masked after S - lse: exp gives 0
  const bool zero_accum = legacy_dq_accum();  // older cuDNN adds onto what is in the accumulator
  run_fastest(*found, {dq, dk, dv}, [&](const Plan& plan) {
    Tensor ws = scratch_floats(plan.workspace_bytes(), dev);
    for (int64_t r = 0; r < d.R; ++r) {
      if (zero_accum) fill(accum, 0.0);
      const Tensor& dq_r = r == 0 ? dq : dq_branch;
      float* stats = lse.data<float>() + r * d.Hq * d.T;
      std::vector<int64_t> uids{kQ, kK, kV, kO, kdO, kStats, kdQ, kdK, kdV, kdQAccum, kScale, kOne, kDelta};
      std::vector<void*> ptrs{ptr(q),         ptr(branch_view(k, r, d.Hk)),  ptr(branch_view(v, r, d.Hk)),
                              ptr(branch_view(out, r, d.Hq)), ptr(branch_view(dout, r, d.Hq)), stats,
                              ptr(dq_r),      ptr(branch_view(dk, r, d.Hk)), ptr(branch_view(dv, r, d.Hk)),
                              ptr(accum),     &scale,                        &one,
                              ptr(delta)};
      if (causal) uids.push_back(kMaskValue), ptrs.push_back(&mask_value);
      plan.execute(h, uids, ptrs, ptr(ws));
      if (r > 0) axpy(dq, dq_branch, 1.0);  // dQ sums over the branches sharing the query
    }
  });
}

#endif  // LATTE_WITH_CUDNN

}  // namespace latte::cuda
