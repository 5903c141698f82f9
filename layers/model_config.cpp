// Parsing, validation and derived numbers of the model config (layers/model_config.h). Every error
// names the full key path and the offending value and says how to fix it, because a config typo is
// the most common way a run fails before it starts.
#include "layers/model_config.h"

#include "core/text_match.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/config_keys.h"
#include "core/error.h"

namespace latte {

// ---- names ----------------------------------------------------------------------------------------

const char* attention_kind_name(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::MHA: return "mha";
    case AttentionKind::MLA: return "mla";
    case AttentionKind::EGMLA: return "egmla";
    case AttentionKind::MLRA: return "mlra";
  }
  return "?";
}

namespace {

AttentionKind parse_kind(const std::string& s, const std::string& path) {
  if (s == "mha") return AttentionKind::MHA;
  if (s == "mla") return AttentionKind::MLA;
  if (s == "egmla") return AttentionKind::EGMLA;
  if (s == "mlra") return AttentionKind::MLRA;
  std::string hint;
  if (s == "gqa" || s == "mqa") hint = " (GQA and MQA are kind mha with n_kv_heads < n_heads)";
  LATTE_FAIL(path, ": unknown attention kind '", s, "'; expected one of mha, mla, egmla, mlra", hint);
}

// A YAML mapping being read: typed getters that name the key path in errors, and a final check that
// every key present was one we know.
class Section {
 public:
  Section(const YAML::Node& node, std::string path) : node_(node), path_(std::move(path)) {
    LATTE_REQUIRE(node_.IsMap(), path_, " must be a mapping of key: value, got ",
                  node_.IsNull() ? std::string("nothing") : node_.IsSequence() ? std::string("a list") : "'" + scalar_text(node_) + "'");
  }

  std::string key_path(const std::string& key) const { return path_ + "." + key; }
  bool has(const std::string& key) const { return static_cast<bool>(node_[key]) && !node_[key].IsNull(); }
  YAML::Node child(const std::string& key) const { return node_[key]; }

  int64_t integer(const std::string& key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const YAML::Node v = node_[key];
    try {
      if (v.IsScalar()) return v.as<int64_t>();
    } catch (const YAML::Exception&) {
    }
    LATTE_FAIL(key_path(key), " must be an integer, got '", scalar_text(v), "'");
  }
  double real(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const YAML::Node v = node_[key];
    try {
      if (v.IsScalar()) return v.as<double>();
    } catch (const YAML::Exception&) {
    }
    LATTE_FAIL(key_path(key), " must be a number, got '", scalar_text(v), "'");
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const YAML::Node v = node_[key];
    try {
      if (v.IsScalar()) return v.as<bool>();
    } catch (const YAML::Exception&) {
    }
    LATTE_FAIL(key_path(key), " must be true or false, got '", scalar_text(v), "'");
  }
  std::string text(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const YAML::Node v = node_[key];
    LATTE_REQUIRE(v.IsScalar(), key_path(key), " must be a word, got a ", v.IsMap() ? "mapping" : "list");
    return v.as<std::string>();
  }

  // Every key must be in `known`; the error lists each unknown key with its closest known one.
  void reject_unknown(const std::vector<std::string>& known) const {
    for (const std::string& k : known) note_config_key(key_path(k));
    std::string msg;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      const std::string best = closest_match(key, known);
      if (!msg.empty()) msg += "\n";
      msg += key_path(key) + ": unknown key";
      if (!best.empty()) msg += "; did you mean " + best + "?";
      else {
        msg += "; known keys here:";
        for (const std::string& k : known) msg += " " + k;
      }
    }
    if (!msg.empty()) throw Error(msg);
  }

  static std::string scalar_text(const YAML::Node& v) {
    if (v.IsScalar()) return v.Scalar();
    if (v.IsMap()) return "<mapping>";
    if (v.IsSequence()) return "<list>";
    return "<null>";
  }

 private:
  const YAML::Node node_;  // const: operator[] on a missing key must not insert it
  std::string path_;
};

