// Dispatchers for the neural-network kernels (norms, RoPE, SwiGLU, attention, MLRA branch sum): each checks
// the shapes the contract in kernels/op_decls.inc promises, once and for both backends, with a message that
// names every shape involved (a shape mismatch here is almost always a model-config mistake), then picks
// cpu:: or cuda:: by device. The kernels themselves only guard memory safety.
#include <cmath>
#include <utility>

#include "kernels/dispatch.h"

namespace latte::ops {

namespace {

std::string shapes(std::initializer_list<std::pair<const char*, const Tensor*>> named) {
  std::string s;
  for (const auto& [name, t] : named) {
    if (!s.empty()) s += ", ";
    s += name;
    s += " ";
    s += t->defined() ? t->shape().str() : std::string("undefined");
  }
  return s;
}

void require_float_like(const Tensor& ref, const Tensor& t, const char* op, const char* name) {
  if (!t.defined()) return;
  LATTE_REQUIRE(t.dtype() == ref.dtype(), op, ": ", name, " is ", dtype_name(t.dtype()), " but the input is ",
                dtype_name(ref.dtype()), "; cast it with .to(", dtype_name(ref.dtype()), ")");
}

// Saved statistics (rstd, mean, lse) are f32, or the input's dtype when that is f64 (the CPU reference keeps
// them in f64 so gradcheck stays exact).
void require_stat_dtype(const Tensor& ref, const Tensor& stat, const char* op, const char* name) {
  if (!stat.defined()) return;
  LATTE_REQUIRE(stat.dtype() == DType::F32 || stat.dtype() == ref.dtype(), op, ": ", name, " must be f32 (or ",
                dtype_name(ref.dtype()), " like the input), got ", dtype_name(stat.dtype()));
}

void check_rmsnorm(const Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& rstd, const char* op) {
  LATTE_REQUIRE(x.dim() == 2, op, ": x must be (N, D), got ", x.shape().str());
  const int64_t N = x.size(0), D = x.size(1);
  LATTE_REQUIRE(out.shape() == x.shape() && (!weight.defined() || weight.shape() == Shape({D})) &&
                    rstd.shape() == Shape({N}),
                op, ": expected x (N, D), out (N, D), weight (D), rstd (N); got ",
                shapes({{"x", &x}, {"out", &out}, {"weight", &weight}, {"rstd", &rstd}}));
  require_float_like(x, out, op, "out");
  require_float_like(x, weight, op, "weight");
  require_stat_dtype(x, rstd, op, "rstd");
}

void check_group_norm(const Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& bias,
                      const Tensor& mean, const Tensor& rstd, int64_t groups, const char* op) {
  LATTE_REQUIRE(x.dim() == 2, op, ": x must be (N, G*Dg), got ", x.shape().str());
  const int64_t N = x.size(0), C = x.size(1);
  LATTE_REQUIRE(groups >= 1 && C % groups == 0, op, ": the last dim ", C, " of x ", x.shape().str(),
                " does not split into ", groups, " equal groups");
  LATTE_REQUIRE(out.shape() == x.shape() && (!weight.defined() || weight.shape() == Shape({C})) &&
                    (!bias.defined() || bias.shape() == Shape({C})) && mean.shape() == Shape({N, groups}) &&
                    rstd.shape() == Shape({N, groups}),
                op, ": expected x (N, C), out (N, C), weight/bias (C), mean/rstd (N, G) with G = ", groups, "; got ",
                shapes({{"x", &x}, {"out", &out}, {"weight", &weight}, {"bias", &bias}, {"mean", &mean},
                        {"rstd", &rstd}}));
  require_float_like(x, out, op, "out");
  require_float_like(x, weight, op, "weight");
  require_float_like(x, bias, op, "bias");
  require_stat_dtype(x, mean, op, "mean");
  require_stat_dtype(x, rstd, op, "rstd");
}

void check_rope(const Tensor& out, const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset,
                const char* op) {
  LATTE_REQUIRE(x.dim() == 4, op, ": x must be (B, T, H, D), got ", x.shape().str());
  LATTE_REQUIRE(out.shape() == x.shape(), op, ": out ", out.shape().str(), " differs from x ", x.shape().str());
  LATTE_REQUIRE(inv_freq.dim() == 1 && is_floating(inv_freq.dtype()), op, ": inv_freq must be a 1-D float tensor (R/2), got ",
                inv_freq.str());
  const int64_t D = x.size(3), R = 2 * inv_freq.numel();
  LATTE_REQUIRE(rope_offset >= 0 && rope_offset + R <= D, op, ": rope channels [", rope_offset, ", ", rope_offset + R,
                ") (rope width ", R, " = 2 * inv_freq ", inv_freq.shape().str(), ") do not fit a head of width ", D,
                " of x ", x.shape().str());
  LATTE_REQUIRE(start_pos >= 0, op, ": start_pos must be >= 0, got ", start_pos);
  LATTE_REQUIRE(x.stride(3) == 1 && out.stride(3) == 1, op, ": the last dim of x and out must be contiguous; call .contiguous()");
  require_float_like(x, out, op, "out");
}

void check_swiglu(const Tensor& a, const Tensor& b, const Tensor& c, const char* op) {
  LATTE_REQUIRE(a.shape() == b.shape() && a.shape() == c.shape(), op, ": shapes differ: ",
                shapes({{"gate", &a}, {"up", &b}, {"out", &c}}));
  require_float_like(a, b, op, "up");
  require_float_like(a, c, op, "out");
}

// Checks q/k/v/out/lse against the attention contract; returns nothing, throws with all shapes on a mismatch.
void check_attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                     int64_t branches, double softmax_scale, bool causal, const char* op) {
  auto all = [&] { return shapes({{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}}); };
  LATTE_REQUIRE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
                ": expected q (B, T, Hq, Dqk), k (B, S, R*Hk, Dqk), v (B, S, R*Hk, Dv); got ", all());
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), S = k.size(1);
  LATTE_REQUIRE(branches >= 1 && k.size(2) % branches == 0, op, ": ", k.size(2), " kv heads in k do not split into ",
                branches, " branches; ", all());
  const int64_t Hk = k.size(2) / branches;
  LATTE_REQUIRE(Hk >= 1 && Hq % Hk == 0, op, ": ", Hq, " query heads are not a multiple of ", Hk,
                " kv heads per branch; ", all());
  LATTE_REQUIRE(k.size(0) == B && v.size(0) == B && v.size(1) == S && v.size(2) == k.size(2) && k.size(3) == q.size(3),
                op, ": q, k, v disagree (batch, key length, heads or q/k width); ", all());
  LATTE_REQUIRE(out.shape() == Shape({B, T, branches * Hq, v.size(3)}) && lse.shape() == Shape({B, branches * Hq, T}),
                op, ": expected out (B, T, R*Hq, Dv) and lse (B, R*Hq, T); ", all());
  LATTE_REQUIRE(!causal || S >= T, op, ": causal attention needs at least as many keys as queries (S >= T), got S=", S,
                " T=", T, "; ", all());
  LATTE_REQUIRE(T == 0 || S >= 1, op, ": no keys; ", all());
  LATTE_REQUIRE(std::isfinite(softmax_scale) && softmax_scale > 0, op, ": softmax_scale must be > 0, got ",
                softmax_scale, " (the usual value is 1/sqrt(Dqk) = ", 1.0 / std::sqrt(static_cast<double>(q.size(3))), ")");
  LATTE_REQUIRE(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && out.stride(3) == 1, op,
                ": the last dim of q, k, v and out must be contiguous; call .contiguous()");
  require_float_like(q, k, op, "k");
  require_float_like(q, v, op, "v");
  require_float_like(q, out, op, "out");
  require_stat_dtype(q, lse, op, "lse");
}

