// The batched horizontal sums (kernels/simd.h) against the one-register sums they replace, bit
// for bit: the few-row kernels' results must not depend on which of the two reduced them (a row
// alone and the same row in a batch). Built for AVX2 in test_kernels_haswell on every machine,
// and for AVX-512 where the build targets it.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "kernels/simd.h"

namespace chainlm {
namespace {

#if defined(__AVX2__)
TEST(HorizontalSums, EightAtOnceGiveTheBitsOfEachAlone) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int round = 0; round < 20000; ++round) {
    __m256 x[8];
    for (int i = 0; i < 8; ++i) {
      alignas(32) float lanes[8];
      // Magnitudes 2^0..2^19 apart within a register, so another order of additions rounds
      // differently.
      for (float& v : lanes) v = unit(rng) * static_cast<float>(1u << (rng() % 20));
      x[i] = _mm256_load_ps(lanes);
    }
    alignas(32) float sums[8];
    horizontal_sums8(x, sums);
    for (int i = 0; i < 8; ++i) {
      const float alone = horizontal_sum(x[i]);
      ASSERT_EQ(std::memcmp(&alone, &sums[i], sizeof(float)), 0)
          << "round " << round << ", register " << i << ": " << alone << " alone, " << sums[i];
    }
  }
}
#endif

#if defined(__AVX512F__)
TEST(HorizontalSums, SixteenAtOnceGiveTheBitsOfEachReduction) {
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int round = 0; round < 20000; ++round) {
    __m512 x[16];
    for (int i = 0; i < 16; ++i) {
      alignas(64) float lanes[16];
      for (float& v : lanes) v = unit(rng) * static_cast<float>(1u << (rng() % 20));
      x[i] = _mm512_load_ps(lanes);
    }
    alignas(64) float sums[16];
    horizontal_sums16(x, sums);
    for (int i = 0; i < 16; ++i) {
      const float alone = _mm512_reduce_add_ps(x[i]);
      ASSERT_EQ(std::memcmp(&alone, &sums[i], sizeof(float)), 0)
          << "round " << round << ", register " << i;
    }
  }
}
#endif

}  // namespace
}  // namespace chainlm
