#pragma once
// e^x in plain arithmetic, for the element-wise kernels' `#pragma omp simd` loops (SwiGLU's
// sigmoid, the cross-entropy softmax). std::exp is a libm call that GCC does not vectorize
// without -ffast-math: ~60M scalar calls per training step of the 30M model, 4% of it. This
// function has no call and no branch, so the compiler vectorizes it for whatever ISA the build
// targets (SSE, AVX2, AVX-512), and the vector lanes and a loop's scalar tail compute the same
// bits (every step is an IEEE operation or an exact fused multiply-add).
//
// Method (Cephes expf): n = round(x log2 e) by the 1.5 * 2^23 trick, r = x - n ln 2 in two
// parts (Cody-Waite: n * kLn2Hi is exact), e^r from a degree-7 polynomial on |r| <= ln2/2,
// times 2^n built in the exponent bits. Relative error about 2 ulp (tests/kernels/
// fast_exp_test.cpp bounds it at 3e-7 against a double reference).
//
// Range: x is clamped to [-87, 88] so 2^n stays a normal float: e^x for x < -87 comes out as
// e^-87 (~1.6e-38) instead of something smaller, and for x > 88 as e^88 (~1.65e38) instead of
// inf. Callers either pass x <= 0 near their maximum (softmax) or go through 1 / (1 + e^-x),
// where both ends give the same sigmoid to within a float's resolution; NaN stays NaN.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace chainlm {

inline float fast_exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // few mantissa bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float t = std::fma(x, kLog2e, kShift);
  const float n = t - kShift;
  int32_t ti;
  std::memcpy(&ti, &t, sizeof ti);
  const int32_t ni = ti - 0x4B400000;  // the integer n, from t's low mantissa bits
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r + 1.0f);
  // Unsigned: for a NaN x, ni is garbage and the shift must not be a signed overflow.
  const uint32_t bits = static_cast<uint32_t>(ni + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace chainlm
