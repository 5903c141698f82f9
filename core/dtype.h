// Element types and conversions. bf16/f16 are stored as raw uint16 bit patterns on the host;
// arithmetic on them always goes through float (fp32 accumulation everywhere).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace latte {

enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U16, U8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);        // "f32", "bf16", ...
DType dtype_from_name(const std::string& name);  // accepts f32/float32, bf16/bfloat16, ...; throws with the list
bool is_floating(DType t);

// bf16: round-to-nearest-even from fp32; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_f16(float f);
float f16_to_float(uint16_t h);

// Host-side tag types so templates can tell bf16 from f16 from u16.
struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<bf16_t>() { return DType::BF16; }
template <> constexpr DType dtype_of<f16_t>() { return DType::F16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::U16; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }

// Reads element i of a buffer of type t as double / writes a double into it (for conversions and tests).
double load_as_double(const void* base, DType t, int64_t i);
void store_from_double(void* base, DType t, int64_t i, double v);

}  // namespace latte
