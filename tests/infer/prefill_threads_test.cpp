// A server's short prompt pieces run on the decoding steps' thread count (serve/batch_scheduler):
// a piece of at most max_thread_invariant_rows rows gives the same bits on one thread as on two
// (its products run the few-row kernels, whose threads split output columns, and its attention
// splits rows and heads, never a sum), so a request's tokens do not depend on the count.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>

#include "../kernels/bf16_path.h"
#include "../model/model_variant.h"
#include "core/threads.h"
#include "infer/session.h"
#include "kernels/gemm.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;

// kBf16Instructions: the bf16 GEMMs on the CPU's bf16 instructions for every size (oneDNN's
// bf16 matmul past the few-row kernels), where it has them; kBf16 the CPU's own choice.
enum class Weights { kFp32, kBf16, kBf16Instructions, kQ8_0, kQ4_0, kFp32Panels };

std::unique_ptr<Model> make_model(const ModelConfig& c, Weights w) {
  auto m = std::make_unique<Model>(c);
  m->init_random(7);
  if (w == Weights::kBf16 || w == Weights::kBf16Instructions)
    m->use_bf16_weights(/*keep_fp32=*/false);
  if (w == Weights::kQ8_0) m->quantize_weights(QuantType::kQ8_0);
  if (w == Weights::kQ4_0) m->quantize_weights(QuantType::kQ4_0);
  if (w == Weights::kFp32Panels) m->use_fp32_panels();
  return m;
}

TEST(PrefillThreads, ShortPiecesGiveTheSameBitsOnOneThreadAndTwo) {
  const int threads = num_threads();
  for (const ModelVariant& v :
       {ModelVariant{{4, 4}}, ModelVariant{{2, 2, 2, 2}, true, 4}, ModelVariant{{4, 4}, false, 2},
        ModelVariant{{4, 4}, true, 2, false, 2, 4, 8}}) {
    for (Weights w : {Weights::kFp32, Weights::kBf16, Weights::kBf16Instructions, Weights::kQ8_0,
                      Weights::kQ4_0, Weights::kFp32Panels}) {
      std::optional<test::Bf16Path> path;
      if (w == Weights::kBf16Instructions) path.emplace(/*emulated=*/false);
      const auto model = make_model(v.config(96), w);
      const ModelConfig& c = model->config();
      // Enough work for two threads to split the products (core/threads.h, gemm.h).
      ASSERT_GE((long)(kMaxDecodeRows * 3.0 * c.dim * c.dim * sizeof(float)), kThreadedWeightBytes);
      const int most = max_thread_invariant_rows(*model);
      for (int rows : {3, kMaxDecodeRows, 17, kMaxStreamedRows}) {
        if (rows > most) continue;
        const int tokens = rows / v.K;
        for (int k = 1; k <= c.n_chains(); ++k) {
          SCOPED_TRACE(::testing::PrintToString(v) + " weights " + std::to_string((int)w) +
                       " rows " + std::to_string(rows) + " k " + std::to_string(k));
          // A prompt read in two pieces: the second attends to the first's cache.
          const std::vector<int> prompt = random_tokens(tokens + 5, c.vocab_size, 300 + rows);
          std::vector<float> logits[2];
          for (int t : {1, 2}) {
            set_num_threads(t);
            InferenceSession s(*model, 64);
            const float* out = nullptr;
            for (int part = 0; !out; ++part)
              out = s.prefill_part(prompt, k, true, part == 0 ? 5 : tokens);
            logits[t - 1].assign(out, out + c.vocab_size);
          }
          ASSERT_EQ(std::memcmp(logits[0].data(), logits[1].data(), sizeof(float) * c.vocab_size),
                    0);
        }
      }
    }
  }
  set_num_threads(threads);
}

}  // namespace
}  // namespace chainlm
