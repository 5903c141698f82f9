// Distillation (train/distill): the chunked loss equals a naive fp64 KL/CE on random logits (temperature,
// both weights, ignored targets, several chunks), its gradient passes gradcheck, the fused hidden-state
// form equals the logits form (loss and the gradients of the hidden states and of the head), identical
// models give zero KL and zero gradient, a tiny run (random GQA teacher -> its low-rank upcycled MLA)
// lowers the KL within 20 AdamW steps, and the config / init_from paths refuse bad input by name.
// The trainer test (init_from + train.distill through `latte train`'s loop) compiles against the
// integrated TrainConfig and skips until train.distill / train.init_from exist there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "data/shard.h"
#include "layers/transformer.h"
#include "train/adamw.h"
#include "train/distill.h"
#include "train/experiment.h"
#include "train/hf_import.h"
#include "train/trainer.h"
#include "train/upcycle.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"

namespace fs = std::filesystem;
using namespace latte;

namespace {

std::string tmp_root() {
  static const std::string d = test::per_process_temp_dir("latte_distill_");
  return d;
}

using test::error_of;

DistillConfig config(double tau, double kl, double ce) {
  DistillConfig c;
  c.teacher = "unused";
  c.temperature = tau;
  c.kl_weight = kl;
  c.ce_weight = ce;
  return c;
}

struct Naive {
  double loss, kl, ce;
};

// kl_w tau^2 mean_t KL(softmax(zt/tau) || softmax(zs/tau)) + ce_w mean_t CE(zs, target), over targets != -1.
Naive naive(const std::vector<double>& zs, const std::vector<double>& zt, const std::vector<int>& targets, int64_t V,
            const DistillConfig& c) {
  double kl = 0, ce = 0;
  int counted = 0;
  for (size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] == -1) continue;
    ++counted;
    auto log_softmax = [&](const std::vector<double>& z, double tau) {
      std::vector<double> out(static_cast<size_t>(V));
      double m = -1e300, s = 0;
      for (int64_t v = 0; v < V; ++v) m = std::max(m, z[n * V + v] / tau);
      for (int64_t v = 0; v < V; ++v) s += std::exp(z[n * V + v] / tau - m);
      for (int64_t v = 0; v < V; ++v) out[v] = z[n * V + v] / tau - m - std::log(s);
      return out;
    };
    const std::vector<double> ls = log_softmax(zs, c.temperature), lt = log_softmax(zt, c.temperature), l1 = log_softmax(zs, 1.0);
    for (int64_t v = 0; v < V; ++v) kl += std::exp(lt[v]) * (lt[v] - ls[v]);
    ce -= l1[static_cast<size_t>(targets[n])];
  }
  kl /= counted;
  ce /= counted;
  return {c.kl_weight * c.temperature * c.temperature * kl + c.ce_weight * ce, kl, ce};
}

Tensor targets_tensor(const std::vector<int>& t) {
  return Tensor::from_vector(std::vector<double>(t.begin(), t.end()), {static_cast<int64_t>(t.size())}, DType::I32);
}

ModelConfig teacher_config() {
  return parse_model_config(YAML::Load(R"(
vocab_size: 64
d_model: 32
n_layers: 2
ffn_dim: 48
max_seq_len: 16
init: {std: 0.3, zero_out_proj: false}
attention: {kind: mha, n_heads: 4, n_kv_heads: 2, head_dim: 8}
)"));
}

using test::weights_of;

Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  Tensor r = Tensor::rand({b, t}, seed, 0, 0.0, static_cast<double>(vocab) - 1e-6);
  std::vector<double> v = r.to_vector();
  for (double& x : v) x = std::floor(x);
  return Tensor::from_vector(v, {b, t}, DType::I32);
}

}  // namespace

TEST(Distill, ChunkedLossEqualsNaiveKlAndCe) {
  const int64_t N = 7, V = 11;
  Tensor zs = Tensor::randn({N, V}, 1, 0, 2.0, DType::F64), zt = Tensor::randn({N, V}, 2, 0, 2.0, DType::F64);
  const std::vector<int> tg = {3, -1, 0, 10, 5, -1, 7};
  for (const DistillConfig& c : {config(1.0, 1.0, 0.0), config(2.0, 0.7, 0.3), config(0.5, 0.0, 1.0), config(1.0, 0.4, 0.6)}) {
    for (int64_t chunk : {0, 1, 3}) {
      DistillLoss out = distill_loss_from_logits(zs, zt, targets_tensor(tg), c, chunk);
      const Naive ref = naive(zs.to_vector(), zt.to_vector(), tg, V, c);
      EXPECT_NEAR(out.loss.item(), ref.loss, 1e-10) << c.temperature << " chunk " << chunk;
      EXPECT_NEAR(out.kl.item(), ref.kl, 1e-10);
      EXPECT_NEAR(out.ce.item(), ref.ce, 1e-10);
    }
  }
  // f32 agrees to f32 precision.
  const DistillConfig c = config(2.0, 0.7, 0.3);
  DistillLoss f32 = distill_loss_from_logits(zs.to(DType::F32), zt.to(DType::F32), targets_tensor(tg), c, 2);
  EXPECT_NEAR(f32.loss.item(), naive(zs.to_vector(), zt.to_vector(), tg, V, c).loss, 1e-5);
}

