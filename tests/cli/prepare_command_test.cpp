// Runs the built `chainlm` binary: tokenizer train, tokenizer encode and prepare, end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/rng.h"
#include "io/test_temp_dir.h"
#include "io/token_shard.h"
#include "io/tokenizer.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

struct RunResult {
  int exit_code;
  std::string out, err;
};

// args are chainlm's arguments, or with raw a whole command line.
RunResult run_chainlm(const TempDir& dir, const std::string& args, bool raw = false) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const std::string cmd = (raw ? args : std::string("'") + CHAINLM_BINARY + "' " + args) + " >'" +
                          out + "' 2>'" + err + "'";
  int status = std::system(cmd.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_bytes(out), read_bytes(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

// Every file of a directory (no subdirectories) by name, with its bytes.
std::map<std::string, std::string> directory_contents(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    files[e.path().filename().string()] = read_bytes(e.path().string());
  return files;
}

std::string q(const std::string& path) {
  return "'" + path + "'";
}

// Documents the test knows independently of the command's splitter.
std::vector<std::string> make_documents(size_t n) {
  const std::vector<std::string> words = {"apple", "river",  "stone",   "light", "garden", "silver",
                                          "quiet", "window", "morning", "paper", "bridge", "cloud"};
  Rng rng(3);
  std::vector<std::string> docs;
  for (size_t d = 0; d < n; ++d) {
    std::string doc;
    size_t lines = 1 + rng.below(4);
    for (size_t l = 0; l < lines; ++l) {
      if (l) doc += '\n';
      size_t len = 3 + rng.below(12);
      for (size_t w = 0; w < len; ++w) doc += (w ? " " : "") + words[rng.below(words.size())];
      doc += rng.below(2) ? "." : ", " + std::to_string(rng.below(1000)) + "!";
    }
    docs.push_back(doc);
  }
  return docs;
}

// Joins documents with a mix of the separators prepare must understand.
std::string join_documents(const std::vector<std::string>& docs) {
  std::string text;
  for (size_t i = 0; i < docs.size(); ++i) {
    text += docs[i] + "\n";
    if (i + 1 < docs.size()) text += (i % 3 == 0) ? "%\n" : (i % 3 == 1) ? "\n" : "\n\n\n";
  }
  return text;
}

// Splits a shard back into documents at BOS and decodes each one.
std::vector<std::string> decode_shard(const TokenShard& shard, const Tokenizer& tok) {
  std::vector<int32_t> ids(shard.size());
  shard.read(0, shard.size(), ids.data());
  std::vector<std::string> docs;
  std::vector<int> current;
  EXPECT_TRUE(ids.empty() || ids[0] == tok.bos_id());
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i == ids.size() || ids[i] == tok.bos_id()) {
      if (i) docs.push_back(tok.decode(current));
      current.clear();
    } else {
      current.push_back(ids[i]);
    }
  }
  return docs;
}

