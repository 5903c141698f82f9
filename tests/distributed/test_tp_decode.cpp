// Decoding with the KV cache under tensor parallelism (layers/tensor_parallel.h, docs/tensor_parallel.md),
// on tp = 2 and tp = 4 ranks (with 4 ranks tp = 2 runs as two TP groups at once). For every variant (MLRA-4,
// MLRA-2 and MLRA with 4 head groups in both MLRA layouts, MLA, EG-MLA, MHA, GQA with n_kv < tp), a TP model
// built from the same seed as a tp = 1 model holds that model's weight shards, and a prefill followed by
// single-token steps (plain and absorbed) gives the logits of the tp = 1 decode and of the tp = 1 full
// forward to 1e-10 in f64; every rank's KVCache::bytes() is the per-rank formula (MLRA Blocks at tp = 4:
// d_l + d_r per token per layer); generate() samples the tp = 1 tokens; bad layouts are refused clearly.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "core/philox.h"
#include "dist_test_util.h"
#include "distributed/process_group.h"
#include "layers/decode.h"
#include "layers/model_config.h"
#include "layers/tp_layout.h"
#include "layers/transformer.h"

using namespace latte;
using namespace latte::dist;
using latte::test::rel_error;
using latte::test::world;

namespace {

constexpr int64_t kBatch = 2, kPrefill = 5, kSteps = 4, kVocab = 128, kLayers = 2;
constexpr double kTol = 1e-10;  // f64: only the summation order differs (all-reduces of partial sums)
constexpr uint64_t kSeed = 77;

struct Variant {
  std::string name;
  std::string attention;  // the YAML of model.attention
  bool tie = true;
};

ModelConfig config_of(const Variant& v) {
  const std::string text = "model: {vocab_size: " + std::to_string(kVocab) + ", d_model: 32, n_layers: " +
                           std::to_string(kLayers) + ", ffn_dim: 64, max_seq_len: 16, tie_embeddings: " +
                           (v.tie ? "true" : "false") + ", init: {std: 0.05, zero_out_proj: false}, attention: " +
                           v.attention + "}";
  return parse_model_config(YAML::Load(text)["model"], "model");
}

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"mlra4",
       "{kind: mlra, n_heads: 4, kv_rank: 32, q_rank: 0, nope_dim: 8, rope_dim: 8, v_dim: 8, latent_scale: true,"
       " blocks: 4, branches: 4}",
       false},
      {"mlra2",
       "{kind: mlra, n_heads: 8, kv_rank: 32, q_rank: 16, nope_dim: 8, rope_dim: 8, v_dim: 8, latent_scale: true,"
       " blocks: 4, branches: 2}"},
      {"mlra_g4",  // 4 head groups, one branch: at tp = 2 each rank serves two groups that are not adjacent
       "{kind: mlra, n_heads: 16, kv_rank: 32, q_rank: 0, nope_dim: 8, rope_dim: 8, v_dim: 8, blocks: 4, branches: 1}"},
      {"mla", "{kind: mla, n_heads: 4, kv_rank: 16, q_rank: 12, nope_dim: 8, rope_dim: 4, v_dim: 8, latent_scale: true}"},
      {"egmla_latent",
       "{kind: egmla, n_heads: 4, kv_rank: 16, q_rank: 0, nope_dim: 8, rope_dim: 4, v_dim: 8,"
       " gate: {position: latent, share_layers: 2, embed_dim: 8}}"},
      {"egmla_kv",
       "{kind: egmla, n_heads: 4, kv_rank: 16, q_rank: 0, nope_dim: 8, rope_dim: 4, v_dim: 8,"
       " gate: {position: kv, share_layers: 1, embed_dim: 8}}"},
      {"mha", "{kind: mha, n_heads: 4, n_kv_heads: 4, head_dim: 8}"},
      {"gqa", "{kind: mha, n_heads: 4, n_kv_heads: 2, head_dim: 8}", false},  // n_kv < tp at tp = 4
  };
  return v;
}

Tensor tokens(int64_t B, int64_t T, uint64_t seed) {
  std::vector<double> v(static_cast<size_t>(B * T));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::floor(philox::uniform(seed, 0, i) * 0.999999 * kVocab);
  return Tensor::from_vector(v, {B, T}, DType::I32);
}

std::shared_ptr<ProcessGroup> tp_group_of(int tp) {
  const int rank = world().rank();
  return new_group(world(), rank / tp, rank % tp, Device::cpu(), "tpdec" + std::to_string(tp));
}

// Prefill kPrefill positions, then one token per call: the logits of every position, (B, T, V).
Tensor decode_logits(const TransformerLM& model, const Tensor& ids, bool absorbed) {
  KVCache cache = model.make_cache(ids.size(0), ids.size(1));
  std::vector<Tensor> parts{model.forward_cached(ids.narrow(1, 0, kPrefill).contiguous(), cache, absorbed)};
  for (int64_t t = kPrefill; t < ids.size(1); ++t)
    parts.push_back(model.forward_cached(ids.narrow(1, t, 1).contiguous(), cache, absorbed));
  EXPECT_EQ(cache.length(), ids.size(1));
  autograd::NoGradGuard no_grad;
  return concat(parts, 1);
}

