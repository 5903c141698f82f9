// docs/configuration.md documents exactly the config keys the parsers accept: every key path the readers ask
// for while parsing the shipped configs plus one config that sets every optional section (distillation,
// rope scaling, per-layer kinds, EG-MLA gate, named validation sets) must appear in the doc's key tables, and
// every key in those tables must be one the readers asked for. A new key without documentation, or a
// documented key that was renamed or removed, fails here.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "core/config_keys.h"
#include "layers/model_config.h"
#include "train/experiment.h"

using namespace latte;
namespace fs = std::filesystem;

namespace {

// Every optional section set once (values valid together; nothing is loaded from the paths).
const char* kEverything = R"(
model:
  vocab_size: 256
  d_model: 64
  n_layers: 4
  ffn_dim: 128
  norm_eps: 1.0e-6
  rope_base: 10000
  rope_scaling: {type: llama3, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 64}
  tie_embeddings: true
  max_seq_len: 64
  recompute: false
  init: {std: 0.02, zero_out_proj: true}
  layer_kinds: [egmla, mha, mlra, mla]
  attention:
    kind: egmla
    n_heads: 4
    kv_rank: 32
    q_rank: 16
    nope_dim: 16
    rope_dim: 8
    v_dim: 16
    latent_scale: false
    latent_norm: true
    gate: {position: latent, norm: layernorm, init: unit, share_layers: 1, embed_dim: 16}
  attention_overrides:
    mha: {n_heads: 4, n_kv_heads: 2, head_dim: 16}
    mlra: {n_heads: 4, kv_rank: 32, blocks: 4, branches: 4}
    mla: {n_heads: 4, kv_rank: 32}
train:
  steps: 10
  seq_len: 32
  distill: {teacher: runs/teacher, temperature: 1.0, kl_weight: 1.0, ce_weight: 0.0}
data: {train: a.bin, val: b.bin}
eval: {sets: {wiki: c.bin}, tasks: [d.jsonl]}
)";

// A key path as the doc names it (without the "<file>: " prefix a model file's reader adds): override entries are documented once as model.attention_overrides.<kind>
// (their keys are model.attention's); "" drops a path.
std::string doc_name(std::string path) {
  if (const size_t colon = path.rfind(": "); colon != std::string::npos) path = path.substr(colon + 2);  // "file: model.x"
  static const std::regex entry(R"(^model\.attention_overrides\.(mha|mla|egmla|mlra)$)");
  static const std::regex inside(R"(^model\.attention_overrides\.(mha|mla|egmla|mlra)\..*)");
  if (std::regex_match(path, inside)) return "";
  if (std::regex_match(path, entry)) return "model.attention_overrides.<kind>";
  return path;
}

// Keys in the doc's tables: the first cell of a table row, `like.this`.
std::set<std::string> documented_keys(const std::string& text) {
  std::set<std::string> keys;
  static const std::regex row(R"(^\| `([a-z0-9_.<>]+)` \|)");
  std::istringstream in(text);
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, row)) keys.insert(m[1].str());
  return keys;
}

}  // namespace

TEST(ConfigDocs, EveryKeyTheParsersAcceptIsDocumentedAndNoOther) {
  const fs::path root(LATTE_SOURCE_DIR);
  forget_config_keys();  // other tests in this process parse sweep files and other readers' sections
  for (const auto& f : fs::directory_iterator(root / "configs/models")) load_model_config(f.path().string());
  for (const auto& f : fs::directory_iterator(root / "configs/examples")) load_experiment(f.path().string());
  parse_experiment(YAML::Load(kEverything), "everything.yaml");

  std::set<std::string> asked;
  for (const std::string& p : config_keys_noted())
    if (const std::string d = doc_name(p); !d.empty()) asked.insert(d);
  ASSERT_GT(asked.size(), 60u);  // the readers did record (sections and keys)

  std::ifstream in(root / "docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md is missing";
  std::stringstream text;
  text << in.rdbuf();
  const std::set<std::string> documented = documented_keys(text.str());
  ASSERT_FALSE(documented.empty());

  std::string undocumented, unknown;
  for (const std::string& k : asked)
    if (!documented.count(k)) undocumented += " " + k;
  for (const std::string& k : documented)
    if (!asked.count(k)) unknown += " " + k;
  EXPECT_TRUE(undocumented.empty()) << "keys the parsers accept but docs/configuration.md lacks:" << undocumented;
  EXPECT_TRUE(unknown.empty()) << "keys in docs/configuration.md the parsers never asked for:" << unknown;
}