void check_ready_rows(int64_t ready_rows, int64_t S, const char* op) {
  LATTE_REQUIRE(ready_rows >= 0 && ready_rows <= S, op, ": ready_rows must be in [0, ", S,
                "] (the cache rows written before the previous kernel), got ", ready_rows);
}

void check_decode_attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                            double softmax_scale, const char* op) {
  auto all = [&] { return shapes({{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}}); };
  LATTE_REQUIRE(q.dim() == 3 && k.dim() == 4 && v.dim() == 4 && out.dim() == 3, op,
                ": expected q (B, Hq, Dqk), k (B, S, Hk, Dqk), v (B, S, Hk, Dv), out (B, Hq, Dv); got ", all());
  const int64_t B = q.size(0), Hq = q.size(1), Hk = k.size(2);
  LATTE_REQUIRE(Hk >= 1 && Hq % Hk == 0 && k.size(0) == B && v.size(0) == B && v.size(1) == k.size(1) &&
                    v.size(2) == Hk && k.size(3) == q.size(2) && out.shape() == Shape({B, Hq, v.size(3)}),
                op, ": q, k, v, out disagree (batch, cache length, heads or widths); ", all());
  LATTE_REQUIRE(!lse.defined() || lse.shape() == Shape({B, Hq}), op, ": lse must be (B, Hq); ", all());
  LATTE_REQUIRE(k.size(1) >= 1 || B * Hq == 0, op, ": the cache is empty; ", all());
  LATTE_REQUIRE(std::isfinite(softmax_scale) && softmax_scale > 0, op, ": softmax_scale must be > 0, got ", softmax_scale);
  LATTE_REQUIRE(q.stride(2) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && out.stride(2) == 1, op,
                ": the last dim of q, k, v and out must be contiguous; call .contiguous()");
  require_float_like(q, k, op, "k");
  require_float_like(q, v, op, "v");
  require_float_like(q, out, op, "out");
  require_stat_dtype(q, lse, op, "lse");
}