TEST(PrepareCommand, TrainTokenizerThenPrepare) {
  TempDir dir;
  const std::vector<std::string> docs = make_documents(400);
  const std::string input = dir.file("corpus.txt");
  write_bytes(input, join_documents(docs));
  const std::string model = dir.file("tok.model");

  RunResult train = run_chainlm(dir, "tokenizer train --corpus " + q(input) +
                                         " --vocab-size 300 --out " + q(model) + " --seed 5");
  ASSERT_EQ(train.exit_code, 0) << train.err;
  EXPECT_TRUE(train.err.empty()) << "SentencePiece logs should be silenced: " << train.err;
  auto tok = load_tokenizer(model);
  EXPECT_EQ(tok->vocab_size(), 300);

  RunResult enc =
      run_chainlm(dir, "tokenizer encode --tokenizer " + q(model) + " --text 'quiet river'");
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  std::string expected_ids;
  for (int id : tok->encode("quiet river"))
    expected_ids += (expected_ids.empty() ? "" : " ") + std::to_string(id);
  EXPECT_EQ(enc.out, expected_ids + "\n");
  // decode takes what encode prints (or commas), and leaves BOS and EOS out.
  for (const std::string& ids : {expected_ids, "1," + expected_ids + ",2"}) {
    std::string commas = ids;
    std::replace(commas.begin(), commas.end(), ' ', ',');
    RunResult dec =
        run_chainlm(dir, "tokenizer decode --tokenizer " + q(model) + " --ids " + q(commas));
    ASSERT_EQ(dec.exit_code, 0) << dec.err;
    EXPECT_EQ(dec.out, "quiet river\n");
  }
  for (const std::string& bad : {std::string("12 x"), std::string("-3"), std::string("300")}) {
    RunResult dec =
        run_chainlm(dir, "tokenizer decode --tokenizer " + q(model) + " --ids " + q(bad));
    EXPECT_NE(dec.exit_code, 0) << bad;
    EXPECT_NE(dec.err.find(bad == "300" ? "outside" : "is not a token id"), std::string::npos)
        << dec.err;
  }

  const std::string data = dir.file("data");
  RunResult prep = run_chainlm(dir, "prepare --tokenizer " + q(model) + " --input " + q(input) +
                                        " --out " + q(data) + " --val-fraction 0.2 --seed 11");
  ASSERT_EQ(prep.exit_code, 0) << prep.err;
  EXPECT_NE(prep.out.find("400 documents"), std::string::npos) << prep.out;

  TokenShard train_shard((std::filesystem::path(data) / "train.bin").string());
  TokenShard val_shard((std::filesystem::path(data) / "val.bin").string());
  EXPECT_EQ(train_shard.vocab_size(), 300u);
  size_t expected_tokens = 0;
  for (const std::string& d : docs) expected_tokens += 1 + tok->encode(d).size();
  EXPECT_EQ(train_shard.size() + val_shard.size(), expected_tokens);
  EXPECT_GT(val_shard.size(), 0u);
  EXPECT_GT(train_shard.size(), val_shard.size());

  // Every document appears exactly once, in one of the two shards, with BOS in front.
  std::vector<std::string> train_docs = decode_shard(train_shard, *tok);
  std::vector<std::string> val_docs = decode_shard(val_shard, *tok);
  EXPECT_EQ(train_docs.size() + val_docs.size(), docs.size());
  std::multiset<std::string> got(train_docs.begin(), train_docs.end());
  got.insert(val_docs.begin(), val_docs.end());
  EXPECT_EQ(got, std::multiset<std::string>(docs.begin(), docs.end()));
  // About 20% validation (80 expected; a binomial spread of +-25 is over 4 sigma).
  EXPECT_GT(val_docs.size(), 55u);
  EXPECT_LT(val_docs.size(), 105u);

  // The directory carries its tokenizer and a meta.json that agrees with the shards.
  EXPECT_EQ(read_bytes(find_tokenizer_in_dir(data)), read_bytes(model));
  auto meta =
      nlohmann::json::parse(read_bytes((std::filesystem::path(data) / "meta.json").string()));
  EXPECT_EQ(meta["train_tokens"].get<uint64_t>(), train_shard.size());
  EXPECT_EQ(meta["val_tokens"].get<uint64_t>(), val_shard.size());
  EXPECT_EQ(meta["train_documents"].get<size_t>(), train_docs.size());
  EXPECT_EQ(meta["val_documents"].get<size_t>(), val_docs.size());
  EXPECT_EQ(meta["tokenizer"]["vocab_size"].get<int>(), 300);
  size_t val_bytes = 0, all_bytes = 0;
  for (const std::string& d : val_docs) val_bytes += d.size();
  for (const std::string& d : docs) all_bytes += d.size();
  EXPECT_EQ(meta["val_bytes"].get<size_t>(), val_bytes);
  EXPECT_EQ(meta["train_bytes"].get<size_t>() + val_bytes, all_bytes);

  // Same seed, same split; the tokenizer spec may also be the data directory itself.
  const std::string data2 = dir.file("data2");
  RunResult again = run_chainlm(dir, "prepare --tokenizer " + q(data) + " --input " + q(input) +
                                         " --out " + q(data2) + " --val-fraction 0.2 --seed 11");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(read_bytes((std::filesystem::path(data2) / "val.bin").string()),
            read_bytes((std::filesystem::path(data) / "val.bin").string()));
}

TEST(PrepareCommand, ByteTokenizerAndMinimumSplit) {
  TempDir dir;
  const std::string input = dir.file("two.txt");
  write_bytes(input, "first document\n\nsecond one\n");
  const std::string data = dir.file("data");
  RunResult r = run_chainlm(dir, "prepare --tokenizer byte --input " + q(input) + " --out " +
                                     q(data) + " --val-fraction 0.01");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  TokenShard train((std::filesystem::path(data) / "train.bin").string());
  TokenShard val((std::filesystem::path(data) / "val.bin").string());
  // Two documents: one on each side no matter how small the fraction.
  EXPECT_EQ(train.size() + val.size(), (1 + 14) + (1 + 10));
  EXPECT_GT(train.size(), 0u);
  EXPECT_GT(val.size(), 0u);
  EXPECT_EQ(train.at(0), 256u);  // BOS of the byte tokenizer
  EXPECT_EQ(find_tokenizer_in_dir(data), "byte");
}

