// HF Llama import (train/hf_import, `latte import-hf`): synthetic checkpoints written by the test with
// HF tensor names (single file and sharded index, tied and untied, bf16, both rope config formats) map
// every tensor onto latte's names with the vocabulary padded by zero rows, the output directory loads
// as a model, and unsupported or corrupt checkpoints are refused with a message naming the key/tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/node.h"
#include "layers/transformer.h"
#include "train/checkpoint_store.h"
#include "train/hf_import.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace latte;

namespace latte::apps {
int cmd_import_hf(int argc, char** argv);
}

namespace {

std::string tmp_root() {
  static const std::string d = test::per_process_temp_dir("latte_hf_import_");
  return d;
}

struct HfSpec {
  int64_t vocab = 100, d = 32, layers = 2, heads = 4, kv_heads = 2, head_dim = 8, ffn = 48;
  bool tied = false;
  bool sharded = false;
  DType dtype = DType::F32;
};

json hf_config(const HfSpec& s) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", s.vocab},
          {"hidden_size", s.d},
          {"intermediate_size", s.ffn},
          {"num_hidden_layers", s.layers},
          {"num_attention_heads", s.heads},
          {"num_key_value_heads", s.kv_heads},
          {"head_dim", s.head_dim},
          {"hidden_act", "silu"},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 500000.0},
          {"rope_scaling", nullptr},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"tie_word_embeddings", s.tied},
          {"torch_dtype", "float32"}};
}

// The checkpoint's tensors by HF name, in HF's order.
NamedTensors hf_tensors(const HfSpec& s, uint64_t seed = 5) {
  NamedTensors t;
  uint64_t offset = 0;
  auto add = [&](const std::string& name, Shape shape) {
    t.emplace_back(name, Tensor::randn(shape, seed, offset, 0.5).to(s.dtype));
    offset += 1u << 20;
  };
  add("model.embed_tokens.weight", {s.vocab, s.d});
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {s.d});
    add(p + "self_attn.q_proj.weight", {s.heads * s.head_dim, s.d});
    add(p + "self_attn.k_proj.weight", {s.kv_heads * s.head_dim, s.d});
    add(p + "self_attn.v_proj.weight", {s.kv_heads * s.head_dim, s.d});
    add(p + "self_attn.o_proj.weight", {s.d, s.heads * s.head_dim});
    add(p + "post_attention_layernorm.weight", {s.d});
    add(p + "mlp.gate_proj.weight", {s.ffn, s.d});
    add(p + "mlp.up_proj.weight", {s.ffn, s.d});
    add(p + "mlp.down_proj.weight", {s.d, s.ffn});
  }
  add("model.norm.weight", {s.d});
  if (!s.tied) add("lm_head.weight", {s.vocab, s.d});
  return t;
}

// Writes config.json + model.safetensors (or two shards and the index) under tmp_root()/name.
std::string write_hf(const std::string& name, const HfSpec& s, const json& config, const NamedTensors& tensors) {
  const fs::path dir = fs::path(tmp_root()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  if (!s.sharded) {
    write_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
    return dir.string();
  }
  NamedTensors first(tensors.begin(), tensors.begin() + static_cast<long>(tensors.size() / 2));
  NamedTensors second(tensors.begin() + static_cast<long>(tensors.size() / 2), tensors.end());
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(), first, {{"format", "pt"}});
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), second, {{"format", "pt"}});
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& [n, t] : first) index["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (const auto& [n, t] : second) index["weight_map"][n] = "model-00002-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  return dir.string();
}

std::string write_hf(const std::string& name, const HfSpec& s) { return write_hf(name, s, hf_config(s), hf_tensors(s)); }

using test::error_of;

