#include "train/adamw.h"

#include <cmath>

#include "autograd/node.h"
#include "kernels/ops.h"
#ifdef LATTE_WITH_CUDA
#include "kernels/cuda/optim.h"
#endif

namespace latte {

AdamW::AdamW(std::vector<OptimParam> params, AdamWConfig config) : params_(std::move(params)), config_(config) {
  autograd::NoGradGuard no_grad;
  for (const OptimParam& p : params_) {
    Slot s;
    const bool own_master = p.param.dtype() == DType::F32 || p.param.dtype() == DType::F64;
    if (own_master) {
      s.master = p.param;
    } else {
      s.master = Tensor::empty(p.param.shape(), DType::F32, p.param.device());
      ops::copy(s.master, p.param);
    }
    s.exp_avg = Tensor::zeros(p.param.shape(), s.master.dtype(), p.param.device());
    s.exp_avg_sq = Tensor::zeros(p.param.shape(), s.master.dtype(), p.param.device());
    slots_.push_back(std::move(s));
  }
}

namespace {
// The update for one contiguous CPU tensor (T = float or double master type, G = grad type).
template <typename T>
void adamw_cpu(T* w, T* m, T* v, const Tensor& grad, int64_t n, double lr, double b1, double b2, double eps, double wd,
               double bc1, double bc2, double grad_scale) {
  const Tensor g = grad.dtype() == dtype_of<T>() ? grad.contiguous() : grad.to(dtype_of<T>());
  const T* gp = g.data<T>();
  for (int64_t i = 0; i < n; ++i) {
    const double gi = static_cast<double>(gp[i]) * grad_scale;
    const double mi = b1 * static_cast<double>(m[i]) + (1 - b1) * gi;
    const double vi = b2 * static_cast<double>(v[i]) + (1 - b2) * gi * gi;
    m[i] = static_cast<T>(mi);
    v[i] = static_cast<T>(vi);
    const double update = (mi / bc1) / (std::sqrt(vi / bc2) + eps);
    w[i] = static_cast<T>(static_cast<double>(w[i]) * (1 - lr * wd) - lr * update);
  }
}
}  // namespace

void AdamW::step(double lr, double grad_scale) {
  autograd::NoGradGuard no_grad;
  ++step_;
#ifdef LATTE_WITH_CUDA
  if (!params_.empty() && params_[0].param.device().is_cuda()) {
    // One multi-tensor launch sequence for every parameter (fp32 master, bf16 param rewritten).
    std::vector<cuda::AdamWTensors> batch;
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor grad = params_[i].param.grad();
      if (!grad.defined()) continue;
      const Slot& s = slots_[i];
      batch.push_back({s.master, s.exp_avg, s.exp_avg_sq, grad.contiguous(),
                       s.master.same(params_[i].param) ? Tensor() : params_[i].param, params_[i].decay});
    }
    cuda::adamw_step(batch, {lr, config_.beta1, config_.beta2, config_.eps, config_.weight_decay, step_}, grad_scale);
    return;
  }
#endif
  const double bc1 = 1 - std::pow(config_.beta1, static_cast<double>(step_));
  const double bc2 = 1 - std::pow(config_.beta2, static_cast<double>(step_));
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimParam& p = params_[i];
    Tensor grad = p.param.grad();
    if (!grad.defined()) continue;
    Slot& s = slots_[i];
    const double wd = p.decay ? config_.weight_decay : 0.0;
    LATTE_REQUIRE(p.param.device().is_cpu(), "AdamW: CUDA parameters need the CUDA optimizer path (", p.name, ")");
    if (s.master.dtype() == DType::F64)
      adamw_cpu<double>(s.master.data<double>(), s.exp_avg.data<double>(), s.exp_avg_sq.data<double>(), grad,
                        s.master.numel(), lr, config_.beta1, config_.beta2, config_.eps, wd, bc1, bc2, grad_scale);
    else
      adamw_cpu<float>(s.master.data<float>(), s.exp_avg.data<float>(), s.exp_avg_sq.data<float>(), grad,
                       s.master.numel(), lr, config_.beta1, config_.beta2, config_.eps, wd, bc1, bc2, grad_scale);
    if (!s.master.same(p.param)) ops::copy(p.param, s.master);
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].name + ".master", slots_[i].master);
    out.emplace_back(params_[i].name + ".exp_avg", slots_[i].exp_avg);
    out.emplace_back(params_[i].name + ".exp_avg_sq", slots_[i].exp_avg_sq);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t step) {
  autograd::NoGradGuard no_grad;
  std::vector<std::pair<std::string, Tensor>> mine = this->state();
  LATTE_REQUIRE(state.size() == mine.size(), "optimizer state has ", state.size(), " tensors, this model needs ",
                mine.size(), " (was the checkpoint made with another model config?)");
  for (size_t i = 0; i < mine.size(); ++i) {
    LATTE_REQUIRE(state[i].first == mine[i].first, "optimizer state tensor ", i, " is '", state[i].first,
                  "', expected '", mine[i].first, "'");
    mine[i].second.copy_(state[i].second);
  }
  for (size_t i = 0; i < params_.size(); ++i)
    if (!slots_[i].master.same(params_[i].param)) ops::copy(params_[i].param, slots_[i].master);
  step_ = step;
}

double global_grad_norm(const std::vector<OptimParam>& params) {
  autograd::NoGradGuard no_grad;
#ifdef LATTE_WITH_CUDA
  if (!params.empty() && params[0].param.device().is_cuda()) {
    std::vector<Tensor> grads;
    for (const OptimParam& p : params)
      if (p.param.grad().defined()) grads.push_back(p.param.grad());
    Tensor out = Tensor::empty({1}, DType::F32, params[0].param.device());
    cuda::sum_squares_multi(out, grads);
    return std::sqrt(out.item());
  }
#endif
  double total = 0;
  for (const OptimParam& p : params) {
    Tensor g = p.param.grad();
    if (!g.defined()) continue;
    Tensor out = Tensor::empty({}, g.dtype() == DType::F64 ? DType::F64 : DType::F32, g.device());
    ops::sum_squares(out, g);
    total += out.item();
  }
  return std::sqrt(total);
}

}  // namespace latte
