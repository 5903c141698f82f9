// safetensors: round trip of a model, dtype conversion on load, every mismatch reported in one error,
// corrupt files rejected with the file named; and `latte kv-report` output (the spec's worked example).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "layers/decode.h"
#include "layers/safetensors.h"
#include "layers/transformer.h"
#include "model_test_util.h"


using namespace latte;
using namespace latte::test;

namespace {

std::string temp_path(const std::string& name) {
  return (testing::TempDir().empty() ? std::string("/tmp/") : testing::TempDir()) + "latte_model_" + std::to_string(::getpid()) +
         "_" + name;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string with_header(const std::string& json, const std::string& data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  return s + json + data;
}

}  // namespace

TEST(Safetensors, ModelRoundTrip) {
  const std::string path = temp_path("roundtrip.safetensors");
  TransformerLM a(tiny_config("mlra2"), 1, DType::F32, Device::cpu());
  save_state(a, path, {{"note", "test"}});
  TransformerLM b(tiny_config("mlra2"), 2, DType::F32, Device::cpu());
  EXPECT_NE(a.parameter("tok_embed.weight").to_vector(), b.parameter("tok_embed.weight").to_vector());
  load_state(b, path);
  for (const NamedParameter& p : a.named_parameters()) EXPECT_EQ(p.tensor.to_vector(), b.parameter(p.name).to_vector()) << p.name;
  SafetensorsFile f = read_safetensors(path);
  EXPECT_EQ(f.metadata.at("note"), "test");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  ASSERT_EQ(f.tensors.size(), a.named_parameters().size());
  EXPECT_EQ(f.tensors[0].first, "tok_embed.weight");  // written in named_parameters() order
  EXPECT_EQ(f.get("layers.0.attn.wkv_b.weight").shape(), (Shape{4, 8, 64}));
  // f32 file into an f64 model: float dtypes convert.
  TransformerLM c(tiny_config("mlra2"), 3, DType::F64, Device::cpu());
  load_state(c, path);
  EXPECT_EQ(c.parameter("layers.1.attn.wq_a.weight").to_vector(), a.parameter("layers.1.attn.wq_a.weight").to_vector());
  std::remove(path.c_str());
}

TEST(Safetensors, HeaderLayout) {
  const std::string path = temp_path("layout.safetensors");
  write_safetensors(path, {{"b", Tensor::from_vector({1, 2, 3}, {3}, DType::I32)}, {"a", Tensor::from_vector({0.5}, {1, 1}, DType::BF16)}});
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[static_cast<size_t>(i)])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["b"]["dtype"], "I32");
  EXPECT_EQ(h["b"]["data_offsets"], nlohmann::json({0, 12}));
  EXPECT_EQ(h["a"]["dtype"], "BF16");
  EXPECT_EQ(h["a"]["shape"], nlohmann::json({1, 1}));
  EXPECT_EQ(h["a"]["data_offsets"], nlohmann::json({12, 14}));
  EXPECT_EQ(bytes.size(), 8 + n + 14);
  SafetensorsFile f = read_safetensors(path);
  EXPECT_EQ(f.get("b").to_vector(), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(f.get("a").to_vector(), (std::vector<double>{0.5}));
  std::remove(path.c_str());
}

// Loading weights of another config names the file and lists missing, unexpected and wrong-shape tensors.
TEST(Safetensors, EveryMismatchReported) {
  const std::string path = temp_path("mismatch.safetensors");
  ModelConfig saved = tiny_config("mla");
  saved.tie_embeddings = false;  // file has lm_head.weight
  TransformerLM a(saved, 1, DType::F32, Device::cpu());
  save_state(a, path);
  ModelConfig other = tiny_config("mla");
  other.attention.kv_rank = 16;       // wkv_a, kv_norm, wkv_b shapes differ
  other.attention.q_rank = 8;         // wq missing from the model; wq_a, q_norm, wq_b missing from the file
  TransformerLM b(other, 1, DType::F32, Device::cpu());
  const std::string msg = error_of([&] { load_state(b, path); });
  for (const std::string& expected :
       {path, std::string("missing layers.0.attn.wq_a.weight"), std::string("missing layers.1.attn.q_norm.weight"),
        std::string("unexpected layers.0.attn.wq.weight"), std::string("unexpected lm_head.weight"),
        std::string("wrong shape layers.0.attn.wkv_a.weight: file [40, 64], model [24, 64]"),
        std::string("wrong shape layers.1.attn.kv_norm.weight")})
    EXPECT_NE(msg.find(expected), std::string::npos) << "missing '" << expected << "' in:\n" << msg;
  // Nothing was loaded.
  TransformerLM fresh(other, 1, DType::F32, Device::cpu());
  EXPECT_EQ(b.parameter("tok_embed.weight").to_vector(), fresh.parameter("tok_embed.weight").to_vector());
  std::remove(path.c_str());
}