// A corpus piped in (`zcat corpus.gz | chainlm prepare --input /dev/stdin`) gives the shards of
// its file: the first 8 KiB were read to tell the compression, then lost to a second open.
TEST(PrepareCommand, APipedCorpusGivesTheDataOfItsFile) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 600; ++i) text += "document " + std::to_string(i) + " of a piped corpus\n\n";
  ASSERT_GT(text.size(), 16384u);
  const std::string input = dir.file("corpus.txt");
  write_bytes(input, text);
  ASSERT_EQ(run_chainlm(dir, "prepare --tokenizer byte --input " + q(input) + " --out " +
                                 q(dir.file("file")))
                .exit_code,
            0);
  for (const std::string& pipe : {std::string("cat "), std::string("gzip -c ")}) {
    const std::string out = dir.file("piped");
    RunResult r = run_chainlm(dir,
                              pipe + q(input) + " | '" + CHAINLM_BINARY +
                                  "' prepare --tokenizer byte --input /dev/stdin --out " + q(out),
                              true);
    ASSERT_EQ(r.exit_code, 0) << pipe << r.err;
    for (const char* shard : {"train.bin", "val.bin"})
      EXPECT_EQ(read_bytes(out + "/" + shard), read_bytes(dir.file("file") + "/" + shard))
          << pipe << shard;
    std::filesystem::remove_all(out);
  }
}

// Started with stdin, stdout and stderr closed (`<&- >&- 2>&-`), prepare opened its shards as
// descriptors 1 and 2, and its warning about invalid UTF-8 went into val.bin (a user trial found
// a server's log lines in a client's connection the same way). Now the shards are what a prepare
// with its streams open writes, and the warning is lost, not written into the data.
TEST(PrepareCommand, ClosedStandardStreamsDoNotWriteIntoTheData) {
  TempDir dir;
  const std::string input = dir.file("latin1.txt");
  write_bytes(input, "caf\xe9 au lait\n\nna\xefve text here\n\nmore text\n\nand more\n");
  const std::string args =
      "prepare --tokenizer byte --input " + q(input) + " --val-fraction 0.3 --out ";
  RunResult r = run_chainlm(dir, args + q(dir.file("open")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_NE(r.err.find("invalid UTF-8"), std::string::npos)
      << "the case needs a warning: " << r.err;
  const std::string closed =
      std::string("'") + CHAINLM_BINARY + "' " + args + q(dir.file("closed")) + " <&- >&- 2>&-";
  ASSERT_EQ(std::system(closed.c_str()), 0);
  for (const char* name : {"train.bin", "val.bin", "meta.json"})
    EXPECT_EQ(read_bytes(dir.file(std::string("closed/") + name)),
              read_bytes(dir.file(std::string("open/") + name)))
        << name;
}

// Under a file-size limit (`ulimit -f`) SIGXFSZ killed prepare (and every writer) without a
// word, its temporaries left behind: now the write fails with EFBIG, said, and cleaned up.
TEST(PrepareCommand, AFileSizeLimitIsAnErrorNotASignal) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 3000; ++i)
    text += "a line of a document that is long enough " + std::to_string(i) + "\n\n";
  write_bytes(dir.file("big.txt"), text);
  RunResult r = run_chainlm(dir,
                            std::string("sh -c 'ulimit -f 64; exec \"$0\" \"$@\"' '") +
                                CHAINLM_BINARY + "' prepare --tokenizer byte --input " +
                                q(dir.file("big.txt")) + " --out " + q(dir.file("data")),
                            true);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("data/train.bin")));
  if (std::filesystem::exists(dir.file("data")))
    for (const auto& e : std::filesystem::directory_iterator(dir.file("data")))
      ADD_FAILURE() << "left behind: " << e.path();
}

