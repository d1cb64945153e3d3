// Inference with bf16 weights (Model::use_bf16_weights, docs/precision.md): the same answers as
// fp32 within bf16's rounding, on every path (incremental session, full forward, PHD), at half
// the weights' memory, and a bf16-only model refuses what needs its fp32 weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../io/test_temp_dir.h"
#include "../model/model_variant.h"
#include "infer/session.h"
#include "inference_paths.h"
#include "model/checkpoint.h"

namespace chainlm {
namespace {

using test::expect_session_near;
using test::max_abs;
using test::ModelVariant;
using test::random_tokens;
using test::variant_name;

// A bf16-only copy of an fp32 model.
std::unique_ptr<Model> bf16_copy(const Model& m) {
  auto b = std::make_unique<Model>(m.config());
  b->copy_weights_from(m);
  b->use_bf16_weights(/*keep_fp32=*/false);
  return b;
}

class Bf16Variants : public ::testing::TestWithParam<ModelVariant> {};

// Every GEMM rounds both operands to bf16 (2^-8 relative each), so each GEMM output moves by at
// most ~2^-7 of the sum of its products' magnitudes; through the 2 layers' 4 GEMM stages and
// the head (tiny_config), a first-order bound is 9 * 2^-7 of the logits' scale (weights are
// random, so the products' magnitudes are of the order of the outputs').
TEST_P(Bf16Variants, LogitsMatchFp32WithinBf16RoundingOnEveryPath) {
  const ModelConfig c = GetParam().config(40);
  Model fp32(c);
  fp32.init_random(7);
  // O(1) logits from a larger embedding and head; the trunk keeps its init, where it is nearly
  // linear (larger trunk weights make softmax and SwiGLU amplify any perturbation).
  for (const char* name : {"tok_embeddings.weight", "output.weight"}) {
    const int i = fp32.params().find(name);
    if (i < 0) continue;
    for (size_t e = 0; e < fp32.params().info(i).numel(); ++e) fp32.params().value(i)[e] *= 30.0f;
  }
  auto bf16 = bf16_copy(fp32);
  ASSERT_EQ(bf16->precision(), Precision::Bf16);
  const int T = 21, V = c.vocab_size;
  auto tokens = random_tokens(T, V, 3);
  for (int k = 1; k <= c.n_chains(); ++k) {
    std::vector<float> want((size_t)T * V), full((size_t)T * V);
    fp32.logits(tokens.data(), 1, T, k, want.data());
    bf16->logits(tokens.data(), 1, T, k, full.data());
    const double scale = max_abs(want), tol = 9 * std::ldexp(1.0, -7) * scale;
    ASSERT_GT(scale, 0.2);
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, (double)std::fabs(full[i] - want[i]));
    EXPECT_LE(worst, tol) << "full forward, k=" << k;
    EXPECT_GT(worst, 0.0) << "bf16 changed nothing: were the fp32 weights used?";
    // The session (prefill in chunks, then one token at a time) against fp32.
    expect_session_near(*bf16, tokens, k, want, tol);
  }
}

INSTANTIATE_TEST_SUITE_P(All, Bf16Variants,
                         ::testing::Values(ModelVariant{{1}, false, 0}, ModelVariant{{1, 1}, true, 2},
                                           ModelVariant{{1, 2, 1}, false, 4, true},
                                           ModelVariant{{1, 1}, true, 2, false, 3, 2, 4}),
                         variant_name);

TEST(Bf16Inference, HoldsHalfTheBytesAndKeepsOnlyNormGainsInFp32) {
  const ModelConfig c = test::tiny_config({1, 1}, false);
  Model fp32(c);
  fp32.init_random(1);
  auto bf16 = bf16_copy(fp32);
  size_t norm_floats = 0;
  for (const ParamInfo& p : fp32.params().infos())
    if (p.shape.size() == 1) norm_floats += (p.numel() + 15) / 16 * 16;
  EXPECT_EQ(bf16->params().size(), norm_floats);
  EXPECT_EQ(bf16->weight_bytes(), norm_floats * 4 + fp32.params().size() * 2);
  EXPECT_LT(bf16->weight_bytes(), fp32.weight_bytes() * 0.55);
  // The norm gains kept their values.
  const int g = fp32.params().find("layers.1.ffn_norm.weight");
  fp32.params().value(g)[3] = 1.5f;
  auto again = bf16_copy(fp32);
  EXPECT_EQ(again->params().value(g)[3], 1.5f);
  // A copy of a bf16-only model is the same model.
  test::expect_copy_is_the_same_model(*again);
}

TEST(Bf16Inference, ABf16OnlyModelRefusesToTrainOrSave) {
  const ModelConfig c = test::tiny_config({1, 1}, false);
  Model fp32(c);
  fp32.init_random(1);
  auto bf16 = bf16_copy(fp32);
  try {
    bf16->ensure_grads();
    FAIL() << "trained a bf16-only model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
  }
  ::chainlm::testing::TempDir dir;
  const std::string out = dir.file("m");
  try {
    save_model(*bf16, out);
    FAIL() << "saved a bf16-only model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fp32"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(out) / "model.safetensors"));
}

}  // namespace
}  // namespace chainlm