TEST(Safetensors, CorruptFilesNameTheFile) {
  const std::string path = temp_path("corrupt.safetensors");
  write_bytes(path, "abc");
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find(path + ": not a safetensors file"), std::string::npos);
  write_bytes(path, with_header("{}", "") + "");
  EXPECT_TRUE(read_safetensors(path).entries.empty());
  std::string huge(8, '\xff');
  write_bytes(path, huge);
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find("corrupt safetensors header length"), std::string::npos);
  write_bytes(path, with_header("{not json", ""));
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find("not valid JSON"), std::string::npos);
  write_bytes(path, with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"));
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find("outside the 4-byte data section"), std::string::npos);
  write_bytes(path, with_header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"));
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find("8 bytes for shape [3]"), std::string::npos);
  write_bytes(path, with_header(R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", "12345678"));
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find("unsupported safetensors dtype 'C64'"), std::string::npos);
  EXPECT_NE(error_of([&] { read_safetensors(path + ".missing"); }).find("cannot open"), std::string::npos);
  std::remove(path.c_str());
}

namespace {

nlohmann::json kv_report_json(std::vector<std::string> args) {
  args.insert(args.begin(), "kv-report");
  args.push_back("--json");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  int rc = 0;
  try {
    rc = apps::cmd_kv_report(static_cast<int>(argv.size()), argv.data());
  } catch (...) {
    testing::internal::GetCapturedStdout();
    throw;
  }
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  return nlohmann::json::parse(out);
}

}  // namespace

// The spec's worked example: d=768, 12 heads: MHA 1536, EG-MLA 128 (91.7% less), MLA 320, EG-MLA 60% less than MLA.
TEST(KvReport, SpecWorkedExample) {
  nlohmann::json mha = kv_report_json({model_config_path("mha-125m")});
  EXPECT_EQ(mha["kv_elements_per_token_per_layer"], 1536);
  EXPECT_DOUBLE_EQ(mha["kv_reduction_vs_mha"].get<double>(), 0.0);
  nlohmann::json eg = kv_report_json({model_config_path("egmla-125m"), "--vs", model_config_path("mla-125m"), "--context", "2048",
                                      "--batch", "4"});
  EXPECT_EQ(eg["kv_elements_per_token_per_layer"], 128);
  EXPECT_EQ(eg["kv_bytes_per_token"], 128 * 12 * 2);
  EXPECT_NEAR(eg["kv_reduction_vs_mha"].get<double>(), 0.9167, 1e-4);
  EXPECT_EQ(eg["vs"]["kv_elements_per_token_per_layer"], 320);
  EXPECT_NEAR(eg["kv_reduction_vs_other"].get<double>(), 0.60, 1e-12);
  EXPECT_DOUBLE_EQ(eg["cache_bytes"].get<double>(), 128.0 * 12 * 2 * 2048 * 4);
  EXPECT_EQ(eg["token_id_bytes_per_token"], 0);
  const ParamCounts p = count_parameters(load_model_config(model_config_path("egmla-125m")));
  EXPECT_EQ(eg["params_total"], p.total);
  EXPECT_EQ(eg["params_non_embedding"], p.non_embedding);
  EXPECT_GT(eg["flops_per_token"].get<double>(), 6.0 * p.non_embedding);
}

TEST(KvReport, ExperimentFileAndErrors) {
  const std::string path = temp_path("experiment.yaml");
  {
    std::ofstream out(path);
    out << "train: {lr: 0.001}\nmodel:\n  vocab_size: 128\n  d_model: 64\n  n_layers: 2\n  ffn_dim: 128\n  max_seq_len: 64\n"
           "  attention: {kind: egmla, n_heads: 4, kv_rank: 24, rope_dim: 8, gate: {position: kv}}\n";
  }
  nlohmann::json j = kv_report_json({path});
  EXPECT_EQ(j["kv_elements_per_token_per_layer"], 32);
  EXPECT_EQ(j["token_id_bytes_per_token"], 4);
  EXPECT_EQ(j["context"], 64);
  {
    std::ofstream out(path);
    out << "model:\n  vocab_size: 128\n  d_model: 64\n  n_layers: 2\n  ffn_dim: 128\n  max_seq_len: 64\n"
           "  attention: {kind: mla, n_heads: 4, kv_rank: 24, rope_dim: 33}\n";
  }
  const std::string msg = error_of([&] { kv_report_json({path}); });
  EXPECT_NE(msg.find(path + ": model.attention.rope_dim must be even, got 33"), std::string::npos) << msg;
  std::remove(path.c_str());
}

