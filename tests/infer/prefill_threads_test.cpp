// A server's prompt pieces run on the decoding steps' thread count (serve/batch_scheduler), and
// generate reads short prompts on one thread: a pass gives the same bits on any count (the
// few-row and quantized kernels' threads split output columns, attention splits rows and heads,
// never a sum, the libraries' products run in tiles fixed by their shapes), so a request's
// tokens do not depend on the count.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>

#include "../kernels/bf16_path.h"
#include "../model/model_variant.h"
#include "core/threads.h"
#include "infer/session.h"
#include "kernels/gemm.h"
#include "kernels/gemm_backend.h"
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
      for (int rows : {3, kMaxDecodeRows, 17, kMaxStreamedRows}) {
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

// Longer passes (more than kMaxStreamedRows rows: a long prompt, a server's large piece) run
// their library products in tiles fixed by the products' shapes (kernels/gemm.h
// ThreadInvariantProducts), so they too give the same bits on any thread count: OpenBLAS's own
// threading split them otherwise (its logits differed between one and two threads at 33 to 512
// rows). Both backends, every weight form; dense, CoLM-Air and PHD; widths that the libraries do
// split among threads.
TEST(PrefillThreads, LongPassesGiveTheSameBitsOnAnyThreadCount) {
  const int threads = num_threads();
  const GemmBackend backend = gemm_backend();
  for (GemmBackend b : {GemmBackend::OneDnn, GemmBackend::OpenBlas}) {
    set_gemm_backend(b);
    for (const ModelVariant& v : {ModelVariant{{4}}, ModelVariant{{2, 2}, true, 2},
                                  ModelVariant{{4}, false, 2, false, 2}}) {
      ModelConfig config = v.config(512);
      config.dim *= 8;  // 256 (dense) columns: products the libraries split
      config.ffn_dim *= 8;
      config.vocab_size = 256;
      validate_config(config, "test");
      for (Form f : {Form{Weights::kFp32}, Form{Weights::kBf16}, Form{Weights::kBf16, true},
                     Form{Weights::kQ8_0}, Form{Weights::kFp32Panels}}) {
        std::optional<test::Bf16Path> path;
        if (f.bf16_instructions) path.emplace(/*emulated=*/false);
        const auto model = test::make_model(config, f.w, 11);
        for (int tokens : {40, 150}) {
          SCOPED_TRACE(::testing::PrintToString(v) + " backend " + gemm_backend_name(b) +
                       " weights " + std::to_string((int)f.w) +
                       (f.bf16_instructions ? " (bf16 instructions)" : "") + " tokens " +
                       std::to_string(tokens));
          const std::vector<int> prompt = random_tokens(tokens, config.vocab_size, 500 + tokens);
          std::vector<float> logits[3];
          for (int t : {1, 2, 3}) {
            set_num_threads(t);
            InferenceSession s(*model, 512);
            const float* out = s.prefill(prompt, config.n_chains(), true);
            logits[t - 1].assign(out, out + config.vocab_size);
          }
          EXPECT_EQ(
              std::memcmp(logits[0].data(), logits[1].data(), sizeof(float) * config.vocab_size),
              0);
          EXPECT_EQ(
              std::memcmp(logits[0].data(), logits[2].data(), sizeof(float) * config.vocab_size),
              0);
        }
      }
    }
  }
  set_gemm_backend(backend);
  set_num_threads(threads);
}

}  // namespace
}  // namespace chainlm
