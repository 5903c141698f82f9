// Chunked distillation loss, the teacher holder and train.init_from (train/distill.h).
#include "train/distill.h"

#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "autograd/precomputed_grad.h"
#include "core/log.h"
#include "kernels/ops.h"
#include "layers/safetensors.h"
#include "layers/transformer.h"
#include "train/hf_import.h"
#include "train/yaml_reader.h"

namespace latte {

namespace {

int64_t default_chunk_rows(int64_t vocab) { return std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(vocab, 1)); }

// The per-chunk work. Buffers are (rows, V) in the accumulation dtype; a chunk uses their first n rows.
class ChunkLoss {
 public:
  ChunkLoss(const DistillConfig& c, int64_t rows, int64_t V, DType acc, Device device, int64_t counted, bool grad)
      : c_(c), acc_(acc), device_(device), grad_(grad) {
    const double inv = 1.0 / static_cast<double>(counted);
    kl_coef_ = c.kl_weight * c.temperature * inv;  // tau^2 * (1/tau) from d(a - b)/dz_S
    ce_coef_ = c.ce_weight * inv;
    tempered_ = c.temperature != 1.0;
    student_ = Tensor::empty({rows, V}, acc, device);
    teacher_ = Tensor::empty({rows, V}, acc, device);
    diff_ = Tensor::empty({rows, V}, acc, device);
    if (grad && tempered_ && c.ce_weight != 0) ce_grad_ = Tensor::empty({rows, V}, acc, device);
    loss_s_ = Tensor::empty({rows}, acc, device);
    loss_t_ = Tensor::empty({rows}, acc, device);
    loss_ce_ = Tensor::empty({rows}, acc, device);
    kl_sum_ = Tensor::zeros(Shape{}, acc, device);
    ce_sum_ = Tensor::zeros(Shape{}, acc, device);
    tmp_ = Tensor::empty(Shape{}, acc, device);
  }

  // Where the caller writes the chunk's unscaled logits (n rows).
  Tensor student(int64_t n) const { return student_.narrow(0, 0, n); }
  Tensor teacher(int64_t n) const { return teacher_.narrow(0, 0, n); }

  // Consumes the logits of n rows; returns d loss / d z_S (n, V) (a view of the student buffer) when grad.
  Tensor run(int64_t n, const Tensor& targets) {
    Tensor zs = student(n), zt = teacher(n), diff = diff_.narrow(0, 0, n);  // (n, V)
    Tensor ls = loss_s_.narrow(0, 0, n), lt = loss_t_.narrow(0, 0, n);      // (n)
    if (tempered_) {
      // CE at temperature 1 (reported, and trained on when ce_weight > 0) before the logits are scaled.
      Tensor lce = loss_ce_.narrow(0, 0, n);
      ops::cross_entropy_forward_backward(lce, ce_grad_.defined() ? ce_grad_.narrow(0, 0, n) : Tensor(), zs, targets, -1,
                                          ce_coef_);
      accumulate(ce_sum_, lce, 1.0);
      ops::scale(zs, zs, 1.0 / c_.temperature);
      ops::scale(zt, zt, 1.0 / c_.temperature);
    }
    ops::add(diff, zt, zs, 1.0, -1.0);                                               // a - b
    ops::cross_entropy_forward_backward(ls, grad_ ? zs : Tensor(), zs, targets, -1, 1.0);  // zs <- p_S - e_t
    ops::cross_entropy_forward_backward(lt, zt, zt, targets, -1, 1.0);                   // zt <- p_T - e_t
    ops::mul(diff, diff, zt);
    accumulate(kl_sum_, diff, 1.0);
    accumulate(kl_sum_, ls, 1.0);
    accumulate(kl_sum_, lt, -1.0);
    if (!tempered_) accumulate(ce_sum_, ls, 1.0);
    if (!grad_) return Tensor();
    // kl_coef (p_S - p_T) [+ ce_coef (p_S - e_t) when tau = 1, or the saved tau = 1 gradient otherwise].
    const double student_coef = kl_coef_ + (tempered_ ? 0.0 : ce_coef_);
    ops::add(zs, zs, zt, student_coef, -kl_coef_);
    if (ce_grad_.defined()) ops::add(zs, zs, ce_grad_.narrow(0, 0, n), 1.0, 1.0);
    return zs;
  }

