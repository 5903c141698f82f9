// Model config: parsing, clear errors naming the key, YAML round trip, parameter counts equal to what
// TransformerLM allocates, the spec's KV worked example, gate-table sharing, name-keyed init, RoPE scaling.
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "layers/rope.h"
#include "layers/transformer.h"
#include "model_test_util.h"

using namespace latte;
using namespace latte::test;

namespace {

const char* kBase = R"(
model:
  vocab_size: 128
  d_model: 64
  n_layers: 2
  ffn_dim: 128
  max_seq_len: 32
  attention: {kind: mla, n_heads: 4, kv_rank: 32, rope_dim: 8}
)";

// Replaces `from` by `to` in the base config text.
std::string patched(const std::string& from, const std::string& to) {
  std::string s = kBase;
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

void expect_error(const std::string& yaml, const std::string& expected) {
  try {
    config_from_yaml(yaml);
    ADD_FAILURE() << "no error; expected: " << expected;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << "message: " << e.what() << "\nexpected: " << expected;
  }
}

}  // namespace

TEST(ModelConfig, ShippedConfigsParseAndRoundTrip) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(LATTE_SOURCE_DIR) + "/configs/models")) {
    if (entry.path().extension() != ".yaml") continue;
    const ModelConfig c = load_model_config(entry.path().string());
    const ModelConfig again = parse_model_config(c.to_yaml(), "model");
    EXPECT_EQ(c.to_yaml_string(), again.to_yaml_string()) << entry.path();
    ++n;
  }
  EXPECT_EQ(n, 34);  // 7 variants x 4 sizes + the 6 configs of the MLRA paper's 2.9B family
}

TEST(ModelConfig, DefaultsAreResolved) {
  const ModelConfig c = config_from_yaml(kBase);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_base, 10000.0);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_FALSE(c.recompute);
  EXPECT_DOUBLE_EQ(c.init.std, 0.02);
  EXPECT_TRUE(c.init.zero_out_proj);
  EXPECT_EQ(c.attention.nope_dim, 16);  // d / n_h
  EXPECT_EQ(c.attention.v_dim, 16);
  EXPECT_EQ(c.attention.q_rank, 0);
  EXPECT_TRUE(c.attention.latent_norm);
  EXPECT_FALSE(c.attention.latent_scale);
  const ModelConfig m = config_from_yaml(patched("{kind: mla, n_heads: 4, kv_rank: 32, rope_dim: 8}", "{kind: mlra, n_heads: 4, kv_rank: 32, rope_dim: 8}"));
  EXPECT_EQ(m.attention.blocks, 4);
  EXPECT_EQ(m.attention.branches, 4);
  const ModelConfig e = config_from_yaml(patched("kind: mla", "kind: egmla"));
  EXPECT_EQ(e.attention.gate.embed_dim, 32);  // defaults to kv_rank
  EXPECT_EQ(e.attention.gate.share_layers, 1);
  EXPECT_EQ(e.attention.gate.position, GatePosition::Latent);
}

