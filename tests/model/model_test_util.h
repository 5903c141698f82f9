// Helpers shared by the model tests: config loading/patching, deterministic token batches, comparisons.
#pragma once
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/philox.h"
#include "core/tensor.h"
#include "layers/model_config.h"

namespace latte::test {

inline std::string model_config_path(const std::string& name) {
  return std::string(LATTE_SOURCE_DIR) + "/configs/models/" + name + ".yaml";
}

inline ModelConfig tiny_config(const std::string& variant) { return load_model_config(model_config_path(variant + "-tiny")); }

inline const std::vector<std::string>& tiny_variants() {
  static const std::vector<std::string> v = {"mha", "gqa", "mqa", "mla", "egmla", "mlra2", "mlra4"};
  return v;
}

// Parses a `model:` section given as YAML text (errors name "model.<key>").
inline ModelConfig config_from_yaml(const std::string& text) { return parse_model_config(YAML::Load(text)["model"], "model"); }

// (B, T) i32 ids drawn uniformly from [0, vocab).
inline Tensor random_ids(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  std::vector<double> v(static_cast<size_t>(B * T));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::floor(philox::uniform(seed, 0, i) * 0.999999 * static_cast<double>(vocab));
  return Tensor::from_vector(v, {B, T}, DType::I32);
}

// max |a - b| / max(max |b|, tiny)
inline double max_rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::fabs(x[i] - y[i]));
    scale = std::max(scale, std::fabs(y[i]));
  }
  return diff / scale;
}

}  // namespace latte::test
