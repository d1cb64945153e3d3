#pragma once
// Minimal pairs (chainlm eval pairs): BLiMP-style JSONL, one object per line with
// "sentence_good" and "sentence_bad"; a pair counts as right when the good sentence gets the
// higher total log-probability.
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "model/model.h"

namespace chainlm {

struct SentencePair {
  int line = 0;  // 1-based line in its file
  std::string good, bad;
};

// Blank lines are skipped; other fields of an object are ignored. `where` (a file name) and
// the 1-based line number start every error: a line that is not a JSON object, a missing,
// non-string or empty sentence field, or a file without pairs.
std::vector<SentencePair> parse_sentence_pairs(const std::string& text, const std::string& where);
std::vector<SentencePair> read_sentence_pairs_file(const std::string& path);

struct PairsScore {
  int k = 0;
  double accuracy = 0;
};

struct PairsEvaluation {
  long pairs = 0;
  std::vector<PairsScore> chains;
};

// Each sentence is scored as BOS + encode(sentence): the log-probability of all its tokens
// given BOS. A tie counts as wrong. A sentence longer than the model's max_seq_len + 1
// tokens is an error naming its line. ks: the sub-models to report, ascending.
PairsEvaluation evaluate_pairs(Model& model, const Tokenizer& tokenizer,
                               const std::vector<SentencePair>& pairs, const std::vector<int>& ks,
                               const std::string& where);

}  // namespace chainlm