void check_decode_attention_latent(const Tensor& z, const Tensor& lse, const Tensor& q_abs, const Tensor& q_rope,
                                   const Tensor& c, const Tensor& kr, double softmax_scale, const char* op) {
  auto all = [&] {
    return shapes({{"q_abs", &q_abs}, {"q_rope", &q_rope}, {"c", &c}, {"kr", &kr}, {"z", &z}, {"lse", &lse}});
  };
  LATTE_REQUIRE(q_abs.dim() == 3 && c.dim() == 3 && z.dim() == 3, op,
                ": expected q_abs (B, H, Dc), c (B, S, Dc), z (B, H, Dc); got ", all());
  const int64_t B = q_abs.size(0), H = q_abs.size(1), S = c.size(1);
  LATTE_REQUIRE(c.size(0) == B && c.size(2) == q_abs.size(2) && z.shape() == q_abs.shape(), op,
                ": q_abs, c, z disagree (batch or latent width); ", all());
  LATTE_REQUIRE(q_rope.defined() == kr.defined(), op, ": give both q_rope and kr, or neither; ", all());
  if (q_rope.defined())
    LATTE_REQUIRE(q_rope.dim() == 3 && kr.dim() == 3 && q_rope.size(0) == B && q_rope.size(1) == H && kr.size(0) == B &&
                      kr.size(1) == S && kr.size(2) == q_rope.size(2),
                  op, ": expected q_rope (B, H, Dr) and kr (B, S, Dr); ", all());
  LATTE_REQUIRE(!lse.defined() || lse.shape() == Shape({B, H}), op, ": lse must be (B, H); ", all());
  LATTE_REQUIRE(S >= 1 || B * H == 0, op, ": the cache is empty; ", all());
  LATTE_REQUIRE(std::isfinite(softmax_scale) && softmax_scale > 0, op, ": softmax_scale must be > 0, got ", softmax_scale);
  LATTE_REQUIRE(q_abs.stride(2) == 1 && c.stride(2) == 1 && z.stride(2) == 1 &&
                    (!q_rope.defined() || (q_rope.stride(2) == 1 && kr.stride(2) == 1)),
                op, ": the last dim of every tensor must be contiguous; call .contiguous()");
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"q_rope", &q_rope}, {"c", &c}, {"kr", &kr}, {"z", &z}})
    require_float_like(q_abs, *t, op, name);
  require_stat_dtype(q_abs, lse, op, "lse");
}

