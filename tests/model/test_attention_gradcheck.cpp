// Gradcheck (fp64 central differences) of every attention module on tiny shapes, through the input,
// the EG-MLA gate embeddings and every parameter; plus the whole model's loss with recomputation and
// with a chunked LM head, which must give the same gradients as the plain path.
#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "layers/attention/attention.h"
#include "layers/transformer.h"
#include "model_test_util.h"

using namespace latte;
using namespace latte::test;

namespace {

ModelConfig micro(const std::string& attention_yaml) {
  ModelConfig c = config_from_yaml("model: {vocab_size: 16, d_model: 8, n_layers: 1, ffn_dim: 8, max_seq_len: 8, "
                                   "init: {std: 0.4, zero_out_proj: false}, attention: " + attention_yaml + "}");
  return c;
}

void check_attention(const std::string& attention_yaml) {
  SCOPED_TRACE(attention_yaml);
  const ModelConfig cfg = micro(attention_yaml);
  std::unique_ptr<Attention> attn = make_attention(cfg, 0, {DType::F64, Device::cpu()});
  attn->initialize(11);
  const int64_t B = 2, T = 3;
  std::vector<Tensor> inputs;
  inputs.push_back(Tensor::randn({B, T, cfg.d_model}, 5, 0, 1.0, DType::F64).set_requires_grad(true));  // x
  const bool gated = cfg.attention.kind == AttentionKind::EGMLA;
  if (gated) inputs.push_back(Tensor::randn({B, T, cfg.attention.gate.embed_dim}, 6, 0, 1.0, DType::F64).set_requires_grad(true));
  for (const NamedParameter& p : attn->named_parameters()) inputs.push_back(p.tensor);
  auto f = [&](const std::vector<Tensor>& in) {
    AttentionContext ctx;
    if (gated) ctx.gate_embed = in[1];
    return attn->forward(in[0], ctx);  // (B, T, d)
  };
  autograd::GradcheckResult r = autograd::gradcheck(f, inputs, 1e-6, 1e-6, 1e-5);
  EXPECT_TRUE(r.ok) << r.report;
}

}  // namespace

TEST(AttentionGradcheck, MHA) { check_attention("{kind: mha, n_heads: 2, n_kv_heads: 2, head_dim: 4}"); }
TEST(AttentionGradcheck, GQA) { check_attention("{kind: mha, n_heads: 4, n_kv_heads: 2, head_dim: 2}"); }
TEST(AttentionGradcheck, MQA) { check_attention("{kind: mha, n_heads: 2, n_kv_heads: 1, head_dim: 4}"); }
TEST(AttentionGradcheck, MLANoQueryCompression) {
  check_attention("{kind: mla, n_heads: 2, kv_rank: 6, q_rank: 0, nope_dim: 4, rope_dim: 2, v_dim: 3}");
}
TEST(AttentionGradcheck, MLAQueryCompressionLatentScale) {
  check_attention("{kind: mla, n_heads: 2, kv_rank: 6, q_rank: 4, nope_dim: 4, rope_dim: 2, v_dim: 3, latent_scale: true}");
}
TEST(AttentionGradcheck, MLANoLatentNorm) {
  check_attention("{kind: mla, n_heads: 2, kv_rank: 6, q_rank: 4, nope_dim: 2, rope_dim: 4, v_dim: 3, latent_norm: false}");
}
TEST(AttentionGradcheck, EGMLALatentLayerNorm) {
  check_attention("{kind: egmla, n_heads: 2, kv_rank: 6, nope_dim: 4, rope_dim: 2, v_dim: 3, "
                  "gate: {position: latent, norm: layernorm, embed_dim: 3}}");
}
TEST(AttentionGradcheck, EGMLALatentRMSNormScaled) {
  check_attention("{kind: egmla, n_heads: 2, kv_rank: 6, q_rank: 4, nope_dim: 4, rope_dim: 2, v_dim: 3, latent_scale: true, "
                  "gate: {position: latent, norm: rmsnorm, init: small, embed_dim: 3}}");
}
TEST(AttentionGradcheck, EGMLAKvLayerNorm) {
  check_attention("{kind: egmla, n_heads: 2, kv_rank: 6, nope_dim: 4, rope_dim: 2, v_dim: 3, "
                  "gate: {position: kv, norm: layernorm, embed_dim: 3}}");
}
TEST(AttentionGradcheck, EGMLAKvRMSNorm) {
  check_attention("{kind: egmla, n_heads: 2, kv_rank: 6, nope_dim: 4, rope_dim: 2, v_dim: 3, "
                  "gate: {position: kv, norm: rmsnorm, embed_dim: 3}}");
}
TEST(AttentionGradcheck, MLRA2) {
  check_attention("{kind: mlra, n_heads: 2, kv_rank: 8, q_rank: 4, nope_dim: 3, rope_dim: 2, v_dim: 2, blocks: 4, branches: 2, "
                  "latent_scale: true}");
}
TEST(AttentionGradcheck, MLRA4) {
  check_attention("{kind: mlra, n_heads: 2, kv_rank: 8, nope_dim: 3, rope_dim: 2, v_dim: 2, blocks: 4, branches: 4}");
}