#if !defined(__SANITIZE_ADDRESS__)  // (AddressSanitizer cannot start under ulimit -v)
// One long line is one document, which a tokenizer encodes whole (SentencePiece ~120 bytes a
// character): a 110 MB line failed after 7 s with a bare "std::bad_alloc" (a user trial). One
// that cannot fit what is available is refused before it is tokenized, saying what to do.
TEST(PrepareCommand, ADocumentTooLargeToTokenizeIsRefusedFirst) {
  const std::string sp = CHAINLM_SOURCE_DIR "/../shared/data/stories260K/tok512.model";
  if (!std::filesystem::exists(sp)) GTEST_SKIP() << "no " << sp;
  TempDir dir;
  std::string line;
  while (line.size() < (size_t(17) << 20)) line += "the cat sat on the mat and looked about. ";
  write_bytes(dir.file("one.txt"), line + "\n\nsecond\n");
  RunResult r = run_chainlm(dir,
                            std::string("sh -c 'ulimit -v 1500000; exec \"$0\" \"$@\"' '") +
                                CHAINLM_BINARY + "' prepare --tokenizer " + q(sp) + " --input " +
                                q(dir.file("one.txt")) + " --out " + q(dir.file("data")),
                            true);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("a document of 17.00 MiB (document 1) would take about"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--split lines"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("data/train.bin")));
}
#endif

// A corpus published already split (train and validation files): --val-input puts every one of
// its documents in val.bin and every --input document in train.bin, in order.
TEST(PrepareCommand, ValidationFilesGivenApart) {
  TempDir dir;
  const std::vector<std::string> train_docs = make_documents(7), val_docs = {"held out, first.", "second\nof two"};
  write_bytes(dir.file("train.txt"), join_documents(train_docs));
  write_bytes(dir.file("val.txt"), join_documents(val_docs));
  const std::string data = dir.file("data");
  RunResult r = run_chainlm(dir, "prepare --tokenizer byte --input " + q(dir.file("train.txt")) + " --val-input " +
                                     q(dir.file("val.txt")) + " --out " + q(data));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("train 7 documents"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("val 2 documents"), std::string::npos) << r.out;
  auto tok = load_tokenizer("byte");
  EXPECT_EQ(decode_shard(TokenShard((std::filesystem::path(data) / "train.bin").string()), *tok), train_docs);
  EXPECT_EQ(decode_shard(TokenShard((std::filesystem::path(data) / "val.bin").string()), *tok), val_docs);
  const auto meta = nlohmann::json::parse(read_bytes((std::filesystem::path(data) / "meta.json").string()));
  EXPECT_TRUE(meta["val_fraction"].is_null());
  ASSERT_EQ(meta["val_sources"].size(), 1u);
  EXPECT_EQ(meta["val_documents"], 2);

  // Not with --val-fraction; an empty validation file is refused by name; nothing is written.
  write_bytes(dir.file("blank.txt"), "\n\n");
  for (const auto& [args, needle] :
       {std::pair<std::string, std::string>{" --val-input " + q(dir.file("val.txt")) + " --val-fraction 0.2", "excludes"},
        {" --val-input " + q(dir.file("blank.txt")), "blank.txt"}}) {
    RunResult bad = run_chainlm(dir, "prepare --tokenizer byte --input " + q(dir.file("train.txt")) + args +
                                         " --out " + q(dir.file("bad")));
    EXPECT_NE(bad.exit_code, 0) << args;
    EXPECT_NE(bad.err.find(needle), std::string::npos) << args << "\nstderr: " << bad.err;
    EXPECT_FALSE(std::filesystem::exists(dir.file("bad/train.bin"))) << args;
  }
}

TEST(PrepareCommand, BadInputsFailWithAMessage) {
  TempDir dir;
  const std::string good = dir.file("good.txt");
  write_bytes(good, "a\n\nb\n\nc\n");
  const std::string empty = dir.file("empty.txt");
  write_bytes(empty, "");
  const std::string blank = dir.file("blank.txt");
  write_bytes(blank, "\n\n%\n  \n");
  const std::string single = dir.file("single.txt");
  write_bytes(single, "just one document\nover two lines\n");
  const std::string out = " --out " + q(dir.file("out"));

  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"prepare --tokenizer byte --input " + q(empty) + out, "empty"},
      {"prepare --tokenizer byte --input " + q(blank) + out, "no documents"},
      {"prepare --tokenizer byte --input " + q(single) + out, "single document"},
      {"prepare --tokenizer byte --input " + q(dir.file("missing.txt")) + out, "missing.txt"},
      {"prepare --tokenizer byte --input " + q(good) + out + " --val-fraction 0", "--val-fraction"},
      {"prepare --tokenizer byte --input " + q(good) + out + " --val-fraction 1", "--val-fraction"},
      {"prepare --tokenizer " + q(good) + " --input " + q(good) + out, "not a SentencePiece model"},
      {"prepare --input " + q(good) + out, "tokenizer"},
      {"tokenizer train --corpus " + q(empty) + " --vocab-size 300 --out " + q(dir.file("t.model")),
       "empty"},
      {"tokenizer encode --tokenizer " + q(dir.file("nope.model")) + " --text hi", "nope.model"},
  };
  for (const Case& c : cases) {
    RunResult r = run_chainlm(dir, c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\nstderr: " << r.err;
  }
  // prepare makes --out before it streams the corpus into it, and takes it away again.
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("t.model")));
}

