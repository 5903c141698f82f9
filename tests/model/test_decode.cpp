// KV-cache decoding equals the full forward at every position (token by token and in chunks, plain and
// absorbed); MLRA with one block and one branch is MLA; GQA is MHA with replicated K/V heads; generation.
#include "autograd/functions.h"
#include "autograd/node.h"
#include "layers/decode.h"
#include "layers/transformer.h"
#include "model_test_util.h"

using namespace latte;
using namespace latte::test;

namespace {

// A tiny config with the output projections live (zero wo would hide the attention from the logits).
ModelConfig live(ModelConfig c) {
  c.init.zero_out_proj = false;
  c.init.std = 0.1;
  return c;
}

std::vector<ModelConfig> decode_configs() {
  std::vector<ModelConfig> out;
  for (const std::string& v : tiny_variants()) out.push_back(live(tiny_config(v)));
  ModelConfig kv = live(tiny_config("egmla"));
  kv.attention.gate.position = GatePosition::KV;
  kv.attention.gate.share_layers = 2;
  out.push_back(kv);
  ModelConfig mixed = live(tiny_config("mla"));
  mixed.n_layers = 3;
  mixed.layer_kinds = {AttentionKind::MHA, AttentionKind::MLA, AttentionKind::EGMLA};
  mixed.attention_overrides[AttentionKind::MHA] = tiny_config("gqa").attention;
  AttentionConfig eg = tiny_config("egmla").attention;
  eg.gate.position = GatePosition::KV;
  mixed.attention_overrides[AttentionKind::EGMLA] = eg;
  mixed.validate();
  out.push_back(mixed);
  return out;
}

// Logits of positions [0, T) obtained by feeding `chunks` (sizes summing to T) through a cache.
Tensor cached_logits(const TransformerLM& model, const Tensor& ids, const std::vector<int64_t>& chunks, bool absorbed) {
  KVCache cache = model.make_cache(ids.size(0), ids.size(1));
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t n : chunks) {
    parts.push_back(model.forward_cached(ids.narrow(1, start, n).contiguous(), cache, absorbed));
    start += n;
  }
  EXPECT_EQ(cache.length(), ids.size(1));
  autograd::NoGradGuard no_grad;
  return concat(parts, 1);
}

}  // namespace

TEST(Decode, CachedEqualsFullForward) {
  for (const ModelConfig& cfg : decode_configs()) {
    SCOPED_TRACE(cfg.to_yaml_string());
    TransformerLM model(cfg, 21, DType::F64, Device::cpu());
    const int64_t B = 2, T = 9;
    Tensor ids = random_ids(B, T, cfg.vocab_size, 3);
    Tensor full;
    {
      autograd::NoGradGuard no_grad;
      full = model.logits(ids);  // (B, T, V)
    }
    for (bool absorbed : {false, true}) {
      EXPECT_LT(max_rel_diff(cached_logits(model, ids, std::vector<int64_t>(T, 1), absorbed), full), 1e-12) << "token by token, absorbed " << absorbed;
      EXPECT_LT(max_rel_diff(cached_logits(model, ids, {4, 2, 3}, absorbed), full), 1e-12) << "chunks, absorbed " << absorbed;
    }
  }
}

TEST(Decode, CacheLayoutsAndOverflow) {
  const ModelConfig mla = tiny_config("mla");
  TransformerLM model(mla, 1, DType::F32, Device::cpu());
  KVCache cache = model.make_cache(1, 4);
  EXPECT_EQ(cache.layer(0).latent.shape(), (Shape{1, 4, 32}));
  EXPECT_EQ(cache.layer(0).rope_key.shape(), (Shape{1, 4, 8}));
  EXPECT_FALSE(cache.has_token_ids());
  EXPECT_EQ(cache.bytes(), 2 * 4 * (32 + 8) * 4);
  model.forward_cached(random_ids(1, 3, mla.vocab_size, 1), cache);
  EXPECT_THROW(model.forward_cached(random_ids(1, 2, mla.vocab_size, 1), cache), Error);
  KVCache gqa = TransformerLM(tiny_config("gqa"), 1, DType::F32, Device::cpu()).make_cache(2, 5);
  EXPECT_EQ(gqa.layer(1).key.shape(), (Shape{2, 5, 2, 16}));
  ModelConfig kv = tiny_config("egmla");
  kv.attention.gate.position = GatePosition::KV;
  KVCache ids_cache(kv, 2, 5, DType::F32, Device::cpu());
  ASSERT_TRUE(ids_cache.has_token_ids());
  EXPECT_EQ(ids_cache.token_ids().shape(), (Shape{2, 5}));
}

// MLRA with blocks 1, branches 1 is MLA: kv_norms.0 = kv_norm, wkv_b [1, d_c, n_h (d_n + d_v)] = MLA's wkv_b^T.
TEST(Decode, MLRAOneBlockOneBranchIsMLA) {
  ModelConfig mla_cfg = live(tiny_config("mla"));
  mla_cfg.attention.q_rank = 24;
  mla_cfg.attention.latent_scale = true;
  ModelConfig mlra_cfg = mla_cfg;
  mlra_cfg.attention.kind = AttentionKind::MLRA;
  mlra_cfg.attention.blocks = 1;
  mlra_cfg.attention.branches = 1;
  mlra_cfg.validate();
  TransformerLM mla(mla_cfg, 5, DType::F64, Device::cpu());
  TransformerLM mlra(mlra_cfg, 6, DType::F64, Device::cpu());
  {
    autograd::NoGradGuard no_grad;
    for (const NamedParameter& p : mlra.named_parameters()) {
      std::string name = p.name;
      Tensor target = p.tensor;
      const size_t at = name.find("kv_norms.0");
      if (at != std::string::npos) name.replace(at, 10, "kv_norm");
      Tensor src = mla.parameter(name);
      if (name.find("wkv_b") != std::string::npos) src = src.transpose(0, 1).contiguous().unsqueeze(0);
      target.copy_(src);
    }
  }
  Tensor ids = random_ids(2, 7, mla_cfg.vocab_size, 8);
  autograd::NoGradGuard no_grad;
  EXPECT_LT(max_rel_diff(mlra.logits(ids), mla.logits(ids)), 1e-12);
}

