// RoPE inverse frequencies with HF's llama3 rescaling (layers/rope.h). The rescaling follows
// transformers' _compute_llama3_parameters: wavelengths shorter than original/high_freq_factor are
// kept, longer than original/low_freq_factor are divided by `factor`, and those in between are
// interpolated smoothly. Computed in double and rounded once to f32 (HF computes in f32; the two
// agree to an ulp).
#include "layers/rope.h"

#include <cmath>

namespace latte {

std::vector<double> rope_inv_freq_values(int64_t rotary_dim, double base, const RopeScaling& scaling) {
  LATTE_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0, "rotary width must be even, got ", rotary_dim);
  std::vector<double> inv(static_cast<size_t>(rotary_dim / 2));
  for (int64_t j = 0; j < rotary_dim / 2; ++j)
    inv[static_cast<size_t>(j)] = 1.0 / std::pow(base, static_cast<double>(2 * j) / static_cast<double>(rotary_dim));
  if (!scaling.enabled) return inv;
  const double old_context = static_cast<double>(scaling.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / scaling.low_freq_factor;
  const double high_freq_wavelen = old_context / scaling.high_freq_factor;
  for (double& f : inv) {
    const double wavelen = 2.0 * M_PI / f;
    if (wavelen < high_freq_wavelen) continue;  // high frequency: kept
    if (wavelen > low_freq_wavelen) {           // low frequency: slowed down by factor
      f /= scaling.factor;
      continue;
    }
    const double smooth =
        (old_context / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor);
    f = (1.0 - smooth) * f / scaling.factor + smooth * f;
  }
  return inv;
}

Tensor rope_inv_freq(int64_t rotary_dim, double base, const RopeScaling& scaling, Device device) {
  std::vector<double> v = rope_inv_freq_values(rotary_dim, base, scaling);
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, DType::F32, device);
}

}  // namespace latte