  DistillLoss finish(int64_t counted) const {
    const double inv = 1.0 / static_cast<double>(counted);
    DistillLoss out;
    out.kl = Tensor::empty(Shape{}, acc_, device_);
    out.ce = Tensor::empty(Shape{}, acc_, device_);
    out.loss = Tensor::empty(Shape{}, acc_, device_);
    ops::scale(out.kl, kl_sum_, inv);
    ops::scale(out.ce, ce_sum_, inv);
    ops::add(out.loss, out.kl, out.ce, c_.kl_weight * c_.temperature * c_.temperature, c_.ce_weight);
    return out;
  }

 private:
  void accumulate(const Tensor& acc, const Tensor& x, double sign) {
    ops::sum(tmp_, x);
    ops::add(acc, acc, tmp_, 1.0, sign);
  }

  const DistillConfig& c_;
  DType acc_;
  Device device_;
  bool grad_, tempered_ = false;
  double kl_coef_ = 0, ce_coef_ = 0;
  Tensor student_, teacher_, diff_, ce_grad_;  // (rows, V)
  Tensor loss_s_, loss_t_, loss_ce_;           // (rows)
  Tensor kl_sum_, ce_sum_, tmp_;               // scalars
};

void check_config(const DistillConfig& c) {
  LATTE_REQUIRE(c.temperature > 0 && std::isfinite(c.temperature), "distillation temperature must be positive, got ", c.temperature);
  LATTE_REQUIRE(c.kl_weight >= 0 && c.ce_weight >= 0 && c.kl_weight + c.ce_weight > 0,
                "distillation kl_weight and ce_weight must be >= 0 and not both 0, got ", c.kl_weight, " and ", c.ce_weight);
}

int64_t count_targets(const Tensor& targets) {
  int64_t counted = 0;
  for (double t : targets.to_vector()) counted += t != -1;
  LATTE_REQUIRE(counted > 0, "distillation: every target is -1 (ignored); the batch has nothing to learn from");
  return counted;
}

}  // namespace

DistillConfig parse_distill_config(const YAML::Node& node, const std::string& where, const std::string& file) {
  DistillConfig c;
  if (!node || !node.IsDefined() || node.IsNull()) return c;
  YamlReader r(node, where, file);
  LATTE_REQUIRE(node.IsMap(), file, ": ", where, " must be a mapping {teacher: ..., temperature: ..., kl_weight: ..., ce_weight: ...}");
  c.teacher = r.require<std::string>("teacher");
  c.temperature = r.get("temperature", c.temperature);
  c.kl_weight = r.get("kl_weight", c.kl_weight);
  c.ce_weight = r.get("ce_weight", c.ce_weight);
  r.finish();
  if (!(c.temperature > 0)) r.fail("temperature", str("must be positive, got ", c.temperature));
  if (c.kl_weight < 0) r.fail("kl_weight", str("must be >= 0, got ", c.kl_weight));
  if (c.ce_weight < 0) r.fail("ce_weight", str("must be >= 0, got ", c.ce_weight));
  if (c.kl_weight + c.ce_weight <= 0) r.fail("kl_weight", "and ce_weight are both 0: nothing to train on");
  LATTE_REQUIRE(!c.teacher.empty(), file, ": ", where, ".teacher is empty");
  return c;
}

