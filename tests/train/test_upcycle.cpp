// X-EcoMLA SVD upcycling (train/upcycle, `latte upcycle`) on a tiny random GQA teacher:
//  - at full rank the factors reproduce the teacher's projections to fp32 precision
//    (W_q = wq_b wq_a; per head K nope rows and V rows = wkv_b[...] down; rope key = mean of the kv heads);
//  - the position-free part of the student's scores equals the teacher's: with RoPE on the whole head in
//    the teacher and only on the last d_r channels in the student, the student's score is
//    q^N . k^N + RoPE(q^R) . RoPE(k^R), and its first term, position-independent, must equal the teacher's
//    unrotated dot product restricted to the nope channels [0, d_n) (sum_j<d_n (W_q x)_h,j (W_k y)_g(h),j);
//  - at full rank and T = 1 (position 0: every rotation is the identity, softmax over one key) the
//    upcycled model's logits equal the teacher's (values, wo, MLP, norms, embeddings all carried);
//  - energy-threshold rank selection and rounding; --layers keeps the other layers MHA and the model runs;
//  - the command writes a loadable model directory; bad targets and arguments are refused by name.
#include <gtest/gtest.h>
#include <unistd.h>

#include <Eigen/SVD>
#include <filesystem>
#include <fstream>

#include "autograd/node.h"
#include "layers/transformer.h"
#include "train/checkpoint_store.h"
#include "train/hf_import.h"
#include "train/upcycle.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"

namespace fs = std::filesystem;
using namespace latte;

namespace latte::apps {
int cmd_upcycle(int argc, char** argv);
}

namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::string tmp_root() {
  static const std::string d = test::per_process_temp_dir("latte_upcycle_");
  return d;
}

// d = 32, 4 heads of 8, 2 kv heads (GQA), 3 layers; wo non-zero so attention reaches the logits.
ModelConfig teacher_config() {
  return parse_model_config(YAML::Load(R"(
vocab_size: 64
d_model: 32
n_layers: 3
ffn_dim: 48
max_seq_len: 16
rope_base: 10000
init: {std: 0.15, zero_out_proj: false}
attention: {kind: mha, n_heads: 4, n_kv_heads: 2, head_dim: 8}
)"));
}

using test::weights_of;

const Tensor& by_name(const NamedTensors& t, const std::string& name) {
  for (const auto& [n, x] : t)
    if (n == name) return x;
  throw std::runtime_error("no tensor " + name);
}

RowMat mat(const Tensor& t) {
  std::vector<double> v = t.to(DType::F64).to_vector();
  return Eigen::Map<RowMat>(v.data(), t.size(0), t.size(1));
}

double rel(const RowMat& a, const RowMat& b) { return (a - b).norm() / b.norm(); }

// Copies `tensors` into a fresh model of `config`; every parameter must be covered with its shape.
std::unique_ptr<TransformerLM> build(const ModelConfig& config, const NamedTensors& tensors) {
  auto model = std::make_unique<TransformerLM>(config, 99, DType::F32, Device::cpu());
  std::vector<NamedParameter> params = model->named_parameters();
  EXPECT_EQ(params.size(), tensors.size());
  for (const NamedParameter& p : params) {
    const Tensor& t = by_name(tensors, p.name);
    EXPECT_EQ(t.shape(), p.tensor.shape()) << p.name;
    p.tensor.copy_(t);
  }
  return model;
}

AttentionConfig target(const ModelConfig& teacher, const std::string& yaml, const UpcycleOptions& options = {},
                       std::vector<std::string>* notes = nullptr) {
  std::vector<std::string> scratch;
  int64_t max_seq = 0;
  return upcycle_target_attention(teacher, YAML::Load(yaml), "target.yaml", options, &max_seq, notes ? notes : &scratch);
}

using test::error_of;

Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  std::vector<double> v;
  for (int64_t i = 0; i < b * t; ++i) v.push_back(static_cast<double>((i * 37 + seed * 11 + (i * i) % 7) % vocab));
  return Tensor::from_vector(v, {b, t}, DType::I32);
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num = std::max(num, std::abs(x[i] - y[i])), den = std::max(den, std::abs(y[i]));
  return num / den;
}

