// Multiple choice and minimal pairs on a hand-set unigram model whose log-probabilities the
// test computes from its weights (eval_test_util.h), so every right answer is known without
// running the engine; sub-model 1 prefers 'a', sub-model 2 prefers 'b'. Then stories260K on
// a real BLiMP file.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/run_cli.h"
#include "core/error.h"
#include "eval/choice.h"
#include "eval/pairs.h"
#include "eval/sequence_scorer.h"
#include "eval_test_util.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

const std::string kSharedData = CHAINLM_SOURCE_DIR "/../shared/data";

class UnigramModel : public ::testing::Test {
 protected:
  void SetUp() override {
    model = std::make_unique<Model>(test::unigram_config());
    test::set_unigram_weights(*model);
    ckpt = dir.file("unigram");
    test::save_byte_checkpoint(*model, ckpt);
  }
  TempDir dir;
  std::unique_ptr<Model> model;
  ByteTokenizer tok;
  std::string ckpt;
};

TEST_F(UnigramModel, SequenceScoresAreTheUnigramLogProbabilities) {
  std::vector<ScoringRequest> q = {{{256, 'a', 'b', 'c'}, 1}, {{256, 'x', 'y', 'b', 'b'}, 3}};
  for (int i = 0; i < 40; ++i) q.push_back({{256, 'a', 'a', 'b'}, 1 + i % 3});  // the threaded path
  const auto ll = score_sequences(*model, q, 2);
  for (int k = 1; k <= 2; ++k) {
    EXPECT_NEAR(ll[0][k - 1], test::unigram_text_logp(k, "abc"), 1e-4);
    EXPECT_NEAR(ll[1][k - 1], test::unigram_text_logp(k, "bb"), 1e-4);
    for (int i = 0; i < 40; ++i)
      EXPECT_NEAR(ll[2 + i][k - 1], test::unigram_text_logp(k, std::string("aab").substr(i % 3)),
                  1e-4);
  }
  EXPECT_THROW(score_sequences(*model, {{{256}, 1}}, 2), Error);
  EXPECT_THROW(score_sequences(*model, {{{256, 'a'}, 2}}, 2), Error);
  EXPECT_THROW(score_sequences(*model, {{std::vector<int>(34, 'a'), 1}}, 2),
               Error);  // > max_seq_len + 1
  EXPECT_THROW(score_sequences(*model, {{{256, 'a'}, 1}}, 3), Error);
}

TEST_F(UnigramModel, PairsAccuracyPerSubModel) {
  // good "aaaa" / bad "bbbb": sub-model 1 right, 2 wrong. "ab" / "cd": both right.
  // "aab" / "abb": 1 right, 2 wrong. "xyz" / "b": both wrong ('b' beats any three tokens).
  const std::string jsonl = R"({"sentence_good": "aaaa", "sentence_bad": "bbbb", "UID": "x"})"
                            "\n"
                            R"({"sentence_good": "ab", "sentence_bad": "cd"})"
                            "\n\n"
                            R"({"sentence_good": "aab", "sentence_bad": "abb"})"
                            "\n"
                            R"({"sentence_good": "xyz", "sentence_bad": "b"})"
                            "\n";
  const auto pairs = parse_sentence_pairs(jsonl, "pairs.jsonl");
  ASSERT_EQ(pairs.size(), 4u);
  EXPECT_EQ(pairs[2].line, 4);  // the blank line is skipped, not renumbered
  std::vector<double> want(2, 0.0);
  for (int k = 1; k <= 2; ++k)
    for (const SentencePair& p : pairs)
      want[k - 1] +=
          test::unigram_text_logp(k, p.good) > test::unigram_text_logp(k, p.bad) ? 0.25 : 0.0;
  EXPECT_DOUBLE_EQ(want[0], 0.75);
  EXPECT_DOUBLE_EQ(want[1], 0.25);
  const PairsEvaluation r = evaluate_pairs(*model, tok, pairs, {1, 2}, "pairs.jsonl");
  ASSERT_EQ(r.chains.size(), 2u);
  EXPECT_DOUBLE_EQ(r.chains[0].accuracy, want[0]);
  EXPECT_DOUBLE_EQ(r.chains[1].accuracy, want[1]);

  write_bytes(dir.file("pairs.jsonl"), jsonl);
  auto cli = run_chainlm(dir, "eval pairs --model " + quote(ckpt) + " --data " +
                                  quote(dir.file("pairs.jsonl")) + " --json");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const auto j = nlohmann::json::parse(cli.out);
  EXPECT_EQ(j["pairs"], 4);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), want[1]);  // the full model
  ASSERT_EQ(j["chains"].size(), 2u);
  EXPECT_DOUBLE_EQ(j["chains"][0]["accuracy"].get<double>(), want[0]);
  auto one = run_chainlm(dir, "eval pairs --model " + quote(ckpt) + " " +
                                  quote(dir.file("pairs.jsonl")) + " --chains 1 --json");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(one.out)["accuracy"].get<double>(), want[0]);
}