// The shards stream to temporary files while the corpus is read: a corpus that fails late (a
// malformed last JSONL record) over an earlier prepare with --overwrite leaves the earlier data
// as it was, with no temporary file beside it.
TEST(PrepareCommand, ALateFailureKeepsTheEarlierData) {
  TempDir dir;
  write_bytes(dir.file("good.txt"), join_documents(make_documents(20)));
  const std::string data = dir.file("data");
  ASSERT_EQ(run_chainlm(dir, "prepare --tokenizer byte --input " + q(dir.file("good.txt")) +
                                 " --out " + q(data))
                .exit_code,
            0);
  const std::map<std::string, std::string> before = directory_contents(data);
  std::string jsonl;
  for (int i = 0; i < 3000; ++i) jsonl += "{\"text\": \"record " + std::to_string(i) + "\"}\n";
  write_bytes(dir.file("late.jsonl"), jsonl + "{\"text\": oops}\n");
  const RunResult r =
      run_chainlm(dir, "prepare --tokenizer byte --input " + q(dir.file("late.jsonl")) + " --out " +
                           q(data) + " --overwrite");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("late.jsonl:3001"), std::string::npos) << r.err;
  const std::map<std::string, std::string> after = directory_contents(data);
  EXPECT_EQ(after, before);
}

// A disk that fills while the new shards are written out (their final flush and fsync) over an
// earlier prepare with --overwrite: the earlier data stays whole and usable, with no mark of an
// unfinished prepare (it was marked, and train refused data nothing had touched: a trial on a
// full tmpfs). The second write to fail is val.bin's, after train.bin's was written.
TEST(PrepareCommand, ADiskFullWhileTheShardsAreWrittenLeavesTheEarlierDataUnmarked) {
  TempDir dir;
  write_bytes(dir.file("a.txt"), join_documents(make_documents(20)));
  write_bytes(dir.file("b.txt"), join_documents(make_documents(40)));
  const std::string data = dir.file("data");
  ASSERT_EQ(run_chainlm(dir, "prepare --tokenizer byte --input " + q(dir.file("a.txt")) +
                                 " --out " + q(data))
                .exit_code,
            0);
  const std::map<std::string, std::string> before = directory_contents(data);
  const RunResult full =
      run_chainlm(dir,
                  "env CHAINLM_WRITE_ERROR_AT=atomic_file.write:2 '" + std::string(CHAINLM_BINARY) +
                      "' prepare --tokenizer byte --input " + q(dir.file("b.txt")) + " --out " +
                      q(data) + " --overwrite",
                  /*raw=*/true);
  EXPECT_NE(full.exit_code, 0);
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  const std::map<std::string, std::string> after = directory_contents(data);
  EXPECT_EQ(after, before);  // no mark, no temporary file, the same shards
}