int run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "upcycle");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return apps::cmd_upcycle(static_cast<int>(argv.size()), argv.data());
}

constexpr int64_t H = 4, Hkv = 2, dh = 8, dn = 4, dr = 4, d = 32;

}  // namespace

TEST(Upcycle, FullRankFactorsReproduceTheProjections) {
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 11, DType::F32, Device::cpu());
  const NamedTensors tw = weights_of(teacher);
  const AttentionConfig tgt = target(tc, "{attention: {kind: mla, rope_dim: 4, q_rank: 32, kv_rank: 32}}");
  EXPECT_EQ(tgt.nope_dim, 4);
  EXPECT_EQ(tgt.v_dim, 8);
  EXPECT_FALSE(tgt.latent_norm);
  UpcycleResult r = upcycle(tc, tw, tgt, {});
  ASSERT_EQ(r.report.size(), 3u);
  EXPECT_TRUE(r.config.layer_kinds.empty());
  EXPECT_EQ(r.config.attention.kind, AttentionKind::MLA);
  for (int64_t layer = 0; layer < 3; ++layer) {
    const std::string p = "layers." + std::to_string(layer) + ".attn.";
    const RowMat wq = mat(by_name(tw, p + "wq.weight")), wk = mat(by_name(tw, p + "wk.weight")), wv = mat(by_name(tw, p + "wv.weight"));
    const RowMat wq_a = mat(by_name(r.tensors, p + "wq_a.weight")), wq_b = mat(by_name(r.tensors, p + "wq_b.weight"));
    const RowMat wkv_a = mat(by_name(r.tensors, p + "wkv_a.weight")), wkv_b = mat(by_name(r.tensors, p + "wkv_b.weight"));
    ASSERT_EQ(wq_a.rows(), 32);
    ASSERT_EQ(wkv_a.rows(), 32 + dr);
    ASSERT_EQ(wkv_b.rows(), H * (dn + dh));
    // d_n + d_r = d_h: wq_b wq_a is W_q itself (rows in the same per-head order).
    EXPECT_LT(rel(wq_b * wq_a, wq), 1e-5) << layer;
    const RowMat down = wkv_a.topRows(32), kv = wkv_b * down;  // (n_h (d_n + d_h), d)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / Hkv);
      EXPECT_LT(rel(kv.middleRows(h * (dn + dh), dn), wk.middleRows(g * dh, dn)), 1e-5) << layer << " head " << h;
      EXPECT_LT(rel(kv.middleRows(h * (dn + dh) + dn, dh), wv.middleRows(g * dh, dh)), 1e-5) << layer << " head " << h;
    }
    const RowMat rope_key = (wk.middleRows(dh - dr, dr) + wk.middleRows(2 * dh - dr, dr)) / 2.0;
    EXPECT_LT(rel(wkv_a.bottomRows(dr), rope_key), 1e-6);
    EXPECT_LT(r.report[static_cast<size_t>(layer)].q_error, 1e-5);
    EXPECT_LT(r.report[static_cast<size_t>(layer)].kv_error, 1e-5);
    EXPECT_NEAR(r.report[static_cast<size_t>(layer)].kv_energy, 1.0, 1e-6);
    // Copied unchanged.
    EXPECT_EQ(rel(mat(by_name(r.tensors, p + "wo.weight")), mat(by_name(tw, p + "wo.weight"))), 0.0);
  }
  EXPECT_EQ(rel(mat(by_name(r.tensors, "tok_embed.weight")), mat(by_name(tw, "tok_embed.weight"))), 0.0);
  EXPECT_EQ(rel(mat(by_name(r.tensors, "layers.1.mlp.w_down.weight")), mat(by_name(tw, "layers.1.mlp.w_down.weight"))), 0.0);
}

