// `prepare` and `tokenizer train` on the inputs users have (issue 15, items 10 and 11): compressed
// files are read as their text, JSONL records and directories are documents, bad encodings are
// reported or refused, and SentencePiece's errors come back in chainlm's words.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/run_cli.h"
#include "io/token_shard.h"

namespace chainlm {
namespace {

using testing::contains;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

const std::string kFixtures = std::string(CHAINLM_SOURCE_DIR) + "/tests/io/data/compressed/";

TEST(CorpusInputsCli, CompressedAndJsonlInputsGiveTheSameShards) {
  TempDir dir;
  const auto prepare = [&](const std::string& input, const std::string& out) {
    return run_chainlm(dir, "prepare --tokenizer byte --input " + quote(kFixtures + input) +
                                " --out " + quote(dir.file(out)) + " --val-fraction 0.3");
  };
  auto plain = prepare("poem.txt", "plain");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const std::string train = read_bytes(dir.file("plain/train.bin"));
  const std::string val = read_bytes(dir.file("plain/val.bin"));
  for (const char* input : {"poem.txt.gz", "poem.txt.xz", "poem.txt.zst", "poem.jsonl.gz"}) {
    const std::string out = std::string("out_") + input;
    auto r = prepare(input, out);
    ASSERT_EQ(r.exit_code, 0) << input << ": " << r.err;
    EXPECT_EQ(read_bytes(dir.file(out + "/train.bin")), train) << input;
    EXPECT_EQ(read_bytes(dir.file(out + "/val.bin")), val) << input;
    EXPECT_TRUE(contains(r.out, "4 documents")) << r.out;
  }
  const auto meta = nlohmann::json::parse(read_bytes(dir.file("out_poem.txt.gz/meta.json")));
  EXPECT_EQ(meta["sources"], nlohmann::json::array({kFixtures + "poem.txt.gz"}));
  EXPECT_EQ(meta["documents"], 4);
}

TEST(CorpusInputsCli, DirectoriesSeveralInputsAndLineDocuments) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "corpus");
  write_bytes(dir.file("corpus/a.txt"), "alpha one\nalpha two\n\nbeta\n");
  write_bytes(dir.file("corpus/b.jsonl"), "{\"text\": \"gamma\"}\n{\"text\": \"delta\"}\n");
  write_bytes(dir.file("more.txt"), "epsilon\n");
  auto r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("corpus")) +
                                " --input " + quote(dir.file("more.txt")) + " --out " +
                                quote(dir.file("d1")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "3 files: 5 documents")) << r.out;
  const auto meta = nlohmann::json::parse(read_bytes(dir.file("d1/meta.json")));
  EXPECT_EQ(meta["sources"].size(), 3u);
  EXPECT_EQ(TokenShard(dir.file("d1/train.bin")).size() + TokenShard(dir.file("d1/val.bin")).size(),
            5u + std::string("alpha one\nalpha twobetagammadeltaepsilon").size());

  r = run_chainlm(dir, "prepare --tokenizer byte --split lines --input " +
                           quote(dir.file("corpus/a.txt")) + " --out " + quote(dir.file("d2")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "3 documents")) << r.out;  // one per non-blank line
}

