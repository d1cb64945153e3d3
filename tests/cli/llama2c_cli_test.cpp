// `chainlm generate` on llama2.c files: the stories260K output, and bad files.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/run_cli.h"
#include "core/error.h"
#include "io/llama2c_test_util.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

const std::string kStories = CHAINLM_SOURCE_DIR "/../shared/data/stories260K";

TEST(Llama2cCli, GeneratesStories260K) {
  const std::string bin = kStories + "/stories260K.bin", tok = kStories + "/tok512.bin";
  if (!std::filesystem::exists(bin) || !std::filesystem::exists(tok))
    GTEST_SKIP() << "stories260K data not present under " << kStories;
  TempDir dir;
  auto r = run_chainlm(dir, "generate --model " + quote(bin) + " --tokenizer " + quote(tok) +
                                " --temperature 0 --max-tokens 40");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string expected =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park.";
  EXPECT_EQ(r.out.substr(0, expected.size()), expected) << r.out;

  // Without --tokenizer: a model file has none beside it.
  r = run_chainlm(dir, "generate --model " + quote(bin) + " --max-tokens 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("pass --tokenizer"), std::string::npos) << r.err;

  // eval ppl of a shard: without --tokenizer nothing can check the shard's tokenizer against the
  // model's (here a byte tokenizer's tokens, meaningless to stories260K): said, with the remedy.
  write_bytes(dir.file("text.txt"), "Once upon a time there was a cat.\n\nThe cat sat.\n");
  r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("text.txt")) +
                           " --val-fraction 0.5 --out " + quote(dir.file("data")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "eval ppl --model " + quote(bin) + " --data " + quote(dir.file("data")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("carries no tokenizer, so nothing checks that the tokens of"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("made with a tokenizer of 258 tokens; the model has 512 rows"),
            std::string::npos)
      << r.err;
  // The bytes prepare recorded are known all the same (bits per byte need no tokenizer).
  r = run_chainlm(dir,
                  "eval ppl --json --model " + quote(bin) + " --data " + quote(dir.file("data")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto meta = nlohmann::json::parse(read_bytes(dir.file("data/meta.json")));
  const auto scored = nlohmann::json::parse(r.out);
  EXPECT_EQ(scored["bytes"], meta["val_bytes"]) << r.out;
  EXPECT_EQ(scored["documents"], meta["val_documents"]) << r.out;
  r = run_chainlm(dir, "eval ppl --model " + quote(bin) + " --tokenizer " + quote(tok) +
                           " --data " + quote(dir.file("data")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("made with another tokenizer"), std::string::npos) << r.err;
  // Data made with tok512.model, evaluated with tok512.bin (a user trial): one vocabulary in two
  // formats, which the refusal explains.
  const std::string sp = std::string(kStories) + "/tok512.model";
  r = run_chainlm(dir, "prepare --tokenizer " + quote(sp) + " --input " +
                           quote(dir.file("text.txt")) + " --val-fraction 0.5 --out " +
                           quote(dir.file("data_sp")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "eval ppl --model " + quote(bin) + " --tokenizer " + quote(tok) +
                           " --data " + quote(dir.file("data_sp")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(
      r.err.find("The data's is a SentencePiece .model and the model's a llama2.c "
                 "tokenizer.bin of one 512-token vocabulary: they are not the same tokenizer"),
      std::string::npos)
      << r.err;
  // The other way round: data made with tok512.bin (which prepare kept as tokenizer.model before
  // 2026-12, so no file name told the formats apart; the note was missing, a regression trial).
  r = run_chainlm(dir, "prepare --tokenizer " + quote(tok) + " --input " +
                           quote(dir.file("text.txt")) + " --val-fraction 0.5 --out " +
                           quote(dir.file("data_bin")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "eval ppl --model " + quote(bin) + " --tokenizer " + quote(sp) + " --data " +
                           quote(dir.file("data_bin")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("The data's is a llama2.c tokenizer.bin and the model's a SentencePiece "
                       ".model of one 512-token vocabulary"),
            std::string::npos)
      << r.err;
  // Of two vocabularies, the formats are beside the point: no note (a trial had it for
  // SentencePiece and llama2.c tokenizers of 300 and 512 tokens).
  const std::string llama2 = CHAINLM_SOURCE_DIR "/../shared/data/tokenizers/llama2-tokenizer.model";
  if (std::filesystem::exists(llama2)) {
    r = run_chainlm(dir, "prepare --tokenizer " + quote(llama2) + " --input " +
                             quote(dir.file("text.txt")) + " --val-fraction 0.5 --out " +
                             quote(dir.file("data_llama2")));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run_chainlm(dir, "eval ppl --model " + quote(bin) + " --tokenizer " + quote(tok) +
                             " --data " + quote(dir.file("data_llama2")));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("made with another tokenizer"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("not the same tokenizer"), std::string::npos) << r.err;
  }

  // Model and tokenizer swapped: each says what the file is.
  r = run_chainlm(dir, "generate --model " + quote(tok) + " --tokenizer " + quote(bin));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("tokenizer.bin"), std::string::npos) << r.err;
  r = run_chainlm(dir, "generate --model " + quote(bin) + " --tokenizer " + quote(bin));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("model checkpoint, not a tokenizer"), std::string::npos) << r.err;
}

// A model carrying tok512.bin exports only with the SentencePiece model it was made from: the
// refusal names that way, not only --no-tokenizer (a user trial).
TEST(Llama2cCli, ExportOfAModelWithATokenizerBinNamesTheSentencePieceModel) {
  const std::string bin = kStories + "/stories260K.bin", tok = kStories + "/tok512.bin",
                    sp = kStories + "/tok512.model";
  if (!std::filesystem::exists(bin) || !std::filesystem::exists(tok) ||
      !std::filesystem::exists(sp))
    GTEST_SKIP() << "stories260K data not present under " << kStories;
  TempDir dir;
  auto r = run_chainlm(dir, "expand --from " + quote(bin) + " --add-chains 8 --tokenizer " +
                                quote(tok) + " --out " + quote(dir.file("grown")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir.file("grown/tokenizer.bin")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("grown/tokenizer.model")));
  for (const char* format : {"hf", "gguf"}) {
    r = run_chainlm(dir, "export --model " + quote(dir.file("grown")) + " --chains 1 --format " +
                             format + " --out " + quote(dir.file(std::string("out.") + format)));
    EXPECT_NE(r.exit_code, 0) << format;
    EXPECT_NE(r.err.find("is made from a SentencePiece .model"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("pass that as --tokenizer, or --no-tokenizer"), std::string::npos)
        << r.err;
  }
  r = run_chainlm(dir, "export --model " + quote(dir.file("grown")) +
                           " --chains 1 --format hf --tokenizer " + quote(sp) + " --out " +
                           quote(dir.file("hf")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir.file("hf/tokenizer.model")));
}

TEST(Llama2cCli, BadModelFilesFailWithAMessage) {
  TempDir dir;
  const Llama2cWeights w = testing::random_llama2c(testing::small_llama2c_header(true), 8);
  const std::string good = dir.file("good.bin");
  write_llama2c(w, good);
  const std::string bytes = read_bytes(good);
  const std::string tok = dir.file("tok.bin");
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int i = 3; i < 67; ++i) pieces.push_back(cat("t", i));
  write_bytes(tok, testing::tokenizer_bin_bytes(pieces, std::vector<float>(pieces.size(), -1.0f)));

  // The good file works end to end (random weights, so only the exit code matters).
  auto r = run_chainlm(dir, "generate --model " + quote(good) + " --tokenizer " + quote(tok) +
                                " --max-tokens 3 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // bench serve takes its --tokenizer too (it asked for one and had no such option).
  r = run_chainlm(dir,
                  "bench serve --model " + quote(good) + " --tokenizer " + quote(tok) +
                      " --tokens 2 --prompt-tokens 2 --concurrency 1 --requests 1 --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"bench\":\"serve\""), std::string::npos) << r.out;

  const std::string cut = dir.file("truncated.bin");
  write_bytes(cut, bytes.substr(0, bytes.size() - 100));
  r = run_chainlm(dir, "generate --model " + quote(cut) + " --tokenizer " + quote(tok));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("truncated: expected " + std::to_string(bytes.size()) + " bytes, file has " +
                       std::to_string(bytes.size() - 100)),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(cut), std::string::npos) << r.err;
  r = run_chainlm(dir, "generate --model " + quote(cut));  // the model error comes first
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;

  const std::string noise = dir.file("noise.bin");
  Rng rng(3);
  std::string random(20000, '\0');
  for (auto& c : random) c = static_cast<char>(rng.below(256));
  write_bytes(noise, random);
  r = run_chainlm(dir, "generate --model " + quote(noise) + " --tokenizer " + quote(tok));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not a llama2.c checkpoint"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace chainlm
