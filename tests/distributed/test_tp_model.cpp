// Tensor-parallel TransformerLM (layers/tensor_parallel.h) on tp = 2 and tp = 4 ranks: for every
// attention variant, the TP model built from the same seed as a tp = 1 model (which every rank also
// builds) holds exactly that model's weight shards, and its logits, loss and every parameter gradient
// (replicated ones after the TP all-reduce; merged over the TP group with merge_tp_shards) equal the
// tp = 1 ones to 1e-5 in f32. With 4 ranks tp = 2 runs as two TP groups at once, then tp = 4.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/basic_functions.h"
#include "autograd/node.h"
#include "core/philox.h"
#include "dist_test_util.h"
#include "distributed/data_parallel.h"
#include "distributed/process_group.h"
#include "layers/model_config.h"
#include "layers/tp_layout.h"
#include "layers/transformer.h"

using namespace latte;
using namespace latte::dist;
using latte::test::rel_error;
using latte::test::world;

namespace {

constexpr int64_t kBatch = 2, kSeq = 8, kVocab = 128;
constexpr double kTol = 1e-5;
constexpr uint64_t kSeed = 1234;

struct Variant {
  std::string name;
  std::string attention;     // the YAML of model.attention
  bool tie = true;           // tie_embeddings
  bool recompute = false;    // activation recomputation per block
};

// Tiny shapes; zero_out_proj off so that every projection gets a non-zero gradient.
ModelConfig config_of(const Variant& v) {
  const std::string text = "model: {vocab_size: " + std::to_string(kVocab) +
                           ", d_model: 32, n_layers: 2, ffn_dim: 64, max_seq_len: 16, tie_embeddings: " +
                           (v.tie ? "true" : "false") + ", recompute: " + (v.recompute ? "true" : "false") +
                           ", init: {std: 0.05, zero_out_proj: false}, attention: " + v.attention + "}";
  return parse_model_config(YAML::Load(text)["model"], "model");
}

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"mha", "{kind: mha, n_heads: 4, n_kv_heads: 4, head_dim: 8}"},
      {"gqa", "{kind: mha, n_heads: 4, n_kv_heads: 2, head_dim: 8}"},  // n_kv < tp at tp = 4
      {"mqa", "{kind: mha, n_heads: 4, n_kv_heads: 1, head_dim: 8}"},  // n_kv < tp always
      {"mla_q0", "{kind: mla, n_heads: 4, kv_rank: 16, q_rank: 0, nope_dim: 8, rope_dim: 4, v_dim: 8}", false},
      {"mla_q", "{kind: mla, n_heads: 4, kv_rank: 16, q_rank: 12, nope_dim: 8, rope_dim: 4, v_dim: 8, latent_scale: true}"},
      {"egmla_latent",
       "{kind: egmla, n_heads: 4, kv_rank: 16, q_rank: 0, nope_dim: 8, rope_dim: 4, v_dim: 8,"
       " gate: {position: latent, share_layers: 2, embed_dim: 8}}"},
      {"egmla_kv",
       "{kind: egmla, n_heads: 4, kv_rank: 16, q_rank: 12, nope_dim: 8, rope_dim: 4, v_dim: 8,"
       " gate: {position: kv, share_layers: 1, embed_dim: 8}}",
       true, true},
      {"mlra2",
       "{kind: mlra, n_heads: 8, kv_rank: 16, q_rank: 16, nope_dim: 8, rope_dim: 4, v_dim: 8, latent_scale: true,"
       " blocks: 4, branches: 2}"},
      {"mlra4",
       "{kind: mlra, n_heads: 4, kv_rank: 16, q_rank: 0, nope_dim: 8, rope_dim: 4, v_dim: 8, latent_scale: true,"
       " blocks: 4, branches: 4}",
       false},
  };
  return v;
}

// (B, T) i32 from Philox; targets get a few -1 (ignored) entries.
Tensor tokens(uint64_t seed, bool with_ignored) {
  std::vector<double> v(static_cast<size_t>(kBatch * kSeq));
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = std::floor(philox::uniform(seed, 0, i) * 0.999999 * kVocab);
    if (with_ignored && i % 7 == 3) v[i] = -1;
  }
  return Tensor::from_vector(v, {kBatch, kSeq}, DType::I32);
}

Tensor grad_or_zeros(const Tensor& p) { return p.grad().defined() ? p.grad() : Tensor::zeros(p.shape(), p.dtype()); }

double norm(const Tensor& x) { return std::sqrt(sum_squares(x).item()); }

// ||a - b|| / ||b||, with ||b|| floored at 1e-3 of the largest gradient norm `scale`: some gradients are
// mathematically zero (EG-MLA's gate_norm_k.bias shifts every key of a head equally, which the softmax
// ignores) and hold only rounding noise, different in every summation order.
double grad_error(const Tensor& a, const Tensor& b, double scale) {
  return norm(sub(a, b)) / std::max(norm(b), 1e-3 * scale);
}

// The TP groups of `tp` consecutive ranks (collective over the world).
std::shared_ptr<ProcessGroup> tp_group_of(int tp) {
  const int rank = world().rank();
  return new_group(world(), rank / tp, rank % tp, Device::cpu(), "tp" + std::to_string(tp));
}

// Every rank's value of `x` (same shape everywhere) over `group`, in group-rank order.
std::vector<Tensor> all_gathered(const Tensor& x, ProcessGroup& group) {
  Tensor in = x.contiguous().clone();
  Tensor out = Tensor::empty({group.size() * x.numel()}, x.dtype());
  group.all_gather(out, in.view({x.numel()}));
  std::vector<Tensor> per_rank;
  for (int r = 0; r < group.size(); ++r) per_rank.push_back(out.narrow(0, r * x.numel(), x.numel()).view(x.shape()));
  return per_rank;
}

