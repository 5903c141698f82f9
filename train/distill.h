// Knowledge distillation (spec/upcycling.md "Distillation"; X-EcoMLA's recovery step after the SVD
// initialisation): the student minimises
//     kl_weight * tau^2 * KL(p_teacher^tau || p_student^tau) + ce_weight * CE(student, labels)
// where p^tau = softmax(logits / tau), the KL is summed over the vocabulary and both terms are averaged
// over the tokens whose target is not -1. The teacher runs in the same process without gradients.
//
// Memory: like the fused LM-head loss, nothing of size (B T, V) outlives a chunk of rows. Per chunk the
// student's and the teacher's logits are formed from their final hidden states (fp32 accumulation), the
// existing fused cross-entropy kernel turns each into softmax - onehot(target) in place, and
//     KL_row = sum_v (p_T - e_t)_v (a - b)_v + CE_row(b) - CE_row(a)      (a = z_T / tau, b = z_S / tau)
//     d loss / d z_S = kl_weight * tau * (p_S - p_T) / N + ce_weight * (p_S^1 - e_t) / N
// (the onehots cancel), so no new kernel is needed. d(hidden) and d(W) of the student's head are formed
// chunk by chunk in the forward, as layers/lm_head_loss does; the backward only scales them.
//
// Also here: `train.init_from` (start a run from the weights of an import-hf / upcycle directory, an
// exported file or a checkpoint), because distilling an upcycled student starts that way.
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/model_config.h"

namespace latte {

class TransformerLM;

// `train.distill` section.
struct DistillConfig {
  std::string teacher;       // model dir (import-hf / upcycle), .safetensors with embedded config, checkpoint or run dir; "" = off
  double temperature = 1.0;  // tau: both models' logits are divided by it, the KL is multiplied by tau^2
  double kl_weight = 1.0;    // weight of the KL term (X-EcoMLA: 1)
  double ce_weight = 0.0;    // weight of the cross-entropy on the labels (X-EcoMLA: 0)
  bool enabled() const { return !teacher.empty(); }
};

// Parses `train.distill` (node may be undefined/null: distillation off). `where` is the key path
// ("train.distill"), `file` the config file; unknown keys and bad values raise errors naming them.
DistillConfig parse_distill_config(const YAML::Node& node, const std::string& where, const std::string& file);

struct DistillLoss {
  Tensor loss;  // scalar, differentiable w.r.t. the student (f32; f64 for f64 inputs)
  Tensor kl;    // scalar, detached: mean KL(p_T^tau || p_S^tau) per counted token (not scaled by tau^2)
  Tensor ce;    // scalar, detached: mean cross-entropy of the student at temperature 1
};

// Fused form. student_hidden (N, d_s) and student_weight (V, d_s) are differentiable; teacher_hidden
// (N, d_t), teacher_weight (V, d_t) are read only; targets (N) i32 (-1 = ignored), `counted` the number
// of targets != -1. chunk_rows bounds the rows whose logits exist at once (0: about 2^24 logits).
DistillLoss distill_loss(const Tensor& student_hidden, const Tensor& student_weight, const Tensor& teacher_hidden,
                         const Tensor& teacher_weight, const Tensor& targets, int64_t counted, const DistillConfig& config,
                         int64_t chunk_rows = 0);

// From logits: student_logits (N, V) differentiable, teacher_logits (N, V), targets (N) i32. Same
// chunked computation; the gradient w.r.t. the logits is kept (N, V) for the backward (tests, small runs).
DistillLoss distill_loss_from_logits(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets,
                                     const DistillConfig& config, int64_t chunk_rows = 0);

// The teacher and the loss, for the trainer: one object per run.
class Distiller {
 public:
  // Loads the teacher onto device in dtype; checks it can teach a student of this config (same vocabulary).
  Distiller(const DistillConfig& config, const ModelConfig& student, Device device, DType dtype);
  ~Distiller();
  Distiller(const Distiller&) = delete;
  Distiller& operator=(const Distiller&) = delete;

  // ids, targets (B, T) i32: the student's forward (with grad) + the teacher's (without) + the loss.
  DistillLoss loss(const TransformerLM& student, const Tensor& ids, const Tensor& targets);
  // Mean KL and CE over the loss() calls since the last take_stats() (reads the device); -1 when none.
  std::pair<double, double> take_stats();
  const TransformerLM& teacher() const { return *teacher_; }
  const DistillConfig& config() const { return config_; }
  void set_chunk_rows(int64_t rows) { chunk_rows_ = rows; }

 private:
  DistillConfig config_;
  std::unique_ptr<TransformerLM> teacher_;
  int64_t chunk_rows_ = 0;
  std::vector<Tensor> kl_, ce_;  // per loss() call, for take_stats
};

// `train.init_from`: loads the weights at `path` (anything resolve_model_dir accepts) into `model`.
// The source's model section must equal the model's except max_seq_len, recompute and init; the error
// lists every differing key.
void init_from_weights(const TransformerLM& model, const std::string& path);

}  // namespace latte