// The per-rank cache size from the spec's per-token widths, divided as the layout divides them.
int64_t expected_cache_bytes(const ModelConfig& cfg, const TensorParallelContext& tp, int64_t B, int64_t cap) {
  int64_t per_token = 0;
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    const AttentionConfig& a = cfg.layer_attention(i);
    if (!a.is_latent()) {
      const int64_t kv_heads = a.n_kv_heads % tp.tp_size == 0 ? a.n_kv_heads / tp.tp_size : 1;
      per_token += 2 * kv_heads * a.head_dim;
    } else if (a.kind == AttentionKind::MLRA && tp.mlra_blocks()) {
      per_token += a.kv_rank / tp.tp_size + a.rope_dim;
    } else {
      per_token += a.kv_rank + a.rope_dim;
    }
  }
  const int64_t ids = cfg.needs_token_ids_in_cache() ? 4 : 0;  // one i32 per token
  return B * cap * (per_token * 8 + ids);
}

void check_variant(const Variant& v, MlraTpLayout layout, ProcessGroup& group) {
  const int tp = group.size(), rank = group.rank();
  SCOPED_TRACE(v.name + " at tp = " + std::to_string(tp) + ", MLRA layout " + mlra_tp_layout_name(layout));
  const ModelConfig cfg = config_of(v);
  const int64_t T = kPrefill + kSteps;
  const Tensor ids = tokens(kBatch, T, kSeed + 3);

  TransformerLM ref(cfg, kSeed, DType::F64, Device::cpu());
  const TensorParallelContext ctx = TensorParallelContext::of(&group, layout);
  TransformerLM model(cfg, kSeed, DType::F64, Device::cpu(), ctx);

  // The shards are this rank's slices of the tp = 1 weights (so split_to_tp of a checkpoint loads them).
  const ShardLayouts layouts = model.shard_layouts();
  for (const NamedParameter& p : model.named_parameters()) {
    const Tensor expected = shard_of(ref.parameter(p.name), layouts.at(p.name), rank, tp);
    ASSERT_EQ(p.tensor.shape(), expected.shape()) << p.name;
    EXPECT_EQ(p.tensor.to_vector(), expected.to_vector()) << p.name << " (" << layouts.at(p.name).str() << ")";
  }

  Tensor full;
  {
    autograd::NoGradGuard no_grad;
    full = ref.logits(ids);  // (B, T, V)
  }
  for (bool absorbed : {false, true}) {
    SCOPED_TRACE(absorbed ? "absorbed" : "plain");
    const Tensor ref_decode = decode_logits(ref, ids, absorbed);
    const Tensor tp_decode = decode_logits(model, ids, absorbed);
    EXPECT_LT(rel_error(ref_decode, full), kTol) << "tp = 1 decode vs the full forward";
    EXPECT_LT(rel_error(tp_decode, ref_decode), kTol) << "TP decode vs tp = 1 decode";
    EXPECT_LT(rel_error(tp_decode, full), kTol) << "TP decode vs the full forward";
    // The single-token steps alone (the decode kernels' path), compared position by position.
    EXPECT_LT(rel_error(tp_decode.narrow(1, kPrefill, kSteps).contiguous(), full.narrow(1, kPrefill, kSteps).contiguous()),
              kTol);
  }

  // Per-rank cache bytes.
  const int64_t cap = 12;
  const KVCache cache = model.make_cache(kBatch, cap);
  EXPECT_EQ(cache.bytes(), expected_cache_bytes(cfg, ctx, kBatch, cap));
  EXPECT_EQ(cache.bytes_per_position() * cap, cache.bytes());
  const AttentionConfig& a = cfg.attention;
  if (a.kind == AttentionKind::MLRA)
    EXPECT_EQ(cache.layer(0).latent.size(2), layout == MlraTpLayout::Blocks ? a.kv_rank / tp : a.kv_rank);
  if (a.kind == AttentionKind::MLRA && layout == MlraTpLayout::Blocks && tp == a.blocks) {
    // The spec's decode layout: one block per rank, d_l + d_r per token per layer.
    EXPECT_EQ(cache.bytes(), kBatch * cap * kLayers * (a.block_dim() + a.rope_dim) * 8);
    EXPECT_EQ(local_kv_elements_per_token(a, ctx), a.block_dim() + a.rope_dim);
  }
  if (a.kind == AttentionKind::MLA) EXPECT_EQ(cache.bytes(), kBatch * cap * kLayers * (a.kv_rank + a.rope_dim) * 8);
}

void check_all(int tp) {
  if (world().size() % tp != 0) GTEST_SKIP() << "world size " << world().size() << " is not a multiple of tp " << tp;
  auto group = tp_group_of(tp);
  for (const Variant& v : variants()) {
    check_variant(v, MlraTpLayout::Heads, *group);
    if (v.name.rfind("mlra", 0) == 0) check_variant(v, MlraTpLayout::Blocks, *group);
  }
}

}  // namespace