TEST(ModelConfig, ErrorsNameTheKey) {
  expect_error(patched("rope_dim: 8", "rope_dim: 33"), "model.attention.rope_dim must be even, got 33");
  expect_error(patched("kv_rank: 32", "kv_rnak: 32"), "model.attention.kv_rnak: unknown key; did you mean kv_rank?");
  expect_error(patched("ffn_dim: 128", "fnn_dim: 128"), "model.fnn_dim: unknown key; did you mean ffn_dim?");
  expect_error(patched("kind: mla", "kind: gqa"), "model.attention.kind: unknown attention kind 'gqa'");
  expect_error(patched("{kind: mla, n_heads: 4, kv_rank: 32, rope_dim: 8}", "{kind: mha, n_heads: 4, n_kv_heads: 3}"),
               "model.attention.n_kv_heads (3) must divide model.attention.n_heads (4); use one of 1, 2, 4");
  expect_error(patched("n_heads: 4", "n_heads: 5"), "model.attention.n_heads (5) does not divide model.d_model (64)");
  expect_error(patched("d_model: 64", "d_model: sixty"), "model.d_model must be an integer, got 'sixty'");
  expect_error(patched("  ffn_dim: 128\n", ""), "model.ffn_dim is required");
  expect_error(patched("kv_rank: 32, ", ""), "model.attention.kv_rank (d_c) is required for kind mla");
  expect_error(patched("{kind: mla, n_heads: 4, kv_rank: 32, rope_dim: 8}", "{kind: mlra, n_heads: 4, kv_rank: 30, rope_dim: 8}"),
               "model.attention.kv_rank (30) must be a multiple of model.attention.blocks (4)");
  expect_error(patched("{kind: mla, n_heads: 4, kv_rank: 32, rope_dim: 8}", "{kind: mlra, n_heads: 4, kv_rank: 32, rope_dim: 8, branches: 3}"),
               "model.attention.branches (3) must divide model.attention.blocks (4)");
  expect_error(patched("kind: mla", "kind: egmla, gate: {position: middle}"), "model.attention.gate.position: must be latent or kv, got 'middle'");
  expect_error(patched("kind: mla", "kind: egmla, gate: {share_layer: 2}"), "model.attention.gate.share_layer: unknown key; did you mean share_layers?");
  expect_error(patched("  max_seq_len: 32\n", "  max_seq_len: 32\n  layer_kinds: [mla, mha]\n"),
               "model.layer_kinds[1] is mha but model.attention is mla; add model.attention_overrides.mha");
  expect_error(patched("  max_seq_len: 32\n", "  max_seq_len: 32\n  layer_kinds: [mla]\n"),
               "model.layer_kinds has 1 entries but model.n_layers is 2");
  expect_error(patched("  max_seq_len: 32\n", "  max_seq_len: 32\n  rope_scaling: {type: yarn, factor: 4}\n"),
               "model.rope_scaling.type: only llama3 rope scaling is supported, got 'yarn'");
}

TEST(ModelConfig, LayerKindsWithOverrides) {
  const ModelConfig c = config_from_yaml(patched("  max_seq_len: 32\n", "  max_seq_len: 32\n  layer_kinds: [mha, mla]\n"
                                                                       "  attention_overrides: {mha: {n_heads: 4}}\n"));
  EXPECT_EQ(c.layer_attention(0).kind, AttentionKind::MHA);
  EXPECT_EQ(c.layer_attention(0).head_dim, 16);
  EXPECT_EQ(c.layer_attention(1).kind, AttentionKind::MLA);
  EXPECT_EQ(parse_model_config(c.to_yaml()).to_yaml_string(), c.to_yaml_string());
  TransformerLM model(c, 1, DType::F32, Device::cpu());
  EXPECT_TRUE(model.has_parameter("layers.0.attn.wk.weight"));
  EXPECT_TRUE(model.has_parameter("layers.1.attn.wkv_a.weight"));
  EXPECT_EQ(model.num_parameters(), count_parameters(c).total);
}

// The spec's worked example (EG-MLA section): d=768, 12 heads.
TEST(ModelConfig, KvWorkedExample) {
  const ModelConfig mha = load_model_config(model_config_path("mha-125m"));
  const ModelConfig eg = load_model_config(model_config_path("egmla-125m"));
  const ModelConfig mla = load_model_config(model_config_path("mla-125m"));
  EXPECT_EQ(kv_footprint(mha).elements_per_token_per_layer, 1536);
  EXPECT_EQ(kv_footprint(eg).elements_per_token_per_layer, 128);
  EXPECT_EQ(kv_footprint(mla).elements_per_token_per_layer, 320);
  EXPECT_EQ(kv_footprint(eg).mha_elements_per_token_per_layer, 1536);
  EXPECT_NEAR(1.0 - 128.0 / 1536.0, 0.9167, 1e-4);
  EXPECT_NEAR(1.0 - static_cast<double>(kv_footprint(eg).elements_per_token) / kv_footprint(mla).elements_per_token, 0.60, 1e-12);
  EXPECT_EQ(kv_footprint(eg).token_ids_per_token, 0);
  ModelConfig eg_kv = eg;
  eg_kv.attention.gate.position = GatePosition::KV;
  EXPECT_EQ(kv_footprint(eg_kv).token_ids_per_token, 1);
  EXPECT_EQ(kv_footprint(eg_kv).elements_per_token_per_layer, 128);
}

