#include "train/experiment.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "kernels/attention_backend.h"
#include "train/yaml_reader.h"

namespace fs = std::filesystem;

namespace latte {

namespace {

// Deep merge: maps merge key by key, anything else in `over` replaces `base`.
YAML::Node merge(const YAML::Node& base, const YAML::Node& over) {
  if (!base.IsMap() || !over.IsMap()) return YAML::Clone(over);
  YAML::Node out = YAML::Clone(base);
  for (const auto& kv : over) {
    const std::string key = kv.first.as<std::string>();
    out[key] = out[key] ? merge(out[key], kv.second) : YAML::Clone(kv.second);
  }
  return out;
}

YAML::Node load_chain(const std::string& path, std::set<std::string>& seen) {
  std::string canonical = fs::weakly_canonical(path).string();
  LATTE_REQUIRE(fs::exists(path), path, ": config file not found");
  LATTE_REQUIRE(seen.insert(canonical).second, path, ": base: chain loops back to this file");
  YAML::Node node;
  try {
    node = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    LATTE_FAIL(path, ": invalid YAML at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg);
  }
  if (node.IsNull()) node = YAML::Node(YAML::NodeType::Map);
  LATTE_REQUIRE(node.IsMap(), path, ": the top level must be a mapping of sections (model:, train:, ...)");
  if (!node["base"]) return node;
  LATTE_REQUIRE(node["base"].IsScalar(), path, ": base must be a file name");
  fs::path base_path = fs::path(path).parent_path() / node["base"].as<std::string>();
  if (!fs::exists(base_path)) base_path = node["base"].as<std::string>();  // also relative to the cwd
  YAML::Node base = load_chain(base_path.string(), seen);
  node.remove("base");
  return merge(base, node);
}

}  // namespace

YAML::Node load_yaml_with_bases(const std::string& path) {
  std::set<std::string> seen;
  return load_chain(path, seen);
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  LATTE_REQUIRE(eq != std::string::npos && eq > 0, "--set ", assignment, ": expected key.path=value, e.g. train.steps=100");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception&) {
    value = YAML::Node(text);
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  // yaml-cpp nodes are handles: walk down by reassigning, creating maps as needed.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsMap()) {
      LATTE_REQUIRE(!next.IsDefined() || next.IsNull(), "--set ", assignment, ": ", parts[i], " is not a section");
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = value;
}

int64_t ExperimentConfig::grad_accum_steps() const {
  const int64_t per_step = tokens_per_micro_batch() * parallel.dp;
  return train.global_batch_tokens == 0 ? 1 : train.global_batch_tokens / per_step;
}

ExperimentConfig parse_experiment(const YAML::Node& resolved, const std::string& source) {
  ExperimentConfig cfg;
  cfg.source = source;
  cfg.resolved = YAML::Clone(resolved);
  YamlReader top(resolved, "", source);

  LATTE_REQUIRE(top.has("model"), source, ": the model: section is missing (see configs/models/ for examples)");
  cfg.model = parse_model_config(top.raw("model"), "model");

  YamlReader t = top.child("train");
  TrainConfig& tr = cfg.train;
  tr.steps = t.get("steps", tr.steps);
  tr.seed = t.get("seed", tr.seed);
  tr.out_dir = t.get("out_dir", tr.out_dir);
  tr.micro_batch = t.get("micro_batch", tr.micro_batch);
  tr.seq_len = t.get("seq_len", tr.seq_len);
  tr.global_batch_tokens = t.get("global_batch_tokens", tr.global_batch_tokens);
  tr.lr = t.get("lr", tr.lr);
  tr.min_lr_ratio = t.get("min_lr_ratio", tr.min_lr_ratio);
  tr.warmup_steps = t.get("warmup_steps", tr.warmup_steps);
  tr.schedule = t.get("schedule", tr.schedule);
  tr.wsd_decay_fraction = t.get("wsd_decay_fraction", tr.wsd_decay_fraction);
  tr.weight_decay = t.get("weight_decay", tr.weight_decay);
  tr.decay_norms_and_embeddings = t.get("decay_norms_and_embeddings", tr.decay_norms_and_embeddings);
  tr.beta1 = t.get("beta1", tr.beta1);
  tr.beta2 = t.get("beta2", tr.beta2);
  tr.eps = t.get("eps", tr.eps);
  tr.grad_clip = t.get("grad_clip", tr.grad_clip);
  tr.device = t.get("device", tr.device);
  tr.dtype = t.get("dtype", tr.dtype);
  tr.max_bad_steps = t.get("max_bad_steps", tr.max_bad_steps);
  tr.spike_factor = t.get("spike_factor", tr.spike_factor);
  tr.stop_after = t.get("stop_after", tr.stop_after);
  tr.init_from = t.get("init_from", tr.init_from);
  tr.distill = parse_distill_config(t.raw("distill"), t.path("distill"), source);
  tr.attention_backend = t.get("attention_backend", tr.attention_backend);
  parse_attention_backend(tr.attention_backend, source + ": train.attention_backend");
  t.finish();

  YamlReader d = top.child("data");
  cfg.data.train = d.get_strings("train");
  cfg.data.val = d.get_strings("val");
  cfg.data.tokenizer = d.get("tokenizer", cfg.data.tokenizer);
  cfg.data.tokenizer_dir = d.get("tokenizer_dir", cfg.data.tokenizer_dir);
  d.finish();

  YamlReader p = top.child("parallel");
  cfg.parallel.dp = p.get("dp", cfg.parallel.dp);
  cfg.parallel.tp = p.get("tp", cfg.parallel.tp);
  cfg.parallel.zero1 = p.get("zero1", cfg.parallel.zero1);
  p.finish();

  YamlReader c = top.child("checkpoint");
  cfg.checkpoint.every = c.get("every", cfg.checkpoint.every);
  cfg.checkpoint.keep_last = c.get("keep_last", cfg.checkpoint.keep_last);
  cfg.checkpoint.at_end = c.get("at_end", cfg.checkpoint.at_end);
  cfg.checkpoint.dir = c.get("dir", (fs::path(tr.out_dir) / "ckpt").string());
  c.finish();

  YamlReader e = top.child("eval");
  cfg.eval.every = e.get("every", cfg.eval.every);
  cfg.eval.batches = e.get("batches", cfg.eval.batches);
  if (e.has("sets")) {
    const YAML::Node sets = e.raw("sets");
    if (!sets.IsMap()) e.fail("sets", "must map set names to shard globs, e.g. {wikipedia: data/val/wiki_*.bin, c4: [a.bin, b.bin]}");
    for (const auto& kv : sets) {
      const std::string name = kv.first.as<std::string>();
      std::vector<std::string> globs;
      if (kv.second.IsScalar()) {
        globs.push_back(kv.second.as<std::string>());
      } else if (kv.second.IsSequence()) {
        for (const auto& g : kv.second) {
          if (!g.IsScalar()) e.fail("sets." + name, "must be a shard glob or a list of globs");
          globs.push_back(g.as<std::string>());
        }
      }
      if (globs.empty() || globs.front().empty()) e.fail("sets." + name, "needs a shard glob or a list of globs");
      cfg.eval.sets.emplace_back(name, std::move(globs));
    }
  }
  cfg.eval.tasks = e.get_strings("tasks");
  cfg.eval.task_limit = e.get("task_limit", cfg.eval.task_limit);
  cfg.eval.task_batch = e.get("task_batch", cfg.eval.task_batch);
  e.finish();

  YamlReader l = top.child("log");
  cfg.log.every = l.get("every", cfg.log.every);
  l.finish();
  top.finish();

  // Combinations that cannot work.
  auto bad = [&](const std::string& key, const std::string& msg) { LATTE_FAIL(source, ": ", key, " ", msg); };
  if (tr.steps <= 0) bad("train.steps", str("must be positive, got ", tr.steps));
  if (tr.micro_batch <= 0) bad("train.micro_batch", str("must be positive, got ", tr.micro_batch));
  if (tr.seq_len <= 0) bad("train.seq_len", str("must be positive, got ", tr.seq_len));
  if (cfg.model.max_seq_len > 0 && tr.seq_len > cfg.model.max_seq_len)
    bad("train.seq_len", str("= ", tr.seq_len, " exceeds model.max_seq_len = ", cfg.model.max_seq_len));
  if (tr.lr <= 0) bad("train.lr", str("must be positive, got ", tr.lr));
  if (tr.schedule != "cosine" && tr.schedule != "wsd" && tr.schedule != "constant")
    bad("train.schedule", str("must be cosine, wsd or constant, got '", tr.schedule, "'"));
  if (tr.device != "auto" && tr.device != "cpu" && tr.device != "cuda" && tr.device.rfind("cuda:", 0) != 0)
    bad("train.device", str("must be auto, cpu or cuda, got '", tr.device, "'"));
  if (tr.dtype != "auto" && tr.dtype != "bf16" && tr.dtype != "f32" && tr.dtype != "f64")
    bad("train.dtype", str("must be auto, bf16, f32 or f64, got '", tr.dtype, "'"));
  if (cfg.parallel.dp < 1 || cfg.parallel.tp < 1) bad("parallel", "dp and tp must be >= 1");
  const int64_t per_step = cfg.tokens_per_micro_batch() * cfg.parallel.dp;
  if (tr.global_batch_tokens != 0 && (tr.global_batch_tokens < per_step || tr.global_batch_tokens % per_step != 0))
    bad("train.global_batch_tokens",
        str("= ", tr.global_batch_tokens, " must be a positive multiple of micro_batch * seq_len * dp = ", per_step,
            " (use ", std::max<int64_t>(1, tr.global_batch_tokens / per_step) * per_step, ")"));
  if (tr.warmup_steps < 0 || tr.warmup_steps > tr.steps)
    bad("train.warmup_steps", str("= ", tr.warmup_steps, " must be between 0 and train.steps = ", tr.steps));
  if (cfg.checkpoint.keep_last < 1) bad("checkpoint.keep_last", "must be >= 1");
  if (cfg.eval.task_limit < 0) bad("eval.task_limit", str("must be >= 0 (0 = every item), got ", cfg.eval.task_limit));
  if (cfg.eval.task_batch < 0) bad("eval.task_batch", str("must be >= 0 (0 = train.micro_batch), got ", cfg.eval.task_batch));
  return cfg;
}

ExperimentConfig load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml_with_bases(path);
  for (const std::string& o : overrides) apply_override(root, o);
  return parse_experiment(root, path);
}

}  // namespace latte