TEST(Upcycle, NoPositionPartOfTheScoresMatchesTheTeacherAtFullRank) {
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 12, DType::F32, Device::cpu());
  const NamedTensors tw = weights_of(teacher);
  for (const char* yaml : {"{attention: {kind: mla, rope_dim: 4, q_rank: 32, kv_rank: 32}}",   // compressed query
                           "{attention: {kind: mla, rope_dim: 2, q_rank: 0, kv_rank: 32}}"}) {  // wq, other split
    const AttentionConfig tgt = target(tc, yaml);
    const int64_t n = tgt.nope_dim, r_kv = tgt.kv_rank;
    UpcycleResult r = upcycle(tc, tw, tgt, {});
    // Attention inputs for 5 query and 6 key positions.
    const RowMat x = mat(Tensor::randn({5, d}, 3)), y = mat(Tensor::randn({6, d}, 4));
    const std::string p = "layers.2.attn.";
    const RowMat q_t = x * mat(by_name(tw, p + "wq.weight")).transpose();  // (5, n_h d_h) before RoPE
    const RowMat k_t = y * mat(by_name(tw, p + "wk.weight")).transpose();  // (6, n_kv d_h)
    const RowMat q_s = tgt.q_rank > 0 ? RowMat(x * mat(by_name(r.tensors, p + "wq_a.weight")).transpose() *
                                               mat(by_name(r.tensors, p + "wq_b.weight")).transpose())
                                      : RowMat(x * mat(by_name(r.tensors, p + "wq.weight")).transpose());  // (5, n_h d_qk)
    const RowMat c = y * mat(by_name(r.tensors, p + "wkv_a.weight")).topRows(r_kv).transpose();           // (6, d_c)
    const RowMat kv_s = c * mat(by_name(r.tensors, p + "wkv_b.weight")).transpose();                     // (6, n_h (d_n + d_v))
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / Hkv);
      const RowMat teacher_scores = q_t.middleCols(h * dh, n) * k_t.middleCols(g * dh, n).transpose();     // (5, 6)
      const RowMat student_scores = q_s.middleCols(h * dh, n) * kv_s.middleCols(h * (n + dh), n).transpose();  // q^N . k^N
      EXPECT_LT(rel(student_scores, teacher_scores), 1e-5) << yaml << " head " << h;
      // The student's rope query is the teacher's last d_r query channels (before rotation).
      EXPECT_LT(rel(q_s.middleCols(h * dh + n, dh - n), q_t.middleCols(h * dh + n, dh - n)), 1e-5);
    }
  }
}

TEST(Upcycle, FullRankModelMatchesTheTeacherAtPositionZero) {
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 13, DType::F32, Device::cpu());
  UpcycleResult r = upcycle(tc, weights_of(teacher), target(tc, "{attention: {kind: mla, rope_dim: 4, q_rank: 32, kv_rank: 32}}"), {});
  auto student = build(r.config, r.tensors);
  autograd::NoGradGuard no_grad;
  Tensor ids = random_ids(8, 1, 64, 1);  // T = 1
  EXPECT_LT(max_rel_diff(student->logits(ids), teacher.logits(ids)), 1e-5);
  // Longer sequences run and stay close-ish (only the positional part of the scores changed).
  Tensor longer = random_ids(2, 12, 64, 2);
  Tensor a = student->logits(longer), b = teacher.logits(longer);
  EXPECT_EQ(a.shape(), b.shape());
  EXPECT_LT(max_rel_diff(a, b), 1.0);
}

