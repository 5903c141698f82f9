// Tensor-parallel shard layouts without MPI (layers/tp_layout.h): models built for rank r of tp with
// TensorParallelContext::layout_only hold exactly split_to_tp(tp = 1 weights, r), merge_tp_shards of
// every rank's shards gives the tp = 1 weights back, shard files carry their layouts, each parameter
// has the spec's layout, and configs that cannot be split fail with a message naming the key.
// (The numerics of TP forward/backward are tested under mpirun: tests/distributed/test_tp_model.cpp.)
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <functional>

#include "layers/safetensors.h"
#include "layers/tp_layout.h"
#include "layers/transformer.h"
#include "model_test_util.h"
#include "tests/test_util.h"

using namespace latte;
using latte::test::config_from_yaml;
using latte::test::tiny_config;
using latte::test::tiny_variants;

namespace {

NamedTensors named(const Module& m) {
  NamedTensors out;
  for (const NamedParameter& p : m.named_parameters()) out.emplace_back(p.name, p.tensor);
  return out;
}

void expect_same(const NamedTensors& a, const NamedTensors& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first) << what;
    EXPECT_EQ(a[i].second.shape(), b[i].second.shape()) << what << ": " << a[i].first;
    EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << what << ": " << a[i].first;
  }
}

bool splits(const ModelConfig& cfg, int64_t tp) {
  try {
    check_tensor_parallel(cfg, tp);
    return true;
  } catch (const Error&) {
    return false;
  }
}

using test::error_of;

}  // namespace

TEST(TpLayout, ShardOfAndMergeWithGroups) {
  // (8, 3) split on dim 0 in 2 groups over tp 2: rank r holds rows {2r, 2r+1} of group 0 and {4+2r, 5+2r}.
  Tensor full = Tensor::arange(24, DType::F32).view({8, 3});
  const ShardLayout layout = ShardLayout::split_dim(0, 2);
  Tensor r1 = shard_of(full, layout, 1, 2);
  EXPECT_EQ(r1.shape(), (Shape{4, 3}));
  EXPECT_EQ(r1.to_vector(), (std::vector<double>{6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23}));
  EXPECT_EQ(merge_shards({shard_of(full, layout, 0, 2), r1}, layout).to_vector(), full.to_vector());
  // Columns (row-parallel) and a middle dim.
  Tensor cube = Tensor::arange(2 * 4 * 6, DType::F32).view({2, 4, 6});
  for (int dim = 0; dim < 3; ++dim)
    for (int64_t tp : {1, 2}) {
      const ShardLayout l = ShardLayout::split_dim(dim);
      std::vector<Tensor> shards;
      for (int64_t r = 0; r < tp; ++r) shards.push_back(shard_of(cube, l, r, tp));
      EXPECT_EQ(merge_shards(shards, l).to_vector(), cube.to_vector()) << "dim " << dim << " tp " << tp;
    }
  EXPECT_EQ(shard_of(cube, ShardLayout::split_dim(2), 1, 2).narrow(2, 0, 1).to_vector(),
            (std::vector<double>{3, 9, 15, 21, 27, 33, 39, 45}));
  EXPECT_NE(error_of([&] { shard_of(full, ShardLayout::split_dim(1), 0, 2); }).find("does not divide"), std::string::npos);
}

TEST(TpLayout, ShardsAreSlicesOfTheTp1WeightsAndMergeBack) {
  std::vector<std::pair<std::string, ModelConfig>> configs;
  for (const std::string& variant : tiny_variants()) configs.emplace_back(variant, tiny_config(variant));
  // Row-parallel weights drawn at init (zero_out_proj off), and wide enough (d = 128 rows of w_down / wo)
  // that their shards are cut from the whole drawn tensor rather than drawn run by run.
  configs.emplace_back("wide", config_from_yaml("model: {vocab_size: 128, d_model: 128, n_layers: 1, ffn_dim: 64, max_seq_len: 8,"
                                                " tie_embeddings: false, init: {zero_out_proj: false},"
                                                " attention: {kind: mha, n_heads: 4, n_kv_heads: 2, head_dim: 8}}"));
  for (const auto& [variant, cfg] : configs) {
    const TransformerLM full(cfg, 7, DType::F32, Device::cpu());
    const NamedTensors weights = named(full);
    for (int64_t tp : {2, 4}) {
      if (!splits(cfg, tp)) continue;  // mlra2-tiny: 2 heads per block do not split over 4
      SCOPED_TRACE(variant + " tp " + std::to_string(tp));
      std::vector<NamedTensors> per_rank;
      ShardLayouts layouts;
      for (int64_t r = 0; r < tp; ++r) {
        const TransformerLM shard(cfg, 7, DType::F32, Device::cpu(), TensorParallelContext::layout_only(r, tp));
        layouts = shard.shard_layouts();
        per_rank.push_back(named(shard));
        expect_same(per_rank.back(), split_to_tp(weights, layouts, r, tp), "rank " + std::to_string(r));
        EXPECT_EQ(shard.tp_sharded_parameters().size() + shard.tp_replicated_parameters().size(), shard.parameters().size());
      }
      expect_same(merge_tp_shards(per_rank, layouts), weights, "merged");
    }
  }
}