const Tensor& by_name(const NamedTensors& t, const std::string& name) {
  for (const auto& [n, x] : t)
    if (n == name) return x;
  throw std::runtime_error("no tensor " + name);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to(DType::F64).to_vector(), y = b.to(DType::F64).to_vector();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

int run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "import-hf");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return apps::cmd_import_hf(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST(HfImport, ConfigTranslation) {
  HfSpec s;
  json cfg = hf_config(s);
  int64_t hf_vocab = 0;
  ModelConfig c = hf_config_to_latte(cfg, "config.json", 64, &hf_vocab);
  EXPECT_EQ(hf_vocab, 100);
  EXPECT_EQ(c.vocab_size, 128);
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.ffn_dim, 48);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_base, 500000.0);
  EXPECT_FALSE(c.rope_scaling.enabled);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.max_seq_len, 64);
  EXPECT_EQ(c.attention.kind, AttentionKind::MHA);
  EXPECT_EQ(c.attention.n_heads, 4);
  EXPECT_EQ(c.attention.n_kv_heads, 2);
  EXPECT_EQ(c.attention.head_dim, 8);

  // transformers 4: rope_theta + rope_scaling {rope_type: llama3, ...}.
  cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  c = hf_config_to_latte(cfg, "config.json", 64, &hf_vocab);
  EXPECT_TRUE(c.rope_scaling.enabled);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  // transformers 5: rope_parameters {rope_theta, rope_type, ...} and no top-level rope_theta.
  json v5 = hf_config(s);
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = {{"rope_theta", 250000.0}, {"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 2.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 4096}};
  c = hf_config_to_latte(v5, "config.json", 64, &hf_vocab);
  EXPECT_DOUBLE_EQ(c.rope_base, 250000.0);
  EXPECT_TRUE(c.rope_scaling.enabled);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 2.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
  v5["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "default"}};
  c = hf_config_to_latte(v5, "config.json", 64, &hf_vocab);
  EXPECT_FALSE(c.rope_scaling.enabled);
  EXPECT_DOUBLE_EQ(c.rope_base, 10000.0);
  // Defaults: no head_dim -> hidden / heads; no num_key_value_heads -> MHA.
  json minimal = hf_config(s);
  minimal.erase("head_dim");
  minimal.erase("num_key_value_heads");
  c = hf_config_to_latte(minimal, "config.json", 64, &hf_vocab);
  EXPECT_EQ(c.attention.head_dim, 8);
  EXPECT_EQ(c.attention.n_kv_heads, 4);
}

TEST(HfImport, RefusesWhatLatteCannotRepresent) {
  const HfSpec s;
  struct Case {
    const char* key;
    json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"attention_bias", true, "attention_bias"},
      {"mlp_bias", true, "mlp_bias"},
      {"hidden_act", "gelu", "hidden_act"},
      {"model_type", "gpt2", "model_type"},
      {"sliding_window", 4096, "sliding_window"},
      {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}, "rope_scaling.rope_type"},
      {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}, "linear"},
      {"partial_rotary_factor", 0.5, "partial_rotary_factor"},
      {"num_key_value_heads", 3, "n_kv_heads"},
      {"quantization_config", {{"quant_method", "gptq"}}, "quantization_config"},
  };
  for (const Case& k : cases) {
    json cfg = hf_config(s);
    cfg[k.key] = k.value;
    const std::string msg = error_of([&] { hf_config_to_latte(cfg, "config.json", 64, nullptr); });
    EXPECT_NE(msg.find(k.expect), std::string::npos) << k.key << ": " << msg;
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  }
  json cfg = hf_config(s);
  cfg.erase("hidden_size");
  EXPECT_NE(error_of([&] { hf_config_to_latte(cfg, "config.json", 64, nullptr); }).find("hidden_size is missing"), std::string::npos);
  cfg = hf_config(s);
  cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NE(error_of([&] { hf_config_to_latte(cfg, "config.json", 64, nullptr); }).find("low_freq_factor"), std::string::npos);
}

