// Token shards (chainlm prepare's train.bin / val.bin): TokenShard maps and validates the
// header against the file size; the training dataset and `eval ppl` (load_eval_tokens, which
// reads a file without the shard magic as text) read through it.
#include <vector>

#include "core/threads.h"
#include "eval/eval_text.h"
#include "fuzz_util.h"
#include "io/token_shard.h"
#include "io/tokenizer.h"
#include "train/dataset.h"

using namespace chainlm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ByteTokenizer tok;
  const std::string path =
      fuzz::write_scratch_file("val.bin", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_only_chainlm_errors([&] {
    const TokenDataset ds(path);
    const uint64_t n = ds.size();
    CHAINLM_FUZZ_ASSERT(n <= size);
    constexpr int T = 4;
    int tokens[2 * T], targets[2 * T];
    const long windows = ds.num_windows(T);
    for (long w = 0; w < windows && w < 64; ++w) ds.window(w, T, tokens, targets);
    if (n >= T + 1) ds.train_batch(1, 2, 0, 2, 0, 2, T, tokens, targets);
    for (int t = 0; t < 2 * T && n >= T + 1; ++t)
      CHAINLM_FUZZ_ASSERT(tokens[t] >= 0 && (uint32_t)tokens[t] < ds.vocab_size());
  });
  fuzz::expect_only_chainlm_errors([&] {
    const EvalTokens e = load_eval_tokens(path, &tok);
    for (int id : e.tokens) CHAINLM_FUZZ_ASSERT(id >= 0);
  });
  return 0;
}