DistillLoss distill_loss(const Tensor& student_hidden, const Tensor& student_weight, const Tensor& teacher_hidden,
                         const Tensor& teacher_weight, const Tensor& targets, int64_t counted, const DistillConfig& config,
                         int64_t chunk_rows) {
  check_config(config);
  const int64_t N = student_hidden.size(0), V = student_weight.size(0), d = student_hidden.size(1);
  LATTE_REQUIRE(student_hidden.dim() == 2 && student_weight.dim() == 2 && student_weight.size(1) == d,
                "distill_loss: student hidden ", student_hidden.shape().str(), " and head ", student_weight.shape().str(), " do not fit");
  LATTE_REQUIRE(teacher_hidden.dim() == 2 && teacher_hidden.size(0) == N && teacher_weight.dim() == 2 &&
                    teacher_weight.size(0) == V && teacher_weight.size(1) == teacher_hidden.size(1),
                "distill_loss: teacher hidden ", teacher_hidden.shape().str(), " / head ", teacher_weight.shape().str(),
                " do not fit the student's ", student_hidden.shape().str(), " / ", student_weight.shape().str(),
                " (the vocabularies must be equal)");
  LATTE_REQUIRE(targets.dim() == 1 && targets.size(0) == N && targets.dtype() == DType::I32, "distill_loss: targets must be (",
                N, ") i32, got ", targets.str());
  LATTE_REQUIRE(counted > 0, "distill_loss: no counted targets");
  const DType acc = student_hidden.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const Device device = student_hidden.device();
  const bool grad = autograd::needs_grad({&student_hidden, &student_weight});
  if (chunk_rows <= 0) chunk_rows = default_chunk_rows(V);
  chunk_rows = std::min(chunk_rows, std::max<int64_t>(N, 1));

  Tensor hs = student_hidden.detach().contiguous();   // (N, d_s)
  Tensor ws = student_weight.detach();                // (V, d_s)
  Tensor ht = teacher_hidden.detach().contiguous();   // (N, d_t)
  Tensor wt = teacher_weight.detach();                // (V, d_t)
  Tensor tg = targets.contiguous();                   // (N)
  Tensor d_hidden = grad && student_hidden.requires_grad() ? Tensor::empty({N, d}, hs.dtype(), device) : Tensor();  // (N, d_s)
  Tensor d_weight = grad && student_weight.requires_grad() ? Tensor::zeros({V, d}, acc, device) : Tensor();        // (V, d_s)
  // The GEMMs of the backward take operands of one dtype: the logit gradient is cast to the weights' dtype.
  Tensor dz_cast = grad && ws.dtype() != acc ? Tensor::empty({chunk_rows, V}, ws.dtype(), device) : Tensor();  // (rows, V)

  ChunkLoss chunk(config, chunk_rows, V, acc, device, counted, grad);
  for (int64_t r = 0; r < N; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, N - r);
    Tensor rows = hs.narrow(0, r, n);                                                  // (n, d_s)
    ops::matmul(chunk.student(n), rows, ws, false, true, 1.0, 0.0);                   // z_S (n, V)
    ops::matmul(chunk.teacher(n), ht.narrow(0, r, n), wt, false, true, 1.0, 0.0);     // z_T (n, V)
    Tensor dz = chunk.run(n, tg.narrow(0, r, n));                                      // (n, V) or undefined
    if (!grad) continue;
    if (dz_cast.defined()) {
      ops::copy(dz_cast.narrow(0, 0, n), dz);
      dz = dz_cast.narrow(0, 0, n);
    }
    if (d_hidden.defined()) ops::matmul(d_hidden.narrow(0, r, n), dz, ws, false, false, 1.0, 0.0);  // dz W
    if (d_weight.defined()) ops::matmul(d_weight, dz, rows, true, false, 1.0, 1.0);                 // += dz^T h
  }
  DistillLoss out = chunk.finish(counted);
  if (grad) {
    autograd::record_precomputed_gradients(out.loss, {student_hidden, student_weight}, {d_hidden, d_weight},
                                           "DistillBackward");
  }
  return out;
}

DistillLoss distill_loss_from_logits(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets,
                                     const DistillConfig& config, int64_t chunk_rows) {
  check_config(config);
  LATTE_REQUIRE(student_logits.dim() == 2 && teacher_logits.shape() == student_logits.shape(),
                "distill_loss_from_logits: logits must be (N, V) with equal shapes, got ", student_logits.shape().str(), " and ",
                teacher_logits.shape().str());
  const int64_t N = student_logits.size(0), V = student_logits.size(1);
  LATTE_REQUIRE(targets.dim() == 1 && targets.size(0) == N && targets.dtype() == DType::I32,
                "distill_loss_from_logits: targets must be (", N, ") i32, got ", targets.str());
  const int64_t counted = count_targets(targets);
  const DType acc = student_logits.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const Device device = student_logits.device();
  const bool grad = autograd::needs_grad({&student_logits});
  if (chunk_rows <= 0) chunk_rows = default_chunk_rows(V);
  chunk_rows = std::min(chunk_rows, std::max<int64_t>(N, 1));
  Tensor d_logits = grad ? Tensor::empty({N, V}, student_logits.dtype(), device) : Tensor();  // (N, V)
  Tensor zs_all = student_logits.detach(), zt_all = teacher_logits.detach(), tg = targets.contiguous();
  ChunkLoss chunk(config, chunk_rows, V, acc, device, counted, grad);
  for (int64_t r = 0; r < N; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, N - r);
    ops::copy(chunk.student(n), zs_all.narrow(0, r, n));
    ops::copy(chunk.teacher(n), zt_all.narrow(0, r, n));
    Tensor dz = chunk.run(n, tg.narrow(0, r, n));
    if (grad) ops::copy(d_logits.narrow(0, r, n), dz);
  }
  DistillLoss out = chunk.finish(counted);
  if (grad) {
    autograd::record_precomputed_gradients(out.loss, {student_logits}, {d_logits}, "DistillBackward");
  }
  return out;
}

