// `chainlm eval pairs` files (BLiMP JSONL: {"sentence_good": ..., "sentence_bad": ...} per
// line): parsed by parse_sentence_pairs, then scored with a tiny model (sentences longer than
// the model are refused).
#include "eval/pairs.h"
#include "eval_fuzz_model.h"
#include "fuzz_util.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ByteTokenizer tok;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_chainlm_errors([&] {
    const std::vector<SentencePair> pairs = parse_sentence_pairs(text, "blimp.jsonl");
    CHAINLM_FUZZ_ASSERT(!pairs.empty());
    if (pairs.size() > 16) return;
    const PairsEvaluation r = evaluate_pairs(fuzz::tiny_eval_model(), tok, pairs, {1, 2}, "blimp.jsonl");
    CHAINLM_FUZZ_ASSERT(r.chains.size() == 2);
  });
  return 0;
}