TEST(Upcycle, EnergyRankRule) {
  // S = 4, 3, 2, 1: energy prefixes 16/30, 25/30, 29/30, 1.
  const std::vector<double> s = {4, 3, 2, 1};
  EXPECT_EQ(energy_rank(s, 0.5), 1);  // nothing fits; at least 1
  EXPECT_EQ(energy_rank(s, 0.6), 1);
  EXPECT_EQ(energy_rank(s, 0.9), 2);
  EXPECT_EQ(energy_rank(s, 0.97), 3);
  EXPECT_EQ(energy_rank(s, 1.0), 4);
  EXPECT_EQ(energy_rank({0, 0}, 0.9), 1);
  EXPECT_EQ(round_rank(1, 8), 8);
  EXPECT_EQ(round_rank(8, 8), 8);
  EXPECT_EQ(round_rank(9, 8), 16);
  EXPECT_EQ(round_rank(13, 4), 16);

  // End to end: each layer's energy rank is the rule applied to an independent SVD of its W_q / W_kv,
  // rounded to 8; the model uses the largest.
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 14, DType::F32, Device::cpu());
  const NamedTensors tw = weights_of(teacher);
  UpcycleOptions o;
  o.energy = 0.6;
  UpcycleResult r = upcycle(tc, tw, target(tc, "{attention: {kind: mla}}", o), o);
  int64_t q_max = 0, kv_max = 0;
  for (const LayerUpcycleReport& rep : r.report) {
    const std::string p = "layers." + std::to_string(rep.layer) + ".attn.";
    const RowMat wq = mat(by_name(tw, p + "wq.weight")), wk = mat(by_name(tw, p + "wk.weight")), wv = mat(by_name(tw, p + "wv.weight"));
    RowMat w_kv(2 * H * dh, d);
    for (int64_t h = 0; h < H; ++h) {
      w_kv.middleRows(h * dh, dh) = wk.middleRows((h / 2) * dh, dh);
      w_kv.middleRows((H + h) * dh, dh) = wv.middleRows((h / 2) * dh, dh);
    }
    auto rule = [&](const RowMat& w) {
      Eigen::JacobiSVD<Eigen::MatrixXd> svd(w);
      const Eigen::VectorXd sv = svd.singularValues();
      return round_rank(energy_rank(std::vector<double>(sv.data(), sv.data() + sv.size()), 0.6), 8);
    };
    EXPECT_EQ(rep.q_energy_rank, rule(wq)) << rep.layer;
    EXPECT_EQ(rep.kv_energy_rank, rule(w_kv)) << rep.layer;
    EXPECT_EQ(rep.q_energy_rank % 8, 0);
    q_max = std::max(q_max, rep.q_energy_rank);
    kv_max = std::max(kv_max, rep.kv_energy_rank);
  }
  EXPECT_EQ(r.config.attention.q_rank, q_max);
  EXPECT_EQ(r.config.attention.kv_rank, kv_max);
  EXPECT_LT(kv_max, 32);  // random matrices are not that compressible, but 0.6 is well under full rank
  for (const LayerUpcycleReport& rep : r.report) {
    EXPECT_EQ(rep.kv_rank, kv_max);
    EXPECT_GT(rep.kv_error, 0.0);
    EXPECT_NEAR(rep.kv_error * rep.kv_error, 1.0 - rep.kv_energy, 0.25);  // rows left out of the student shift it a bit
  }
  // Fixed ranks are rounded too, and ranks beyond the matrix rank pad with zero channels (still exact).
  UpcycleOptions fixed;
  fixed.q_rank = 12;
  fixed.kv_rank = 40;
  UpcycleResult big = upcycle(tc, tw, target(tc, "{attention: {kind: mla}}", fixed), fixed);
  EXPECT_EQ(big.config.attention.q_rank, 16);
  EXPECT_EQ(big.config.attention.kv_rank, 40);
  EXPECT_LT(big.report[0].kv_error, 1e-5);
  ASSERT_EQ(big.notes.size(), 2u);
  EXPECT_NE(big.notes[0].find("rounded up to 16"), std::string::npos);
  EXPECT_NE(big.notes[1].find("exceeds rank(W_kv)"), std::string::npos);
  EXPECT_EQ(mat(by_name(big.tensors, "layers.0.attn.wkv_a.weight")).middleRows(32, 8).norm(), 0.0);
}

