// The rule that sends large bf16 GEMMs to oneDNN's bf16 kernels or to the fp32 kernels, and the
// measurement it rests on.
#include "kernels/bf16_dot_rate.h"

#include <gtest/gtest.h>

#include <cmath>

namespace chainlm {
namespace {

TEST(Bf16DotRate, AmxAlwaysRunsTheBf16Kernels) {
  EXPECT_TRUE(bf16_large_gemm_native("avx512_core_amx", 0.0));
  EXPECT_TRUE(bf16_large_gemm_native("avx512_core_amx", 0.5));
}

TEST(Bf16DotRate, Avx512Bf16RunsThemOnlyWhereTheDotProductOutrunsTheFma) {
  EXPECT_TRUE(bf16_large_gemm_native("avx512_core_bf16", 2.0));   // AMD Zen 4 and 5
  EXPECT_FALSE(bf16_large_gemm_native("avx512_core_bf16", 0.5));  // Emerald Rapids without AMX
  EXPECT_FALSE(bf16_large_gemm_native("avx512_core_bf16", 1.0));  // no gain to pay rounding for
}

TEST(Bf16DotRate, IsasWithoutBf16InstructionsNeverDo) {
  for (const char* isa : {"avx2", "avx512_core", "avx512_core_vnni", "sse41"})
    EXPECT_FALSE(bf16_large_gemm_native(isa, 2.0)) << isa;
}

TEST(Bf16DotRate, MeasuredWhereTheBuildHasTheInstruction) {
  const double r = bf16_dot_flops_ratio();
#if defined(__AVX512BF16__)
  // The CPUs seen issue vdpbf16ps at half to the full rate of an FMA, each doing twice an
  // FMA's arithmetic: 0.5 to 2, with room for a busy core.
  EXPECT_GT(r, 0.2);
  EXPECT_LT(r, 4.0);
  EXPECT_EQ(r, bf16_dot_flops_ratio());  // measured once: every GEMM of a run decides alike
#else
  EXPECT_EQ(r, 0.0);
#endif
}

}  // namespace
}  // namespace chainlm