TEST(TpDecode, EveryVariantMatchesTp1AtTp2) { check_all(2); }

TEST(TpDecode, EveryVariantMatchesTp1AtTp4) { check_all(4); }

// MLRA-4 over as many ranks as the world has (tp = 2 or 4): the Blocks layout holds blocks r, r + tp, ...
// of wkv_b and of the latent, whole wq / wo, and its cache is d_c / tp + d_r wide.
TEST(TpDecode, MlraBlocksLayout) {
  const int tp = world().size();
  auto group = tp_group_of(tp);
  const ModelConfig cfg = config_of(variants()[0]);
  const TensorParallelContext ctx = TensorParallelContext::of(group.get(), MlraTpLayout::Blocks);
  TransformerLM model(cfg, kSeed, DType::F32, Device::cpu(), ctx);
  EXPECT_EQ(model.shard_layout("layers.0.attn.wkv_b.weight"), ShardLayout::split_dim(0, 4 / tp));
  EXPECT_EQ(model.parameter("layers.0.attn.wkv_b.weight").shape(), (Shape{4 / tp, 8, 4 * 16}));
  EXPECT_FALSE(model.shard_layout("layers.0.attn.wq.weight").split);
  EXPECT_FALSE(model.shard_layout("layers.0.attn.wo.weight").split);
  EXPECT_TRUE(model.shard_layout("layers.0.mlp.w_up.weight").split);  // the MLP and the vocabulary split as in training
  const MlraShard shard = mlra_shard(cfg.attention, ctx);
  EXPECT_EQ(shard.blocks, 4 / tp);
  EXPECT_EQ(shard.heads, 4);
  EXPECT_EQ(shard.branches, 4 / tp);
  EXPECT_EQ(shard.block_ids[0], group->rank());
  KVCache cache = model.make_cache(1, 8);
  EXPECT_EQ(cache.layer(1).latent.shape(), (Shape{1, 8, 32 / tp}));
  EXPECT_EQ(cache.layer(1).rope_key.shape(), (Shape{1, 8, 8}));

  // MLRA-2 at tp = 4: rank r serves head group r mod 2 with its one block (one branch of two).
  if (tp == 4) {
    const MlraShard s2 = mlra_shard(config_of(variants()[1]).attention, ctx);
    EXPECT_EQ(s2.head_groups, (std::vector<int64_t>{group->rank() % 2}));
    EXPECT_EQ(s2.heads, 4);
    EXPECT_EQ(s2.branches, 1);
  }

  // A cache made for another layout is refused with the fix.
  TransformerLM heads(cfg, kSeed, DType::F32, Device::cpu(), TensorParallelContext::of(group.get()));
  KVCache wrong = heads.make_cache(1, 8);
  try {
    model.forward_cached(tokens(1, 2, 5), wrong);
    ADD_FAILURE() << "a Heads-layout cache should be refused by a Blocks-layout model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("make_cache"), std::string::npos) << e.what();
  }
}

TEST(TpDecode, BlocksLayoutNeedsBlocksDividedByTp) {
  const int tp = world().size();
  auto group = tp_group_of(tp);
  Variant v{"mlra_l2", "{kind: mlra, n_heads: 4, kv_rank: 16, q_rank: 0, nope_dim: 8, rope_dim: 4, v_dim: 8, blocks: 2,"
                       " branches: 2}"};
  const ModelConfig cfg = config_of(v);
  const TensorParallelContext ctx = TensorParallelContext::of(group.get(), MlraTpLayout::Blocks);
  if (tp == 2) {
    EXPECT_NO_THROW(TransformerLM(cfg, kSeed, DType::F32, Device::cpu(), ctx));
    return;
  }
  try {
    TransformerLM model(cfg, kSeed, DType::F32, Device::cpu(), ctx);
    ADD_FAILURE() << "2 blocks over tp = " << tp << " should be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.attention.blocks (2) does not divide by tp"), std::string::npos) << e.what();
  }
}

// generate() under TP samples exactly the tp = 1 tokens (greedy and sampled), every rank the same.
TEST(TpDecode, GenerateMatchesTp1) {
  const int tp = world().size();
  auto group = tp_group_of(tp);
  for (const Variant& v : {variants()[0], variants()[3], variants()[7]}) {
    SCOPED_TRACE(v.name);
    const ModelConfig cfg = config_of(v);
    TransformerLM ref(cfg, kSeed, DType::F64, Device::cpu());
    TransformerLM model(cfg, kSeed, DType::F64, Device::cpu(), TensorParallelContext::of(group.get(), MlraTpLayout::Blocks));
    const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9}, {7, 3, 2}};
    for (bool greedy : {true, false}) {
      GenerateOptions o;
      o.max_new_tokens = 6;
      o.greedy = greedy;
      o.top_k = 20;
      o.seed = 11;
      o.absorbed = true;
      EXPECT_EQ(generate(model, prompts, o), generate(ref, prompts, o)) << (greedy ? "greedy" : "sampled");
    }
  }
}