void check_branch_sum(const Tensor& in, const Tensor& out, int64_t branches, const char* op) {
  LATTE_REQUIRE(in.dim() == 4 && branches >= 1 && in.size(2) % branches == 0, op, ": in ", in.shape().str(),
                " is not (B, T, R*H, D) with R = ", branches);
  LATTE_REQUIRE(out.shape() == Shape({in.size(0), in.size(1), in.size(2) / branches, in.size(3)}), op, ": out ",
                out.shape().str(), " is not (B, T, H, D) for in ", in.shape().str(), " and ", branches, " branches");
  require_float_like(in, out, op, "out");
}

}  // namespace

// ---- norms ----------------------------------------------------------------------------------------------

void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) {
  check_rmsnorm(out, x, weight, rstd, "rmsnorm_forward");
  LATTE_REQUIRE(eps >= 0, "rmsnorm_forward: eps must be >= 0, got ", eps);
  LATTE_DISPATCH(rmsnorm_forward, &out, &rstd, &x, &weight)(out, rstd, x, weight, eps);
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout, const Tensor& x,
                      const Tensor& weight, const Tensor& rstd, bool accumulate_dx) {
  check_rmsnorm(dx, x, weight, rstd, "rmsnorm_backward");
  check_same_shape(dout, x, "rmsnorm_backward (dout vs x)");
  LATTE_REQUIRE(!dweight.defined() || dweight.shape() == Shape({x.size(1)}), "rmsnorm_backward: dweight ",
                dweight.shape().str(), " for x ", x.shape().str());
  require_float_like(x, dweight, "rmsnorm_backward", "dweight");
  LATTE_DISPATCH(rmsnorm_backward, &dx, &dweight, &dout, &x, &weight, &rstd)(dx, dweight, dout, x, weight, rstd,
                                                                            accumulate_dx);
}

void group_norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                        const Tensor& weight, const Tensor& bias, int64_t groups, double eps, bool rms) {
  check_group_norm(out, x, weight, bias, mean, rstd, groups, "group_norm_forward");
  LATTE_REQUIRE(eps >= 0, "group_norm_forward: eps must be >= 0, got ", eps);
  LATTE_DISPATCH(group_norm_forward, &out, &mean, &rstd, &x, &weight, &bias)(out, mean, rstd, x, weight, bias, groups,
                                                                             eps, rms);
}

void group_norm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias, const Tensor& dout,
                         const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                         int64_t groups, bool rms) {
  check_group_norm(dx, x, dweight, dbias, mean, rstd, groups, "group_norm_backward");
  check_same_shape(dout, x, "group_norm_backward (dout vs x)");
  LATTE_REQUIRE(!weight.defined() || weight.shape() == Shape({x.size(1)}), "group_norm_backward: weight ",
                weight.shape().str(), " for x ", x.shape().str());
  require_float_like(x, weight, "group_norm_backward", "weight");
  LATTE_DISPATCH(group_norm_backward, &dx, &dweight, &dbias, &dout, &x, &weight, &mean, &rstd)(
      dx, dweight, dbias, dout, x, weight, mean, rstd, groups, rms);
}

// ---- RoPE -----------------------------------------------------------------------------------------------

void rope_forward(const Tensor& out, const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset) {
  check_rope(out, x, inv_freq, start_pos, rope_offset, "rope_forward");
  LATTE_DISPATCH(rope_forward, &out, &x, &inv_freq)(out, x, inv_freq, start_pos, rope_offset);
}

void rope_backward(const Tensor& dx, const Tensor& dout, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset) {
  check_rope(dx, dout, inv_freq, start_pos, rope_offset, "rope_backward");
  LATTE_DISPATCH(rope_backward, &dx, &dout, &inv_freq)(dx, dout, inv_freq, start_pos, rope_offset);
}

// ---- SwiGLU ---------------------------------------------------------------------------------------------