// prepare --overwrite killed after train.bin is replaced and before val.bin is (SIGKILL at the
// third atomic rename: the mark, train.bin, val.bin) used to leave a new train.bin beside the old
// val.bin, tokenizer and meta.json, and train ran on it. Now train and eval refuse the directory,
// and prepare runs again over it without --overwrite.
TEST(PrepareCommand, AnInterruptedOverwriteIsRefusedUntilPreparedAgain) {
  TempDir dir;
  write_bytes(dir.file("a.txt"), join_documents(make_documents(30)));
  write_bytes(dir.file("b.txt"), join_documents(make_documents(60)));
  const std::string data = dir.file("data");
  ASSERT_EQ(run_chainlm(dir, "prepare --tokenizer byte --input " + q(dir.file("a.txt")) +
                                 " --out " + q(data))
                .exit_code,
            0);
  const RunResult killed =
      run_chainlm(dir,
                  "env CHAINLM_CRASH_AT=atomic_file.before_rename:3 '" +
                      std::string(CHAINLM_BINARY) + "' prepare --tokenizer byte --input " +
                      q(dir.file("b.txt")) + " --out " + q(data) + " --overwrite",
                  /*raw=*/true);
  ASSERT_NE(killed.exit_code, 0);
  ASSERT_TRUE(std::filesystem::exists(data + "/.prepare-incomplete"));
  const RunResult eval = run_chainlm(dir, "eval ppl --model " + q(data) + " --data " + q(data));
  EXPECT_NE(eval.exit_code, 0);
  write_bytes(dir.file("tiny.json"),
              R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258,
                                         "max_seq_len": 16})");
  const std::string train_args = "train --config " + q(dir.file("tiny.json")) + " --data " +
                                 q(data) + " --out " + q(dir.file("run")) +
                                 " --steps 1 --batch-size 2 --quiet";
  RunResult train = run_chainlm(dir, train_args);
  EXPECT_NE(train.exit_code, 0);
  EXPECT_NE(train.err.find("did not finish"), std::string::npos) << train.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("run/latest")));

  RunResult again = run_chainlm(
      dir, "prepare --tokenizer byte --input " + q(dir.file("b.txt")) + " --out " + q(data));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("did not finish"), std::string::npos) << again.err;
  EXPECT_FALSE(std::filesystem::exists(data + "/.prepare-incomplete"));
  for (const auto& e :
       std::filesystem::directory_iterator(data))  // the killed run's temporaries went too
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  train = run_chainlm(dir, train_args);
  EXPECT_EQ(train.exit_code, 0) << train.err;

  // Killed before its mark (while the shards stream to temporary files) into a new --out: the
  // next prepare there takes the dead one's temporaries away instead of calling them data.
  const std::string fresh = dir.file("fresh");
  const RunResult early = run_chainlm(
      dir,
      "env CHAINLM_CRASH_AT=atomic_file.after_data:1 '" + std::string(CHAINLM_BINARY) +
          "' prepare --tokenizer byte --input " + q(dir.file("b.txt")) + " --out " + q(fresh),
      /*raw=*/true);
  ASSERT_NE(early.exit_code, 0);
  ASSERT_FALSE(std::filesystem::is_empty(fresh));  // the temporary shards
  RunResult after = run_chainlm(
      dir, "prepare --tokenizer byte --input " + q(dir.file("b.txt")) + " --out " + q(fresh));
  EXPECT_EQ(after.exit_code, 0) << after.err;
  for (const auto& e : std::filesystem::directory_iterator(fresh))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace chainlm

namespace chainlm {
namespace {

// The advice to convert a UTF-16 file in a directory the user cannot write (a shared, read-only
// dataset) names a copy where they can: the current directory, else the temporary one (it named
// one beside the input, where iconv's ">" failed: a user trial). Run as an unprivileged user,
// since root writes anywhere.
TEST(PrepareCommand, ConversionAdviceForAReadOnlyDirectoryWritesWhereTheUserCan) {
  TempDir dir;
  namespace fs = std::filesystem;
  const std::string ro = dir.file("shared");
  fs::create_directories(ro);
  write_bytes(ro + "/u16.txt", std::string("\xff\xfeh\0i\0\n\0", 8));
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                          fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  fs::permissions(dir.path(), fs::perms::all);  // the unprivileged user writes its --out and stderr
  const std::string as_user =
      ::geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  auto advice = [&](const std::string& cwd) {
    const std::string err = dir.file("err.txt");
    const std::string cmd = "cd '" + cwd + "' && " + as_user + "'" + CHAINLM_BINARY +
                            "' prepare --tokenizer byte --input '" + ro + "/u16.txt' --out '" +
                            dir.file("out") + "' 2>'" + err + "'";
    const int status = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    return read_bytes(err);
  };
  // The current directory when it is writable: the name alone.
  std::string e = advice(dir.path().string());
  EXPECT_NE(e.find("iconv -f UTF-16LE -t UTF-8 " + ro + "/u16.txt > u16.utf8.txt"),
            std::string::npos)
      << e;
  // Else the temporary directory. "/" is not writable for the unprivileged user (nor for a
  // non-root one running the tests).
  e = advice("/");
  const std::string tmp = fs::temp_directory_path().string();
  EXPECT_NE(e.find(" > " + (tmp.back() == '/' ? tmp : tmp + "/") + "u16.utf8"), std::string::npos)
      << e;
  EXPECT_EQ(e.find(ro + "/u16.utf8"), std::string::npos) << e;
  fs::permissions(ro, fs::perms::owner_all);  // for TempDir's removal
}

}  // namespace
}  // namespace chainlm