// GQA (n_kv < n_h) equals MHA whose K/V heads are the GQA heads repeated per group; and a GQA config with
// n_kv = n_h is MHA itself (same parameters, same logits).
TEST(Decode, GQAEqualsMHAWithRepeatedHeads) {
  const ModelConfig gqa_cfg = live(tiny_config("gqa"));  // 4 heads, 2 kv heads of 16
  ModelConfig mha_cfg = gqa_cfg;
  mha_cfg.attention.n_kv_heads = mha_cfg.attention.n_heads;
  TransformerLM gqa(gqa_cfg, 5, DType::F64, Device::cpu());
  TransformerLM mha(mha_cfg, 6, DType::F64, Device::cpu());
  const int64_t group = 2, dh = 16;
  {
    autograd::NoGradGuard no_grad;
    for (const NamedParameter& p : mha.named_parameters()) {
      Tensor target = p.tensor;
      Tensor src = gqa.parameter(p.name);
      if (p.name.find("attn.wk") != std::string::npos || p.name.find("attn.wv") != std::string::npos) {
        // (n_kv d_h, d) -> (n_kv, 1, d_h, d) -> repeat each head `group` times -> (n_h d_h, d)
        const int64_t n_kv = gqa_cfg.attention.n_kv_heads, d = gqa_cfg.d_model;
        src = src.view({n_kv, 1, dh, d}).expand({n_kv, group, dh, d}).reshape({n_kv * group * dh, d});
      }
      target.copy_(src);
    }
  }
  Tensor ids = random_ids(2, 7, gqa_cfg.vocab_size, 8);
  autograd::NoGradGuard no_grad;
  EXPECT_LT(max_rel_diff(mha.logits(ids), gqa.logits(ids)), 1e-12);
  TransformerLM mha_from_file(live(tiny_config("mha")), 6, DType::F64, Device::cpu());
  TransformerLM gqa_full_kv(mha_cfg, 6, DType::F64, Device::cpu());
  EXPECT_EQ(mha_from_file.num_parameters(), gqa_full_kv.num_parameters());
  EXPECT_EQ(max_rel_diff(mha_from_file.logits(ids), gqa_full_kv.logits(ids)), 0.0);
}

TEST(Decode, GenerateGreedyMatchesArgmaxOfFullForward) {
  for (const std::string& v : {std::string("mla"), std::string("mlra4"), std::string("gqa")}) {
    SCOPED_TRACE(v);
    const ModelConfig cfg = live(tiny_config(v));
    TransformerLM model(cfg, 2, DType::F64, Device::cpu());
    GenerateOptions opt;
    opt.greedy = true;
    opt.max_new_tokens = 6;
    opt.absorbed = v != "gqa";
    opt.prefill_chunk = 2;
    std::vector<int32_t> prompt = {3, 17, 5};
    std::vector<int32_t> produced;
    std::vector<std::vector<int32_t>> out = generate(model, {prompt}, opt, [&](int64_t, int32_t t) { produced.push_back(t); });
    ASSERT_EQ(out[0].size(), 6u);
    EXPECT_EQ(out[0], produced);
    // Re-derive each token with a full forward over the sequence so far.
    std::vector<int32_t> seq = prompt;
    autograd::NoGradGuard no_grad;
    for (int32_t tok : out[0]) {
      std::vector<double> v(seq.begin(), seq.end());
      Tensor logits = model.logits(Tensor::from_vector(v, {1, static_cast<int64_t>(seq.size())}, DType::I32));
      std::vector<double> last = logits.select(1, static_cast<int64_t>(seq.size()) - 1).to_vector();
      EXPECT_EQ(std::max_element(last.begin(), last.end()) - last.begin(), tok);
      seq.push_back(tok);
    }
  }
}

TEST(Decode, SamplingRespectsTopKAndSeed) {
  std::vector<float> logits = {0.0f, 5.0f, 4.9f, -3.0f, 4.8f};
  GenerateOptions opt;
  opt.top_k = 2;
  for (double draw : {0.01, 0.3, 0.6, 0.99, 1.0}) {
    const int32_t t = sample_token(logits, opt, draw);
    EXPECT_TRUE(t == 1 || t == 2) << draw;
  }
  EXPECT_EQ(sample_token(logits, opt, 0.01), 1);
  EXPECT_EQ(sample_token(logits, opt, 1.0), 2);
  opt.greedy = true;
  EXPECT_EQ(sample_token(logits, opt, 0.99), 1);
  const ModelConfig cfg = tiny_config("mqa");
  TransformerLM model(cfg, 2, DType::F32, Device::cpu());
  GenerateOptions s;
  s.seed = 9;
  s.max_new_tokens = 5;
  EXPECT_EQ(generate(model, {{1, 2}}, s), generate(model, {{1, 2}}, s));
  EXPECT_THROW(generate(model, {{1, 2000}}, s), Error);
  s.max_new_tokens = cfg.max_seq_len;
  EXPECT_THROW(generate(model, {{1, 2}}, s), Error);
}
