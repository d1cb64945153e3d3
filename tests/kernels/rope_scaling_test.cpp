// llama3 RoPE scaling (core/rope_scaling.h, rope_inv_frequencies): the frequencies against a
// naive float64 transcription of transformers' _compute_llama3_parameters, hand-checked values
// for LLaMA-3.2's setting, and the rotation and table cache using them.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "kernels/rope.h"

namespace chainlm {
namespace {

RopeScaling llama3(double factor, double low, double high, int original) {
  return {.type = RopeScaling::Type::kLlama3, .factor = factor, .low_freq_factor = low,
          .high_freq_factor = high, .original_max_position_embeddings = original};
}

// transformers' _compute_llama3_parameters as it is written there: whole-vector masks
// (torch.where), evaluated in double.
std::vector<double> naive_llama3(int hd, double theta, const RopeScaling& s) {
  const int half = hd / 2;
  std::vector<double> inv_freq(half), wavelen(half), out(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.0 / std::pow(theta, (2.0 * i) / hd);
    wavelen[i] = 2 * M_PI / inv_freq[i];
  }
  const double old_context_len = s.original_max_position_embeddings;
  const double low_freq_wavelen = old_context_len / s.low_freq_factor;
  const double high_freq_wavelen = old_context_len / s.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const double inv_freq_llama = wavelen[i] > low_freq_wavelen ? inv_freq[i] / s.factor : inv_freq[i];
    const double smooth_factor =
        (old_context_len / wavelen[i] - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const double smoothed = (1 - smooth_factor) * inv_freq_llama / s.factor + smooth_factor * inv_freq_llama;
    const bool is_medium = !(wavelen[i] < high_freq_wavelen) && !(wavelen[i] > low_freq_wavelen);
    out[i] = is_medium ? smoothed : inv_freq_llama;
  }
  return out;
}

TEST(RopeScaling, Llama3FrequenciesMatchTheNaiveFormula) {
  struct Case {
    int hd;
    double theta;
    RopeScaling s;
  };
  const std::vector<Case> cases = {
      {128, 500000.0, llama3(8, 1, 4, 8192)},   // LLaMA-3.1 8B/70B/405B
      {64, 500000.0, llama3(32, 1, 4, 8192)},   // LLaMA-3.2 1B
      {128, 500000.0, llama3(32, 1, 4, 8192)},  // LLaMA-3.2 3B
      {16, 10000.0, llama3(4, 1, 4, 64)},       // a small model: every band has pairs
      {8, 10000.0, llama3(2.5, 0.5, 3, 100)},
      {32, 1000.0, llama3(0.5, 2, 8, 512)},     // factor < 1 (transformers warns, runs it)
  };
  for (const Case& c : cases) {
    const std::vector<double> got = rope_inv_frequencies(c.hd, c.theta, c.s);
    const std::vector<double> want = naive_llama3(c.hd, c.theta, c.s);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-14 * want[i]) << c.s.describe() << " hd " << c.hd << " pair " << i;
  }
  // Without scaling: theta^(-2i/hd) exactly as before.
  const std::vector<double> plain = rope_inv_frequencies(64, 500000.0, RopeScaling{});
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(plain[i], std::pow(500000.0, -2.0 * i / 64), 1e-15 * plain[i]);
}

// LLaMA-3.2-1B: theta 500000, head_dim 64, factor 32, low 1, high 4, original 8192. The
// thresholds are wavelengths 8192/4 = 2048 and 8192/1 = 8192. Pair i has inv_freq 500000^(-i/32)
// and wavelength 2*pi*500000^(i/32): 1956.5 for i = 14 (kept), 2948.3, 4442.9, 6695.1 for
// i = 15..17 (interpolated), 10089.1 for i = 18 (divided by 32). By hand for i = 16:
// inv_freq = 1/sqrt(500000) = 1.41421356e-3, wavelength 4442.883, smooth = (8192/4442.883 - 1)/3
// = 0.281283, so (1 - 0.281283) * 1.41421356e-3 / 32 + 0.281283 * 1.41421356e-3 = 4.29557e-4.
TEST(RopeScaling, HandCheckedLlama32Values) {
  const std::vector<double> f = rope_inv_frequencies(64, 500000.0, llama3(32, 1, 4, 8192));
  ASSERT_EQ(f.size(), 32u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_NEAR(f[14], 3.211445994752591e-03, 1e-15);  // unchanged
  EXPECT_NEAR(f[15], 1.290547928209264e-03, 1e-15);  // smooth 0.592849
  EXPECT_NEAR(f[16], 4.2955679655936815e-04, 1e-16);  // smooth 0.281283 (above)
  EXPECT_NEAR(f[16], 4.29557e-4, 1e-9);
  EXPECT_NEAR(f[17], 9.70828780262767e-05, 1e-17);  // smooth 0.074527
  EXPECT_NEAR(f[18], 6.22772421914596e-04 / 32, 1e-18);
  EXPECT_NEAR(f[31], 3.013858152139171e-06 / 32, 1e-20);
}

TEST(RopeScaling, TheRotationUsesTheScaledFrequencies) {
  const int rows = 11, n_heads = 2, hd = 16, stride = 40;
  const RopeScaling s = llama3(4, 1, 4, 64);
  const std::vector<double> freq = naive_llama3(hd, 10000.0, s);
  std::vector<float> x = test::random_vector((size_t)rows * stride, 9);
  std::vector<int> pos(rows);
  Rng rng(2);
  for (int& p : pos) p = (int)rng.below(5000);
  std::vector<float> y = x;
  rope_forward(y.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, s);
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < n_heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const size_t at = (size_t)r * stride + (size_t)h * hd + 2 * i;
        const double a = pos[r] * freq[i];
        EXPECT_NEAR(y[at], x[at] * std::cos(a) - x[at + 1] * std::sin(a), 2e-6);
        EXPECT_NEAR(y[at + 1], x[at] * std::sin(a) + x[at + 1] * std::cos(a), 2e-6);
      }
  // Backward is still the inverse.
  rope_backward(y.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, s);
  test::expect_close(y, x, x.size(), 1e-6, 1e-5, "inverse with scaling");
}

TEST(RopeScaling, TablesOfDifferentScalingAreKeptApart) {
  const RopeScaling a = llama3(8, 1, 4, 64), b = llama3(32, 1, 4, 64);
  auto plain = rope_table(16, 10000.0f, RopeScaling{}, 100);
  auto ta = rope_table(16, 10000.0f, a, 100);
  auto tb = rope_table(16, 10000.0f, b, 100);
  EXPECT_EQ(ta->scaling, a);
  EXPECT_EQ(tb->scaling, b);
  EXPECT_EQ(plain->scaling, RopeScaling{});
  EXPECT_NE(ta->cos, tb->cos);
  EXPECT_NE(ta->cos, plain->cos);
  EXPECT_EQ(rope_table(16, 10000.0f, a, 50), ta);  // the cached table
}

TEST(RopeScaling, RefusesParametersThatMakeTheFrequenciesMeaningless) {
  EXPECT_THROW(rope_inv_frequencies(16, 1e4, llama3(0, 1, 4, 64)), Error);
  EXPECT_THROW(rope_inv_frequencies(16, 1e4, llama3(8, 4, 4, 64)), Error);  // would divide by zero
  EXPECT_THROW(rope_inv_frequencies(16, 1e4, llama3(8, 1, 4, 0)), Error);
  EXPECT_THROW(rope_inv_frequencies(16, 1e4, llama3(NAN, 1, 4, 64)), Error);
}

}  // namespace
}  // namespace chainlm