TEST_F(UnigramModel, ChoiceAccAndLengthNormalizedAcc) {
  // Task 1: the gold "aaaa" has a lower total log-probability than the short "a" but a higher
  // one per byte; task 2: gold 'b' endings; task 3: gold "cc".
  const std::string text =
      "context one\n0\naaaa\na\nzz\nq\n"
      "context two\n2\nc\nbbbb a\nbb\nzzzz\n"
      "context three\n3\nxyzw\nbbbbbbbbbbbb\naaaaaaaaaaaaaaaa\ncc\n";
  const auto tasks = parse_hellaswag(text, "tasks.txt");
  ASSERT_EQ(tasks.size(), 3u);
  EXPECT_EQ(tasks[1].line, 7);
  EXPECT_EQ(tasks[1].label, 2);
  // The right answers from the unigram table: each ending is scored as " " + ending.
  std::vector<double> acc(2, 0), acc_norm(2, 0);
  for (int k = 1; k <= 2; ++k)
    for (const ChoiceTask& t : tasks) {
      int best = 0, best_norm = 0;
      for (int j = 1; j < 4; ++j) {
        auto ll = [&](int i) { return test::unigram_text_logp(k, " " + t.endings[i]); };
        auto per_byte = [&](int i) { return ll(i) / (double)(t.endings[i].size() + 1); };
        if (ll(j) > ll(best)) best = j;
        if (per_byte(j) > per_byte(best_norm)) best_norm = j;
      }
      acc[k - 1] += (best == t.label) / 3.0;
      acc_norm[k - 1] += (best_norm == t.label) / 3.0;
    }
  // Sub-model 1 ('a' > 'b' > rest): acc right on task 3 only, acc_norm on task 1 only.
  // Sub-model 2 ('b' > 'a' > rest): acc right on task 2, acc_norm on tasks 1 and 2.
  EXPECT_NEAR(acc[0], 1.0 / 3, 1e-12);
  EXPECT_NEAR(acc_norm[0], 1.0 / 3, 1e-12);
  EXPECT_NEAR(acc[1], 1.0 / 3, 1e-12);
  EXPECT_NEAR(acc_norm[1], 2.0 / 3, 1e-12);
  const ChoiceEvaluation r = evaluate_choice(*model, tok, tasks, {1, 2}, "tasks.txt");
  EXPECT_EQ(r.tasks, 3);
  EXPECT_EQ(r.truncated, 0);
  for (int k = 1; k <= 2; ++k) {
    EXPECT_NEAR(r.chains[k - 1].acc, acc[k - 1], 1e-12) << k;
    EXPECT_NEAR(r.chains[k - 1].acc_norm, acc_norm[k - 1], 1e-12) << k;
  }

  write_bytes(dir.file("tasks.txt"), text);
  auto cli = run_chainlm(dir, "eval choice --model " + quote(ckpt) + " --format hellaswag " +
                                  quote(dir.file("tasks.txt")) + " --json");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const auto j = nlohmann::json::parse(cli.out);
  EXPECT_EQ(j["tasks"], 3);
  EXPECT_NEAR(j["acc"].get<double>(), acc[1], 1e-12);
  EXPECT_NEAR(j["acc_norm"].get<double>(), acc_norm[1], 1e-12);
  EXPECT_NEAR(j["chains"][0]["acc_norm"].get<double>(), acc_norm[0], 1e-12);
  auto table = run_chainlm(
      dir, "eval choice --model " + quote(ckpt) + " --data " + quote(dir.file("tasks.txt")));
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("acc_norm"), std::string::npos) << table.out;
}