// The whole model in f64: loss gradients through every parameter, with an EG-MLA shared gate table.
TEST(ModelGradcheck, TinyEGMLALoss) {
  ModelConfig cfg = micro("{kind: egmla, n_heads: 2, kv_rank: 4, nope_dim: 2, rope_dim: 2, v_dim: 2, "
                          "gate: {position: kv, share_layers: 2, embed_dim: 2}}");
  cfg.n_layers = 2;
  cfg.d_model = 4;
  cfg.ffn_dim = 4;
  cfg.vocab_size = 8;
  TransformerLM model(cfg, 3, DType::F64, Device::cpu());
  Tensor ids = random_ids(1, 4, cfg.vocab_size, 9);
  Tensor targets = random_ids(1, 4, cfg.vocab_size, 10);
  std::vector<Tensor> params = model.parameters();
  autograd::GradcheckResult r =
      autograd::gradcheck([&](const std::vector<Tensor>&) { return model.loss(ids, targets); }, params, 1e-6, 1e-7, 1e-5);
  EXPECT_TRUE(r.ok) << r.report;
}

namespace {

std::vector<std::vector<double>> loss_grads(const TransformerLM& model, const Tensor& ids, const Tensor& targets, double* loss) {
  model.zero_grad();
  Tensor l = model.loss(ids, targets);
  *loss = l.item();
  l.backward();
  std::vector<std::vector<double>> grads;
  for (const Tensor& p : model.parameters()) grads.push_back(p.grad().defined() ? p.grad().to_vector() : std::vector<double>());
  return grads;
}

}  // namespace

// Recomputation and the chunked LM head change memory, not math.
TEST(ModelGradcheck, RecomputeAndChunkedLossMatchPlain) {
  for (const std::string& variant : {std::string("egmla"), std::string("mlra2"), std::string("gqa")}) {
    SCOPED_TRACE(variant);
    ModelConfig cfg = tiny_config(variant);
    cfg.init.zero_out_proj = false;
    cfg.tie_embeddings = variant != "gqa";
    TransformerLM plain(cfg, 4, DType::F64, Device::cpu());
    ModelConfig rc = cfg;
    rc.recompute = true;
    TransformerLM recomputed(rc, 4, DType::F64, Device::cpu());
    recomputed.set_loss_chunk_rows(5);  // 12 rows -> chunks of 5, 5, 2
    Tensor ids = random_ids(2, 6, cfg.vocab_size, 1);
    std::vector<double> t = random_ids(2, 6, cfg.vocab_size, 2).to_vector();
    t[3] = -1;  // an ignored target
    Tensor targets = Tensor::from_vector(t, {2, 6}, DType::I32);
    double l0 = 0, l1 = 0;
    auto g0 = loss_grads(plain, ids, targets, &l0);
    auto g1 = loss_grads(recomputed, ids, targets, &l1);
    EXPECT_NEAR(l0, l1, 1e-12);
    ASSERT_EQ(g0.size(), g1.size());
    for (size_t i = 0; i < g0.size(); ++i) {
      ASSERT_EQ(g0[i].size(), g1[i].size()) << plain.named_parameters()[i].name;
      ASSERT_FALSE(g0[i].empty()) << plain.named_parameters()[i].name;
      for (size_t k = 0; k < g0[i].size(); ++k) ASSERT_NEAR(g0[i][k], g1[i][k], 1e-12) << plain.named_parameters()[i].name;
    }
  }
}

// The fused, chunked LM-head loss equals cross_entropy(logits) and its gradients, tied and untied.
TEST(ModelGradcheck, FusedLossMatchesUnfused) {
  for (bool tied : {true, false}) {
    ModelConfig cfg = tiny_config("mla");
    cfg.init.zero_out_proj = false;
    cfg.tie_embeddings = tied;
    TransformerLM a(cfg, 4, DType::F64, Device::cpu()), b(cfg, 4, DType::F64, Device::cpu());
    a.set_loss_chunk_rows(7);
    Tensor ids = random_ids(2, 10, cfg.vocab_size, 1);
    std::vector<double> t = random_ids(2, 10, cfg.vocab_size, 2).to_vector();
    t[0] = t[13] = -1;
    Tensor targets = Tensor::from_vector(t, {2, 10}, DType::I32);
    Tensor fused = a.loss(ids, targets);
    Tensor plain = cross_entropy(b.logits(ids), targets, -1);
    EXPECT_NEAR(fused.item(), plain.item(), 1e-12);
    scale(fused, 3.0).backward();  // a non-unit incoming gradient
    scale(plain, 3.0).backward();
    for (const NamedParameter& p : a.named_parameters())
      EXPECT_LT(max_rel_diff(p.tensor.grad(), b.parameter(p.name).grad()), 1e-10) << p.name;
  }
}

// The automatic LM-head chunking: the fewest chunks within the logits budget (2^25 per chunk on the CPU), split
// evenly (no sliver of a last chunk), a multiple of 64 rows where that fits; an explicit setting wins.
TEST(ModelLossChunks, FewestEvenChunksWithinTheBudget) {
  ModelConfig cfg = tiny_config("mla");
  TransformerLM model(cfg, 4, DType::F32, Device::cpu());
  const int64_t max_rows = (int64_t{1} << 25) / cfg.vocab_size;
  for (int64_t N : {int64_t{1}, int64_t{100}, max_rows, max_rows + 1, 3 * max_rows - 7, 16 * max_rows + 5}) {
    SCOPED_TRACE(N);
    const int64_t rows = model.loss_chunk_rows(N);
    const int64_t chunks = (N + rows - 1) / rows, fewest = (N + max_rows - 1) / max_rows;
    EXPECT_LE(rows, std::max<int64_t>(max_rows, 1));
    EXPECT_EQ(chunks, fewest);
    EXPECT_LT(rows * chunks - N, 64 * chunks);  // even: the last chunk is short by less than the rounding
    if (((N + fewest - 1) / fewest + 63) / 64 * 64 <= max_rows) {
      EXPECT_EQ(rows % 64, 0);
    }
  }
  model.set_loss_chunk_rows(5);
  EXPECT_EQ(model.loss_chunk_rows(1000), 5);
}