TEST(Distill, GradientPassesGradcheck) {
  const int64_t N = 5, V = 6;
  Tensor zs = Tensor::randn({N, V}, 3, 0, 1.5, DType::F64).set_requires_grad(), zt = Tensor::randn({N, V}, 4, 0, 1.5, DType::F64);
  const Tensor tg = targets_tensor({1, 5, -1, 0, 2});
  for (const DistillConfig& c : {config(1.0, 1.0, 0.0), config(1.7, 0.8, 0.5), config(1.0, 0.5, 0.5)}) {
    auto f = [&](const std::vector<Tensor>& in) { return distill_loss_from_logits(in[0], zt, tg, c, 2).loss; };
    autograd::GradcheckResult r = autograd::gradcheck(f, {zs});
    EXPECT_TRUE(r.ok) << "tau " << c.temperature << ": " << r.report;
  }
}

TEST(Distill, FusedHiddenFormEqualsTheLogitsForm) {
  const int64_t N = 9, V = 13, ds = 5, dt = 7;
  const DistillConfig c = config(1.5, 0.9, 0.2);
  const Tensor tg = targets_tensor({0, 12, -1, 4, 4, 7, -1, 1, 9});
  Tensor hs = Tensor::randn({N, ds}, 5, 0, 1.0, DType::F64).set_requires_grad();
  Tensor ws = Tensor::randn({V, ds}, 6, 0, 1.0, DType::F64).set_requires_grad();
  Tensor ht = Tensor::randn({N, dt}, 7, 0, 1.0, DType::F64), wt = Tensor::randn({V, dt}, 8, 0, 1.0, DType::F64);
  DistillLoss fused = distill_loss(hs, ws, ht, wt, tg, 7, c, 4);
  fused.loss.backward();
  const std::vector<double> gh = hs.grad().to_vector(), gw = ws.grad().to_vector();
  hs.zero_grad();
  ws.zero_grad();
  DistillLoss plain = distill_loss_from_logits(linear(hs, ws), linear(ht, wt), tg, c);
  plain.loss.backward();
  EXPECT_NEAR(fused.loss.item(), plain.loss.item(), 1e-12);
  EXPECT_NEAR(fused.kl.item(), plain.kl.item(), 1e-12);
  const std::vector<double> ph = hs.grad().to_vector(), pw = ws.grad().to_vector();
  for (size_t i = 0; i < gh.size(); ++i) EXPECT_NEAR(gh[i], ph[i], 1e-12);
  for (size_t i = 0; i < gw.size(); ++i) EXPECT_NEAR(gw[i], pw[i], 1e-12);
  // gradcheck of the fused form w.r.t. both the hidden states and the head.
  auto f = [&](const std::vector<Tensor>& in) { return distill_loss(in[0], in[1], ht, wt, tg, 7, c, 2).loss; };
  autograd::GradcheckResult r = autograd::gradcheck(f, {hs, ws});
  EXPECT_TRUE(r.ok) << r.report;
}

