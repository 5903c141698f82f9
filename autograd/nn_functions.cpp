// Differentiable neural-network ops (autograd/nn_functions.h): RMSNorm, group/layer norm, RoPE, SwiGLU, attention
// and the MLRA branch sum. Each function validates what it needs to compute output shapes, allocates its outputs,
// runs the forward kernel through kernels/ops.h and, when an input requires grad, records a node that saves what
// the hand-written backward kernel needs. Saved tensors are detached (a node holding its own output with
// grad_fn = itself would be a reference cycle) and freed in release(). A node returns an undefined gradient for
// inputs that need none (next_edges[i].fn is null), so the engine skips them.
#include "autograd/nn_functions.h"

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte {

namespace {

using autograd::Node;

// Does input i of a recorded node want a gradient?
bool wants(const Node& n, size_t i) { return i < n.next_edges.size() && n.next_edges[i].fn != nullptr; }

// Saved statistics (rstd, mean, lse) are f32 as the kernel contract says, except for f64 inputs, where f64 keeps
// gradcheck's finite differences exact (the CPU kernels accept both).
DType stat_dtype(DType x) { return x == DType::F64 ? DType::F64 : DType::F32; }

// A detached contiguous copy-or-alias of t (undefined stays undefined): what kernels that want contiguous
// inputs read, and what nodes save.
Tensor plain(const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); }

// A detached alias of t whose last dim is contiguous (attention and RoPE accept strides in B/T/H).
Tensor last_dim_contiguous(const Tensor& t) { return t.stride(-1) == 1 ? t.detach() : t.detach().contiguous(); }

// x (..., D) viewed as rows (N, D), detached and contiguous.
Tensor as_rows(const Tensor& x, const char* op) {
  LATTE_REQUIRE(x.dim() >= 1 && x.size(-1) > 0, op, ": x must have a non-empty last dim, got ", x.shape().str());
  const int64_t D = x.size(-1);
  return plain(x).view({x.numel() / D, D});
}

void require_param(const Tensor& x, const Tensor& p, const char* op, const char* name) {
  if (!p.defined()) return;
  LATTE_REQUIRE(p.shape() == Shape({x.size(-1)}), op, ": ", name, " ", p.shape().str(),
                " does not match the last dim of x ", x.shape().str());
}

// ---- RMSNorm ---------------------------------------------------------------------------------------------

struct RmsNormBackward : Node {
  Tensor x;       // (N, D)
  Tensor weight;  // (D) or undefined
  Tensor rstd;    // (N)
  Shape x_shape;  // the caller's (..., D)
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor dout = g[0].contiguous().view(x.shape());  // (N, D)
    // The residual stream's gradient so far (Node::partial_sums): the kernel adds dx into it.
    const Tensor& sum = partial_sums.empty() ? Tensor() : partial_sums[0];
    const bool into_sum = wants(*this, 0) && sum.defined() && sum.shape() == x_shape && sum.dtype() == x.dtype() &&
                          sum.device() == x.device();
    Tensor dx = into_sum ? sum.view(x.shape()) : Tensor::empty(x.shape(), x.dtype(), x.device());
    Tensor dweight = wants(*this, 1) ? Tensor::zeros(weight.shape(), weight.dtype(), weight.device()) : Tensor();
    ops::rmsnorm_backward(dx, dweight, dout, x, weight, rstd, into_sum);
    if (into_sum) return {sum, dweight};
    return {wants(*this, 0) ? dx.view(x_shape) : Tensor(), dweight};
  }
  void release() override { x = weight = rstd = Tensor(); }
  std::string name() const override { return "RmsNormBackward"; }
};

// ---- group norm / LayerNorm ------------------------------------------------------------------------------