GatePosition parse_gate_position(const std::string& s, const std::string& path) {
  if (s == "latent") return GatePosition::Latent;
  if (s == "kv") return GatePosition::KV;
  LATTE_FAIL(path, ": must be latent or kv, got '", s, "'");
}
GateNormKind parse_gate_norm(const std::string& s, const std::string& path) {
  if (s == "layernorm") return GateNormKind::LayerNorm;
  if (s == "rmsnorm") return GateNormKind::RMSNorm;
  LATTE_FAIL(path, ": must be layernorm or rmsnorm, got '", s, "'");
}
GateInit parse_gate_init(const std::string& s, const std::string& path) {
  if (s == "unit") return GateInit::Unit;
  if (s == "small") return GateInit::Small;
  LATTE_FAIL(path, ": must be unit or small, got '", s, "'");
}

// Reads one attention sub-config; `forced_kind` (from attention_overrides.<kind>) when not null.
AttentionConfig parse_attention(const YAML::Node& node, const std::string& path, int64_t d_model,
                                const AttentionKind* forced_kind) {
  Section s(node, path);
  s.reject_unknown({"kind", "n_heads", "n_kv_heads", "head_dim", "kv_rank", "q_rank", "nope_dim", "rope_dim", "v_dim",
                    "latent_scale", "latent_norm", "blocks", "branches", "gate"});
  AttentionConfig a;
  if (forced_kind) {
    a.kind = *forced_kind;
    if (s.has("kind")) {
      const AttentionKind k = parse_kind(s.text("kind", ""), s.key_path("kind"));
      LATTE_REQUIRE(k == *forced_kind, s.key_path("kind"), " is ", attention_kind_name(k), " but the entry is keyed ",
                    attention_kind_name(*forced_kind), "; drop the kind key or make them agree");
    }
  } else {
    LATTE_REQUIRE(s.has("kind"), s.key_path("kind"), " is required: one of mha, mla, egmla, mlra");
    a.kind = parse_kind(s.text("kind", ""), s.key_path("kind"));
  }
  a.n_heads = s.integer("n_heads", 0);
  LATTE_REQUIRE(a.n_heads > 0, s.key_path("n_heads"), " must be a positive integer, got ", a.n_heads);
  const int64_t default_head = d_model % a.n_heads == 0 ? d_model / a.n_heads : 0;
  if (a.kind == AttentionKind::MHA) {
    a.n_kv_heads = s.integer("n_kv_heads", a.n_heads);
    a.head_dim = s.integer("head_dim", default_head);
    LATTE_REQUIRE(a.head_dim != 0 || s.has("head_dim"), s.key_path("n_heads"), " (", a.n_heads,
                  ") does not divide model.d_model (", d_model, "); set head_dim explicitly or pick n_heads dividing d_model");
  } else {
    a.kv_rank = s.integer("kv_rank", 0);
    a.q_rank = s.integer("q_rank", 0);
    a.nope_dim = s.integer("nope_dim", default_head);
    LATTE_REQUIRE(a.nope_dim != 0 || s.has("nope_dim"), s.key_path("n_heads"), " (", a.n_heads,
                  ") does not divide model.d_model (", d_model, "); set nope_dim explicitly or pick n_heads dividing d_model");
    a.rope_dim = s.integer("rope_dim", a.nope_dim / 2);
    a.v_dim = s.integer("v_dim", a.nope_dim);
    a.latent_scale = s.boolean("latent_scale", false);
    a.latent_norm = s.boolean("latent_norm", true);
  }
  if (a.kind == AttentionKind::MLRA) {
    a.blocks = s.integer("blocks", 4);
    a.branches = s.integer("branches", 4);
  }
  if (a.kind == AttentionKind::EGMLA) {
    GateConfig& g = a.gate;
    g.embed_dim = a.kv_rank;
    if (s.has("gate")) {
      Section gs(s.child("gate"), s.key_path("gate"));
      gs.reject_unknown({"position", "norm", "init", "share_layers", "embed_dim"});
      g.position = parse_gate_position(gs.text("position", "latent"), gs.key_path("position"));
      g.norm = parse_gate_norm(gs.text("norm", "layernorm"), gs.key_path("norm"));
      g.init = parse_gate_init(gs.text("init", "unit"), gs.key_path("init"));
      g.share_layers = gs.integer("share_layers", 1);
      g.embed_dim = gs.integer("embed_dim", a.kv_rank);
    }
  }
  return a;
}

