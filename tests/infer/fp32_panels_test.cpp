// fp32 inference weights in panels (Model::use_fp32_panels, kernels/gemm_panels.h): the logits
// of the row-major fp32 model within fp32 summation-order differences on every path (full
// forward, chunked prefill, decoding; CoLM, CoLM-Air, tied embeddings, PHD), the memory of the
// fp32 model, copies that are the same model, and refusals of what needs row-major weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../io/test_temp_dir.h"
#include "../model/model_variant.h"
#include "infer/session.h"
#include "inference_paths.h"
#include "kernels/gemm_panels.h"
#include "model/checkpoint.h"

namespace chainlm {
namespace {

using test::expect_session_near;
using test::max_abs;
using test::ModelVariant;
using test::random_tokens;
using test::variant_name;

std::unique_ptr<Model> paneled_copy(const Model& m) {
  auto p = std::make_unique<Model>(m.config());
  p->copy_weights_from(m);
  p->use_fp32_panels();
  return p;
}

class PanelVariants : public ::testing::TestWithParam<ModelVariant> {};

// Only the order of each GEMM's fp32 sums differs (k in order against oneDNN's or the few-row
// kernel's blocks): each output moves by at most ~2 K u of its products' magnitudes, K <= 64
// here, through 2 layers' 4 GEMM stages and the head: well under 1e-4 of the logits' scale.
TEST_P(PanelVariants, LogitsMatchTheRowMajorModelOnEveryPath) {
  const ModelConfig c = GetParam().config(40);
  Model fp32(c);
  fp32.init_random(7);
  auto panels = paneled_copy(fp32);
  ASSERT_EQ(panels->fp32_panels(), gemm_panels_native());
  ASSERT_EQ(panels->precision(), Precision::Fp32);
  const int T = 21, V = c.vocab_size;
  auto tokens = random_tokens(T, V, 3);
  for (int k = 1; k <= c.n_chains(); ++k) {
    std::vector<float> want((size_t)T * V), full((size_t)T * V);
    fp32.logits(tokens.data(), 1, T, k, want.data());
    panels->logits(tokens.data(), 1, T, k, full.data());
    const double tol = 1e-4 * max_abs(want);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(full[i], want[i], tol) << "full forward, k=" << k;
    expect_session_near(*panels, tokens, k, want, tol);
  }
}

INSTANTIATE_TEST_SUITE_P(All, PanelVariants,
                         ::testing::Values(ModelVariant{{1}, false, 0},
                                           ModelVariant{{1, 1}, true, 2},
                                           ModelVariant{{1, 2, 1}, false, 4, true},
                                           ModelVariant{{1, 1}, true, 2, false, 3, 2, 4}),
                         variant_name);

// The row-major matrices go (a tied embedding stays for the lookup): the memory of the fp32
// model plus the panels' padding to whole panels.
TEST(Fp32Panels, HoldTheBytesOfTheFp32Model) {
  for (bool tie : {false, true}) {
    ModelConfig c = test::tiny_config({1, 1}, false);
    c.tie_embeddings = tie;
    Model fp32(c);
    fp32.init_random(1);
    auto panels = paneled_copy(fp32);
    if (!gemm_panels_native()) {  // builds without the 512-bit kernel keep the model as it was
      EXPECT_FALSE(panels->fp32_panels());
      EXPECT_EQ(panels->weight_bytes(), fp32.weight_bytes());
      continue;
    }
    size_t kept = 0, padded = 0;
    for (const ParamInfo& p : fp32.params().infos()) {
      if (p.shape.size() == 1 || (tie && p.name == "tok_embeddings.weight"))
        kept += (p.numel() + 15) / 16 * 16;
      if (p.shape.size() == 2 && !(p.name == "tok_embeddings.weight" && !tie))
        padded += panel_floats((int)p.shape[0], (int)p.shape[1]);
      if (p.shape.size() == 2 && p.name == "tok_embeddings.weight" && !tie)
        kept += (p.numel() + 15) / 16 * 16;
    }
    EXPECT_EQ(panels->params().size(), kept) << "tie " << tie;
    EXPECT_EQ(panels->weight_bytes(), (kept + padded) * sizeof(float)) << "tie " << tie;
    // A copy of the paneled model is the same model.
    test::expect_copy_is_the_same_model(*panels);
  }
}

// (Where the build has no 512-bit kernel the model stays row-major and does all of these.)
TEST(Fp32Panels, APaneledModelRefusesToTrainSaveOrConvert) {
  const ModelConfig c = test::tiny_config({1, 1}, false);
  Model fp32(c);
  fp32.init_random(1);
  auto panels = paneled_copy(fp32);
  ASSERT_EQ(panels->fp32_panels(), gemm_panels_native());
  if (!panels->fp32_panels()) return;
  auto expect_error = [](const std::function<void()>& f, const char* what, const char* word) {
    try {
      f();
      ADD_FAILURE() << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  expect_error([&] { panels->ensure_grads(); }, "trained a paneled model", "panels");
  expect_error([&] { panels->use_bf16_weights(false); }, "made bf16 weights from panels", "fp32");
  expect_error([&] { panels->quantize_weights(QuantType::kQ8_0); }, "quantized panels", "");
  ::chainlm::testing::TempDir dir;
  const std::string out = dir.file("m");
  expect_error([&] { save_model(*panels, out); }, "saved a paneled model", "panels");
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(out) / "model.safetensors"));
}

}  // namespace
}  // namespace chainlm