TEST(TpLayout, SpecLayouts) {
  auto layout_of = [](const std::string& variant, const std::string& name, int64_t tp = 2) {
    const TransformerLM m(tiny_config(variant), 1, DType::F32, Device::cpu(), TensorParallelContext::layout_only(0, tp));
    return m.shard_layout(name);
  };
  const ShardLayout rows = ShardLayout::split_dim(0), cols = ShardLayout::split_dim(1), rep = ShardLayout::replicated();
  EXPECT_EQ(layout_of("mha", "tok_embed.weight"), rows);
  EXPECT_EQ(layout_of("mha", "layers.0.attn.wq.weight"), rows);
  EXPECT_EQ(layout_of("mha", "layers.0.attn.wk.weight"), rows);
  EXPECT_EQ(layout_of("mha", "layers.0.attn.wo.weight"), cols);
  EXPECT_EQ(layout_of("mha", "layers.0.mlp.w_gate.weight"), rows);
  EXPECT_EQ(layout_of("mha", "layers.0.mlp.w_up.weight"), rows);
  EXPECT_EQ(layout_of("mha", "layers.0.mlp.w_down.weight"), cols);
  EXPECT_EQ(layout_of("mha", "layers.0.attn_norm.weight"), rep);
  EXPECT_EQ(layout_of("mha", "final_norm.weight"), rep);
  EXPECT_EQ(layout_of("gqa", "layers.0.attn.wk.weight", 4), rep);  // n_kv = 2 < tp = 4
  EXPECT_EQ(layout_of("mqa", "layers.0.attn.wv.weight"), rep);
  EXPECT_EQ(layout_of("mla", "layers.0.attn.wkv_a.weight"), rep);
  EXPECT_EQ(layout_of("mla", "layers.0.attn.kv_norm.weight"), rep);
  EXPECT_EQ(layout_of("mla", "layers.0.attn.wkv_b.weight"), rows);
  EXPECT_EQ(layout_of("mlra4", "layers.0.attn.wq_a.weight"), rep);
  EXPECT_EQ(layout_of("mlra4", "layers.0.attn.q_norm.weight"), rep);
  EXPECT_EQ(layout_of("mlra4", "layers.0.attn.wq_b.weight"), rows);
  EXPECT_EQ(layout_of("mlra4", "layers.0.attn.kv_norms.3.weight"), rep);
  EXPECT_EQ(layout_of("mlra4", "layers.0.attn.wkv_b.weight"), ShardLayout::split_dim(2));
  EXPECT_EQ(layout_of("mlra2", "layers.0.attn.wq_b.weight"), ShardLayout::split_dim(0, 2));  // per head group
  EXPECT_EQ(layout_of("mlra2", "layers.0.attn.wo.weight"), ShardLayout::split_dim(1, 2));
  EXPECT_EQ(layout_of("egmla", "gates.0.embed.weight"), rep);
  EXPECT_EQ(layout_of("egmla", "layers.0.attn.wgate.weight"), rep);  // latent position
  EXPECT_EQ(layout_of("egmla", "layers.0.attn.gate_norm.bias"), rep);
  ModelConfig kv = tiny_config("egmla");
  kv.attention.gate.position = GatePosition::KV;
  const TransformerLM m(kv, 1, DType::F32, Device::cpu(), TensorParallelContext::layout_only(1, 2));
  EXPECT_EQ(m.shard_layout("layers.0.attn.wgate.weight"), rows);
  EXPECT_EQ(m.shard_layout("layers.0.attn.gate_norm_k.weight"), rows);
  EXPECT_EQ(m.shard_layout("layers.0.attn.gate_norm_v.bias"), rows);
  EXPECT_EQ(m.shard_layout("layers.0.attn.kv_norm.weight"), rep);
  // tp = 1: every parameter is replicated, nothing is sharded.
  const TransformerLM single(tiny_config("mla"), 1, DType::F32, Device::cpu());
  EXPECT_TRUE(single.tp_sharded_parameters().empty());
  EXPECT_EQ(single.tp_replicated_parameters().size(), single.parameters().size());
}