// Checks one resolved attention sub-config; `path` is its key path.
void validate_attention(const AttentionConfig& a, const std::string& path) {
  auto key = [&](const char* k) { return path + "." + k; };
  LATTE_REQUIRE(a.n_heads > 0, key("n_heads"), " must be positive, got ", a.n_heads);
  if (a.kind == AttentionKind::MHA) {
    LATTE_REQUIRE(a.n_kv_heads > 0, key("n_kv_heads"), " must be positive, got ", a.n_kv_heads);
    if (a.n_heads % a.n_kv_heads != 0) {
      std::string divisors;
      for (int64_t k = 1; k <= a.n_heads; ++k)
        if (a.n_heads % k == 0) divisors += (divisors.empty() ? "" : ", ") + std::to_string(k);
      LATTE_FAIL(key("n_kv_heads"), " (", a.n_kv_heads, ") must divide ", key("n_heads"), " (", a.n_heads,
                 "); use one of ", divisors);
    }
    LATTE_REQUIRE(a.head_dim > 0 && a.head_dim % 2 == 0, key("head_dim"),
                  " must be positive and even (RoPE rotates the whole head), got ", a.head_dim);
    return;
  }
  LATTE_REQUIRE(a.kv_rank > 0, key("kv_rank"), " (d_c) is required for kind ", attention_kind_name(a.kind),
                " and must be positive, got ", a.kv_rank);
  LATTE_REQUIRE(a.q_rank >= 0, key("q_rank"), " must be 0 (no query compression) or positive, got ", a.q_rank);
  LATTE_REQUIRE(a.nope_dim > 0, key("nope_dim"), " must be positive, got ", a.nope_dim);
  LATTE_REQUIRE(a.v_dim > 0, key("v_dim"), " must be positive, got ", a.v_dim);
  LATTE_REQUIRE(a.rope_dim > 0 && a.rope_dim % 2 == 0, key("rope_dim"), " must be even, got ", a.rope_dim,
                " (rotate-half RoPE pairs channel j with j + rope_dim/2)");
  if (a.kind == AttentionKind::MLRA) {
    LATTE_REQUIRE(a.blocks >= 1, key("blocks"), " must be >= 1, got ", a.blocks);
    LATTE_REQUIRE(a.branches >= 1 && a.blocks % a.branches == 0, key("branches"), " (", a.branches,
                  ") must divide ", key("blocks"), " (", a.blocks, "); MLRA-4 is blocks 4 branches 4, MLRA-2 blocks 4 branches 2");
    LATTE_REQUIRE(a.kv_rank % a.blocks == 0, key("kv_rank"), " (", a.kv_rank, ") must be a multiple of ", key("blocks"),
                  " (", a.blocks, ") so that every block has d_l = kv_rank / blocks channels");
    LATTE_REQUIRE(a.n_heads % a.head_groups() == 0, key("n_heads"), " (", a.n_heads, ") must be a multiple of blocks/branches (",
                  a.head_groups(), ") so that every block serves the same number of heads");
  }
  if (a.kind == AttentionKind::EGMLA) {
    LATTE_REQUIRE(a.gate.embed_dim > 0, key("gate.embed_dim"), " must be positive, got ", a.gate.embed_dim);
    LATTE_REQUIRE(a.gate.share_layers >= 1, key("gate.share_layers"), " must be >= 1, got ", a.gate.share_layers);
  }
}

const char* gate_position_name(GatePosition p) { return p == GatePosition::Latent ? "latent" : "kv"; }
const char* gate_norm_name(GateNormKind n) { return n == GateNormKind::LayerNorm ? "layernorm" : "rmsnorm"; }
const char* gate_init_name(GateInit i) { return i == GateInit::Unit ? "unit" : "small"; }