TEST(Distill, IdenticalModelsGiveZeroKlAndGradient) {
  Tensor z = Tensor::randn({6, 10}, 9, 0, 3.0);
  Tensor zs = z.clone().set_requires_grad();
  DistillLoss out = distill_loss_from_logits(zs, z, targets_tensor({1, 2, 3, -1, 5, 6}), config(2.0, 1.0, 0.0));
  EXPECT_NEAR(out.kl.item(), 0.0, 1e-6);
  out.loss.backward();
  for (double g : zs.grad().to_vector()) EXPECT_NEAR(g, 0.0, 1e-7);
  EXPECT_NE(error_of([&] { distill_loss_from_logits(z, z, targets_tensor({-1, -1, -1, -1, -1, -1}), config(1, 1, 0)); })
                .find("every target is -1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { distill_loss_from_logits(z, z, targets_tensor({1, 1, 1, 1, 1, 1}), config(0, 1, 0)); })
                .find("temperature must be positive"),
            std::string::npos);
}

TEST(Distill, TinyRunLowersTheKlOfAnUpcycledStudent) {
  // Teacher: a random GQA model with peaked distributions. Student: its MLA upcycled at low rank.
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 21, DType::F32, Device::cpu());
  const std::string teacher_dir = tmp_root() + "/teacher";
  write_model_dir(teacher_dir, tc, weights_of(teacher), "tiny teacher");
  std::vector<std::string> notes;
  int64_t max_seq = 0;
  UpcycleOptions o;
  o.q_rank = 8;
  o.kv_rank = 8;
  const AttentionConfig tgt = upcycle_target_attention(tc, YAML::Load("{attention: {kind: mla, rope_dim: 4}}"), "t", o, &max_seq, &notes);
  UpcycleResult up = upcycle(tc, weights_of(teacher), tgt, o);
  const std::string student_dir = tmp_root() + "/student";
  write_model_dir(student_dir, up.config, up.tensors, "tiny student");

  TransformerLM student(up.config, 1, DType::F32, Device::cpu());
  init_from_weights(student, student_dir);
  DistillConfig dc;
  dc.teacher = teacher_dir;
  Distiller distiller(dc, student.config(), Device::cpu(), DType::F32);
  distiller.set_chunk_rows(24);  // several chunks per batch
  std::vector<OptimParam> params;
  for (const NamedParameter& p : student.named_parameters()) params.push_back({p.name, p.tensor, true});
  AdamW opt(params, {0.9, 0.95, 1e-8, 0.0});
  const Tensor ids = random_ids(4, 16, 64, 5);
  Tensor targets = random_ids(4, 16, 64, 6);
  std::vector<double> kls;
  for (int step = 0; step < 20; ++step) {
    for (auto& p : params) p.param.zero_grad();
    DistillLoss l = distiller.loss(student, ids, targets);
    l.loss.backward();
    opt.step(3e-3);
    kls.push_back(distiller.take_stats().first);
  }
  EXPECT_GT(kls.front(), 0.01);                 // the low-rank student starts measurably off
  EXPECT_LT(kls.back(), 0.5 * kls.front()) << kls.front() << " -> " << kls.back();
  // The teacher never changed.
  EXPECT_EQ(distiller.teacher().parameter("layers.0.attn.wq.weight").to_vector(), teacher.parameter("layers.0.attn.wq.weight").to_vector());
}