TEST(TpLayout, ShardFilesCarryTheirLayouts) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("latte_tp_layout_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ModelConfig cfg = tiny_config("mlra4");
  cfg.tie_embeddings = false;
  const TransformerLM full(cfg, 3, DType::F32, Device::cpu());
  std::vector<std::string> paths;
  for (int64_t r = 0; r < 2; ++r) {
    const TransformerLM shard(cfg, 3, DType::F32, Device::cpu(), TensorParallelContext::layout_only(r, 2));
    paths.push_back((dir / ("model-tp" + std::to_string(r) + ".safetensors")).string());
    save_state(shard, paths.back(), shard.tp_layout_metadata());
  }
  expect_same(read_merged_tp_shards(paths), named(full), "merged files");
  // A tp = 1 model loads the merged shards; a rank of another tp loads its split of the full weights.
  const TransformerLM fresh(cfg, 99, DType::F32, Device::cpu());
  load_state(fresh, read_merged_tp_shards(paths), "merged shards");
  expect_same(named(fresh), named(full), "tp 1 from merged shards");
  const TransformerLM rank3(cfg, 99, DType::F32, Device::cpu(), TensorParallelContext::layout_only(3, 4));
  load_state(rank3, split_to_tp(named(full), rank3.shard_layouts(), 3, 4), "split weights");
  const TransformerLM expected3(cfg, 3, DType::F32, Device::cpu(), TensorParallelContext::layout_only(3, 4));
  expect_same(named(rank3), named(expected3), "tp 4 rank 3 from the full weights");
  EXPECT_NE(error_of([&] { load_state(rank3, named(full), "full weights"); }).find("full weights: does not match the model"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_merged_tp_shards({paths[1], paths[0]}); }).find("in rank order"), std::string::npos);
  EXPECT_NE(error_of([&] { read_merged_tp_shards({paths[0]}); }).find("shard 0 of 2"), std::string::npos);
  fs::remove_all(dir);
}

TEST(TpLayout, ConfigsThatDoNotSplitNameTheKey) {
  auto build = [](const ModelConfig& cfg, int64_t tp) {
    return error_of([&] { TransformerLM m(cfg, 1, DType::F32, Device::cpu(), TensorParallelContext::layout_only(0, tp)); });
  };
  const ModelConfig heads = config_from_yaml(
      "model: {vocab_size: 96, d_model: 32, n_layers: 1, ffn_dim: 48, max_seq_len: 8,"
      " attention: {kind: mha, n_heads: 4, n_kv_heads: 4, head_dim: 8}}");
  EXPECT_NE(build(heads, 3).find("model.attention.n_heads (4) does not divide by parallel.tp (3)"), std::string::npos)
      << build(heads, 3);
  ModelConfig vocab = tiny_config("mha");
  vocab.vocab_size = 130;
  EXPECT_NE(build(vocab, 4).find("model.vocab_size (130)"), std::string::npos);
  ModelConfig ffn = tiny_config("mha");
  ffn.ffn_dim = 130;
  EXPECT_NE(build(ffn, 4).find("model.ffn_dim (130)"), std::string::npos);
  const ModelConfig gqa = config_from_yaml(
      "model: {vocab_size: 96, d_model: 48, n_layers: 1, ffn_dim: 48, max_seq_len: 8,"
      " attention: {kind: mha, n_heads: 12, n_kv_heads: 3, head_dim: 4}}");
  EXPECT_NE(build(gqa, 4).find("n_kv_heads (3) and parallel.tp (4) must divide one another"), std::string::npos);
  EXPECT_EQ(build(gqa, 3), "(no error)");
  EXPECT_NE(build(tiny_config("mlra2"), 4).find("each latent block serves 2 heads"), std::string::npos);
  // A layout-only model holds shards but cannot run.
  const TransformerLM shard(tiny_config("mha"), 1, DType::F32, Device::cpu(), TensorParallelContext::layout_only(0, 2));
  const Tensor ids = Tensor::zeros({1, 4}, DType::I32);
  EXPECT_NE(error_of([&] { shard.logits(ids); }).find("without a process group"), std::string::npos);
}
