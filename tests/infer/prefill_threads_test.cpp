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
#include "weight_forms.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;

using test::Weights;

// A weight form, with bf16 on the CPU's bf16 instructions for every size (oneDNN's bf16 matmul
// past the few-row kernels) where it has them, or (false) on the CPU's own choice.
struct Form {
  Weights w;
  bool bf16_instructions = false;
};

TEST(PrefillThreads, ShortPiecesGiveTheSameBitsOnOneThreadAndTwo) {
  const int threads = num_threads();
  for (const ModelVariant& v :
       {ModelVariant{{4, 4}}, ModelVariant{{2, 2, 2, 2}, true, 4}, ModelVariant{{4, 4}, false, 2},
        ModelVariant{{4, 4}, true, 2, false, 2, 4, 8}}) {
    for (Form f : {Form{Weights::kFp32}, Form{Weights::kBf16}, Form{Weights::kBf16, true},
                   Form{Weights::kQ8_0}, Form{Weights::kQ4_0}, Form{Weights::kFp32Panels}}) {
      std::optional<test::Bf16Path> path;
      if (f.bf16_instructions) path.emplace(/*emulated=*/false);
      const Weights w = f.w;
      const auto model = test::make_model(v.config(96), w, 7);
      const ModelConfig& c = model->config();
      // Enough work for two threads to split the products (core/threads.h, gemm.h).
      ASSERT_GE((long)(kMaxDecodeRows * 3.0 * c.dim * c.dim * sizeof(float)), kThreadedWeightBytes);
      const int most = max_thread_invariant_rows(*model);
      for (int rows : {3, kMaxDecodeRows, 17, kMaxStreamedRows}) {
        if (rows > most) continue;
        const int tokens = rows / v.K;
        for (int k = 1; k <= c.n_chains(); ++k) {
          SCOPED_TRACE(::testing::PrintToString(v) + " weights " + std::to_string((int)w) +
                       (f.bf16_instructions ? " (bf16 instructions)" : "") + " rows " +
                       std::to_string(rows) + " k " + std::to_string(k));
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
