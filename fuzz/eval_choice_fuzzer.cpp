// `chainlm eval choice` files (llama.cpp's HellaSwag text format: 6 lines per task): parsed by
// parse_hellaswag, then scored with a tiny model (long contexts are truncated, endings longer
// than the model are refused).
#include "eval/choice.h"
#include "eval_fuzz_model.h"
#include "fuzz_util.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ByteTokenizer tok;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_chainlm_errors([&] {
    const std::vector<ChoiceTask> tasks = parse_hellaswag(text, "hellaswag.txt");
    CHAINLM_FUZZ_ASSERT(!tasks.empty());
    for (const ChoiceTask& t : tasks) CHAINLM_FUZZ_ASSERT(t.label >= 0 && t.label <= 3);
    if (tasks.size() > 8) return;  // scoring cost grows with the tasks; parsing is the point
    const ChoiceEvaluation r = evaluate_choice(fuzz::tiny_eval_model(), tok, tasks, {1, 2}, "hellaswag.txt");
    CHAINLM_FUZZ_ASSERT(r.chains.size() == 2);
    for (const ChoiceScore& s : r.chains) CHAINLM_FUZZ_ASSERT(s.acc >= 0 && s.acc <= 1);
  });
  return 0;
}