TEST(Upcycle, LayersOptionKeepsTheOtherLayersMha) {
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 15, DType::F32, Device::cpu());
  const NamedTensors tw = weights_of(teacher);
  UpcycleOptions o;
  o.layers = parse_layer_list("1", 3);
  UpcycleResult r = upcycle(tc, tw, target(tc, "{attention: {kind: mla, rope_dim: 4, q_rank: 32, kv_rank: 32}}"), o);
  ASSERT_EQ(r.config.layer_kinds.size(), 3u);
  EXPECT_EQ(r.config.layer_kinds[0], AttentionKind::MHA);
  EXPECT_EQ(r.config.layer_kinds[1], AttentionKind::MLA);
  EXPECT_EQ(r.config.layer_kinds[2], AttentionKind::MHA);
  ASSERT_TRUE(r.config.attention_overrides.count(AttentionKind::MHA));
  EXPECT_EQ(r.config.attention_overrides.at(AttentionKind::MHA).n_kv_heads, 2);
  ASSERT_EQ(r.report.size(), 1u);
  // The config survives YAML (what config.yaml and the embedded metadata carry).
  const ModelConfig again = parse_model_config(YAML::Load(r.config.to_yaml_string())["model"]);
  EXPECT_EQ(again.layer_kinds, r.config.layer_kinds);
  auto student = build(again, r.tensors);
  for (const char* name : {"layers.0.attn.wk.weight", "layers.2.attn.wq.weight", "layers.2.attn.wo.weight"})
    EXPECT_EQ(rel(mat(student->parameter(name)), mat(teacher.parameter(name))), 0.0) << name;
  EXPECT_FALSE(student->has_parameter("layers.1.attn.wk.weight"));
  autograd::NoGradGuard no_grad;
  Tensor ids = random_ids(4, 1, 64, 3);
  EXPECT_LT(max_rel_diff(student->logits(ids), teacher.logits(ids)), 1e-5);
  Tensor longer = random_ids(2, 10, 64, 4);
  EXPECT_EQ(student->logits(longer).shape(), (Shape{2, 10, 64}));
  // A second upcycle of the rest of the layers from that student works (mixed teacher).
  UpcycleOptions rest;
  rest.layers = {0, 2};
  UpcycleResult all = upcycle(again, r.tensors, again.attention, rest);
  EXPECT_TRUE(all.config.layer_kinds.empty());
  auto full = build(all.config, all.tensors);
  EXPECT_LT(max_rel_diff(full->logits(ids), teacher.logits(ids)), 1e-5);
  EXPECT_NE(error_of([&] { upcycle(again, r.tensors, again.attention, o); }).find("layer 1 of the teacher is mla"), std::string::npos);
}