struct GroupNormBackward : Node {
  Tensor x;            // (N, G*Dg)
  Tensor weight;       // (G*Dg) or undefined
  Tensor mean, rstd;   // (N, G)
  Shape x_shape;
  int64_t groups = 1;
  bool rms = false;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor dout = g[0].contiguous().view(x.shape());  // (N, G*Dg)
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    const Shape c{x.size(1)};
    Tensor dweight = wants(*this, 1) ? Tensor::zeros(c, x.dtype(), x.device()) : Tensor();
    Tensor dbias = wants(*this, 2) ? Tensor::zeros(c, x.dtype(), x.device()) : Tensor();
    ops::group_norm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, groups, rms);
    return {wants(*this, 0) ? dx.view(x_shape) : Tensor(), dweight, dbias};
  }
  void release() override { x = weight = mean = rstd = Tensor(); }
  std::string name() const override { return rms ? "GroupRmsNormBackward" : "GroupNormBackward"; }
};

// ---- RoPE ------------------------------------------------------------------------------------------------

// RoPE may rotate t where it is: nothing else can see its memory (a parameter is held by its module too, a
// saved tensor by its node) and its rows are what the kernel reads (contiguous last dim).
bool rotatable_in_place(const Tensor& t) {
  return t.defined() && t.dim() == 4 && t.stride(3) == 1 && autograd::exclusively_owned(t);
}

struct RopeBackward : Node {
  Tensor inv_freq;  // (R/2)
  int64_t start_pos = 0, rope_offset = 0;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    // The incoming gradient is rotated back in place when nothing else holds it (attention's fresh dq):
    // the channels outside the rope range are then left as they are instead of copied.
    if (rotatable_in_place(g[0])) {
      ops::rope_backward(g[0], g[0], inv_freq, start_pos, rope_offset);
      return {g[0]};
    }
    Tensor dout = last_dim_contiguous(g[0]);  // (B, T, H, D)
    Tensor dx = Tensor::empty(dout.shape(), dout.dtype(), dout.device());
    ops::rope_backward(dx, dout, inv_freq, start_pos, rope_offset);
    return {dx};
  }
  void release() override { inv_freq = Tensor(); }
  std::string name() const override { return "RopeBackward"; }
};

// ---- SwiGLU ----------------------------------------------------------------------------------------------

struct SwigluBackward : Node {
  Tensor gate, up;  // contiguous, one shape
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor dout = g[0].contiguous();
    Tensor dgate = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
    Tensor dup = Tensor::empty(up.shape(), up.dtype(), up.device());
    ops::swiglu_backward(dgate, dup, dout, gate, up);
    return {wants(*this, 0) ? dgate : Tensor(), wants(*this, 1) ? dup : Tensor()};
  }
  void release() override { gate = up = Tensor(); }
  std::string name() const override { return "SwigluBackward"; }
};

// ---- attention -------------------------------------------------------------------------------------------

struct AttentionBackward : Node {
  Tensor q, k, v;  // (B, T, Hq, Dqk), (B, S, R*Hk, Dqk), (B, S, R*Hk, Dv); last dim contiguous
  Tensor out;      // (B, T, R*Hq, Dv)
  Tensor lse;      // (B, R*Hq, T)
  int64_t branches = 1;
  double softmax_scale = 1;
  bool causal = true;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor dout = g[0].contiguous();  // (B, T, R*Hq, Dv)
    Tensor dq = Tensor::empty(q.shape(), q.dtype(), q.device());
    Tensor dk = Tensor::empty(k.shape(), k.dtype(), k.device());
    Tensor dv = Tensor::empty(v.shape(), v.dtype(), v.device());
    ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, branches, softmax_scale, causal);
    return {wants(*this, 0) ? dq : Tensor(), wants(*this, 1) ? dk : Tensor(), wants(*this, 2) ? dv : Tensor()};
  }
  void release() override { q = k = v = out = lse = Tensor(); }
  std::string name() const override { return "AttentionBackward"; }
};

// ---- MLRA branch sum -------------------------------------------------------------------------------------

