// A bf16 training step (Model::use_bf16_weights with fp32 master weights): every GEMM of the
// forward and backward on bf16 operands, gradients accumulated in fp32. Its loss and gradients
// agree with the fp32 step's within bf16 rounding, and the master weights are left untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model_variant.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;
using test::variant_name;

double norm(const float* v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += (double)v[i] * v[i];
  return std::sqrt(s);
}

class Bf16Step : public ::testing::TestWithParam<ModelVariant> {};

// As for inference (tests/infer/bf16_inference_test.cpp): each GEMM moves by ~2^-7 of its
// products' magnitudes. The forward chains 13 of them through tiny_config's 2 layers (q/k/v,
// attention's scores and P.V where the CPU has bf16 tile products, the output projection, w1/w3,
// w2; then the head); the backward adds as many stages as the forward, so a tensor's gradient
// may move by about (2 * 13) * 2^-7 of its norm.
TEST_P(Bf16Step, GradientsMatchFp32WithinBf16Rounding) {
  const ModelConfig c = GetParam().config(16);
  const int n = c.n_chains(), B = 2, T = 12;
  Model fp32(c), bf16(c);
  fp32.init_random(3);
  for (const char* name : {"tok_embeddings.weight", "output.weight"}) {  // O(1) logits
    const int i = fp32.params().find(name);
    if (i < 0) continue;
    for (size_t e = 0; e < fp32.params().info(i).numel(); ++e) fp32.params().value(i)[e] *= 30.0f;
  }
  bf16.copy_weights_from(fp32);
  bf16.use_bf16_weights(/*keep_fp32=*/true);
  const std::vector<float> master(bf16.params().values(), bf16.params().values() + bf16.params().size());
  auto tokens = random_tokens(B * T, c.vocab_size, 5), targets = random_tokens(B * T, c.vocab_size, 6);
  std::vector<float> w(n, 1.0f);  // every sub-model weighted: the segmented head too
  fp32.ensure_grads();
  bf16.ensure_grads();
  const StepLosses a = fp32.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
  const StepLosses b = bf16.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
  EXPECT_NEAR(b.loss, a.loss, 13 * std::ldexp(a.loss, -7));
  EXPECT_NE(b.loss, a.loss) << "the bf16 step computed exactly the fp32 one";
  EXPECT_EQ(0, std::memcmp(master.data(), bf16.params().values(), master.size() * sizeof(float)))
      << "a step changed the master weights";
  for (int i = 0; i < (int)fp32.params().infos().size(); ++i) {
    const ParamInfo& p = fp32.params().info(i);
    const float* ga = fp32.params().grad(i);
    const float* gb = bf16.params().grad(i);
    std::vector<float> diff(p.numel());
    for (size_t e = 0; e < p.numel(); ++e) diff[e] = gb[e] - ga[e];
    const double ref = norm(ga, p.numel());
    EXPECT_LE(norm(diff.data(), p.numel()), 26 * std::ldexp(ref, -7) + 1e-6) << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(All, Bf16Step,
                         ::testing::Values(ModelVariant{{1}, false, 0}, ModelVariant{{1, 2, 1}, false, 4},
                                           ModelVariant{{1, 1}, true, 2, true},
                                           ModelVariant{{1, 1}, false, 0, false, 2, 2, 4}),
                         variant_name);

}  // namespace
}  // namespace chainlm