YAML::Node attention_to_yaml(const AttentionConfig& a) {
  YAML::Node n;
  n["kind"] = attention_kind_name(a.kind);
  n["n_heads"] = a.n_heads;
  if (a.kind == AttentionKind::MHA) {
    n["n_kv_heads"] = a.n_kv_heads;
    n["head_dim"] = a.head_dim;
    return n;
  }
  n["kv_rank"] = a.kv_rank;
  n["q_rank"] = a.q_rank;
  n["nope_dim"] = a.nope_dim;
  n["rope_dim"] = a.rope_dim;
  n["v_dim"] = a.v_dim;
  n["latent_scale"] = a.latent_scale;
  n["latent_norm"] = a.latent_norm;
  if (a.kind == AttentionKind::MLRA) {
    n["blocks"] = a.blocks;
    n["branches"] = a.branches;
  }
  if (a.kind == AttentionKind::EGMLA) {
    YAML::Node g;
    g["position"] = gate_position_name(a.gate.position);
    g["norm"] = gate_norm_name(a.gate.norm);
    g["init"] = gate_init_name(a.gate.init);
    g["share_layers"] = a.gate.share_layers;
    g["embed_dim"] = a.gate.embed_dim;
    n["gate"] = g;
  }
  return n;
}

// Parameters of one layer's attention: matmul weights and vectors (norm gains/biases).
struct AttentionParams {
  int64_t matmul = 0, vectors = 0;
};

AttentionParams attention_params(const AttentionConfig& a, int64_t d) {
  AttentionParams p;
  if (a.kind == AttentionKind::MHA) {
    p.matmul = d * a.n_heads * a.head_dim + 2 * d * a.n_kv_heads * a.head_dim + a.n_heads * a.head_dim * d;
    return p;
  }
  const int64_t h = a.n_heads, dqk = a.qk_dim();
  if (a.q_rank == 0) {
    p.matmul += h * dqk * d;  // wq
  } else {
    p.matmul += a.q_rank * d + h * dqk * a.q_rank;  // wq_a, wq_b
    if (a.latent_norm) p.vectors += a.q_rank;      // q_norm
  }
  p.matmul += (a.kv_rank + a.rope_dim) * d;  // wkv_a
  const int64_t kv_heads_out = a.kind == AttentionKind::MLRA ? a.heads_per_block() : h;  // heads per latent row block
  p.matmul += a.kv_rank * kv_heads_out * (a.nope_dim + a.v_dim);                        // wkv_b
  p.matmul += d * h * a.v_dim;                                                           // wo
  const bool bias = a.gate.norm == GateNormKind::LayerNorm;
  if (a.kind == AttentionKind::EGMLA && a.gate.position == GatePosition::Latent) {
    p.matmul += a.kv_rank * a.gate.embed_dim;        // wgate
    p.vectors += a.kv_rank * (bias ? 2 : 1);         // gate_norm (replaces kv_norm)
  } else {
    if (a.latent_norm) p.vectors += a.kv_rank;       // kv_norm, or MLRA's kv_norms.b (L * d_l)
    if (a.kind == AttentionKind::EGMLA) {            // kv position
      p.matmul += h * (a.nope_dim + a.v_dim) * a.gate.embed_dim;
      p.vectors += h * (a.nope_dim + a.v_dim) * (bias ? 2 : 1);
    }
  }
  return p;
}

}  // namespace

double AttentionConfig::softmax_scale() const { return 1.0 / std::sqrt(static_cast<double>(qk_dim())); }

int64_t AttentionConfig::kv_elements_per_token() const {
  return is_latent() ? kv_rank + rope_dim : 2 * n_kv_heads * head_dim;
}

// ---- ModelConfig ----------------------------------------------------------------------------------

AttentionKind ModelConfig::layer_kind(int64_t layer) const {
  return layer_kinds.empty() ? attention.kind : layer_kinds.at(static_cast<size_t>(layer));
}

