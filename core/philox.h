// Counter-based Philox-4x32-10 RNG. A fill with (seed, offset) gives element i the value derived from
// counter (offset + i) and key seed only, so a CPU fill and a CUDA fill of the same tensor match
// bit for bit, and any slice of a stream can be regenerated without the elements before it.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace latte::philox {

struct U4 { uint32_t x, y, z, w; };

LATTE_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
LATTE_HD U4 philox4x32(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// Uniform in (0, 1]: 24 random bits, never 0 so that log() is safe.
LATTE_HD float u32_to_unit(uint32_t v) { return (static_cast<float>(v >> 8) + 1.0f) * (1.0f / 16777216.0f); }

// Element i of the uniform stream (seed, offset).
LATTE_HD float uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  return u32_to_unit(philox4x32(offset + i, seed).x);
}

// Element i of the standard-normal stream (seed, offset): Box-Muller on one Philox output.
LATTE_HD float normal(uint64_t seed, uint64_t offset, uint64_t i) {
  U4 r = philox4x32(offset + i, seed);
  float u1 = u32_to_unit(r.x), u2 = u32_to_unit(r.y);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

}  // namespace latte::philox
