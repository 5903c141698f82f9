// CPU reference softmax attention with GQA/MQA and MLRA branches as virtual heads (kernels/op_decls.inc):
//   q (B, T, Hq, Dqk)   k (B, S, R*Hk, Dqk)   v (B, S, R*Hk, Dv)   out (B, T, R*Hq, Dv)   lse (B, R*Hq, T)
// Virtual head (r, i) pairs query head i with kv head r*Hk + i / (Hq/Hk) and writes out head r*Hq + i; every
// branch is its own softmax (MLRA sums the branch outputs afterwards, outside the softmax). Query row t sits at
// absolute position t + S - T (cached decode: the queries are the last T of S positions), so with `causal` it
// sees keys j <= t + S - T. This is the naive reference the CUDA kernels are checked against: one row of scores
// at a time, accumulated in double, softmax stabilised by the row max. lse (natural log of the sum of
// exp(scaled scores)) is saved so the backward recomputes probabilities as exp(s - lse) without a second
// reduction, as flash attention does; it is f32 per the contract, or f64 for f64 inputs (gradcheck precision).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {

// The sizes every attention call shares, checked once. User-facing validation (with the fix) is in
// kernels/ops_nn.cpp; these checks only guard memory safety for direct callers.
struct AttnDims {
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv;
  int64_t kv_head(int64_t r, int64_t i) const { return r * Hk + i / (Hq / Hk); }
  // Last key index (inclusive) that query row t may see.
  int64_t last_key(int64_t t, bool causal) const { return causal ? t + S - T : S - 1; }
  // fn(b, i, kvh, oh, t) for every query row of batches [b_first, b_end): query head i of branch r reads kv head
  // kvh and writes out head oh; the order (b, r, i, t) is part of the results' bits (accumulation order).
  template <typename Fn>
  void for_each_query_row(int64_t b_first, int64_t b_end, Fn&& fn) const {
    for (int64_t b = b_first; b < b_end; ++b)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t i = 0; i < Hq; ++i)
          for (int64_t t = 0; t < T; ++t) fn(b, i, kv_head(r, i), r * Hq + i, t);
  }
};

AttnDims attn_dims(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, int64_t branches,
                   bool causal, const char* op) {
  LATTE_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && out.dim() == 4, op, ": q ", q.str(), " k ", k.str(),
              " v ", v.str(), " out ", out.str());
  AttnDims d{q.size(0), q.size(1), k.size(1), q.size(2), 0, branches, q.size(3), v.size(3)};
  LATTE_CHECK(branches >= 1 && k.size(2) % branches == 0, op, ": ", k.size(2), " kv heads for ", branches, " branches");
  d.Hk = k.size(2) / branches;
  LATTE_CHECK(d.Hk >= 1 && d.Hq % d.Hk == 0, op, ": ", d.Hq, " query heads for ", d.Hk, " kv heads");
  LATTE_CHECK(k.size(0) == d.B && v.size(0) == d.B && k.size(3) == d.Dqk && v.size(1) == d.S && v.size(2) == k.size(2),
              op, ": q ", q.str(), " k ", k.str(), " v ", v.str());
  LATTE_CHECK(out.shape() == Shape({d.B, d.T, d.R * d.Hq, d.Dv}), op, ": out ", out.str());
  LATTE_CHECK(!causal || d.S >= d.T, op, ": causal attention needs S >= T, got S=", d.S, " T=", d.T);
  LATTE_CHECK(d.T == 0 || d.S >= 1, op, ": no keys");
  LATTE_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && out.stride(3) == 1, op,
              " needs a contiguous last dim");
  LATTE_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype() && out.dtype() == q.dtype(), op, ": mixed dtypes");
  return d;
}