struct BranchSumBackward : Node {
  Shape in_shape;  // (B, T, R*H, D)
  int64_t branches = 1;
  double scale = 1;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor dout = g[0].contiguous();  // (B, T, H, D)
    Tensor din = Tensor::empty(in_shape, dout.dtype(), dout.device());
    ops::branch_sum_backward(din, dout, branches, scale);
    return {din};
  }
  std::string name() const override { return "BranchSumBackward"; }
};

}  // namespace

Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor rows = as_rows(x, "rmsnorm");  // (N, D)
  require_param(x, weight, "rmsnorm", "weight");
  Tensor w = plain(weight);              // (D)
  Tensor out = Tensor::empty(rows.shape(), x.dtype(), x.device());                    // (N, D)
  Tensor rstd = Tensor::empty({rows.size(0)}, stat_dtype(x.dtype()), x.device());     // (N)
  ops::rmsnorm_forward(out, rstd, rows, w, eps);
  Tensor y = out.view(x.shape());
  if (autograd::needs_grad({&x, &weight})) {
    auto node = std::make_shared<RmsNormBackward>();
    node->x = rows;
    node->weight = w;
    node->rstd = rstd;
    node->x_shape = x.shape();
    autograd::record(node, {x, weight}, {y});
  }
  return y;
}

Tensor group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, double eps, bool rms) {
  Tensor rows = as_rows(x, "group_norm");  // (N, G*Dg)
  require_param(x, weight, "group_norm", "weight");
  require_param(x, bias, "group_norm", "bias");
  LATTE_REQUIRE(groups >= 1 && rows.size(1) % groups == 0, "group_norm: the last dim of x ", x.shape().str(),
                " does not split into ", groups, " equal groups");
  Tensor w = plain(weight), b = plain(bias);  // (G*Dg) each, or undefined
  const DType sd = stat_dtype(x.dtype());
  Tensor out = Tensor::empty(rows.shape(), x.dtype(), x.device());         // (N, G*Dg)
  Tensor mean = Tensor::empty({rows.size(0), groups}, sd, x.device());     // (N, G)
  Tensor rstd = Tensor::empty({rows.size(0), groups}, sd, x.device());     // (N, G)
  ops::group_norm_forward(out, mean, rstd, rows, w, b, groups, eps, rms);
  Tensor y = out.view(x.shape());
  if (autograd::needs_grad({&x, &weight, &bias})) {
    auto node = std::make_shared<GroupNormBackward>();
    node->x = rows;
    node->weight = w;
    node->mean = mean;
    node->rstd = rstd;
    node->x_shape = x.shape();
    node->groups = groups;
    node->rms = rms;
    autograd::record(node, {x, weight, bias}, {y});
  }
  return y;
}

namespace {
Tensor rope_impl(const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset, bool in_place) {
  LATTE_REQUIRE(x.dim() == 4, "rope: x must be (B, T, H, D), got ", x.shape().str());
  Tensor freq = inv_freq.detach();  // (R/2)
  Tensor out;                       // (B, T, H, D)
  if (in_place) {
    out = x.detach();  // x's memory under a new handle: the node below becomes its producer
    ops::rope_forward(out, out, freq, start_pos, rope_offset);
  } else {
    Tensor xin = last_dim_contiguous(x);  // (B, T, H, D), strided in B/T/H
    out = Tensor::empty(x.shape(), x.dtype(), x.device());
    ops::rope_forward(out, xin, freq, start_pos, rope_offset);
  }
  // inv_freq is a fixed buffer (layers/rope.h), never trained: only x gets a gradient.
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<RopeBackward>();
    node->inv_freq = freq;
    node->start_pos = start_pos;
    node->rope_offset = rope_offset;
    autograd::record(node, {x}, {out});
  }
  return out;
}
}  // namespace

Tensor rope(const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset) {
  return rope_impl(x, inv_freq, start_pos, rope_offset, false);
}