TEST(HfImport, MapsEveryTensorUntiedSingleFile) {
  HfSpec s;
  const std::string dir = write_hf("untied", s);
  const NamedTensors src = hf_tensors(s);
  HfModel m = read_hf_checkpoint(dir);
  EXPECT_EQ(m.hf_vocab_size, 100);
  EXPECT_EQ(m.config.vocab_size, 128);
  EXPECT_TRUE(m.skipped.empty());
  // Every HF tensor has a latte counterpart with the same values; embeddings/head padded with zero rows.
  ASSERT_EQ(m.tensors.size(), src.size());
  for (const auto& [hf_name, t] : src) {
    const std::string name = hf_to_latte_name(hf_name, s.layers);
    ASSERT_FALSE(name.empty()) << hf_name;
    const Tensor& out = by_name(m.tensors, name);
    if (name == "tok_embed.weight" || name == "lm_head.weight") {
      ASSERT_EQ(out.shape(), (Shape{128, s.d}));
      EXPECT_EQ(max_abs_diff(out.narrow(0, 0, 100), t), 0.0) << name;
      EXPECT_EQ(max_abs_diff(out.narrow(0, 100, 28), Tensor::zeros({28, s.d})), 0.0) << name;
    } else {
      EXPECT_EQ(max_abs_diff(out, t), 0.0) << name;
    }
  }
  EXPECT_EQ(hf_to_latte_name("model.layers.1.self_attn.k_proj.weight", 2), "layers.1.attn.wk.weight");
  EXPECT_EQ(hf_to_latte_name("model.layers.1.post_attention_layernorm.weight", 2), "layers.1.mlp_norm.weight");
  EXPECT_EQ(hf_to_latte_name("model.layers.1.mlp.down_proj.weight", 2), "layers.1.mlp.w_down.weight");
  EXPECT_EQ(hf_to_latte_name("model.layers.2.mlp.down_proj.weight", 2), "");
  // The names and order are exactly TransformerLM's parameters.
  TransformerLM model(m.config, 1, DType::F32, Device::cpu());
  std::vector<NamedParameter> params = model.named_parameters();
  ASSERT_EQ(params.size(), m.tensors.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].name, m.tensors[i].first);
    EXPECT_EQ(params[i].tensor.shape(), m.tensors[i].second.shape()) << params[i].name;
  }
}

TEST(HfImport, TiedShardedBf16) {
  HfSpec s;
  s.tied = true;
  s.sharded = true;
  s.dtype = DType::BF16;
  s.vocab = 64;  // already a multiple of 64: no padding
  const std::string dir = write_hf("tied_sharded", s);
  HfModel m = read_hf_checkpoint(dir);
  EXPECT_TRUE(m.config.tie_embeddings);
  EXPECT_EQ(m.config.vocab_size, 64);
  EXPECT_EQ(m.tensors.size(), hf_tensors(s).size());
  for (const auto& [name, t] : m.tensors) {
    EXPECT_NE(name, "lm_head.weight");
    EXPECT_EQ(t.dtype(), DType::BF16) << name;
  }
  EXPECT_EQ(max_abs_diff(by_name(m.tensors, "layers.1.mlp.w_up.weight"), by_name(hf_tensors(s), "model.layers.1.mlp.up_proj.weight")), 0.0);
  // --dtype f32 casts.
  HfImportOptions f32;
  f32.dtype = "f32";
  EXPECT_EQ(read_hf_checkpoint(dir, f32).tensors.front().second.dtype(), DType::F32);
  // A tied checkpoint that also stores lm_head (some do) keeps tok_embed and reports the skip.
  HfSpec untied = s;
  untied.tied = false;
  untied.sharded = false;
  const std::string dir2 = write_hf("tied_with_head", s, hf_config(s), hf_tensors(untied));
  HfModel m2 = read_hf_checkpoint(dir2);
  ASSERT_EQ(m2.skipped.size(), 1u);
  EXPECT_EQ(m2.skipped[0], "lm_head.weight");
}

TEST(HfImport, CommandWritesALoadableModelDirectory) {
  HfSpec s;
  const std::string dir = write_hf("cli", s);
  const std::string out = tmp_root() + "/cli_out";
  // ids for --logits-for
  const std::string ids_path = tmp_root() + "/ids.safetensors";
  Tensor ids = Tensor::from_vector({1, 5, 99, 42, 7, 0, 63, 12}, {2, 4}, DType::I32);
  write_safetensors(ids_path, {{"ids", ids}});
  ASSERT_EQ(run_cli({dir, "--out", out, "--logits-for", ids_path}), 0);
  ASSERT_TRUE(fs::exists(out + "/config.yaml"));
  const std::string yaml = read_file(out + "/config.yaml");
  EXPECT_NE(yaml.find("original vocab_size 100"), std::string::npos) << yaml;
  const SafetensorsFile header = read_safetensors_header(out + "/model.safetensors");
  EXPECT_EQ(header.metadata.at("hf_vocab_size"), "100");
  // The embedded config alone is enough (what `latte generate <dir>/model.safetensors` uses).
  ModelSource src = resolve_model_source(out + "/model.safetensors");
  EXPECT_EQ(src.config.vocab_size, 128);
  EXPECT_EQ(resolve_model_dir(out).config.attention.n_kv_heads, 2);
  auto model = load_model(src, Device::cpu(), DType::F32);
  autograd::NoGradGuard no_grad;
  Tensor logits = model->logits(ids);
  // Logits file: over the original vocabulary.
  Tensor written = read_safetensors(out + "/logits.safetensors").get("logits");
  ASSERT_EQ(written.shape(), (Shape{2, 4, 100}));
  EXPECT_LT(max_abs_diff(written, logits.narrow(2, 0, 100).contiguous()), 1e-6);
  // Padded vocabulary rows have zero embeddings and zero head rows: their logits are exactly 0.
  EXPECT_EQ(max_abs_diff(logits.narrow(2, 100, 28).contiguous(), Tensor::zeros({2, 4, 28})), 0.0);
  EXPECT_THROW(run_cli({dir}), Error);
  EXPECT_THROW(run_cli({dir, "--out", out, "--bogus"}), Error);
}