// Batches are independent (each writes only its own rows of out / lse / dq / dk / dv, in the same order as a
// single thread would), so they run on several cores with bitwise the same results. Only when a batch holds
// enough work (~2^20 score-row multiply-adds) to pay for starting a thread.
int64_t batch_grain(const AttnDims& d) {
  const int64_t per_batch = std::max<int64_t>(1, d.R * d.Hq * d.T * d.S * (d.Dqk + d.Dv));
  return std::max<int64_t>(1, (int64_t{1} << 20) / per_batch);
}

// Element offset of row (b, s, h) of a 4-D strided tensor.
inline int64_t row(const Tensor& t, int64_t b, int64_t s, int64_t h) {
  return b * t.stride(0) + s * t.stride(1) + h * t.stride(2);
}

}  // namespace

void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       int64_t branches, double softmax_scale, bool causal) {
  const AttnDims d = attn_dims(q, k, v, out, branches, causal, "attention_forward");
  LATTE_CHECK(lse.shape() == Shape({d.B, d.R * d.Hq, d.T}) && lse.is_contiguous(), "attention_forward: lse ", lse.str());
  dispatch_float(q.dtype(), "attention_forward", [&]<typename T>() {
    const T* pq = q.data<T>();  // (B, T, Hq, Dqk) strided
    const T* pk = k.data<T>();  // (B, S, R*Hk, Dqk) strided
    const T* pv = v.data<T>();  // (B, S, R*Hk, Dv) strided
    T* po = out.data<T>();      // (B, T, R*Hq, Dv)
    parallel_ranges(d.B, batch_grain(d), [&](int64_t b_first, int64_t b_end) {
      std::vector<double> score(static_cast<size_t>(d.S));  // one row of scaled scores
      std::vector<double> acc(static_cast<size_t>(d.Dv));
      d.for_each_query_row(b_first, b_end, [&](int64_t b, int64_t i, int64_t kvh, int64_t oh, int64_t t) {
        const T* qr = pq + row(q, b, t, i);
        const int64_t last = d.last_key(t, causal);
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= last; ++j) {
          const T* kr = pk + row(k, b, j, kvh);
          double s = 0;
          for (int64_t c = 0; c < d.Dqk; ++c) s += static_cast<double>(qr[c]) * static_cast<double>(kr[c]);
          s *= softmax_scale;
          score[static_cast<size_t>(j)] = s;
          m = std::max(m, s);
        }
        double l = 0;
        for (int64_t j = 0; j <= last; ++j) l += std::exp(score[static_cast<size_t>(j)] - m);
        const double row_lse = m + std::log(l);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j <= last; ++j) {
          const double p = std::exp(score[static_cast<size_t>(j)] - row_lse);
          const T* vr = pv + row(v, b, j, kvh);
          for (int64_t c = 0; c < d.Dv; ++c) acc[static_cast<size_t>(c)] += p * static_cast<double>(vr[c]);
        }
        T* orow = po + row(out, b, t, oh);
        for (int64_t c = 0; c < d.Dv; ++c) orow[c] = static_cast<T>(acc[static_cast<size_t>(c)]);
        store_from_double(lse.data_ptr(), lse.dtype(), (b * d.R * d.Hq + oh) * d.T + t, row_lse);
      });
    });
  });
}