const AttentionConfig& ModelConfig::layer_attention(int64_t layer) const {
  const AttentionKind k = layer_kind(layer);
  if (k == attention.kind) return attention;
  auto it = attention_overrides.find(k);
  LATTE_CHECK(it != attention_overrides.end(), "no attention config for layer ", layer);
  return it->second;
}

const AttentionConfig* ModelConfig::egmla_attention() const {
  for (int64_t i = 0; i < n_layers; ++i)
    if (layer_kind(i) == AttentionKind::EGMLA) return &layer_attention(i);
  return nullptr;
}

int64_t ModelConfig::gate_group(int64_t layer) const {
  if (layer_kind(layer) != AttentionKind::EGMLA) return -1;
  return layer / layer_attention(layer).gate.share_layers;
}

std::vector<int64_t> ModelConfig::gate_groups() const {
  std::vector<int64_t> groups;
  for (int64_t i = 0; i < n_layers; ++i) {
    const int64_t g = gate_group(i);
    if (g >= 0 && (groups.empty() || groups.back() != g)) groups.push_back(g);
  }
  return groups;
}

bool ModelConfig::needs_token_ids_in_cache() const {
  for (int64_t i = 0; i < n_layers; ++i)
    if (layer_attention(i).gate_on_kv()) return true;
  return false;
}

void ModelConfig::validate(const std::string& where) const {
  auto key = [&](const char* k) { return where + "." + k; };
  LATTE_REQUIRE(vocab_size > 0, key("vocab_size"), " must be positive, got ", vocab_size);
  LATTE_REQUIRE(d_model > 0, key("d_model"), " must be positive, got ", d_model);
  LATTE_REQUIRE(n_layers > 0, key("n_layers"), " must be positive, got ", n_layers);
  LATTE_REQUIRE(ffn_dim > 0, key("ffn_dim"), " must be positive, got ", ffn_dim);
  LATTE_REQUIRE(max_seq_len > 0, key("max_seq_len"), " must be positive, got ", max_seq_len);
  LATTE_REQUIRE(norm_eps > 0, key("norm_eps"), " must be positive, got ", norm_eps);
  LATTE_REQUIRE(rope_base > 1, key("rope_base"), " must be > 1, got ", rope_base);
  LATTE_REQUIRE(init.std > 0, key("init.std"), " must be positive, got ", init.std);
  if (rope_scaling.enabled) {
    LATTE_REQUIRE(rope_scaling.factor >= 1, key("rope_scaling.factor"), " must be >= 1, got ", rope_scaling.factor);
    LATTE_REQUIRE(rope_scaling.low_freq_factor > 0 && rope_scaling.high_freq_factor > rope_scaling.low_freq_factor,
                  key("rope_scaling.high_freq_factor"), " (", rope_scaling.high_freq_factor, ") must exceed low_freq_factor (",
                  rope_scaling.low_freq_factor, ") and both must be positive");
    LATTE_REQUIRE(rope_scaling.original_max_position_embeddings > 0, key("rope_scaling.original_max_position_embeddings"),
                  " must be positive, got ", rope_scaling.original_max_position_embeddings);
  }
  validate_attention(attention, key("attention"));
  for (const auto& [kind, cfg] : attention_overrides) {
    LATTE_REQUIRE(kind != attention.kind, key("attention_overrides"), ".", attention_kind_name(kind), " repeats the kind of ",
                  key("attention"), "; put those settings in ", key("attention"), " instead");
    validate_attention(cfg, key("attention_overrides") + "." + attention_kind_name(kind));
  }
  if (!layer_kinds.empty()) {
    LATTE_REQUIRE(static_cast<int64_t>(layer_kinds.size()) == n_layers, key("layer_kinds"), " has ", layer_kinds.size(),
                  " entries but ", key("n_layers"), " is ", n_layers, "; give one kind per layer");
    for (size_t i = 0; i < layer_kinds.size(); ++i)
      LATTE_REQUIRE(layer_kinds[i] == attention.kind || attention_overrides.count(layer_kinds[i]), key("layer_kinds"), "[", i,
                    "] is ", attention_kind_name(layer_kinds[i]), " but ", key("attention"), " is ",
                    attention_kind_name(attention.kind), "; add ", key("attention_overrides"), ".",
                    attention_kind_name(layer_kinds[i]), " with that kind's settings");
  }
}

