// Perplexity: the window plan scores every token once, and the loss of every sub-model equals a
// naive loop over Model::logits with a hand-written log-softmax, in the library and through
// `chainlm eval ppl` on text files and token shards.
#include "eval/perplexity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/run_cli.h"
#include "core/error.h"
#include "core/memory.h"
#include "eval/eval_text.h"
#include "eval_test_util.h"
#include "io/text_documents.h"
#include "io/token_shard.h"
#include "io/write_gzip.h"
#include "model/model_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;
using testing::write_gzip;

TEST(EvalWindows, EveryTokenAfterTheFirstIsScoredOnceWithEnoughContext) {
  for (long n = 0; n <= 40; ++n)
    for (int T = 1; T <= 9; ++T)
      for (int S = 1; S <= T; ++S) {
        std::vector<int> scored(std::max<long>(n, 1), 0);
        const auto windows = plan_eval_windows(n, T, S);
        for (size_t w = 0; w < windows.size(); ++w) {
          const EvalWindow& win = windows[w];
          ASSERT_EQ(win.start, (long)w * S);
          ASSERT_GE(win.length, 1);
          ASSERT_LE(win.length, T);
          ASSERT_LE(win.start + win.length, n - 1);
          for (int r = win.first_scored; r < win.length; ++r) {
            const long t = win.start + r + 1;  // the target
            scored[t] += 1;
            // Context: every token before t (near the start), else at least T - S + 1.
            EXPECT_GE(r + 1, std::min<long>(t, T - S + 1)) << n << " " << T << " " << S;
          }
        }
        for (long t = 1; t < n; ++t)
          ASSERT_EQ(scored[t], 1) << "n " << n << " T " << T << " S " << S << " t " << t;
      }
  EXPECT_THROW(plan_eval_windows(10, 4, 5), Error);
  EXPECT_THROW(plan_eval_windows(10, 4, 0), Error);
}

// Mean loss of sub-model k computed one target at a time: the context of target t is the
// window the plan gives it, written out from the definition (start 0 while t <= T, else the
// first multiple of S at or after t - T), run through Model::logits.
double naive_loss(Model& m, const std::vector<int>& s, int T, int S, int k,
                  double* sum_out = nullptr) {
  const int V = m.config().vocab_size;
  double sum = 0;
  for (long t = 1; t < (long)s.size(); ++t) {
    const long start = t <= T ? 0 : (t - T + S - 1) / S * S;
    const int len = (int)(t - start);
    std::vector<float> logits((size_t)len * V);
    m.logits(s.data() + start, 1, len, k, logits.data());
    sum -= test::log_softmax_at(logits.data() + (size_t)(len - 1) * V, V, s[t]);
  }
  if (sum_out) *sum_out = sum;
  return sum / (double)(s.size() - 1);
}

TEST(Perplexity, EveryChainMatchesANaiveLoop) {
  // CoLM, CoLM-Air, and CoLM-Air with PHD-CSWA-2-2-4 (Model::evaluate runs the repeated stream).
  for (int variant : {0, 1, 2}) {
    const bool air = variant > 0;
    ModelConfig config = test::byte_config({1, 1, 2}, air);
    if (variant == 2) config.phd = PhdConfig{2, 2, 4, false};
    Model m(config);
    m.init_random(7);
    const std::vector<int> stream = test::random_tokens(150, 258, 11);
    for (int S : {16, 5}) {
      PerplexityOptions o;
      o.seq_len = 16;
      o.stride = S;
      o.batch_size = 3;
      o.speed_seconds = 0.01;
      const PerplexityResult r = evaluate_perplexity(m, stream, 1234, o);
      ASSERT_EQ(r.chains.size(), 3u);
      EXPECT_EQ(r.tokens, 149);
      for (const ChainPerplexity& c : r.chains) {
        double sum = 0;
        const double want = naive_loss(m, stream, 16, S, c.k, &sum);
        EXPECT_NEAR(c.loss, want, 1e-5 * want)
            << "variant " << variant << " stride " << S << " k " << c.k;
        EXPECT_NEAR(c.ppl, std::exp(want), 1e-5 * std::exp(want));
        EXPECT_NEAR(c.bpb, sum / (std::log(2.0) * 1234), 1e-5);
        EXPECT_EQ(c.params, m.num_params(c.k));
        EXPECT_GT(c.tokens_per_s, 0);
      }
    }
    // One sub-model alone gives the same figure as in the joint pass.
    PerplexityOptions one;
    one.seq_len = 16;
    one.chains = {2};
    const PerplexityResult r2 = evaluate_perplexity(m, stream, -1, one);
    ASSERT_EQ(r2.chains.size(), 1u);
    EXPECT_EQ(r2.chains[0].k, 2);
    EXPECT_NEAR(r2.chains[0].loss, naive_loss(m, stream, 16, 16, 2), 1e-5 * r2.chains[0].loss);
    EXPECT_EQ(r2.chains[0].bpb, -1);  // bytes unknown
  }
}

