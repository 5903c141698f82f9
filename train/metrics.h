// Training metrics: the per-step console line and <out_dir>/metrics.jsonl (one JSON object per line
// with step, loss, lr, grad_norm, tokens_per_s, mfu, and val_loss/val_ppl on eval steps), plus MFU by
// the spec's formula (achieved FLOP/s over the GPU's dense bf16 peak).
#pragma once
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace latte {

// Dense bf16 peak of one H100/H200 SXM (spec: "FLOPs, for MFU").
constexpr double kH100PeakFlops = 989e12;

double model_flops_utilization(double flops_per_token, double tokens_per_s, int num_gpus, double peak = kH100PeakFlops);

class MetricsLog {
 public:
  // Opens <out_dir>/metrics.jsonl; when resuming from `resume_step`, lines for later steps (written by a
  // run that crashed after its last checkpoint) are dropped so that the file matches an uninterrupted run.
  MetricsLog(const std::string& out_dir, int64_t resume_step, bool enabled);
  void write(const nlohmann::json& row);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
  bool enabled_;
};

std::string format_duration(double seconds);  // "1h02m", "3m05s", "12s"

}  // namespace latte
