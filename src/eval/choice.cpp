#include "eval/choice.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "core/error.h"
#include "eval/sequence_scorer.h"
#include "eval/text_lines.h"

namespace chainlm {

namespace {

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char ch) { return std::isspace(ch); });
}

int parse_label(const std::string& line, const std::string& where, int line_no) {
  size_t b = 0, e = line.size();
  while (b < e && std::isspace((unsigned char)line[b])) ++b;
  while (e > b && std::isspace((unsigned char)line[e - 1])) --e;
  int v = -1;
  auto [p, ec] = std::from_chars(line.data() + b, line.data() + e, v);
  CHAINLM_CHECK(b < e && ec == std::errc() && p == line.data() + e, where, ":", line_no,
                ": the gold label \"", line, "\" is not an integer (expected 0, 1, 2 or 3)");
  CHAINLM_CHECK(v >= 0 && v <= 3, where, ":", line_no, ": the gold label ", v,
                " is outside 0..3 (a task has four endings)");
  return v;
}

}  // namespace

std::vector<ChoiceTask> parse_hellaswag(const std::string& text, const std::string& where) {
  std::vector<std::string> lines = split_text_lines(text);
  // Blank lines at the end (an editor's, or a generator's last newline) are no task.
  while (!lines.empty() && blank(lines.back())) lines.pop_back();
  CHAINLM_CHECK(!lines.empty(), where, ": no tasks (the file is empty)");
  CHAINLM_CHECK(
      lines[0].empty() || lines[0][0] != '{', where,
      ":1: a JSON object, but eval choice reads tasks of 6 text lines (context, gold label "
      "0-3, four endings); sentence pairs in JSON Lines go to `chainlm eval pairs`");
  const size_t full = lines.size() / 6 * 6;
  std::vector<ChoiceTask> tasks;
  // Whole tasks first, so that a line out of place is named where it is (a label that is no
  // label) rather than as a short last task.
  for (size_t i = 0; i < full; i += 6) {
    ChoiceTask t;
    t.line = (int)i + 1;
    t.context = lines[i];
    // A blank line between tasks, as hand-written files have them, shifts every line after it.
    CHAINLM_CHECK(!blank(t.context), where, ":", t.line, ": the context line of a task is empty",
                  i > 0 ? " (tasks follow each other without blank lines between them: 6 lines "
                          "each, context, gold label, four endings)"
                        : "");
    t.label = parse_label(lines[i + 1], where, t.line + 1);
    for (int j = 0; j < 4; ++j) {
      t.endings[j] = lines[i + 2 + j];
      CHAINLM_CHECK(!blank(t.endings[j]), where, ":", t.line + 2 + j, ": ending ", j,
                    " of the task at line ", t.line, " is empty");
    }
    tasks.push_back(std::move(t));
  }
  CHAINLM_CHECK(full == lines.size(), where, ":", full + 1, ": the last task has only ",
                lines.size() - full,
                " of its 6 lines (context, gold label 0-3, four endings); the file has ",
                lines.size(), " lines, not a multiple of 6");
  return tasks;
}

std::vector<ChoiceTask> read_hellaswag_file(const std::string& path) {
  return parse_hellaswag(read_task_file(path), path);
}

ChoiceEvaluation evaluate_choice(Model& model, const Tokenizer& tokenizer,
                                 const std::vector<ChoiceTask>& tasks, const std::vector<int>& ks,
                                 const std::string& where) {
  CHAINLM_CHECK(!tasks.empty(), where, ": no tasks");
  CHAINLM_CHECK(!ks.empty() && std::is_sorted(ks.begin(), ks.end()),
                "sub-models must be listed in ascending order");
  const int k_max = ks.back();
  const int max_len = max_scored_sequence_tokens(model);
  ChoiceEvaluation r;
  r.tasks = (long)tasks.size();
  std::vector<ScoringRequest> requests;
  std::vector<double> bytes;
  for (const ChoiceTask& t : tasks) {
    std::vector<int> context{tokenizer.bos_id()};
    for (int id : tokenizer.encode(t.context)) context.push_back(id);
    bool truncated = false, no_context = false;
    for (int j = 0; j < 4; ++j) {
      ScoringRequest q;
      q.tokens.push_back(tokenizer.bos_id());
      for (int id : tokenizer.encode(t.context + " " + t.endings[j])) q.tokens.push_back(id);
      const auto diff =
          std::mismatch(context.begin(), context.end(), q.tokens.begin(), q.tokens.end());
      q.first_scored = (int)(diff.second - q.tokens.begin());
      const int scored = (int)q.tokens.size() - q.first_scored;
      CHAINLM_CHECK(scored > 0, where, ":", t.line + 2 + j, ": ending ", j,
                    " adds no tokens to the context");
      CHAINLM_CHECK(scored + 1 <= max_len, where, ":", t.line + 2 + j, ": ending ", j, " is ",
                    scored, " tokens, more than the model's max_seq_len ", max_len - 1,
                    " leaves after BOS");
      if ((int)q.tokens.size() > max_len) {
        const int drop = (int)q.tokens.size() - max_len;
        q.tokens.erase(q.tokens.begin() + 1, q.tokens.begin() + 1 + drop);
        q.first_scored -= drop;
        truncated = true;
        no_context |= q.first_scored == 1;  // (scored + 1 <= max_len keeps BOS before it)
      }
      requests.push_back(std::move(q));
      bytes.push_back((double)t.endings[j].size() + 1);
    }
    r.truncated += truncated;
    r.no_context += no_context;
  }
  const std::vector<std::vector<double>> ll = score_sequences(model, requests, k_max);
  for (int k : ks) {
    long correct = 0, correct_norm = 0;
    for (size_t i = 0; i < tasks.size(); ++i) {
      int best = 0, best_norm = 0;
      for (int j = 1; j < 4; ++j) {
        const size_t q = i * 4 + j, qb = i * 4 + best, qn = i * 4 + best_norm;
        if (ll[q][k - 1] > ll[qb][k - 1]) best = j;
        if (ll[q][k - 1] / bytes[q] > ll[qn][k - 1] / bytes[qn]) best_norm = j;
      }
      correct += best == tasks[i].label;
      correct_norm += best_norm == tasks[i].label;
    }
    r.chains.push_back({k, (double)correct / tasks.size(), (double)correct_norm / tasks.size()});
  }
  return r;
}

}  // namespace chainlm
