#pragma once
// Multiple choice by log-likelihood (chainlm eval choice), in the HellaSwag text format of
// llama.cpp's evaluation: 6 lines per task, the context, the gold ending's index (0-3) and
// the four endings.
#include <array>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "model/model.h"

namespace chainlm {

struct ChoiceTask {
  int line = 0;  // 1-based line of the context in its file
  std::string context;
  int label = 0;
  std::array<std::string, 4> endings;
};

// `where` (a file name) starts every error message, with the 1-based line number: an empty
// file, an incomplete last task, a label that is not an integer in 0..3, an empty context
// or ending. Lines may end in "\r\n"; one final newline is ignored.
std::vector<ChoiceTask> parse_hellaswag(const std::string& text, const std::string& where);
std::vector<ChoiceTask> read_hellaswag_file(const std::string& path);

struct ChoiceScore {
  int k = 0;
  double acc = 0;       // share of tasks whose gold ending has the highest log-likelihood
  double acc_norm = 0;  // ... the highest log-likelihood per byte of " " + ending
};

struct ChoiceEvaluation {
  long tasks = 0;
  long truncated = 0;  // tasks whose context lost its oldest tokens to fit max_seq_len
  long no_context = 0;  // of those, tasks where an ending kept none of it: scored on BOS alone
  std::vector<ChoiceScore> chains;
};

// Ending i of a task is scored as the tokens of BOS + encode(context + " " + ending_i) past
// their common prefix with BOS + encode(context) (so a token that merges the space with the
// ending's first characters counts as the ending's). Ties go to the lowest index. Contexts
// too long for the model lose their oldest tokens (BOS is kept); an ending that alone does
// not fit is an error naming its line. ks: the sub-models to report, ascending.
ChoiceEvaluation evaluate_choice(Model& model, const Tokenizer& tokenizer,
                                 const std::vector<ChoiceTask>& tasks, const std::vector<int>& ks,
                                 const std::string& where);

}  // namespace chainlm