TEST(CorpusInputsCli, EncodingsAreReportedOrRefused) {
  TempDir dir;
  std::string utf16 = "\xFF\xFE";
  for (char c : std::string("one\n\ntwo\n")) utf16 += std::string{c, '\0'};
  write_bytes(dir.file("u16.txt"), utf16);
  auto r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("u16.txt")) +
                                " --out " + quote(dir.file("o1")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "is UTF-16 (little-endian) text")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("o1")));

  write_bytes(dir.file("blob.bin"), std::string("\x7F"
                                                "ELF\x02\x01\x01\0\0\0\0\0 code\n\nx",
                                                21));
  r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("blob.bin")) +
                           " --out " + quote(dir.file("o2")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "holds binary data")) << r.err;

  write_bytes(dir.file("latin1.txt"), "caf\xE9 au lait\n\nfine text\n\nna\xEFve\n");
  r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("latin1.txt")) +
                           " --out " + quote(dir.file("o3")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "2 invalid UTF-8 sequences, the first at byte 3 (line 1)")) << r.err;
  EXPECT_TRUE(contains(r.err, "kept as bytes (the byte tokenizer keeps them")) << r.err;
  // tokenizer train's SentencePiece reads them as U+FFFD: said so, not the byte tokenizer's way.
  std::string text = "caf\xE9 au lait\n\n";
  for (int i = 0; i < 200; ++i) text += "fine text number " + std::to_string(i) + "\n\n";
  write_bytes(dir.file("latin1-long.txt"), text);
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("latin1-long.txt")) +
                           " --vocab-size 300 --out " + quote(dir.file("t.model")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(
      contains(r.err,
               "1 invalid UTF-8 sequence, the first at byte 3 (line 1); SentencePiece trains on "
               "each as U+FFFD"))
      << r.err;
  EXPECT_FALSE(contains(r.err, "byte tokenizer")) << r.err;
  r = run_chainlm(dir, "prepare --tokenizer byte --invalid-utf8 error --input " +
                           quote(dir.file("latin1.txt")) + " --out " + quote(dir.file("o4")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "refused by --invalid-utf8 error")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("o4")));
  // --invalid-utf8 skip leaving one document: the file held three, and the error said it held
  // "a single document".
  r = run_chainlm(dir, "prepare --tokenizer byte --invalid-utf8 skip --input " +
                           quote(dir.file("latin1.txt")) + " --out " + quote(dir.file("o4")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(
      contains(r.err,
               "after --invalid-utf8 skip dropped 2 documents holding invalid UTF-8 has a single "
               "document left"))
      << r.err;

  r = run_chainlm(dir, "prepare --tokenizer byte --format csv --input " +
                           quote(dir.file("latin1.txt")) + " --out " + quote(dir.file("o5")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "csv")) << r.err;
}

TEST(CorpusInputsCli, TokenizerTrainReadsCompressedJsonlAndExplainsItsErrors) {
  TempDir dir;
  auto r = run_chainlm(dir, "tokenizer train --corpus " + quote(kFixtures + "poem.jsonl.gz") +
                                " --vocab-size 330 --out " + quote(dir.file("a.model")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "poem.jsonl.gz (gzip)")) << r.out;
  // --threads, as every other command that computes has (it was an unknown option), and the
  // same pieces on one thread (the files differ: SentencePiece records its thread count).
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(kFixtures + "poem.jsonl.gz") +
                           " --vocab-size 330 --threads 1 --out " + quote(dir.file("one.model")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto encoded = [&](const char* model) {
    return run_chainlm(dir, "tokenizer encode --tokenizer " + quote(dir.file(model)) +
                                " --text 'the rivers of the poem'")
        .out;
  };
  EXPECT_FALSE(encoded("a.model").empty());
  EXPECT_EQ(encoded("one.model"), encoded("a.model"));
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(kFixtures + "poem.jsonl.gz") +
                           " --vocab-size 330 --threads 5000 --out " + quote(dir.file("c.model")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--threads 5000: at most 4096")) << r.err;
  // SentencePiece's trainer takes at most 128 (its own check's words reached the user).
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(kFixtures + "poem.jsonl.gz") +
                           " --vocab-size 330 --threads 200 --out " +
                           quote(dir.file("many.model")));
  EXPECT_EQ(r.exit_code, 0) << r.err;

  r = run_chainlm(dir, "tokenizer train --corpus " + quote(kFixtures + "poem.txt") +
                           " --vocab-size 5000 --out " + quote(dir.file("b.model")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--vocab-size 5000 is more pieces than the corpus can fill (at most "))
      << r.err;
  EXPECT_FALSE(contains(r.err, "trainer_interface")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("b.model")));

  // 300 distinct CJK characters, each needing a piece at full coverage.
  std::string cjk;
  for (int i = 0; i < 300; ++i) {
    const int cp = 0x4E00 + i;
    cjk += static_cast<char>(0xE0 | (cp >> 12));
    cjk += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    cjk += static_cast<char>(0x80 | (cp & 0x3F));
    if (i % 20 == 19) cjk += '\n';
  }
  write_bytes(dir.file("cjk.txt"), cjk);
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("cjk.txt")) +
                           " --vocab-size 400 --character-coverage 1 --out " +
                           quote(dir.file("c.model")));
  EXPECT_NE(r.exit_code, 0);
  // 300 characters, the space marker of SentencePiece's dummy prefix, 259 byte/control pieces.
  EXPECT_TRUE(contains(r.err, "--vocab-size 400 cannot hold the 560 pieces")) << r.err;
  EXPECT_TRUE(contains(r.err, "--character-coverage 1 ")) << r.err;
  EXPECT_FALSE(contains(r.err, "character_coverage")) << r.err;  // SentencePiece's flag name
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("cjk.txt")) +
                           " --vocab-size 600 --character-coverage 1 --out " +
                           quote(dir.file("c.model")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("cjk.txt")) +
                           " --vocab-size 600 --character-coverage 0.5 --out " +
                           quote(dir.file("d.model")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--character-coverage 0.5 must be between 0.98 and 1")) << r.err;
}

}  // namespace
}  // namespace chainlm