TEST(Upcycle, ArgumentParsing) {
  EXPECT_EQ(parse_layer_list("0-2", 4), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(parse_layer_list("3,0-1", 4), (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(parse_layer_list("all", 2), (std::vector<int64_t>{0, 1}));
  EXPECT_NE(error_of([] { parse_layer_list("0-4", 4); }).find("layer 4 does not exist"), std::string::npos);
  EXPECT_NE(error_of([] { parse_layer_list("2-1", 4); }).find("runs backwards"), std::string::npos);
  EXPECT_NE(error_of([] { parse_layer_list("a", 4); }).find("'a' is not a non-negative integer"), std::string::npos);
  EXPECT_NE(error_of([] { parse_layer_list("1,,2", 4); }).find("empty entry"), std::string::npos);
  UpcycleOptions o;
  parse_ranks("q:64,kv:128", &o);
  EXPECT_EQ(o.q_rank, 64);
  EXPECT_EQ(o.kv_rank, 128);
  UpcycleOptions o2;
  parse_ranks("kv:32", &o2);
  EXPECT_EQ(o2.q_rank, -1);
  EXPECT_NE(error_of([] { UpcycleOptions x; parse_ranks("k:3", &x); }).find("unknown matrix 'k'"), std::string::npos);
  EXPECT_NE(error_of([] { UpcycleOptions x; parse_ranks("kv:0", &x); }).find("kv rank must be positive"), std::string::npos);
}

TEST(Upcycle, TargetConfigChecks) {
  const ModelConfig tc = teacher_config();
  std::vector<std::string> notes;
  UpcycleOptions none;
  const AttentionConfig a = target(tc, "{attention: {kind: mla, kv_rank: 16, latent_norm: true}}", none, &notes);
  EXPECT_EQ(a.rope_dim, 4);
  EXPECT_EQ(a.nope_dim, 4);
  EXPECT_EQ(a.q_rank, 0);
  EXPECT_FALSE(a.latent_norm);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("latent_norm true replaced by false"), std::string::npos);
  // A full model section equal to the teacher's apart from attention is fine; max_seq_len may change.
  YAML::Node full = tc.to_yaml();
  full["attention"] = YAML::Load("{kind: mla, n_heads: 4, kv_rank: 16, nope_dim: 6, rope_dim: 2, v_dim: 8}");
  full["max_seq_len"] = 32;
  int64_t max_seq = 0;
  EXPECT_EQ(upcycle_target_attention(tc, full, "t.yaml", none, &max_seq, &notes).nope_dim, 6);
  EXPECT_EQ(max_seq, 32);
  struct Case {
    const char* yaml;
    const char* expect;
  };
  for (const Case& c : std::vector<Case>{
           {"{attention: {kind: mla, kv_rank: 16, nope_dim: 4, rope_dim: 2}}", "nope_dim + rope_dim = 4 + 2 must equal the teacher's head_dim 8"},
           {"{attention: {kind: mla, kv_rank: 16, v_dim: 4}}", "v_dim is 4 but must equal the teacher's head_dim 8"},
           {"{attention: {kind: mla, kv_rank: 16, n_heads: 2}}", "n_heads is 2 but the teacher has 4"},
           {"{attention: {kind: mlra, kv_rank: 16}}", "kind is mlra"},
           {"{d_model: 64, attention: {kind: mla, kv_rank: 16}}", "model.d_model is 64 but the teacher's is 32"},
           {"{rope_base: 500000, attention: {kind: mla, kv_rank: 16}}", "model.rope_base"},
           {"{attention: {kind: mla}}", "kv_rank is missing"},
           {"{layer_kinds: [mla, mha, mha], attention: {kind: mla, kv_rank: 8}}", "--layers"},
       })
    EXPECT_NE(error_of([&] { target(tc, c.yaml); }).find(c.expect), std::string::npos) << c.yaml << ": "
                                                                                         << error_of([&] { target(tc, c.yaml); });
}

TEST(Upcycle, CommandWritesALoadableModelDirectory) {
  const ModelConfig tc = teacher_config();
  TransformerLM teacher(tc, 16, DType::F32, Device::cpu());
  const std::string teacher_dir = tmp_root() + "/teacher";
  write_model_dir(teacher_dir, tc, weights_of(teacher), "test teacher");
  std::ofstream(tmp_root() + "/mla.yaml") << "model:\n  attention: {kind: mla, rope_dim: 4, kv_rank: 8, q_rank: 16}\n";
  const std::string out = tmp_root() + "/student";
  ASSERT_EQ(run_cli({"--teacher", teacher_dir, "--config", tmp_root() + "/mla.yaml", "--ranks", "kv:16", "--layers", "0-1",
                     "--out", out, "--dtype", "bf16"}),
            0);
  ASSERT_TRUE(fs::exists(out + "/upcycle_report.json"));
  const std::string yaml = read_file(out + "/config.yaml");
  EXPECT_NE(yaml.find("# KV cache per token per converted layer: 32 (2 n_kv d_h) -> 20"), std::string::npos) << yaml;
  ModelSource src = resolve_model_source(out + "/model.safetensors");  // embedded config, as latte generate reads it
  EXPECT_EQ(src.config.attention.kv_rank, 16);
  EXPECT_EQ(src.config.attention.q_rank, 16);
  EXPECT_EQ(src.config.layer_kind(2), AttentionKind::MHA);
  EXPECT_EQ(read_safetensors_header(src.weights).entries.front().dtype, DType::BF16);
  auto student = load_model(resolve_model_dir(out), Device::cpu(), DType::F32);
  autograd::NoGradGuard no_grad;
  EXPECT_EQ(student->logits(random_ids(1, 8, 64, 5)).shape(), (Shape{1, 8, 64}));
  // Energy mode through the CLI from a bare safetensors with embedded config.
  ASSERT_EQ(run_cli({"--teacher", teacher_dir + "/model.safetensors", "--energy", "0.9", "--out", tmp_root() + "/energy"}), 0);
  EXPECT_EQ(load_model(resolve_model_dir(tmp_root() + "/energy"), Device::cpu(), DType::F32)->config().attention.kind,
            AttentionKind::MLA);
  EXPECT_THROW(run_cli({"--teacher", teacher_dir, "--out", out}), Error);  // no rank anywhere
  EXPECT_THROW(run_cli({"--teacher", teacher_dir, "--out", out, "--ranks", "kv:8", "--layers", "7"}), Error);
  EXPECT_THROW(run_cli({"--teacher", teacher_dir, "--out", out, "--energy", "1.5"}), Error);
  EXPECT_THROW(run_cli({"--teacher", tmp_root() + "/nope", "--out", out, "--ranks", "kv:8"}), Error);
}