TEST(Distill, ConfigAndInitFromRefuseBadInput) {
  DistillConfig c = parse_distill_config(YAML::Load("{teacher: runs/t, temperature: 2, ce_weight: 0.5}"), "train.distill", "x.yaml");
  EXPECT_EQ(c.teacher, "runs/t");
  EXPECT_DOUBLE_EQ(c.temperature, 2.0);
  EXPECT_DOUBLE_EQ(c.kl_weight, 1.0);
  EXPECT_DOUBLE_EQ(c.ce_weight, 0.5);
  EXPECT_FALSE(parse_distill_config(YAML::Node(), "train.distill", "x.yaml").enabled());
  struct Case {
    const char* yaml;
    const char* expect;
  };
  for (const Case& k : std::vector<Case>{{"{teacher: t, temprature: 2}", "did you mean temperature"},
                                         {"{temperature: 2}", "teacher"},
                                         {"{teacher: t, temperature: 0}", "temperature"},
                                         {"{teacher: t, kl_weight: -1}", "kl_weight"},
                                         {"{teacher: t, kl_weight: 0, ce_weight: 0}", "both 0"},
                                         {"[1, 2]", "must be a mapping"}})
    EXPECT_NE(error_of([&] { parse_distill_config(YAML::Load(k.yaml), "train.distill", "x.yaml"); }).find(k.expect),
              std::string::npos)
        << k.yaml << ": " << error_of([&] { parse_distill_config(YAML::Load(k.yaml), "train.distill", "x.yaml"); });

  // init_from: a model with a different config is refused, naming the keys.
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 22, DType::F32, Device::cpu());
  const std::string dir = tmp_root() + "/init_src";
  write_model_dir(dir, tc, weights_of(teacher), "init source");
  ModelConfig other = tc;
  other.rope_base = 500000;
  other.ffn_dim = 64;
  TransformerLM wrong(other, 1, DType::F32, Device::cpu());
  const std::string msg = error_of([&] { init_from_weights(wrong, dir); });
  EXPECT_NE(msg.find("model.rope_base"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.ffn_dim"), std::string::npos) << msg;
  ModelConfig longer = tc;
  longer.max_seq_len = 64;  // allowed to differ
  TransformerLM ok(longer, 1, DType::F32, Device::cpu());
  init_from_weights(ok, dir);
  EXPECT_EQ(ok.parameter("final_norm.weight").to_vector(), teacher.parameter("final_norm.weight").to_vector());
  // A teacher with another vocabulary cannot teach.
  ModelConfig big_vocab = tc;
  big_vocab.vocab_size = 128;
  DistillConfig dc;
  dc.teacher = dir;
  EXPECT_NE(error_of([&] { Distiller(dc, big_vocab, Device::cpu(), DType::F32); }).find("vocab_size 64 differs"), std::string::npos);
}

namespace {

// The trainer with init_from + distill (dependent on Config so that the body is only compiled once the
// trainer integration has added the fields).
template <typename Config>
void distill_through_trainer(const Config* probe) {
  if constexpr (requires { probe->train.distill; probe->train.init_from; }) {
    const std::string root = tmp_root() + "/trainer";
    fs::create_directories(root + "/data");
    std::vector<int32_t> tokens;
    uint64_t s = 99;
    for (int i = 0; i < 6000; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      tokens.push_back(static_cast<int32_t>((s >> 33) % 64));
    }
    // A short training shard, so that the 30 steps revisit its windows (KL falls measurably on a CPU budget).
    data::write_shard(root + "/data/syn_train_000000.bin", {tokens.data(), 340}, data::ShardFormat::Bin, data::TokenDtype::U16);
    data::write_shard(root + "/data/syn_val_000000.bin", {tokens.data() + 5000, 1000}, data::ShardFormat::Bin, data::TokenDtype::U16);
    const ModelConfig tc = teacher_config();
    TransformerLM teacher(tc, 23, DType::F32, Device::cpu());
    write_model_dir(root + "/teacher", tc, weights_of(teacher), "teacher");
    UpcycleOptions o;
    o.q_rank = 8;
    o.kv_rank = 8;
    std::vector<std::string> notes;
    int64_t max_seq = 0;
    const AttentionConfig tgt = upcycle_target_attention(tc, YAML::Load("{attention: {kind: mla, rope_dim: 4}}"), "t", o, &max_seq, &notes);
    UpcycleResult up = upcycle(tc, weights_of(teacher), tgt, o);
    write_model_dir(root + "/student", up.config, up.tensors, "student");
    std::ofstream(root + "/run.yaml") << "base: student/config.yaml\n"
                                         "train: {steps: 30, seed: 3, micro_batch: 4, seq_len: 16, lr: 1.0e-2, grad_clip: 0, dtype: f32, device: cpu,\n"
                                         "        init_from: " << root << "/student,\n"
                                         "        distill: {teacher: " << root << "/teacher, temperature: 1.0, kl_weight: 1.0}}\n"
                                         "data: {train: " << root << "/data/syn_train_*.bin, val: " << root << "/data/syn_val_*.bin}\n"
                                         "eval: {every: 0, batches: 2}\n"
                                         "checkpoint: {every: 0}\n"
                                         "log: {every: 5}\n";
    const Config cfg = load_experiment(root + "/run.yaml", {"train.out_dir=" + root + "/run"});
    EXPECT_EQ(cfg.train.distill.teacher, root + "/teacher");
    TrainOptions options;
    options.quiet = true;
    options.local_only = true;
    train(cfg, options);
    std::vector<nlohmann::json> rows;
    std::ifstream in(root + "/run/metrics.jsonl");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
    ASSERT_EQ(rows.size(), 30u);
    ASSERT_TRUE(rows.front().contains("kl"));
    EXPECT_NEAR(rows.front()["loss"].get<double>(), rows.front()["kl"].get<double>(), 1e-6);  // kl_weight 1, ce_weight 0, tau 1
    auto mean_kl = [&](size_t from, size_t to) {
      double s = 0;
      for (size_t i = from; i < to; ++i) s += rows[i]["kl"].get<double>();
      return s / static_cast<double>(to - from);
    };
    EXPECT_LT(mean_kl(25, 30), 0.6 * mean_kl(0, 5)) << mean_kl(0, 5) << " -> " << mean_kl(25, 30);
    // The student started from the upcycled weights: its first KL is what the SVD init gives, far below a random MLA's.
    DistillConfig dc;
    dc.teacher = root + "/teacher";
    Distiller distiller(dc, up.config, Device::cpu(), DType::F32);
    TransformerLM random_student(up.config, 5, DType::F32, Device::cpu());
    autograd::NoGradGuard no_grad;
    const Tensor ids = random_ids(2, 16, 64, 8), targets = random_ids(2, 16, 64, 9);
    EXPECT_LT(rows.front()["kl"].get<double>(), distiller.loss(random_student, ids, targets).kl.item());
  } else {
    GTEST_SKIP() << "train.distill / train.init_from are not wired into TrainConfig yet (see docs/upcycling.md)";
  }
}

}  // namespace

TEST(Distill, TrainerRunsInitFromAndDistillation) { distill_through_trainer<ExperimentConfig>(nullptr); }