// ---- Distiller -------------------------------------------------------------------------------------

Distiller::Distiller(const DistillConfig& config, const ModelConfig& student, Device device, DType dtype) : config_(config) {
  check_config(config);
  const ModelSource src = resolve_model_dir(config.teacher);
  LATTE_REQUIRE(src.config.vocab_size == student.vocab_size, "train.distill.teacher ", src.description, ": its vocab_size ",
                src.config.vocab_size, " differs from the student's ", student.vocab_size,
                "; distillation compares the two distributions token by token, so the vocabularies must be equal");
  teacher_ = load_model(src, device, dtype);
  for (const NamedParameter& p : teacher_->named_parameters()) p.tensor.set_requires_grad(false);
  log::info("distillation teacher: ", src.description, " (", attention_kind_name(src.config.attention.kind), ", ",
            teacher_->num_parameters(), " parameters), tau ", config.temperature, ", kl_weight ", config.kl_weight,
            ", ce_weight ", config.ce_weight);
}

Distiller::~Distiller() = default;

DistillLoss Distiller::loss(const TransformerLM& student, const Tensor& ids, const Tensor& targets) {
  LATTE_REQUIRE(targets.shape() == ids.shape() && targets.dtype() == DType::I32, "distillation: targets must be i32 with the ids' shape ",
                ids.shape().str(), ", got ", targets.str());
  LATTE_REQUIRE(!student.tensor_parallel().enabled(), "train.distill with parallel.tp > 1: the vocab-parallel KL (spec) is "
                "not implemented yet; distill with tp 1 and scale with dp");
  const int64_t N = ids.numel();
  Tensor flat_targets = targets.reshape({N});  // (N)
  const int64_t counted = count_targets(flat_targets);  // on the host, before the forward is queued
  Tensor teacher_rows;
  {
    autograd::NoGradGuard no_grad;
    teacher_rows = teacher_->hidden(ids).reshape({N, teacher_->config().d_model});  // (N, d_t)
  }
  Tensor student_rows = student.hidden(ids).reshape({N, student.config().d_model});  // (N, d_s)
  DistillLoss out = distill_loss(student_rows, student.output_weight(), teacher_rows, teacher_->output_weight(), flat_targets,
                                 counted, config_, chunk_rows_);
  kl_.push_back(out.kl);
  ce_.push_back(out.ce);
  return out;
}

std::pair<double, double> Distiller::take_stats() {
  if (kl_.empty()) return {-1.0, -1.0};
  double kl = 0, ce = 0;
  for (const Tensor& t : kl_) kl += t.item();
  for (const Tensor& t : ce_) ce += t.item();
  const double n = static_cast<double>(kl_.size());
  kl_.clear();
  ce_.clear();
  return {kl / n, ce / n};
}

// ---- train.init_from -------------------------------------------------------------------------------

void init_from_weights(const TransformerLM& model, const std::string& path) {
  LATTE_REQUIRE(!model.tensor_parallel().enabled(), "train.init_from ", path, " with parallel.tp > 1: loading full weights "
                "into tensor-parallel shards is not implemented yet; start with tp 1, or resume a tp checkpoint");
  const ModelSource src = resolve_model_dir(path);
  YAML::Node mine = model.config().to_yaml(), theirs = src.config.to_yaml();
  std::string differences;
  std::vector<std::string> keys;
  for (const auto& kv : mine) keys.push_back(kv.first.as<std::string>());
  for (const auto& kv : theirs)
    if (!mine[kv.first.as<std::string>()]) keys.push_back(kv.first.as<std::string>());
  for (const std::string& key : keys) {
    if (key == "max_seq_len" || key == "recompute" || key == "init") continue;
    const std::string a = mine[key] ? YAML::Dump(mine[key]) : "(absent)", b = theirs[key] ? YAML::Dump(theirs[key]) : "(absent)";
    if (a != b) differences += "\n  model." + key + ": " + a + "  vs  " + b;
  }
  LATTE_REQUIRE(differences.empty(), "train.init_from ", src.description, ": its model differs from this run's model section "
                "(this run vs the weights):", differences,
                "\n  start the experiment file with `base: <dir>/config.yaml` (or copy its model: section)");
  load_state(model, src.weights);
  log::info("initialised the model from ", src.description);
}

}  // namespace latte
