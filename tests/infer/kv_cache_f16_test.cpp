// The 16-bit KV cache (infer/kv_cache.h, KvCacheType::F16): what `auto` picks for which
// weights, PHD refused, half the bytes, the halves stored being the rounding of what the fp32
// cache stores, and decoding (every sub-model, chain growth, chunked prefill) within the
// rounding's reach of the fp32 cache's logits.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "../model/model_variant.h"
#include "core/error.h"
#include "infer/session.h"
#include "kernels/quant.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;
using test::variant_name;

class F16CacheVariants : public ::testing::TestWithParam<ModelVariant> {};

TEST_P(F16CacheVariants, DecodesWithinTheHalvesRoundingOfTheFp32Cache) {
  const ModelConfig c = GetParam().config(40);
  Model model(c);
  model.init_random(21);
  const int V = c.vocab_size, n = c.n_chains(), T = 30;
  const std::vector<int> tokens = random_tokens(T, V, 8);
  // Chunks of 6: the prompt's 13 tokens run as passes of 6 rows (widened halves, tiles), 6 and
  // 1 (rows read in place); a plain CoLM recomputes its cache when its chains grow.
  InferenceSession f32(model, 6, KvCacheType::F32), f16(model, 6, KvCacheType::F16);
  ASSERT_EQ(f32.cache().type, KvCacheType::F32);
  ASSERT_EQ(f16.cache().type, KvCacheType::F16);
  const std::vector<int> prompt(tokens.begin(), tokens.begin() + 13);
  const float* a = f32.prefill(prompt, n);
  const float* b = f16.prefill(prompt, n);

  // Layer 0's K/V do not depend on attention: the halves are exactly the fp32 rows rounded.
  const int KV = f32.cache().width, cols = model.layout().active_kv_width(n);
  for (int p = 0; p < 13; ++p)
    for (int i = 0; i < cols; ++i) {
      ASSERT_EQ(f16.cache().k16[(size_t)p * KV + i], fp16_from_float(f32.cache().k[(size_t)p * KV + i]));
      ASSERT_EQ(f16.cache().v16[(size_t)p * KV + i], fp16_from_float(f32.cache().v[(size_t)p * KV + i]));
    }

  // Each cached element is off by at most 2^-11 of itself; through attention that moves a
  // layer's output by about that much relative to its size (tests/kernels/attention_f16_test
  // bounds one call), and each of the n_layers layers adds its share to the residual stream.
  // Four times n_layers * 2^-11, relative to the logits' size, holds every step here.
  auto expect_close = [&](const float* x, const float* y, const std::string& where) {
    double scale = 1, diff = 0;
    for (int i = 0; i < V; ++i) {
      scale = std::max(scale, (double)std::fabs(x[i]));
      diff = std::max(diff, (double)std::fabs(x[i] - y[i]));
    }
    ASSERT_LE(diff, 4 * c.n_layers * std::ldexp(1.0, -11) * scale) << where;
  };
  expect_close(a, b, "prefill");
  for (int t = 13; t < T; ++t) {
    const int k = 1 + (t * 5) % n;  // every sub-model, up and down
    a = f32.decode(tokens[t], k);
    b = f16.decode(tokens[t], k);
    expect_close(a, b, "step " + std::to_string(t) + " with " + std::to_string(k) + " chains");
  }
  EXPECT_EQ(f16.tokens(), f32.tokens());
  // Half the bytes held and read.
  EXPECT_EQ(2 * f16.cache().bytes_allocated(), f32.cache().bytes_allocated());
  EXPECT_EQ(2 * f16.cache().bytes_used(model.layout().kv), f32.cache().bytes_used(model.layout().kv));
}

INSTANTIATE_TEST_SUITE_P(All, F16CacheVariants,
                         ::testing::Values(ModelVariant{{1}, false, 2},         // LLaMA with GQA
                                           ModelVariant{{1, 2, 1}, false, 4},   // plain CoLM: per-chain KV
                                           ModelVariant{{2, 2, 2, 2}, true, 4},  // CoLM-Air: chain-1 KV
                                           ModelVariant{{1, 2, 1}, true, 2, false, 1, 0, 0, false, true}),
                         variant_name);

TEST(KvCacheType, AutoIsF16ForBf16AndQuantizedWeightsAndF32OtherwiseAndForPhd) {
  const ModelConfig plain = ModelVariant{{1, 1}, true, 2}.config(24);
  const ModelConfig phd = ModelVariant{{1, 1}, true, 2, false, 2, 4, 8}.config(24);
  Model fp32(plain), bf16(plain), q4(plain), phd_fp32(phd), phd_q8(phd);
  for (Model* m : {&fp32, &bf16, &q4, &phd_fp32, &phd_q8}) m->init_random(2);
  bf16.use_bf16_weights(false);
  q4.quantize_weights(QuantType::kQ4_0);
  phd_q8.quantize_weights(QuantType::kQ8_0);
  EXPECT_EQ(resolve_kv_cache_type(KvCacheType::Auto, fp32), KvCacheType::F32);
  EXPECT_EQ(resolve_kv_cache_type(KvCacheType::Auto, bf16), KvCacheType::F16);
  EXPECT_EQ(resolve_kv_cache_type(KvCacheType::Auto, q4), KvCacheType::F16);
  EXPECT_EQ(resolve_kv_cache_type(KvCacheType::Auto, phd_fp32), KvCacheType::F32);
  EXPECT_EQ(resolve_kv_cache_type(KvCacheType::Auto, phd_q8), KvCacheType::F32);
  EXPECT_EQ(resolve_kv_cache_type(KvCacheType::F32, q4), KvCacheType::F32);
  EXPECT_EQ(resolve_kv_cache_type(KvCacheType::F16, fp32), KvCacheType::F16);
  EXPECT_EQ(InferenceSession(q4).cache().type, KvCacheType::F16);
  try {
    InferenceSession s(phd_q8, 512, KvCacheType::F16);
    FAIL() << "a 16-bit cache for a PHD model was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PHD"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_kv_cache_type("f16"), KvCacheType::F16);
  try {
    parse_kv_cache_type("f8");
    FAIL() << "f8 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("auto, f32 or f16"), std::string::npos) << e.what();
  }
}

TEST(KvCacheType, ASessionsMemoryEstimateCountsTheHalves) {
  const ModelConfig c = ModelVariant{{1, 2, 1}, false, 4}.config(40);
  const ChainLayout layout(c);
  const std::size_t cache32 = 2 * sizeof(float) * (std::size_t)c.n_layers * c.max_seq_len * layout.kv.total();
  // F16: half the cache, plus the rows a pass converts from (new K and V, max_chunk rows).
  const std::size_t rows = std::min(512, c.max_seq_len);
  EXPECT_EQ(InferenceSession::memory_bytes(c, 512, KvCacheType::F16) + cache32 / 2,
            InferenceSession::memory_bytes(c, 512, KvCacheType::F32) + 2 * rows * layout.kv.total() * sizeof(float));
}

}  // namespace
}  // namespace chainlm