TEST(HfImport, RejectsBrokenCheckpointsNamingTheProblem) {
  HfSpec s;
  // Missing tensor.
  NamedTensors t = hf_tensors(s);
  t.erase(t.begin() + 3);  // model.layers.0.self_attn.k_proj.weight
  std::string msg = error_of([&] { read_hf_checkpoint(write_hf("missing", s, hf_config(s), t)); });
  EXPECT_NE(msg.find("missing: model.layers.0.self_attn.k_proj.weight"), std::string::npos) << msg;
  // Wrong shape.
  t = hf_tensors(s);
  t[2].second = Tensor::zeros({8, 8});
  msg = error_of([&] { read_hf_checkpoint(write_hf("shape", s, hf_config(s), t)); });
  EXPECT_NE(msg.find("model.layers.0.self_attn.q_proj.weight: shape [8, 8]"), std::string::npos) << msg;
  // A bias latte has no place for.
  t = hf_tensors(s);
  t.emplace_back("model.layers.0.self_attn.q_proj.bias", Tensor::zeros({32}));
  msg = error_of([&] { read_hf_checkpoint(write_hf("bias", s, hf_config(s), t)); });
  EXPECT_NE(msg.find("model.layers.0.self_attn.q_proj.bias (latte's Llama layers have no biases)"), std::string::npos) << msg;
  // Layer index beyond num_hidden_layers.
  t = hf_tensors(s);
  t.emplace_back("model.layers.2.mlp.up_proj.weight", Tensor::zeros({48, 32}));
  msg = error_of([&] { read_hf_checkpoint(write_hf("extra_layer", s, hf_config(s), t)); });
  EXPECT_NE(msg.find("model.layers.2.mlp.up_proj.weight"), std::string::npos) << msg;
  // Untied without lm_head.
  t = hf_tensors(s);
  t.pop_back();
  msg = error_of([&] { read_hf_checkpoint(write_hf("no_head", s, hf_config(s), t)); });
  EXPECT_NE(msg.find("missing: lm_head.weight"), std::string::npos) << msg;
  // Truncated safetensors.
  const std::string dir = write_hf("truncated", s);
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 100);
  msg = error_of([&] { read_hf_checkpoint(dir); });
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  // A shard named by the index is missing.
  HfSpec sh = s;
  sh.sharded = true;
  const std::string sdir = write_hf("lost_shard", sh);
  fs::remove(sdir + "/model-00002-of-00002.safetensors");
  msg = error_of([&] { read_hf_checkpoint(sdir); });
  EXPECT_NE(msg.find("model-00002-of-00002.safetensors: shard named in model.safetensors.index.json is missing"), std::string::npos)
      << msg;
  // Garbage config.json; no config; no weights.
  const std::string gdir = write_hf("garbage", s);
  std::ofstream(gdir + "/config.json") << "{\"model_type\": \"llama\",";
  msg = error_of([&] { read_hf_checkpoint(gdir); });
  EXPECT_NE(msg.find("config.json: not valid JSON"), std::string::npos) << msg;
  fs::remove(gdir + "/config.json");
  EXPECT_NE(error_of([&] { read_hf_checkpoint(gdir); }).find("has no config.json"), std::string::npos);
  const std::string wdir = write_hf("no_weights", s);
  fs::remove(wdir + "/model.safetensors");
  EXPECT_NE(error_of([&] { read_hf_checkpoint(wdir); }).find("neither model.safetensors"), std::string::npos);
  // Unsupported config through the whole path names the key.
  json cfg = hf_config(s);
  cfg["attention_bias"] = true;
  msg = error_of([&] { read_hf_checkpoint(write_hf("attn_bias", s, cfg, hf_tensors(s))); });
  EXPECT_NE(msg.find("attention_bias is true"), std::string::npos) << msg;
}
