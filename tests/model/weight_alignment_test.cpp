// Every weight and gradient tensor starts on a cache line (64 bytes; bf16 copies on 32), in
// fp32, bf16 and quantized models and after fp32 values are released: the kernels' vector loads
// of a weight row then never straddle two lines (core/aligned_vector.h says what it cost).
#include <gtest/gtest.h>

#include <cstdint>

#include "model/model.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(WeightAlignment, EveryTensorStartsOnACacheLine) {
  const ModelConfig c = test::tiny_config({1, 2, 1}, true, 2);
  Model m(c);
  m.init_random(1);
  m.ensure_grads();
  ParamStore& ps = m.params();
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    EXPECT_EQ(address(ps.value(i)) % 64, 0u) << ps.info(i).name;
    EXPECT_EQ(address(ps.grad(i)) % 64, 0u) << ps.info(i).name;
  }
  Model h(c);
  h.init_random(1);
  h.use_bf16_weights(/*keep_fp32=*/false);  // the fp32 values go, the norm gains stay
  for (int l = 0; l < c.n_layers; ++l)
    for (const auto* refs : {&h.layer(l).r_wq, &h.layer(l).r_wk, &h.layer(l).r_w1, &h.layer(l).r_w2})
      for (const WeightRef& w : *refs) EXPECT_EQ(address(w.bf16) % 32, 0u) << "layer " << l;
  EXPECT_EQ(address(h.head().bf16) % 32, 0u);
  EXPECT_EQ(address(h.final_norm()) % 64, 0u);  // kept fp32, moved into the smaller buffer
}

}  // namespace
}  // namespace chainlm
