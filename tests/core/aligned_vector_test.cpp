#include "core/aligned_vector.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace chainlm {
namespace {

uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(AlignedVector, SmallBuffersStartOnACacheLineAndLargeOnesOnAHugePage) {
  for (std::size_t n : {1, 3, 100, 4099}) {
    AlignedVector<float> v(n, 1.0f);
    EXPECT_EQ(address(v.data()) % 64, 0u) << n;
    AlignedVector<uint16_t> h(n);
    EXPECT_EQ(address(h.data()) % 64, 0u) << n;
  }
  AlignedVector<float> big((std::size_t(3) << 20) + 5, 2.0f);  // 12 MiB and a bit
  EXPECT_EQ(address(big.data()) % (std::size_t(2) << 20), 0u);
  EXPECT_EQ(big.back(), 2.0f);
  // Growing, copying and swapping keep the alignment (each allocation goes through it).
  AlignedVector<float> grown(10);
  grown.resize(1000);
  EXPECT_EQ(address(grown.data()) % 64, 0u);
  AlignedVector<float> copy = big;
  EXPECT_EQ(address(copy.data()) % (std::size_t(2) << 20), 0u);
  EXPECT_EQ(copy, big);
  copy.swap(grown);
  EXPECT_EQ(address(copy.data()) % 64, 0u);
  EXPECT_EQ(copy.size(), 1000u);
}

}  // namespace
}  // namespace chainlm