YAML::Node ModelConfig::to_yaml() const {
  YAML::Node n;
  n["vocab_size"] = vocab_size;
  n["d_model"] = d_model;
  n["n_layers"] = n_layers;
  n["ffn_dim"] = ffn_dim;
  n["norm_eps"] = norm_eps;
  n["rope_base"] = rope_base;
  if (rope_scaling.enabled) {
    YAML::Node r;
    r["type"] = "llama3";
    r["factor"] = rope_scaling.factor;
    r["low_freq_factor"] = rope_scaling.low_freq_factor;
    r["high_freq_factor"] = rope_scaling.high_freq_factor;
    r["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    n["rope_scaling"] = r;
  }
  n["tie_embeddings"] = tie_embeddings;
  n["max_seq_len"] = max_seq_len;
  n["recompute"] = recompute;
  YAML::Node i;
  i["std"] = init.std;
  i["zero_out_proj"] = init.zero_out_proj;
  n["init"] = i;
  n["attention"] = attention_to_yaml(attention);
  if (!layer_kinds.empty()) {
    YAML::Node kinds(YAML::NodeType::Sequence);
    for (AttentionKind k : layer_kinds) kinds.push_back(attention_kind_name(k));
    kinds.SetStyle(YAML::EmitterStyle::Flow);
    n["layer_kinds"] = kinds;
  }
  if (!attention_overrides.empty()) {
    YAML::Node o;
    for (const auto& [kind, cfg] : attention_overrides) o[attention_kind_name(kind)] = attention_to_yaml(cfg);
    n["attention_overrides"] = o;
  }
  return n;
}

std::string ModelConfig::to_yaml_string() const {
  YAML::Node root;
  root["model"] = to_yaml();
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

ModelConfig parse_model_config(const YAML::Node& node, const std::string& where) {
  Section s(node, where);
  s.reject_unknown({"vocab_size", "d_model", "n_layers", "ffn_dim", "norm_eps", "rope_base", "rope_scaling",
                    "tie_embeddings", "max_seq_len", "recompute", "init", "attention", "layer_kinds",
                    "attention_overrides"});
  ModelConfig c;
  for (const char* required : {"vocab_size", "d_model", "n_layers", "ffn_dim", "max_seq_len", "attention"})
    LATTE_REQUIRE(s.has(required), s.key_path(required), " is required");
  c.vocab_size = s.integer("vocab_size", 0);
  c.d_model = s.integer("d_model", 0);
  c.n_layers = s.integer("n_layers", 0);
  c.ffn_dim = s.integer("ffn_dim", 0);
  c.norm_eps = s.real("norm_eps", 1e-6);
  c.rope_base = s.real("rope_base", 10000.0);
  c.tie_embeddings = s.boolean("tie_embeddings", true);
  c.max_seq_len = s.integer("max_seq_len", 0);
  c.recompute = s.boolean("recompute", false);
  LATTE_REQUIRE(c.d_model > 0, s.key_path("d_model"), " must be positive, got ", c.d_model);
  if (s.has("rope_scaling")) {
    Section r(s.child("rope_scaling"), s.key_path("rope_scaling"));
    r.reject_unknown({"type", "rope_type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
    const std::string type = r.has("type") ? r.text("type", "") : r.text("rope_type", "");
    LATTE_REQUIRE(type == "llama3", r.key_path("type"), ": only llama3 rope scaling is supported, got '", type,
                  "'; drop rope_scaling for plain RoPE");
    c.rope_scaling.enabled = true;
    c.rope_scaling.factor = r.real("factor", 8.0);
    c.rope_scaling.low_freq_factor = r.real("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = r.real("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings = r.integer("original_max_position_embeddings", 8192);
  }
  if (s.has("init")) {
    Section i(s.child("init"), s.key_path("init"));
    i.reject_unknown({"std", "zero_out_proj"});
    c.init.std = i.real("std", 0.02);
    c.init.zero_out_proj = i.boolean("zero_out_proj", true);
  }
  c.attention = parse_attention(s.child("attention"), s.key_path("attention"), c.d_model, nullptr);
  if (s.has("attention_overrides")) {
    const std::string path = s.key_path("attention_overrides");
    Section o(s.child("attention_overrides"), path);
    o.reject_unknown({"mha", "mla", "egmla", "mlra"});
    for (const auto& kv : s.child("attention_overrides")) {
      const std::string name = kv.first.as<std::string>();
      const AttentionKind kind = parse_kind(name, path + "." + name);
      c.attention_overrides[kind] = parse_attention(kv.second, path + "." + name, c.d_model, &kind);
    }
  }
  if (s.has("layer_kinds")) {
    const YAML::Node list = s.child("layer_kinds");
    LATTE_REQUIRE(list.IsSequence(), s.key_path("layer_kinds"), " must be a list of kinds, e.g. [mla, mla, mha]");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string item_path = s.key_path("layer_kinds") + "[" + std::to_string(i) + "]";
      LATTE_REQUIRE(list[i].IsScalar(), item_path, " must be a kind name");
      c.layer_kinds.push_back(parse_kind(list[i].as<std::string>(), item_path));
    }
  }
  c.validate(where);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    LATTE_FAIL(path, ": cannot open the config file");
  } catch (const YAML::Exception& e) {
    LATTE_FAIL(path, ": invalid YAML: ", e.what());
  }
  LATTE_REQUIRE(root.IsMap() && root["model"], path, ": no top-level 'model:' section (a model file or an experiment "
                                                     "file with a model section is expected)");
  return parse_model_config(root["model"], path + ": model");
}

// ---- derived numbers --------------------------------------------------------------------------------

ParamCounts count_parameters(const ModelConfig& cfg) {
  const int64_t d = cfg.d_model, V = cfg.vocab_size;
  int64_t matmul = 0, vectors = 0;
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    const AttentionParams a = attention_params(cfg.layer_attention(i), d);
    matmul += a.matmul + 3 * d * cfg.ffn_dim;  // attention + w_gate, w_up, w_down
    vectors += a.vectors + 2 * d;              // + attn_norm, mlp_norm
  }
  vectors += d;  // final_norm
  int64_t embedding = V * d;  // tok_embed
  if (!cfg.tie_embeddings) embedding += V * d;
  if (const AttentionConfig* eg = cfg.egmla_attention())
    embedding += static_cast<int64_t>(cfg.gate_groups().size()) * V * eg->gate.embed_dim;
  ParamCounts p;
  p.total = matmul + vectors + embedding;
  p.embedding = embedding;
  p.non_embedding = p.total - embedding;
  p.matmul = matmul + V * d;  // the LM head is a matmul, counted once whether tied or not
  return p;
}

double flops_per_token(const ModelConfig& cfg, int64_t context) {
  double attention = 0;
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    const AttentionConfig& a = cfg.layer_attention(i);
    attention += 6.0 * static_cast<double>(a.branches * a.n_heads * (a.qk_dim() + a.value_dim())) * context / 2.0;
  }
  return 6.0 * static_cast<double>(count_parameters(cfg).matmul) + attention;
}

KvFootprint kv_footprint(const ModelConfig& cfg) {
  KvFootprint k;
  k.elements_per_token_per_layer = cfg.layer_attention(0).kv_elements_per_token();
  for (int64_t i = 0; i < cfg.n_layers; ++i) k.elements_per_token += cfg.layer_attention(i).kv_elements_per_token();
  k.token_ids_per_token = cfg.needs_token_ids_in_cache() ? 1 : 0;
  k.mha_elements_per_token_per_layer = 2 * cfg.d_model;
  return k;
}

}  // namespace latte
