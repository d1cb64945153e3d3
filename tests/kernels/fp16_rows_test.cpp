// Rows of IEEE halves (kernels/fp16_rows.h): the F16C conversions against quant.h's scalar ones
// (which tests/kernels/quant_test.cpp checks against known encodings), every half and floats of
// every kind: normal, subnormal, ties, overflow.
#include "kernels/fp16_rows.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "kernels/quant.h"

namespace chainlm {
namespace {

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

TEST(Fp16Rows, WideningEveryHalfMatchesTheScalarConversion) {
  std::vector<uint16_t> halves(65536);
  for (int i = 0; i < 65536; ++i) halves[i] = (uint16_t)i;
  std::vector<float> simd(65536), portable(65536);
  floats_from_fp16(halves.data(), simd.data(), 65536);
  floats_from_fp16_portable(halves.data(), portable.data(), 65536);
  for (int i = 0; i < 65536; ++i) {
    ASSERT_EQ(std::isnan(simd[i]), std::isnan(portable[i])) << "half " << i;
    if (!std::isnan(simd[i])) {
      ASSERT_EQ(bits(simd[i]), bits(portable[i])) << "half " << i;
    }
  }
  EXPECT_EQ(simd[0x3c00], 1.0f);
  EXPECT_EQ(simd[0x0001], std::ldexp(1.0f, -24));  // the smallest subnormal
}

TEST(Fp16Rows, NarrowingMatchesTheScalarRoundingForEveryKindOfFloat) {
  std::vector<float> x;
  Rng rng(3);
  for (int i = 0; i < 20000; ++i) x.push_back((float)(rng.normal() * std::ldexp(1.0, (int)rng.below(60) - 30)));
  for (int h = 0; h < 0x7c00; h += 7) {  // exact halves and the ties between neighbours
    const float a = float_from_fp16((uint16_t)h), b = float_from_fp16((uint16_t)(h + 1));
    for (float v : {a, b, (a + b) / 2, std::nextafter((a + b) / 2, 0.0f), std::nextafter((a + b) / 2, 1e9f)}) {
      x.push_back(v);
      x.push_back(-v);
    }
  }
  for (float v : {65504.0f, 65519.0f, 65520.0f, 1e6f, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-9f, 5.96e-8f})
    x.push_back(v);
  const long n = (long)x.size();  // not a multiple of 8: the tail goes through the scalar loop
  std::vector<uint16_t> simd(n), portable(n);
  fp16_from_floats(x.data(), simd.data(), n);
  fp16_from_floats_portable(x.data(), portable.data(), n);
  for (long i = 0; i < n; ++i) ASSERT_EQ(simd[i], portable[i]) << "x = " << x[i];
  EXPECT_EQ(simd[n - 8], 0x7c00);  // 1e6 overflows to infinity

  // Round trip: within half a unit in the last place of a half (2^-11 relative) in the normal range.
  std::vector<float> back(n);
  floats_from_fp16(simd.data(), back.data(), n);
  for (long i = 0; i < n; ++i)
    if (std::fabs(x[i]) >= 6.2e-5f && std::fabs(x[i]) <= 65504.0f) {
      ASSERT_LE(std::fabs(back[i] - x[i]), std::ldexp(std::fabs(x[i]), -11)) << "x = " << x[i];
    }
}

}  // namespace
}  // namespace chainlm
