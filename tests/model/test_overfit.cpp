// Every tiny model overfits one fixed batch on CPU (loss below a tenth of the start) with a plain
// Adam loop written here, so a model bug cannot hide behind the real optimizer.
#include <cmath>

#include "autograd/node.h"
#include "layers/transformer.h"
#include "model_test_util.h"

using namespace latte;
using namespace latte::test;

namespace {

// Adam without weight decay on f32 CPU parameters.
class TestAdam {
 public:
  TestAdam(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
    for (const Tensor& p : params_) {
      m_.emplace_back(static_cast<size_t>(p.numel()), 0.0);
      v_.emplace_back(static_cast<size_t>(p.numel()), 0.0);
    }
  }
  void step() {
    ++t_;
    const double b1 = 0.9, b2 = 0.99, eps = 1e-8;
    const double c1 = 1 - std::pow(b1, t_), c2 = 1 - std::pow(b2, t_);
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor g = params_[i].grad();
      if (!g.defined()) continue;
      std::vector<float> gv = g.to_floats();
      float* w = params_[i].data<float>();
      for (size_t k = 0; k < gv.size(); ++k) {
        m_[i][k] = b1 * m_[i][k] + (1 - b1) * gv[k];
        v_[i][k] = b2 * v_[i][k] + (1 - b2) * gv[k] * gv[k];
        w[k] -= static_cast<float>(lr_ * (m_[i][k] / c1) / (std::sqrt(v_[i][k] / c2) + eps));
      }
    }
  }

 private:
  std::vector<Tensor> params_;
  double lr_;
  int t_ = 0;
  std::vector<std::vector<double>> m_, v_;
};

void overfit(const ModelConfig& cfg) {
  TransformerLM model(cfg, 7, DType::F32, Device::cpu());
  Tensor ids = random_ids(2, 16, cfg.vocab_size, 1);
  Tensor targets = random_ids(2, 16, cfg.vocab_size, 2);
  TestAdam adam(model.parameters(), 1e-2);
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    model.zero_grad();
    Tensor loss = model.loss(ids, targets);
    last = loss.item();
    if (step == 0) first = last;
    if (last < first / 10) break;
    loss.backward();
    adam.step();
  }
  EXPECT_NEAR(first, std::log(static_cast<double>(cfg.vocab_size)), 0.1);  // starts at chance
  EXPECT_LT(last, first / 10) << "start " << first;
}

}  // namespace

TEST(Overfit, MHA) { overfit(tiny_config("mha")); }
TEST(Overfit, GQA) { overfit(tiny_config("gqa")); }
TEST(Overfit, MQA) { overfit(tiny_config("mqa")); }
TEST(Overfit, MLA) { overfit(tiny_config("mla")); }
TEST(Overfit, EGMLA) { overfit(tiny_config("egmla")); }
TEST(Overfit, EGMLAKvRecompute) {
  ModelConfig c = tiny_config("egmla");
  c.attention.gate.position = GatePosition::KV;
  c.recompute = true;
  overfit(c);
}
TEST(Overfit, MLRA2) { overfit(tiny_config("mlra2")); }
TEST(Overfit, MLRA4) { overfit(tiny_config("mlra4")); }