TEST_F(UnigramModel, LongContextsLoseTheirOldestTokens) {
  // max_seq_len 32: a 40-byte context is cut; the endings are still scored in full.
  const std::string text = std::string(40, 'q') + "\n1\nbbb\naaa\nzzz\nqqq\n";
  const ChoiceEvaluation r = evaluate_choice(*model, tok, parse_hellaswag(text, "t"), {1}, "t");
  EXPECT_EQ(r.truncated, 1);
  EXPECT_DOUBLE_EQ(r.chains[0].acc, 1.0);  // sub-model 1 prefers "aaa"
  const std::string too_long = "ctx\n0\n" + std::string(40, 'a') + "\nb\nc\nd\n";
  try {
    evaluate_choice(*model, tok, parse_hellaswag(too_long, "long.txt"), {1}, "long.txt");
    FAIL() << "an ending longer than the model's context must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("long.txt:3"), std::string::npos) << e.what();
  }
  // " " + 31 bytes fill every position after BOS: the context is cut to nothing, which the
  // evaluation counted only as truncated. 30 bytes keep one byte of it.
  const std::string fills = "ctx\n0\n" + std::string(31, 'a') + "\nb\nc\nd\n";
  const ChoiceEvaluation none = evaluate_choice(*model, tok, parse_hellaswag(fills, "t"), {1}, "t");
  EXPECT_EQ(none.truncated, 1);
  EXPECT_EQ(none.no_context, 1);
  const std::string one_left = "ctx\n0\n" + std::string(30, 'a') + "\nb\nc\nd\n";
  const ChoiceEvaluation kept =
      evaluate_choice(*model, tok, parse_hellaswag(one_left, "t"), {1}, "t");
  EXPECT_EQ(kept.truncated, 1);
  EXPECT_EQ(kept.no_context, 0);
  // The command warns, and its JSON counts them.
  write_bytes(dir.file("fills.txt"), fills + one_left);
  auto cli = run_chainlm(dir, "eval choice --model " + quote(ckpt) + " --format hellaswag " +
                                  quote(dir.file("fills.txt")) + " --json");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const auto j = nlohmann::json::parse(cli.out);
  EXPECT_EQ(j["truncated"], 2);
  EXPECT_EQ(j["no_context"], 1);
  EXPECT_NE(cli.err.find("warning: 1 task kept no context"), std::string::npos) << cli.err;
}

TEST(Stories260K, BlimpAnaphorAgreementIsAboveChance) {
  const std::string stories = kSharedData + "/stories260K";
  const std::string blimp = kSharedData + "/eval/blimp/anaphor_number_agreement.jsonl";
  if (!std::filesystem::exists(stories + "/stories260K.bin") || !std::filesystem::exists(blimp))
    GTEST_SKIP() << "shared data not found at " << kSharedData;
  TempDir dir;
  auto r = run_chainlm(dir, "eval pairs --model " + quote(stories + "/stories260K.bin") +
                                " --tokenizer " + quote(stories + "/tok512.model") + " --data " +
                                quote(blimp) + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["pairs"], 1000);
  // Recorded in bench/RESULTS.md: 0.612.
  EXPECT_NEAR(j["accuracy"].get<double>(), 0.612, 0.01) << r.out;
  // Without a tokenizer the llama2.c file cannot be evaluated.
  auto no_tok = run_chainlm(
      dir, "eval pairs --model " + quote(stories + "/stories260K.bin") + " --data " + quote(blimp));
  EXPECT_NE(no_tok.exit_code, 0);
  EXPECT_NE(no_tok.err.find("--tokenizer"), std::string::npos) << no_tok.err;
}

}  // namespace
}  // namespace chainlm