TEST(Perplexity, RejectsStreamsItCannotScore) {
  Model m(test::byte_config({1, 1}, false));
  m.init_random(1);
  EXPECT_THROW(evaluate_perplexity(m, {256}, -1, {}), Error);
  EXPECT_THROW(evaluate_perplexity(m, {256, 300}, -1, {}), Error);  // outside the vocabulary
  PerplexityOptions o;
  o.seq_len = 33;  // > max_seq_len
  EXPECT_THROW(evaluate_perplexity(m, {256, 1, 2}, -1, o), Error);
  o.seq_len = 8;
  o.chains = {3};
  EXPECT_THROW(evaluate_perplexity(m, {256, 1, 2}, -1, o), Error);
}

// A pass's activations are checked against the memory there is before they are allocated, the
// refusal naming --batch-size (a user trial ran out of memory under `ulimit -v`, and the message
// pointed at the model's estimate).
TEST(Perplexity, ABatchLargerThanTheMemoryIsRefusedNamingTheOption) {
  Model m(test::byte_config({1, 1}, true));
  m.init_random(1);
  const int T = 32;
  const double per_window =
      (double)Model::activation_floats(m.config(), 1, T, true) * sizeof(float);
  // Twice what fits: other processes freeing memory meanwhile cannot let it through.
  const long windows = 2 * (long)(available_memory().bytes / per_window) + 64;
  ASSERT_GT((double)Model::activation_floats(m.config(), (int)windows, T, true) * sizeof(float),
            (double)available_memory().bytes);
  const std::vector<int> stream((size_t)windows * T + 1, 'a');
  PerplexityOptions o;
  o.seq_len = T;
  o.batch_size = (int)windows;
  try {
    evaluate_perplexity(m, stream, -1, o);
    ADD_FAILURE() << "a batch of " << windows << " windows was not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("windows of 32 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("lower --batch-size"), std::string::npos) << e.what();
  }
}

class EvalPplCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    model = std::make_unique<Model>(test::byte_config({1, 1, 2}, true));
    model->init_random(3);
    ckpt = dir.file("ckpt");
    test::save_byte_checkpoint(*model, ckpt);
    text =
        "The first document.\nIt has two lines.\n\nA second one, with bytes: "
        "caf\xc3\xa9.\n%\nthird\n";
    write_bytes(dir.file("eval.txt"), text);
    // The stream `prepare` would make: BOS + bytes per document.
    for (const std::string& d : split_documents(text)) {
      stream.push_back(ByteTokenizer::kBos);
      for (unsigned char ch : d) stream.push_back(ch);
      bytes += (long)d.size();
    }
  }
  nlohmann::json run_json(const std::string& args) {
    auto r = run_chainlm(dir, "eval ppl --model " + quote(ckpt) + " --json " + args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
  TempDir dir;
  std::unique_ptr<Model> model;
  std::string ckpt, text;
  std::vector<int> stream;
  long bytes = 0;
};

TEST_F(EvalPplCommand, PerplexityIsExpOfTheNaiveMeanTokenLoss) {
  const nlohmann::json j = run_json("--data " + quote(dir.file("eval.txt")) + " --seq-len 16");
  EXPECT_EQ(j["kind"], "text");
  EXPECT_EQ(j["tokens"], (long)stream.size() - 1);
  EXPECT_EQ(j["bytes"], bytes);
  EXPECT_EQ(j["documents"], 3);
  ASSERT_EQ(j["chains"].size(), 3u);
  for (const auto& c : j["chains"]) {
    double sum = 0;
    const double loss = naive_loss(*model, stream, 16, 16, c["k"].get<int>(), &sum);
    EXPECT_NEAR(c["loss"].get<double>(), loss, 1e-5 * loss);
    EXPECT_NEAR(c["ppl"].get<double>(), std::exp(loss), 1e-5 * std::exp(loss));
    EXPECT_NEAR(c["bpb"].get<double>(), sum / (std::log(2.0) * bytes), 1e-5);
  }
  // A sliding window: every token scored with at least 16 - 4 tokens of context.
  const nlohmann::json s =
      run_json("--data " + quote(dir.file("eval.txt")) + " --seq-len 16 --stride 4 --chains 3");
  ASSERT_EQ(s["chains"].size(), 1u);
  EXPECT_EQ(s["stride"], 4);
  const double loss = naive_loss(*model, stream, 16, 4, 3);
  EXPECT_NEAR(s["chains"][0]["loss"].get<double>(), loss, 1e-5 * loss);
}

TEST_F(EvalPplCommand, ATokenShardGivesTheSameFiguresAsItsText) {
  std::vector<uint32_t> ids(stream.begin(), stream.end());
  write_token_shard(dir.file("val.bin"), ids, ByteTokenizer::kVocabSize);
  const nlohmann::json t = run_json("--data " + quote(dir.file("eval.txt")) + " --seq-len 16");
  const nlohmann::json s = run_json("--data " + quote(dir.file("val.bin")) + " --seq-len 16");
  EXPECT_EQ(s["kind"], "shard");
  EXPECT_EQ(s["bytes"], t["bytes"]);  // decoded from the shard with the checkpoint's tokenizer
  EXPECT_EQ(s["documents"], 3);
  for (int i = 0; i < 3; ++i)
    EXPECT_DOUBLE_EQ(s["chains"][i]["loss"].get<double>(), t["chains"][i]["loss"].get<double>());
  // A data directory means its val.bin.
  const nlohmann::json d = run_json("--data " + quote(dir.path().string()) + " --seq-len 16");
  EXPECT_EQ(d["data"], dir.file("val.bin"));
  // The table names every sub-model.
  auto r =
      run_chainlm(dir, "eval ppl --model " + quote(ckpt) + " --data " + quote(dir.file("val.bin")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bpb"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n   3 "), std::string::npos) << r.out;
  // The shard named inside its data directory gets the directory's checks (they applied only
  // to the directory named): a count meta.json disagrees with, an unfinished prepare.
  write_bytes(dir.file("meta.json"), R"({"val_tokens": 5})");
  r = run_chainlm(dir, "eval ppl --model " + quote(ckpt) + " --data " + quote(dir.file("val.bin")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("says 5: the data directory mixes the files of two prepare runs"),
            std::string::npos)
      << r.err;
  std::filesystem::remove(dir.file("meta.json"));  // a prepare killed before writing it
  write_bytes(dir.file(".prepare-incomplete"), "");
  r = run_chainlm(dir, "eval ppl --model " + quote(ckpt) + " --data " + quote(dir.file("val.bin")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("did not finish"), std::string::npos) << r.err;
}

// A text file is read as prepare reads an --input: compressed and JSON Lines files were scored
// as raw bytes (a .gz's compressed bytes, a .jsonl's JSON syntax) with exit 0.
TEST_F(EvalPplCommand, CompressedAndJsonLinesFilesGiveTheSameFiguresAsTheText) {
  write_gzip(dir.file("eval.txt.gz"), text);
  std::string jsonl;
  for (const std::string& d : split_documents(text))
    jsonl += nlohmann::json{{"text", d}}.dump() + "\n";
  write_bytes(dir.file("eval.jsonl"), jsonl);
  const nlohmann::json t = run_json("--data " + quote(dir.file("eval.txt")) + " --seq-len 16");
  for (const char* name : {"eval.txt.gz", "eval.jsonl"}) {
    const nlohmann::json j = run_json("--data " + quote(dir.file(name)) + " --seq-len 16");
    EXPECT_EQ(j["documents"], 3) << name;
    EXPECT_EQ(j["bytes"], t["bytes"]) << name;
    EXPECT_EQ(j["tokens"], t["tokens"]) << name;
    for (int i = 0; i < 3; ++i)
      EXPECT_DOUBLE_EQ(j["chains"][i]["loss"].get<double>(), t["chains"][i]["loss"].get<double>())
          << name;
  }
}

// A text shorter than one window is one window of what it holds: the line said "1 window of
// 512 tokens" for five.
TEST_F(EvalPplCommand, ATextShorterThanAWindowSaysHowLongItsWindowIs) {
  write_bytes(dir.file("short.txt"), "tiny\n");  // BOS + 4 bytes: 4 scored
  const nlohmann::json j = run_json("--data " + quote(dir.file("short.txt")) + " --seq-len 16");
  EXPECT_EQ(j["tokens"], 4);
  EXPECT_EQ(j["seq_len"], 16);
  EXPECT_EQ(j["longest_window"], 4);
  auto r = run_chainlm(dir, "eval ppl --model " + quote(ckpt) + " --data " +
                                quote(dir.file("short.txt")) + " --seq-len 16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 window of 4 tokens (the text is shorter than the 16-token window)"),
            std::string::npos)
      << r.out;
  const nlohmann::json full = run_json("--data " + quote(dir.file("eval.txt")) + " --seq-len 16");
  EXPECT_EQ(full["longest_window"], 16);
}

TEST_F(EvalPplCommand, BadInputFailsWithAMessage) {
  write_bytes(dir.file("empty.txt"), "\n\n  \n");
  write_bytes(dir.file("one.txt"), "");
  fs::create_directories(dir.file("other"));
  write_token_shard(dir.file("other/v.bin"), {1, 2, 3, 4, 5}, 300);
  write_bytes(dir.file("u16.txt"), std::string("\xff\xfeh\0i\0\n\0", 8));
  // A FIFO (`--data <(zcat x.gz)` is one) was "no such file"; it is read more than once.
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0600), 0);
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"--data " + quote(dir.file("missing.txt")), "no such file"},
      {"--data " + quote(dir.file("empty.txt")), "holds no text"},
      {"--data " + quote(dir.file("one.txt")), "holds no text"},
      {"--data " + quote(dir.file("eval.txt")) + " --chains 4", "outside 1..3"},
      {"--data " + quote(dir.file("eval.txt")) + " --chains two", "neither \"all\""},
      {"--data " + quote(dir.file("eval.txt")) + " --seq-len 64", "max_seq_len"},
      {"--data " + quote(dir.file("eval.txt")) + " --stride 40", "stride"},
      // Below 0 ran with the default.
      {"--data " + quote(dir.file("eval.txt")) + " --seq-len -5", "--seq-len -5 must be >= 0"},
      {"--data " + quote(dir.file("eval.txt")) + " --stride -1", "--stride -1 must be >= 0"},
      {"--data " + quote(dir.file("eval.txt")) + " --batch-size -1",
       "--batch-size -1 must be >= 0"},
      // A shard of another tokenizer's vocabulary away from its directory (no fingerprint).
      {"--data " + quote(dir.file("other/v.bin")), "made with a tokenizer of 300 tokens"},
      {"--data " + quote(dir.file("u16.txt")), "UTF-16"},
      {"--data " + quote(dir.file("fifo")), "is a pipe, FIFO or device, not a file"},
  };
  for (const Case& c : cases) {
    auto r = run_chainlm(dir, "eval ppl --model " + quote(ckpt) + " " + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find("error"), std::string::npos) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
  }
}

}  // namespace
}  // namespace chainlm
