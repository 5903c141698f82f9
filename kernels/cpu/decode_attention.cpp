// CPU reference decode attention (kernels/op_decls.inc): one query token per sequence against a cache,
// every cached position visible. Both forms are one loop: a key row is [k1 | k2] (k | -, or c | kr), a query
// row [q1 | q2], a value row v (GQA) or c itself (absorbed latent: V = the latent). Scores and the weighted
// sum are accumulated in double, the softmax stabilised by the row max, as in kernels/cpu/attention.cpp
// (what the model's decode path is checked against: tests/model/test_decode.cpp, test_distributed).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {

// Row pointers by (b, h) for the (B, H, D) tensors and (b, s, kv head) for the caches; strides in elements.
struct DecodeArgs {
  int64_t B, H, S, Hk, D1, D2, DV;
  const Tensor *q1, *q2, *k1, *k2, *v, *out;  // q2 / k2 unused when D2 = 0; v = k1 (= c) for the latent form
};

int64_t row3(const Tensor& t, int64_t b, int64_t h) { return b * t.stride(0) + h * t.stride(1); }
int64_t cache_row(const Tensor& t, int64_t b, int64_t s, int64_t h) {
  return b * t.stride(0) + s * t.stride(1) + (t.dim() == 4 ? h * t.stride(2) : 0);
}

void run(const DecodeArgs& a, const Tensor& lse, double softmax_scale, const char* op) {
  LATTE_CHECK(a.S >= 1 || a.B * a.H == 0, op, ": empty cache");
  dispatch_float(a.q1->dtype(), op, [&]<typename T>() {
    const T* pq1 = a.q1->data<T>();
    const T* pk1 = a.k1->data<T>();
    const T* pq2 = a.D2 ? a.q2->data<T>() : nullptr;
    const T* pk2 = a.D2 ? a.k2->data<T>() : nullptr;
    const T* pv = a.v->data<T>();
    T* po = a.out->data<T>();
    std::vector<double> score(static_cast<size_t>(a.S));
    std::vector<double> acc(static_cast<size_t>(a.DV));
    const int64_t group = a.H / a.Hk;
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t h = 0; h < a.H; ++h) {
        const int64_t kvh = h / group;
        const T* q1 = pq1 + row3(*a.q1, b, h);
        const T* q2 = a.D2 ? pq2 + row3(*a.q2, b, h) : nullptr;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < a.S; ++j) {
          const T* k1 = pk1 + cache_row(*a.k1, b, j, kvh);
          double s = 0;
          for (int64_t c = 0; c < a.D1; ++c) s += static_cast<double>(q1[c]) * static_cast<double>(k1[c]);
          if (a.D2) {
            const T* k2 = pk2 + cache_row(*a.k2, b, j, kvh);
            for (int64_t c = 0; c < a.D2; ++c) s += static_cast<double>(q2[c]) * static_cast<double>(k2[c]);
          }
          s *= softmax_scale;
          score[static_cast<size_t>(j)] = s;
          m = std::max(m, s);
        }
        double l = 0;
        for (int64_t j = 0; j < a.S; ++j) l += std::exp(score[static_cast<size_t>(j)] - m);
        const double row_lse = m + std::log(l);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < a.S; ++j) {
          const double p = std::exp(score[static_cast<size_t>(j)] - row_lse);
          const T* vr = pv + cache_row(*a.v, b, j, kvh);
          for (int64_t c = 0; c < a.DV; ++c) acc[static_cast<size_t>(c)] += p * static_cast<double>(vr[c]);
        }
        T* orow = po + row3(*a.out, b, h);
        for (int64_t c = 0; c < a.DV; ++c) orow[c] = static_cast<T>(acc[static_cast<size_t>(c)]);
        if (lse.defined()) store_from_double(lse.data_ptr(), lse.dtype(), b * a.H + h, row_lse);
      }
  });
}

bool cpu_float(const Tensor& t) { return !t.defined() || (t.device().is_cpu() && (t.dtype() == DType::F32 || t.dtype() == DType::F64)); }

}  // namespace

bool decode_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out) {
  return cpu_float(q) && cpu_float(k) && cpu_float(v) && cpu_float(out);
}

void decode_attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                      double softmax_scale, int64_t /*ready_rows: the CPU runs in order*/) {
  LATTE_CHECK(q.dim() == 3 && k.dim() == 4 && v.dim() == 4 && out.dim() == 3, "decode_attention: q ", q.str(), " k ",
              k.str(), " v ", v.str(), " out ", out.str());
  DecodeArgs a{q.size(0), q.size(1), k.size(1), k.size(2), q.size(2), 0, v.size(3), &q, nullptr, &k, nullptr, &v, &out};
  LATTE_CHECK(a.Hk >= 1 && a.H % a.Hk == 0 && out.size(1) == a.H && out.size(2) == a.DV, "decode_attention: heads");
  LATTE_CHECK(q.stride(2) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && out.stride(2) == 1,
              "decode_attention needs a contiguous last dim");
  run(a, lse, softmax_scale, "decode_attention");
}

bool decode_attention_latent_supported(const Tensor& q_abs, const Tensor& q_rope, const Tensor& c, const Tensor& kr,
                                       const Tensor& z) {
  return cpu_float(q_abs) && cpu_float(q_rope) && cpu_float(c) && cpu_float(kr) && cpu_float(z);
}

void decode_attention_latent(const Tensor& z, const Tensor& lse, const Tensor& q_abs, const Tensor& q_rope,
                             const Tensor& c, const Tensor& kr, double softmax_scale,
                             int64_t /*ready_rows: the CPU runs in order*/) {
  LATTE_CHECK(q_abs.dim() == 3 && c.dim() == 3 && z.dim() == 3, "decode_attention_latent: q_abs ", q_abs.str(), " c ",
              c.str(), " z ", z.str());
  const int64_t dr = q_rope.defined() ? q_rope.size(2) : 0;
  DecodeArgs a{q_abs.size(0), q_abs.size(1), c.size(1), 1, c.size(2), dr, c.size(2),
               &q_abs, &q_rope, &c, &kr, &c, &z};
  LATTE_CHECK(q_abs.stride(2) == 1 && c.stride(2) == 1 && z.stride(2) == 1 &&
                  (!dr || (q_rope.stride(2) == 1 && kr.stride(2) == 1)),
              "decode_attention_latent needs a contiguous last dim");
  run(a, lse, softmax_scale, "decode_attention_latent");
}

}  // namespace latte::cpu