// count_parameters (what kv-report and MFU use) must equal what the model allocates, for every variant
// and switch that changes the parameter set.
TEST(ModelConfig, ParamCountsMatchModules) {
  std::vector<ModelConfig> configs;
  for (const std::string& v : tiny_variants()) configs.push_back(tiny_config(v));
  ModelConfig c = tiny_config("egmla");
  c.attention.gate.position = GatePosition::KV;
  configs.push_back(c);
  c.attention.gate.norm = GateNormKind::RMSNorm;
  configs.push_back(c);
  c = tiny_config("mla");
  c.attention.q_rank = 24;
  c.attention.latent_norm = false;
  c.tie_embeddings = false;
  configs.push_back(c);
  c = tiny_config("mlra2");
  c.attention.latent_norm = false;
  configs.push_back(c);
  for (const ModelConfig& cfg : configs) {
    TransformerLM model(cfg, 3, DType::F32, Device::cpu());
    const ParamCounts p = count_parameters(cfg);
    EXPECT_EQ(model.num_parameters(), p.total) << cfg.to_yaml_string();
    int64_t matmul = 0;
    for (const NamedParameter& np : model.named_parameters())
      if (np.tensor.dim() >= 2 && np.name.find("embed") == std::string::npos) matmul += np.tensor.numel();
    if (cfg.tie_embeddings) matmul += cfg.vocab_size * cfg.d_model;
    EXPECT_EQ(matmul, p.matmul) << cfg.to_yaml_string();
  }
}

TEST(ModelConfig, SpecParameterNames) {
  TransformerLM mla(tiny_config("mlra2"), 1, DType::F32, Device::cpu());
  for (const char* name : {"tok_embed.weight", "layers.1.attn_norm.weight", "layers.1.attn.wq_a.weight", "layers.1.attn.q_norm.weight",
                           "layers.1.attn.wq_b.weight", "layers.1.attn.wkv_a.weight", "layers.1.attn.kv_norms.3.weight",
                           "layers.1.attn.wkv_b.weight", "layers.1.attn.wo.weight", "layers.1.mlp_norm.weight",
                           "layers.1.mlp.w_gate.weight", "layers.1.mlp.w_up.weight", "layers.1.mlp.w_down.weight", "final_norm.weight"})
    EXPECT_TRUE(mla.has_parameter(name)) << name;
  EXPECT_EQ(mla.parameter("layers.0.attn.wkv_b.weight").shape(), (Shape{4, 8, 2 * 32}));  // [L, d_l, H_b (d_n + d_v)]
  EXPECT_FALSE(mla.has_parameter("lm_head.weight"));
  ModelConfig c = tiny_config("egmla");
  c.attention.gate.position = GatePosition::KV;
  TransformerLM eg(c, 1, DType::F32, Device::cpu());
  for (const char* name : {"gates.0.embed.weight", "layers.0.attn.kv_norm.weight", "layers.0.attn.wgate.weight",
                           "layers.0.attn.gate_norm_k.weight", "layers.0.attn.gate_norm_k.bias", "layers.0.attn.gate_norm_v.bias"})
    EXPECT_TRUE(eg.has_parameter(name)) << name;
  EXPECT_EQ(eg.parameter("layers.0.attn.wgate.weight").shape(), (Shape{4 * 32, 16}));
  TransformerLM eg_latent(tiny_config("egmla"), 1, DType::F32, Device::cpu());
  EXPECT_TRUE(eg_latent.has_parameter("layers.0.attn.gate_norm.bias"));
  EXPECT_FALSE(eg_latent.has_parameter("layers.0.attn.kv_norm.weight"));
  try {
    eg_latent.parameter("layers.0.attn.gate_norm.wieght");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.attn.gate_norm.weight"), std::string::npos) << e.what();
  }
}