void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  check_swiglu(gate, up, out, "swiglu_forward");
  LATTE_DISPATCH(swiglu_forward, &out, &gate, &up)(out, gate, up);
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout, const Tensor& gate, const Tensor& up) {
  check_swiglu(gate, up, dout, "swiglu_backward");
  check_swiglu(gate, dgate, dup, "swiglu_backward (dgate, dup)");
  LATTE_DISPATCH(swiglu_backward, &dgate, &dup, &dout, &gate, &up)(dgate, dup, dout, gate, up);
}

// ---- attention ------------------------------------------------------------------------------------------

void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       int64_t branches, double softmax_scale, bool causal) {
  check_attention(out, lse, q, k, v, branches, softmax_scale, causal, "attention_forward");
  LATTE_DISPATCH(attention_forward, &out, &lse, &q, &k, &v)(out, lse, q, k, v, branches, softmax_scale, causal);
}

void decode_attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                      double softmax_scale, int64_t ready_rows) {
  check_decode_attention(out, lse, q, k, v, softmax_scale, "decode_attention");
  check_ready_rows(ready_rows, k.size(1), "decode_attention");
  LATTE_DISPATCH(decode_attention, &out, &lse, &q, &k, &v)(out, lse, q, k, v, softmax_scale, ready_rows);
}

bool decode_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out) {
  return LATTE_DISPATCH(decode_attention_supported, &q, &k, &v, &out)(q, k, v, out);
}

void decode_attention_latent(const Tensor& z, const Tensor& lse, const Tensor& q_abs, const Tensor& q_rope,
                             const Tensor& c, const Tensor& kr, double softmax_scale, int64_t ready_rows) {
  check_decode_attention_latent(z, lse, q_abs, q_rope, c, kr, softmax_scale, "decode_attention_latent");
  check_ready_rows(ready_rows, c.size(1), "decode_attention_latent");
  LATTE_DISPATCH(decode_attention_latent, &z, &lse, &q_abs, &q_rope, &c, &kr)(z, lse, q_abs, q_rope, c, kr, softmax_scale,
                                                                              ready_rows);
}

bool decode_attention_latent_supported(const Tensor& q_abs, const Tensor& q_rope, const Tensor& c, const Tensor& kr,
                                       const Tensor& z) {
  return LATTE_DISPATCH(decode_attention_latent_supported, &q_abs, &q_rope, &c, &kr, &z)(q_abs, q_rope, c, kr, z);
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, int64_t branches,
                        double softmax_scale, bool causal) {
  check_attention(out, lse, q, k, v, branches, softmax_scale, causal, "attention_backward");
  LATTE_REQUIRE(dout.shape() == out.shape() && dq.shape() == q.shape() && dk.shape() == k.shape() &&
                    dv.shape() == v.shape(),
                "attention_backward: gradients must match their tensors; got ",
                shapes({{"dout", &dout}, {"out", &out}, {"dq", &dq}, {"q", &q}, {"dk", &dk}, {"k", &k}, {"dv", &dv},
                        {"v", &v}}));
  LATTE_REQUIRE(dq.is_contiguous() && dk.is_contiguous() && dv.is_contiguous() && dout.stride(3) == 1,
                "attention_backward: dq, dk, dv must be contiguous and dout's last dim contiguous");
  LATTE_DISPATCH(attention_backward, &dq, &dk, &dv, &dout, &q, &k, &v, &out, &lse)(dq, dk, dv, dout, q, k, v, out, lse,
                                                                                 branches, softmax_scale, causal);
}

void branch_sum_forward(const Tensor& out, const Tensor& in, int64_t branches, double scale) {
  check_branch_sum(in, out, branches, "branch_sum_forward");
  LATTE_DISPATCH(branch_sum_forward, &out, &in)(out, in, branches, scale);
}

void branch_sum_backward(const Tensor& din, const Tensor& dout, int64_t branches, double scale) {
  check_branch_sum(din, dout, branches, "branch_sum_backward");
  LATTE_DISPATCH(branch_sum_backward, &din, &dout)(din, dout, branches, scale);
}

}  // namespace latte::ops