// `latte dump` writes what parity.py reads: weights under the spec's names and matching outputs.
TEST(Dump, WritesWeightsAndOutputs) {
  const std::string dir = temp_path("dump");
  std::vector<std::string> args = {"dump", model_config_path("egmla-tiny"), "--out", dir, "--no-zero-init", "--seq", "5"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  ASSERT_EQ(apps::cmd_dump(static_cast<int>(argv.size()), argv.data()), 0);
  testing::internal::GetCapturedStdout();
  SafetensorsFile w = read_safetensors(dir + "/weights.safetensors");
  SafetensorsFile o = read_safetensors(dir + "/outputs.safetensors");
  TransformerLM model(load_model_config(dir + "/config.yaml"), 0, DType::F32, Device::cpu());
  load_state(model, dir + "/weights.safetensors");
  EXPECT_EQ(o.get("logits").shape(), (Shape{2, 5, 128}));
  EXPECT_EQ(o.get("grad.layers.1.attn.wgate.weight").shape(), model.parameter("layers.1.attn.wgate.weight").shape());
  EXPECT_NEAR(model.loss(o.get("ids"), o.get("targets")).item(), o.get("loss").item(), 1e-6);
  EXPECT_EQ(w.tensors.size(), model.named_parameters().size());
  for (const char* f : {"/weights.safetensors", "/outputs.safetensors", "/config.yaml"}) std::remove((dir + f).c_str());
  ::rmdir(dir.c_str());
}


namespace {

std::string run_generate(std::vector<std::string> args) {
  args.insert(args.begin(), "generate");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  try {
    EXPECT_EQ(apps::cmd_generate(static_cast<int>(argv.size()), argv.data()), 0);
  } catch (...) {
    testing::internal::GetCapturedStdout();
    throw;
  }
  return testing::internal::GetCapturedStdout();
}

}  // namespace

// `latte generate` with --ids (greedy, absorbed) prints what generate() produces; --prompt with the byte tokenizer.
TEST(Generate, CommandLine) {
  const std::string weights = temp_path("gen.safetensors"), config = temp_path("gen.yaml");
  ModelConfig cfg = tiny_config("mla");
  cfg.vocab_size = 320;  // room for the byte tokenizer's 257 ids
  cfg.init.zero_out_proj = false;
  {
    std::ofstream out(config);
    out << cfg.to_yaml_string();
  }
  TransformerLM model(cfg, 3, DType::F32, Device::cpu());
  save_state(model, weights);
  GenerateOptions opt;
  opt.greedy = true;
  opt.max_new_tokens = 5;
  std::vector<int32_t> expected = generate(model, {{4, 8, 15}}, opt)[0];
  std::ostringstream line;
  for (size_t k = 0; k < expected.size(); ++k) line << (k ? " " : "") << expected[k];
  EXPECT_EQ(run_generate({weights, "--config", config, "--ids", "4 8 15", "--greedy", "--max-new", "5", "--absorbed"}), line.str() + "\n");
  const std::string text = run_generate({weights, "--config", config, "--prompt", "hi", "--tokenizer", "byte", "--max-new", "4",
                                         "--temperature", "0.7", "--top-k", "5", "--seed", "3"});
  EXPECT_EQ(text.rfind("hi", 0), 0u) << text;
  EXPECT_NE(error_of([&] { run_generate({weights, "--config", config, "--ids", "4", "--prompt", "x"}); })
                .find("exactly one of --prompt and --ids"), std::string::npos);
  EXPECT_NE(error_of([&] { run_generate({weights, "--config", config, "--ids", "4", "--top-k", "lots"}); })
                .find("--top-k expects an integer, got 'lots'"), std::string::npos);
  cfg.attention.kv_rank = 16;
  {
    std::ofstream out(config);
    out << cfg.to_yaml_string();
  }
  EXPECT_NE(error_of([&] { run_generate({weights, "--config", config, "--ids", "4"}); }).find("does not match the model"),
            std::string::npos);
  std::remove(weights.c_str());
  std::remove(config.c_str());
}