void check_variant(const Variant& v, ProcessGroup& group) {
  SCOPED_TRACE(v.name + " at tp = " + std::to_string(group.size()));
  const ModelConfig cfg = config_of(v);
  const int tp = group.size(), rank = group.rank();
  const Tensor ids = tokens(kSeed + 1, false), targets = tokens(kSeed + 2, true);

  TransformerLM ref(cfg, kSeed, DType::F32, Device::cpu());
  TransformerLM model(cfg, kSeed, DType::F32, Device::cpu(), TensorParallelContext::of(&group));
  ASSERT_EQ(model.tensor_parallel().tp_size, tp);

  // The shards are exactly this rank's slices of the tp = 1 weights.
  const ShardLayouts layouts = model.shard_layouts();
  for (const NamedParameter& p : model.named_parameters()) {
    const Tensor expected = shard_of(ref.parameter(p.name), layouts.at(p.name), rank, tp);
    EXPECT_EQ(p.tensor.shape(), expected.shape()) << p.name;
    EXPECT_EQ(p.tensor.to_vector(), expected.to_vector()) << p.name << " is not rank " << rank << "'s slice";
  }

  // Logits (gathered from the vocab shards) and the loss.
  {
    autograd::NoGradGuard no_grad;
    EXPECT_LT(rel_error(model.logits(ids), ref.logits(ids)), kTol);
    EXPECT_EQ(model.local_logits(ids).size(-1), kVocab / tp);
  }
  ref.set_loss_chunk_rows(5);    // several chunks, the last one short
  model.set_loss_chunk_rows(5);
  Tensor ref_loss = ref.loss(ids, targets);
  Tensor loss = model.loss(ids, targets);
  EXPECT_NEAR(loss.item(), ref_loss.item(), kTol * std::fabs(ref_loss.item()));
  const std::vector<Tensor> losses = all_gathered(loss.reshape({1}), group);
  for (int r = 1; r < tp; ++r) EXPECT_EQ(losses[r].item(), losses[0].item()) << "the loss differs between TP ranks";

  // Gradients: the replicated ones are partial sums until all-reduced over TP.
  ref_loss.backward();
  loss.backward();
  all_reduce_gradients(model.tp_replicated_parameters(), group);
  EXPECT_EQ(model.tp_sharded_parameters().size() + model.tp_replicated_parameters().size(), model.parameters().size());
  double scale = 0;
  for (const NamedParameter& p : ref.named_parameters()) scale = std::max(scale, norm(grad_or_zeros(p.tensor)));
  EXPECT_GT(scale, 1e-3);
  NamedTensors local_grads;
  for (const NamedParameter& p : model.named_parameters()) {
    const Tensor g = grad_or_zeros(p.tensor);
    const Tensor expected = shard_of(grad_or_zeros(ref.parameter(p.name)), layouts.at(p.name), rank, tp);
    EXPECT_LT(grad_error(g, expected, scale), kTol) << p.name << " (" << layouts.at(p.name).str() << "), |ref| " << norm(expected);
    local_grads.emplace_back(p.name, g);
  }
  // ... and merged over the TP group they are the tp = 1 gradients.
  std::vector<NamedTensors> per_rank(static_cast<size_t>(tp));
  for (const auto& [name, g] : local_grads) {
    std::vector<Tensor> shards = all_gathered(g, group);
    for (int r = 0; r < tp; ++r) per_rank[static_cast<size_t>(r)].emplace_back(name, shards[static_cast<size_t>(r)]);
  }
  const NamedTensors merged = merge_tp_shards(per_rank, layouts);
  ASSERT_EQ(merged.size(), ref.named_parameters().size());
  for (const auto& [name, g] : merged) EXPECT_LT(grad_error(g, grad_or_zeros(ref.parameter(name)), scale), kTol) << name;

  // merge(split(x)) == x on the full weights.
  NamedTensors full;
  for (const NamedParameter& p : ref.named_parameters()) full.emplace_back(p.name, p.tensor);
  std::vector<NamedTensors> split;
  for (int r = 0; r < tp; ++r) split.push_back(split_to_tp(full, layouts, r, tp));
  const NamedTensors round_trip = merge_tp_shards(split, layouts);
  for (size_t i = 0; i < full.size(); ++i) {
    EXPECT_EQ(round_trip[i].first, full[i].first);
    EXPECT_EQ(round_trip[i].second.to_vector(), full[i].second.to_vector()) << full[i].first;
  }
}

void check_all_variants(int tp) {
  if (world().size() % tp != 0) GTEST_SKIP() << "world size " << world().size() << " is not a multiple of tp " << tp;
  auto group = tp_group_of(tp);
  for (const Variant& v : variants()) check_variant(v, *group);
}

}  // namespace

TEST(TpModel, EveryVariantMatchesTp1AtTp2) { check_all_variants(2); }

TEST(TpModel, EveryVariantMatchesTp1AtTp4) { check_all_variants(4); }

TEST(TpModel, KvHeadsAreReplicatedWhenFewerThanTp) {
  const int tp = world().size();
  auto group = tp_group_of(tp);
  const ModelConfig cfg = config_of(variants()[2]);  // mqa: one kv head for every rank
  TransformerLM model(cfg, kSeed, DType::F32, Device::cpu(), TensorParallelContext::of(group.get()));
  EXPECT_FALSE(model.shard_layout("layers.0.attn.wk.weight").split);
  EXPECT_EQ(model.parameter("layers.0.attn.wk.weight").shape(), (Shape{8, 32}));
  EXPECT_TRUE(model.shard_layout("layers.0.attn.wq.weight").split);
  EXPECT_EQ(model.parameter("layers.0.attn.wq.weight").shape(), (Shape{32 / tp, 32}));
}
