#pragma once
// bfloat16: the upper 16 bits of an IEEE fp32 (8 exponent bits, 7 mantissa bits), the format
// of bf16 weights (docs/precision.md). Conversion from fp32 rounds to nearest, ties to even;
// NaN stays NaN, infinities and signed zeros are kept; the relative rounding error of a
// normal value is at most 2^-8. Widening back to fp32 is exact.
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace chainlm {

using bf16_t = uint16_t;

inline bf16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16_t>(u >> 16);
}

inline float from_bf16(bf16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// One output element from an fp32 result: as it is, or rounded to bf16. Kernels templated on
// their output type write either form with it (a bf16 step's GEMM inputs, rounded as written).
inline void store_element(float& out, float v) {
  out = v;
}
inline void store_element(bf16_t& out, float v) {
  out = to_bf16(v);
}

// dst[i] = to_bf16(src[i]) / from_bf16(src[i]) for i < n (threads over large n).
void to_bf16(const float* src, bf16_t* dst, size_t n);
void from_bf16(const bf16_t* src, float* dst, size_t n);
// rows x cols of src (rows ld_src apart) rounded into dst (rows ld_dst apart), threads over
// rows: an activation rounded once for every GEMM that reads it.
void to_bf16_rows(int rows, int cols, const float* src, long ld_src, bf16_t* dst, long ld_dst);

}  // namespace chainlm