// With p_j = exp(s_j - lse), dp_j = dout . v_j and delta = dout . out = sum_j p_j dp_j:
//   ds_j = p_j (dp_j - delta);  dq += scale ds_j k_j;  dk_j += scale ds_j q;  dv_j += p_j dout.
// dq sums over the R branches that share a query head, dk/dv over every (branch-local) query head of a kv
// group, so all three are accumulated in double buffers and written once.
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, int64_t branches,
                        double softmax_scale, bool causal) {
  const AttnDims d = attn_dims(q, k, v, out, branches, causal, "attention_backward");
  LATTE_CHECK(lse.shape() == Shape({d.B, d.R * d.Hq, d.T}) && lse.is_contiguous(), "attention_backward: lse ",
              lse.str());
  LATTE_CHECK(dout.shape() == out.shape() && dout.stride(3) == 1, "attention_backward: dout ", dout.str());
  LATTE_CHECK(dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape() && dq.is_contiguous() &&
                  dk.is_contiguous() && dv.is_contiguous(),
              "attention_backward: dq/dk/dv must be contiguous with q/k/v's shapes");
  const int64_t Hkv = d.R * d.Hk;
  dispatch_float(q.dtype(), "attention_backward", [&]<typename T>() {
    const T* pq = q.data<T>();      // (B, T, Hq, Dqk) strided
    const T* pk = k.data<T>();      // (B, S, R*Hk, Dqk) strided
    const T* pv = v.data<T>();      // (B, S, R*Hk, Dv) strided
    const T* po = out.data<T>();    // (B, T, R*Hq, Dv) strided
    const T* pdo = dout.data<T>();  // (B, T, R*Hq, Dv) strided
    std::vector<double> gq(static_cast<size_t>(dq.numel()), 0.0);  // (B, T, Hq, Dqk)
    std::vector<double> gk(static_cast<size_t>(dk.numel()), 0.0);  // (B, S, R*Hk, Dqk)
    std::vector<double> gv(static_cast<size_t>(dv.numel()), 0.0);  // (B, S, R*Hk, Dv)
    parallel_ranges(d.B, batch_grain(d), [&](int64_t b_first, int64_t b_end) {
      d.for_each_query_row(b_first, b_end, [&](int64_t b, int64_t i, int64_t kvh, int64_t oh, int64_t t) {
        const T* qr = pq + row(q, b, t, i);
        const T* orow = po + row(out, b, t, oh);
        const T* dorow = pdo + row(dout, b, t, oh);
        const double row_lse = load_as_double(lse.data_ptr(), lse.dtype(), (b * d.R * d.Hq + oh) * d.T + t);
        double delta = 0;
        for (int64_t c = 0; c < d.Dv; ++c) delta += static_cast<double>(dorow[c]) * static_cast<double>(orow[c]);
        double* gqr = gq.data() + ((b * d.T + t) * d.Hq + i) * d.Dqk;
        const int64_t last = d.last_key(t, causal);
        for (int64_t j = 0; j <= last; ++j) {
          const T* kr = pk + row(k, b, j, kvh);
          const T* vr = pv + row(v, b, j, kvh);
          double s = 0, dp = 0;
          for (int64_t c = 0; c < d.Dqk; ++c) s += static_cast<double>(qr[c]) * static_cast<double>(kr[c]);
          for (int64_t c = 0; c < d.Dv; ++c) dp += static_cast<double>(dorow[c]) * static_cast<double>(vr[c]);
          const double p = std::exp(s * softmax_scale - row_lse);
          const double ds = p * (dp - delta) * softmax_scale;
          double* gkr = gk.data() + ((b * d.S + j) * Hkv + kvh) * d.Dqk;
          double* gvr = gv.data() + ((b * d.S + j) * Hkv + kvh) * d.Dv;
          for (int64_t c = 0; c < d.Dqk; ++c) {
            gqr[c] += ds * static_cast<double>(kr[c]);
            gkr[c] += ds * static_cast<double>(qr[c]);
          }
          for (int64_t c = 0; c < d.Dv; ++c) gvr[c] += p * static_cast<double>(dorow[c]);
        }
      });
    });
    T* pdq = dq.data<T>();
    T* pdk = dk.data<T>();
    T* pdv = dv.data<T>();
    for (size_t n = 0; n < gq.size(); ++n) pdq[n] = static_cast<T>(gq[n]);
    for (size_t n = 0; n < gk.size(); ++n) pdk[n] = static_cast<T>(gk[n]);
    for (size_t n = 0; n < gv.size(); ++n) pdv[n] = static_cast<T>(gv[n]);
  });
}

}  // namespace latte::cpu