// share_layers 3 over 7 layers: ceil(7/3) = 3 tables, layers 0-2 -> 0, 3-5 -> 1, 6 -> 2.
TEST(ModelConfig, GateTablesSharedByGroups) {
  ModelConfig c = tiny_config("egmla");
  c.n_layers = 7;
  c.attention.gate.share_layers = 3;
  EXPECT_EQ(c.gate_groups(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(c.gate_group(2), 0);
  EXPECT_EQ(c.gate_group(3), 1);
  EXPECT_EQ(c.gate_group(6), 2);
  TransformerLM model(c, 1, DType::F32, Device::cpu());
  EXPECT_EQ(model.num_gate_tables(), 3);
  std::vector<std::string> tables;
  for (const NamedParameter& p : model.named_parameters())
    if (p.name.rfind("gates.", 0) == 0) tables.push_back(p.name);
  EXPECT_EQ(tables, (std::vector<std::string>{"gates.0.embed.weight", "gates.1.embed.weight", "gates.2.embed.weight"}));
  for (int64_t i = 0; i < 7; ++i) EXPECT_TRUE(model.has_parameter("layers." + std::to_string(i) + ".attn.wgate.weight"));
  EXPECT_EQ(model.num_parameters(), count_parameters(c).total);
  // Each table gets a gradient from all the layers of its group (one lookup per group, reused).
  Tensor ids = random_ids(1, 6, c.vocab_size, 5);
  c.init.zero_out_proj = false;
  TransformerLM live(c, 1, DType::F32, Device::cpu());
  live.loss(ids, ids).backward();
  for (int g = 0; g < 3; ++g) {
    Tensor grad = live.parameter("gates." + std::to_string(g) + ".embed.weight").grad();
    ASSERT_TRUE(grad.defined()) << g;
    double norm = 0;
    for (double v : grad.to_vector()) norm += std::fabs(v);
    EXPECT_GT(norm, 0.0) << g;
  }
}

// Values depend on (seed, full name) only: the same parameter in a deeper model starts identical.
TEST(ModelConfig, InitDependsOnNameNotConstructionOrder) {
  ModelConfig two = tiny_config("mla"), three = two;
  three.n_layers = 3;
  TransformerLM a(two, 42, DType::F32, Device::cpu()), b(three, 42, DType::F32, Device::cpu()), c(two, 43, DType::F32, Device::cpu());
  for (const char* name : {"layers.1.attn.wkv_a.weight", "tok_embed.weight", "layers.0.mlp.w_up.weight"}) {
    EXPECT_EQ(a.parameter(name).to_vector(), b.parameter(name).to_vector()) << name;
    EXPECT_NE(a.parameter(name).to_vector(), c.parameter(name).to_vector()) << name;
  }
  EXPECT_NE(a.parameter("layers.0.attn.wkv_a.weight").to_vector(), a.parameter("layers.1.attn.wkv_a.weight").to_vector());
  // Rules: wo / w_down zero, norms one, matrices N(0, 0.02).
  for (double v : a.parameter("layers.0.attn.wo.weight").to_vector()) EXPECT_EQ(v, 0.0);
  for (double v : a.parameter("layers.0.mlp.w_down.weight").to_vector()) EXPECT_EQ(v, 0.0);
  for (double v : a.parameter("layers.0.attn.kv_norm.weight").to_vector()) EXPECT_EQ(v, 1.0);
  std::vector<double> w = a.parameter("tok_embed.weight").to_vector();
  double s2 = 0;
  for (double v : w) s2 += v * v;
  EXPECT_NEAR(std::sqrt(s2 / static_cast<double>(w.size())), 0.02, 0.002);
  // EG-MLA unit gate init: embed N(0, 1), wgate N(0, 1/sqrt(d_e)).
  TransformerLM eg(tiny_config("egmla"), 42, DType::F32, Device::cpu());
  auto rms = [](const Tensor& t) {
    double s = 0;
    std::vector<double> v = t.to_vector();
    for (double x : v) s += x * x;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  EXPECT_NEAR(rms(eg.parameter("gates.0.embed.weight")), 1.0, 0.05);
  EXPECT_NEAR(rms(eg.parameter("layers.0.attn.wgate.weight")), 0.25, 0.03);  // d_e = 16
  for (double v : eg.parameter("layers.0.attn.gate_norm.bias").to_vector()) EXPECT_EQ(v, 0.0);
}

// HF transformers' llama3 rope_scaling on Llama-3.1 settings (base 500000, head 128, factor 8, 1, 4, 8192).
TEST(ModelConfig, RopeLlama3Scaling) {
  RopeScaling s;
  s.enabled = true;
  s.factor = 8;
  s.low_freq_factor = 1;
  s.high_freq_factor = 4;
  s.original_max_position_embeddings = 8192;
  std::vector<double> plain = rope_inv_freq_values(128, 500000.0, RopeScaling{});
  std::vector<double> scaled = rope_inv_freq_values(128, 500000.0, s);
  ASSERT_EQ(scaled.size(), 64u);
  EXPECT_DOUBLE_EQ(plain[1], std::pow(500000.0, -2.0 / 128));
  EXPECT_DOUBLE_EQ(scaled[0], plain[0]);  // high frequency kept
  EXPECT_DOUBLE_EQ(scaled[63], plain[63] / 8);  // low frequency divided by factor
  for (size_t j = 0; j < 64; ++j) {
    const double wavelen = 2 * M_PI / plain[j];
    if (wavelen >= 8192.0 / 4 && wavelen <= 8192.0) {  // medium band: smooth interpolation
      const double smooth = (8192.0 / wavelen - 1) / (4 - 1);
      EXPECT_NEAR(scaled[j], (1 - smooth) * plain[j] / 8 + smooth * plain[j], 1e-15);
      EXPECT_LT(scaled[j], plain[j]);
    }
  }
  ModelConfig c = config_from_yaml(patched("  max_seq_len: 32\n", "  max_seq_len: 32\n  rope_scaling: {type: llama3, factor: 8, "
                                                                   "low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16}\n"));
  EXPECT_TRUE(c.rope_scaling.enabled);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 16);
}

// The MLRA paper's 2.9B family: FFN widths chosen so every variant has ~2.87B parameters.
TEST(ModelConfig, PaperFamilyParamCounts) {
  for (const char* v : {"mha", "mqa", "gqa", "mla", "mlra2", "mlra4"}) {
    const ModelConfig c = load_model_config(model_config_path(std::string(v) + "-2b9"));
    const ParamCounts p = count_parameters(c);
    std::printf("  %-6s 2b9: total %.4fB, non-embedding %.4fB, kv/token/layer %lld, FLOPs/token %.3g\n", v, p.total / 1e9,
                p.non_embedding / 1e9, static_cast<long long>(kv_footprint(c).elements_per_token_per_layer),
                flops_per_token(c, c.max_seq_len));
    EXPECT_NEAR(p.total / 1e9, 2.87, 0.01) << v;
  }
}

// Param counts of every shipped config (printed for docs/models.md; no assertion beyond parsing).
TEST(ModelConfig, PrintShippedParamCounts) {
  for (const char* size : {"tiny", "125m", "350m", "1b3"})
    for (const std::string& v : tiny_variants()) {
      const ModelConfig c = load_model_config(model_config_path(v + "-" + size));
      const ParamCounts p = count_parameters(c);
      std::printf("  %-6s %-5s total %10.3fM  non-emb %10.3fM  kv/token/layer %5lld  FLOPs/token %.4g\n", v.c_str(), size,
                  p.total / 1e6, p.non_embedding / 1e6, static_cast<long long>(kv_footprint(c).elements_per_token_per_layer),
                  flops_per_token(c, c.max_seq_len));
    }
}