Tensor rope(Tensor&& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset) {
  return rope_impl(x, inv_freq, start_pos, rope_offset, rotatable_in_place(x));
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  LATTE_REQUIRE(gate.shape() == up.shape(), "swiglu: gate ", gate.shape().str(), " and up ", up.shape().str(),
                " must have the same shape");
  // gate and up are often views (split of a fused projection); the kernel wants them contiguous.
  Tensor g = plain(gate), u = plain(up);
  Tensor out = Tensor::empty(g.shape(), g.dtype(), g.device());
  ops::swiglu_forward(out, g, u);
  if (autograd::needs_grad({&gate, &up})) {
    auto node = std::make_shared<SwigluBackward>();
    node->gate = g;
    node->up = u;
    autograd::record(node, {gate, up}, {out});
  }
  return out;
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t branches, double softmax_scale,
                 bool causal) {
  LATTE_REQUIRE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                "attention: expected q (B, T, Hq, Dqk), k (B, S, R*Hk, Dqk), v (B, S, R*Hk, Dv); got q ",
                q.shape().str(), ", k ", k.shape().str(), ", v ", v.shape().str());
  LATTE_REQUIRE(branches >= 1, "attention: branches must be >= 1, got ", branches);
  // The kernels read q/k/v through their B/T/H strides (views of fused projections need no copy).
  Tensor qi = last_dim_contiguous(q), ki = last_dim_contiguous(k), vi = last_dim_contiguous(v);
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), Dv = v.size(3);
  Tensor out = Tensor::empty({B, T, branches * Hq, Dv}, q.dtype(), q.device());              // (B, T, R*Hq, Dv)
  Tensor lse = Tensor::empty({B, branches * Hq, T}, stat_dtype(q.dtype()), q.device());     // (B, R*Hq, T)
  ops::attention_forward(out, lse, qi, ki, vi, branches, softmax_scale, causal);
  if (autograd::needs_grad({&q, &k, &v})) {
    auto node = std::make_shared<AttentionBackward>();
    node->q = qi;
    node->k = ki;
    node->v = vi;
    node->out = out.detach();
    node->lse = lse;
    node->branches = branches;
    node->softmax_scale = softmax_scale;
    node->causal = causal;
    autograd::record(node, {q, k, v}, {out});
  }
  return out;
}

Tensor decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, double softmax_scale, int64_t ready_rows) {
  LATTE_REQUIRE(!autograd::needs_grad({&q, &k, &v}), "decode_attention is inference-only; run it under NoGradGuard");
  Tensor qi = last_dim_contiguous(q);
  Tensor out = Tensor::empty({q.size(0), q.size(1), v.size(-1)}, q.dtype(), q.device());  // (B, Hq, Dv)
  if (!ops::decode_attention_supported(qi, k, v, out)) return Tensor();
  ops::decode_attention(out, Tensor(), qi, k, v, softmax_scale, ready_rows);
  return out;
}

Tensor decode_attention_latent(const Tensor& q_abs, const Tensor& q_rope, const Tensor& c, const Tensor& kr,
                               double softmax_scale, int64_t ready_rows) {
  LATTE_REQUIRE(!autograd::needs_grad({&q_abs, &q_rope, &c, &kr}),
                "decode_attention_latent is inference-only; run it under NoGradGuard");
  Tensor qa = last_dim_contiguous(q_abs), qr = q_rope.defined() ? last_dim_contiguous(q_rope) : Tensor();
  Tensor z = Tensor::empty(q_abs.shape(), q_abs.dtype(), q_abs.device());  // (B, H, Dc)
  if (!ops::decode_attention_latent_supported(qa, qr, c, kr, z)) return Tensor();
  ops::decode_attention_latent(z, Tensor(), qa, qr, c, kr, softmax_scale, ready_rows);
  return z;
}

Tensor branch_sum(const Tensor& x, int64_t branches, double scale) {
  LATTE_REQUIRE(x.dim() == 4 && branches >= 1 && x.size(2) % branches == 0, "branch_sum: x ", x.shape().str(),
                " is not (B, T, R*H, D) with R = ", branches);
  Tensor in = plain(x);  // (B, T, R*H, D)
  Tensor out = Tensor::empty({x.size(0), x.size(1), x.size(2) / branches, x.size(3)}, x.dtype(), x.device());
  ops::branch_sum_forward(out, in, branches, scale);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<BranchSumBackward>();
    node->in_shape = x.shape();
    node->branches = branches;
    node->scale = scale;
    autograd::record(node, {x}, {out});
  }
  return out;
}

}  // namespace latte
