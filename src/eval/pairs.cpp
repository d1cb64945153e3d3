#include "eval/pairs.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_document.h"
#include "eval/sequence_scorer.h"
#include "eval/text_lines.h"

namespace chainlm {

namespace {

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char ch) { return std::isspace(ch); });
}

std::string sentence_field(const nlohmann::json& j, const char* name, const std::string& where,
                           int line) {
  CHAINLM_CHECK(j.contains(name), where, ":", line, ": the object has no \"", name,
                "\" field (each line needs \"sentence_good\" and \"sentence_bad\")");
  CHAINLM_CHECK(j[name].is_string(), where, ":", line, ": \"", name, "\" is ", j[name].type_name(),
                ", not a string");
  std::string s = j[name].get<std::string>();
  CHAINLM_CHECK(!blank(s), where, ":", line, ": \"", name, "\" is empty");
  // A text file holding a NUL byte is refused as binary; "\u0000" in JSON is the same byte.
  CHAINLM_CHECK(s.find('\0') == std::string::npos, where, ":", line, ": \"", name,
                "\" holds a NUL character (\\u0000), which no text has");
  return s;
}

}  // namespace

std::vector<SentencePair> parse_sentence_pairs(const std::string& text, const std::string& where) {
  const std::vector<std::string> lines = split_text_lines(text);
  std::vector<SentencePair> pairs;
  for (size_t i = 0; i < lines.size(); ++i) {
    const int line = (int)i + 1;
    if (blank(lines[i])) continue;
    // Strict (core/json_document.h): a key given twice is refused, not read as its last value.
    const nlohmann::json j = parse_json_document(lines[i], cat(where, ":", line));
    CHAINLM_CHECK(j.is_object(), where, ":", line,
                  ": expected a JSON object with \"sentence_good\" "
                  "and \"sentence_bad\", got ",
                  j.type_name());
    pairs.push_back({line, sentence_field(j, "sentence_good", where, line),
                     sentence_field(j, "sentence_bad", where, line)});
  }
  CHAINLM_CHECK(!pairs.empty(), where, ": no sentence pairs (the file is empty or blank)");
  return pairs;
}

std::vector<SentencePair> read_sentence_pairs_file(const std::string& path) {
  return parse_sentence_pairs(read_task_file(path), path);
}

PairsEvaluation evaluate_pairs(Model& model, const Tokenizer& tokenizer,
                               const std::vector<SentencePair>& pairs, const std::vector<int>& ks,
                               const std::string& where) {
  CHAINLM_CHECK(!pairs.empty(), where, ": no sentence pairs");
  CHAINLM_CHECK(!ks.empty() && std::is_sorted(ks.begin(), ks.end()),
                "sub-models must be listed in ascending order");
  const int max_len = max_scored_sequence_tokens(model);
  std::vector<ScoringRequest> requests;
  for (const SentencePair& p : pairs)
    for (const std::string* s : {&p.good, &p.bad}) {
      ScoringRequest q;
      q.tokens.push_back(tokenizer.bos_id());
      for (int id : tokenizer.encode(*s)) q.tokens.push_back(id);
      CHAINLM_CHECK((int)q.tokens.size() <= max_len, where, ":", p.line, ": a sentence of ",
                    q.tokens.size(),
                    " tokens (with BOS) is longer than the model's max_seq_len + 1 = ", max_len);
      requests.push_back(std::move(q));
    }
  const std::vector<std::vector<double>> ll = score_sequences(model, requests, ks.back());
  PairsEvaluation r;
  r.pairs = (long)pairs.size();
  for (int k : ks) {
    long right = 0;
    for (size_t i = 0; i < pairs.size(); ++i) right += ll[2 * i][k - 1] > ll[2 * i + 1][k - 1];
    r.chains.push_back({k, (double)right / pairs.size()});
  }
  return r;
}

}  // namespace chainlm
