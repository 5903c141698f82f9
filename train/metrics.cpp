#include "train/metrics.h"

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace latte {

double model_flops_utilization(double flops_per_token, double tokens_per_s, int num_gpus, double peak) {
  if (num_gpus <= 0) return 0.0;
  return flops_per_token * tokens_per_s / (peak * num_gpus);
}

MetricsLog::MetricsLog(const std::string& out_dir, int64_t resume_step, bool enabled) : enabled_(enabled) {
  path_ = (std::filesystem::path(out_dir) / "metrics.jsonl").string();
  if (!enabled_) return;
  std::filesystem::create_directories(out_dir);
  std::vector<std::string> keep;
  if (resume_step > 0 && std::filesystem::exists(path_)) {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        if (nlohmann::json::parse(line).value("step", int64_t{0}) <= resume_step) keep.push_back(line);
      } catch (const std::exception&) {
        // A torn last line from a crash: drop it.
      }
    }
  }
  out_.open(path_, std::ios::trunc);
  LATTE_REQUIRE(out_.good(), path_, ": cannot open for writing");
  for (const std::string& l : keep) out_ << l << "\n";
  out_.flush();
}

void MetricsLog::write(const nlohmann::json& row) {
  if (!enabled_) return;
  out_ << row.dump() << "\n";
  out_.flush();
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  return buf;
}

}  // namespace latte
