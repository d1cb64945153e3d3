// llama2.c checkpoints (header validation, truncation, round trip) and tokenizer.bin (run.c's
// encode/decode, agreement with the SentencePiece model it was exported from).
#include "io/llama2c.h"

#include <gtest/gtest.h>

#include "error_of.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <tuple>

#include "core/error.h"
#include "core/rng.h"
#include "io/llama2c_test_util.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

const std::string kStories = CHAINLM_SOURCE_DIR "/../shared/data/stories260K";

using test::error_of;

std::string header_bytes(std::vector<int32_t> raw) {
  return std::string(reinterpret_cast<const char*>(raw.data()), raw.size() * 4);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

TEST(Llama2cCheckpoint, RoundTripSharedAndUnsharedClassifier) {
  TempDir dir;
  for (bool shared : {true, false}) {
    const Llama2cWeights w = testing::random_llama2c(testing::small_llama2c_header(shared), 3);
    const std::string path = dir.file(shared ? "shared.bin" : "unshared.bin");
    write_llama2c(w, path);
    EXPECT_EQ((int64_t)std::filesystem::file_size(path), w.h.file_bytes());
    EXPECT_TRUE(is_llama2c_checkpoint(path));
    // The sign of vocab_size in the file says whether the classifier is shared.
    int32_t vocab_field;
    std::memcpy(&vocab_field, read_bytes(path).data() + 20, 4);
    EXPECT_EQ(vocab_field, shared ? 67 : -67);

    const Llama2cWeights r = read_llama2c(path);
    EXPECT_EQ(r.h.dim, 48);
    EXPECT_EQ(r.h.hidden_dim, 100);
    EXPECT_EQ(r.h.n_layers, 2);
    EXPECT_EQ(r.h.n_heads, 6);
    EXPECT_EQ(r.h.n_kv_heads, 2);
    EXPECT_EQ(r.h.vocab_size, 67);
    EXPECT_EQ(r.h.seq_len, 32);
    EXPECT_EQ(r.h.shared_classifier, shared);
    EXPECT_EQ(r.token_embedding, w.token_embedding);
    EXPECT_EQ(r.rms_att, w.rms_att);
    EXPECT_EQ(r.wq, w.wq);
    EXPECT_EQ(r.wk, w.wk);
    EXPECT_EQ(r.wv, w.wv);
    EXPECT_EQ(r.wo, w.wo);
    EXPECT_EQ(r.rms_ffn, w.rms_ffn);
    EXPECT_EQ(r.w1, w.w1);
    EXPECT_EQ(r.w2, w.w2);
    EXPECT_EQ(r.w3, w.w3);
    EXPECT_EQ(r.rms_final, w.rms_final);
    EXPECT_EQ(r.wcls, w.wcls);
    EXPECT_EQ(r.wcls.empty(), shared);
  }
}

TEST(Llama2cCheckpoint, TruncatedAndOversizedFilesAreRefusedWithSizes) {
  TempDir dir;
  const Llama2cWeights w = testing::random_llama2c(testing::small_llama2c_header(false), 4);
  const std::string good = dir.file("good.bin");
  write_llama2c(w, good);
  const std::string bytes = read_bytes(good);
  const int64_t full = static_cast<int64_t>(bytes.size());
  for (int64_t keep : {full - 1, full / 2, int64_t{28}}) {
    const std::string path = dir.file("cut_" + std::to_string(keep) + ".bin");
    write_bytes(path, bytes.substr(0, keep));
    EXPECT_FALSE(is_llama2c_checkpoint(path));
    const std::string msg = error_of([&] { read_llama2c(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated: expected " + std::to_string(full) + " bytes, file has " +
                       std::to_string(keep)),
              std::string::npos)
        << msg;
  }
  for (int64_t keep : {int64_t{0}, int64_t{3}, int64_t{27}}) {
    const std::string path = dir.file("tiny_" + std::to_string(keep) + ".bin");
    write_bytes(path, bytes.substr(0, keep));
    EXPECT_FALSE(is_llama2c_checkpoint(path));
    const std::string msg = error_of([&] { read_llama2c(path); });
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  }
  const std::string longer = dir.file("longer.bin");
  write_bytes(longer, bytes + "x");
  EXPECT_FALSE(is_llama2c_checkpoint(longer));
  EXPECT_NE(error_of([&] { read_llama2c(longer); }).find("1 bytes more than its header"),
            std::string::npos);
}

TEST(Llama2cCheckpoint, BadHeadersNameTheField) {
  TempDir dir;
  struct Case {
    std::vector<int32_t> header;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{0, 172, 5, 8, 4, 512, 512}, "dim 0"},
      {{-64, 172, 5, 8, 4, 512, 512}, "dim -64"},
      {{64, 0, 5, 8, 4, 512, 512}, "hidden_dim 0"},
      {{64, 172, 0, 8, 4, 512, 512}, "n_layers 0"},
      {{64, 172, 5, 0, 4, 512, 512}, "n_heads 0"},
      {{64, 172, 5, 8, 0, 512, 512}, "n_kv_heads 0"},
      {{64, 172, 5, 8, 16, 512, 512}, "n_kv_heads 16"},
      {{64, 172, 5, 8, 4, 0, 512}, "vocab_size 0"},
      {{64, 172, 5, 8, 4, std::numeric_limits<int32_t>::min(), 512}, "vocab_size"},
      {{64, 172, 5, 8, 4, 512, -1}, "seq_len -1"},
      {{60, 172, 5, 8, 4, 512, 512}, "not a multiple of n_heads"},
      {{64, 172, 5, 8, 3, 512, 512}, "not a multiple of n_kv_heads"},
      {{24, 172, 5, 8, 4, 512, 512}, "odd"},
      {{1 << 20, 172, 5, 8, 4, 512, 512}, "dim 1048576"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir.file("bad" + std::to_string(i) + ".bin");
    write_bytes(path, header_bytes(cases[i].header) + std::string(4096, '\0'));
    EXPECT_FALSE(is_llama2c_checkpoint(path));
    const std::string msg = error_of([&] { read_llama2c(path); });
    EXPECT_NE(msg.find("bad header"), std::string::npos) << msg;
    EXPECT_NE(msg.find(cases[i].expect), std::string::npos) << cases[i].expect << ": " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
}

TEST(Llama2cCheckpoint, HugeHeaderIsRefusedBeforeAllocating) {
  TempDir dir;
  // Valid in every field, but implies ~2 PB of weights; the file has 28 bytes.
  const std::string path = dir.file("huge.bin");
  write_bytes(path, header_bytes({65536, 1 << 20, 4096, 512, 512, -(1 << 24), 1 << 24}));
  Llama2cHeader h;
  h.dim = 65536;
  h.hidden_dim = 1 << 20;
  h.n_layers = 4096;
  h.n_heads = 512;
  h.n_kv_heads = 512;
  h.vocab_size = 1 << 24;
  h.seq_len = 1 << 24;
  h.shared_classifier = false;
  EXPECT_GT(h.file_bytes(), int64_t{1} << 50);
  const std::string msg = error_of([&] { read_llama2c(path); });
  EXPECT_NE(
      msg.find("truncated: expected " + std::to_string(h.file_bytes()) + " bytes, file has 28"),
      std::string::npos)
      << msg;
}

TEST(Llama2cCheckpoint, OtherFilesAreRefused) {
  TempDir dir;
  const std::string random = dir.file("random.bin");
  Rng rng(9);
  std::string noise(100000, '\0');
  for (auto& c : noise) c = static_cast<char>(rng.below(256));
  write_bytes(random, noise);
  EXPECT_FALSE(is_llama2c_checkpoint(random));
  EXPECT_NE(error_of([&] { read_llama2c(random); }).find("not a llama2.c checkpoint"),
            std::string::npos);

  const std::string versioned = dir.file("v1.bin");
  write_bytes(versioned, header_bytes({0x616b3432, 1, 64, 172, 5, 8, 4, 512, 512}));
  EXPECT_NE(error_of([&] { read_llama2c(versioned); }).find("ak42"), std::string::npos);

  const std::string shard = dir.file("train.bin");
  write_bytes(shard, std::string("CLMTOKS1") + std::string(40, '\0'));
  EXPECT_NE(error_of([&] { read_llama2c(shard); }).find("token shard"), std::string::npos);

  EXPECT_NE(error_of([&] { read_llama2c(dir.file("missing.bin")); }).find("no such file"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_llama2c(dir.path().string()); }).find("not a regular file"),
            std::string::npos);
  EXPECT_FALSE(is_llama2c_checkpoint(dir.file("missing.bin")));
  EXPECT_FALSE(is_llama2c_checkpoint(dir.path().string()));
}

TEST(Llama2cCheckpoint, Stories260KHeader) {
  const std::string path = kStories + "/stories260K.bin";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  EXPECT_TRUE(is_llama2c_checkpoint(path));
  const Llama2cWeights w = read_llama2c(path);
  EXPECT_EQ(w.h.dim, 64);
  EXPECT_EQ(w.h.hidden_dim, 172);
  EXPECT_EQ(w.h.n_layers, 5);
  EXPECT_EQ(w.h.n_heads, 8);
  EXPECT_EQ(w.h.n_kv_heads, 4);
  EXPECT_EQ(w.h.vocab_size, 512);
  EXPECT_EQ(w.h.seq_len, 512);
  EXPECT_TRUE(w.h.shared_classifier);
  EXPECT_TRUE(w.wcls.empty());
  EXPECT_EQ(w.h.file_bytes(), 1056540);
  // The tokenizer is not a checkpoint, and says what it is.
  const std::string tok = kStories + "/tok512.bin";
  EXPECT_FALSE(is_llama2c_checkpoint(tok));
  EXPECT_NE(error_of([&] { read_llama2c(tok); }).find("tokenizer.bin"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// tokenizer.bin

// run.c's encode (bos = eos = 0), transliterated as literally as C++ allows: sorted-vocabulary
// lookup, C-string codepoint loop, quadratic rescan for the best merge.
std::vector<int> runc_encode(const std::vector<std::string>& vocab,
                             const std::vector<float>& scores, const std::string& text) {
  std::map<std::string, int> sorted;
  for (int i = 0; i < (int)vocab.size(); ++i) sorted.emplace(vocab[i], i);
  auto str_lookup = [&](const std::string& s) {
    auto it = sorted.find(s);
    return it == sorted.end() ? -1 : it->second;
  };
  std::vector<int> tokens;
  const char* c_text = text.c_str();
  if (c_text[0] != '\0') tokens.push_back(str_lookup(" "));
  std::string str_buffer;
  for (const char* c = c_text; *c != '\0'; c++) {
    if ((*c & 0xC0) != 0x80) str_buffer.clear();
    str_buffer += *c;
    if ((*(c + 1) & 0xC0) == 0x80 && str_buffer.size() < 4) continue;
    const int id = str_lookup(str_buffer);
    if (id != -1) {
      tokens.push_back(id);
    } else {
      for (unsigned char b : str_buffer) tokens.push_back(b + 3);
    }
    str_buffer.clear();
  }
  while (true) {
    float best_score = -1e10f;
    int best_id = -1, best_idx = -1;
    for (int i = 0; i + 1 < (int)tokens.size(); i++) {
      const int id = str_lookup(vocab[tokens[i]] + vocab[tokens[i + 1]]);
      if (id != -1 && scores[id] > best_score) {
        best_score = scores[id];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_idx == -1) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + best_idx + 1);
  }
  return tokens;
}

// A SentencePiece-like vocabulary: specials, 256 byte pieces, " ", letters, and random
// multi-character pieces over a small alphabet with few distinct scores (many ties).
struct SyntheticVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
};

SyntheticVocab synthetic_vocab(uint64_t seed) {
  SyntheticVocab v;
  v.pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  v.scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    v.pieces.push_back(name);
    v.scores.push_back(0);
  }
  const std::vector<std::string> atoms = {" ", "a", "b", "c", "\xC3\xA9"};  // é
  for (const auto& a : atoms) {
    v.pieces.push_back(a);
    v.scores.push_back(-1000.0f);
  }
  Rng rng(seed);
  std::map<std::string, bool> seen;
  for (const auto& p : v.pieces) seen[p] = true;
  while (v.pieces.size() < 400) {
    std::string p;
    const int len = 2 + (int)rng.below(4);
    for (int i = 0; i < len; ++i) p += atoms[rng.below(atoms.size())];
    if (seen[p]) continue;
    seen[p] = true;
    v.pieces.push_back(p);
    v.scores.push_back(-static_cast<float>(rng.below(6)));  // ties on purpose
  }
  return v;
}

TEST(Llama2cTokenizer, EncodeMatchesRunCOnRandomText) {
  TempDir dir;
  for (uint64_t seed : {1, 2, 3}) {
    const SyntheticVocab v = synthetic_vocab(seed);
    const std::string path = dir.file("tok" + std::to_string(seed) + ".bin");
    write_bytes(path, testing::tokenizer_bin_bytes(v.pieces, v.scores));
    ASSERT_TRUE(is_llama2c_tokenizer(path));
    auto tok = load_tokenizer(path);
    EXPECT_EQ(tok->kind(), "llama2c");
    EXPECT_EQ(tok->vocab_size(), 400);
    Rng rng(seed + 100);
    // 'u' and "ü" are not in the vocabulary: byte fallback.
    const std::vector<std::string> chars = {" ", "a", "b", "c", "\xC3\xA9", "u", "\xC3\xBC", "\n"};
    for (int trial = 0; trial < 300; ++trial) {
      std::string text;
      const int n = (int)rng.below(60);
      for (int i = 0; i < n; ++i) text += chars[rng.below(chars.size())];
      const std::vector<int> ids = tok->encode(text);
      ASSERT_EQ(ids, runc_encode(v.pieces, v.scores, text)) << "text '" << text << "'";
      ASSERT_EQ(tok->decode(ids), text);
    }
  }
}

TEST(Llama2cTokenizer, DecodeTokenFollowsRunC) {
  TempDir dir;
  const SyntheticVocab v = synthetic_vocab(5);
  const std::string path = dir.file("tok.bin");
  write_bytes(path, testing::tokenizer_bin_bytes(v.pieces, v.scores));
  auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const int space = 3 + 256, a = space + 1;
  EXPECT_EQ(tok->decode_token(a, space), " ");
  EXPECT_EQ(tok->decode_token(1, space), "");  // leading space dropped after BOS
  EXPECT_EQ(tok->decode_token(1, a), "a");
  EXPECT_EQ(tok->decode_token(a, 1), "");  // BOS and EOS carry no text
  EXPECT_EQ(tok->decode_token(a, 2), "");
  EXPECT_EQ(tok->decode_token(a, 3 + 0x0A), "\n");  // byte pieces are the raw byte
  EXPECT_EQ(tok->decode_token(1, 3 + 0x20), " ");   // ... even after BOS
  EXPECT_EQ(tok->decode_token(a, 3 + 0xC3) + tok->decode_token(3 + 0xC3, 3 + 0xA9), "\xC3\xA9");
  EXPECT_EQ(tok->decode({1, space, a, 2}), "a");
  EXPECT_THROW(tok->decode_token(a, 400), Error);
  EXPECT_THROW(tok->decode({-1}), Error);
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(Llama2cTokenizer, BadFilesAreRefused) {
  TempDir dir;
  const SyntheticVocab v = synthetic_vocab(6);
  const std::string bytes = testing::tokenizer_bin_bytes(v.pieces, v.scores);
  auto expect_refused = [&](const std::string& name, const std::string& content,
                            const std::string& expect) {
    const std::string path = dir.file(name);
    write_bytes(path, content);
    EXPECT_FALSE(is_llama2c_tokenizer(path)) << name;
    const std::string msg = error_of([&] { load_tokenizer(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << name << ": " << msg;
    EXPECT_NE(msg.find(expect), std::string::npos) << name << ": " << msg;
    EXPECT_NE(msg.find("accepted tokenizers"), std::string::npos) << name << ": " << msg;
  };
  expect_refused("empty.bin", "", "truncated");
  expect_refused("cut_header.bin", bytes.substr(0, 2), "truncated");
  expect_refused("cut_entry.bin", bytes.substr(0, bytes.size() - 1), "truncated");
  expect_refused("cut_score.bin", bytes.substr(0, 4 + 8 + 5 + 3), "truncated");
  expect_refused("few.bin", testing::tokenizer_bin_bytes({"a", "b"}, {0, 0}), "only 2 tokens");

  std::string too_long = bytes;
  const int32_t max_len = 2;  // shorter than the pieces
  std::memcpy(too_long.data(), &max_len, 4);
  expect_refused("too_long.bin", too_long, "outside 0..max_token_length");

  std::string nan_score = bytes;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan_score.data() + 4, &nan, 4);
  expect_refused("nan.bin", nan_score, "non-finite score");

  Rng rng(4);
  std::string noise(5000, '\0');
  for (auto& c : noise) c = static_cast<char>(rng.below(256));
  expect_refused("noise.bin", noise, "not a llama2.c tokenizer.bin");

  // A model checkpoint passed as the tokenizer.
  const std::string model = dir.file("model.bin");
  write_llama2c(testing::random_llama2c(testing::small_llama2c_header(true), 1), model);
  EXPECT_FALSE(is_llama2c_tokenizer(model));
  EXPECT_NE(error_of([&] { load_tokenizer(model); }).find("model checkpoint"), std::string::npos);

  // A byte the vocabulary cannot represent is an error, not an out-of-range id.
  const std::string small = dir.file("small.bin");
  write_bytes(small,
              testing::tokenizer_bin_bytes({"<unk>", "<s>", "</s>", " ", "a"}, {0, 0, 0, -1, -1}));
  auto tok = load_tokenizer(small);
  EXPECT_EQ(tok->encode("a a"), (std::vector<int>{3, 4, 3, 4}));
  EXPECT_NE(error_of([&] { tok->encode("z"); }).find("byte fallback"), std::string::npos);
}

// tokenizer.bin has no count field; what it claims are lengths. A max_token_length of 10^12
// does not fit its int32 field, so the claims are: an absurd max_token_length, and a token
// length of 2^31 - 1 or 2^20 over a file of a few bytes. Each is refused before the piece is
// allocated, naming the token and the sizes.
TEST(Llama2cTokenizer, HugeClaimedLengthsAreRefusedBeforeAllocating) {
  TempDir dir;
  auto bytes_with = [](int32_t max_len, int32_t len) {
    std::string out(reinterpret_cast<const char*>(&max_len), 4);
    const float score = 0;
    out.append(reinterpret_cast<const char*>(&score), 4);
    out.append(reinterpret_cast<const char*>(&len), 4);
    return out + "abc";
  };
  const std::vector<std::tuple<int32_t, int32_t, std::string>> cases = {
      {2000000000, 1, "max_token_length 2000000000 is outside 1..1048576"},
      {1 << 20, 2147483647, "token 0 at byte 4 has length 2147483647, outside 0..max_token_length"},
      {1 << 20, 1 << 20, "truncated: token 0 needs 1048576 bytes, 3 left"},
  };
  for (const auto& [max_len, len, expect] : cases) {
    const std::string path = dir.file("huge.bin");
    write_bytes(path, bytes_with(max_len, len));
    EXPECT_FALSE(is_llama2c_tokenizer(path));
    const std::string msg = error_of([&] { load_tokenizer(path); });
    EXPECT_NE(msg.find(expect), std::string::npos) << msg;
  }
}

TEST(Llama2cTokenizer, CarriedInADirectory) {
  TempDir dir;
  const SyntheticVocab v = synthetic_vocab(7);
  const std::string path = dir.file("tok.bin");
  write_bytes(path, testing::tokenizer_bin_bytes(v.pieces, v.scores));
  const std::string data = dir.file("data");
  std::filesystem::create_directories(data);
  save_tokenizer_to_dir(path, data);
  // Kept under its own kind's name: tokenizer.model said SentencePiece, and export then refused
  // "the SentencePiece model" it found there (a user trial).
  EXPECT_TRUE(std::filesystem::exists(data + "/tokenizer.bin"));
  EXPECT_FALSE(std::filesystem::exists(data + "/tokenizer.model"));
  EXPECT_EQ(find_tokenizer_in_dir(data), data + "/tokenizer.bin");
  auto tok = load_tokenizer(data);
  EXPECT_EQ(tok->kind(), "llama2c");
  EXPECT_EQ(tok->encode("abc ab"), load_tokenizer(path)->encode("abc ab"));

  // A directory from before, with the tokenizer.bin under the name tokenizer.model, still loads
  // (told by its content), and saving it again moves it to its own name.
  const std::string old_dir = dir.file("old");
  std::filesystem::create_directories(old_dir);
  write_bytes(old_dir + "/tokenizer.model", read_bytes(path));
  EXPECT_EQ(load_tokenizer(old_dir)->kind(), "llama2c");
  save_tokenizer_to_dir(old_dir, old_dir);
  EXPECT_FALSE(std::filesystem::exists(old_dir + "/tokenizer.model"));
  EXPECT_EQ(read_bytes(old_dir + "/tokenizer.bin"), read_bytes(path));

  // Another tokenizer saved over it: the tokenizer.bin goes (it would shadow a byte descriptor).
  save_tokenizer_to_dir("byte", data);
  EXPECT_FALSE(std::filesystem::exists(data + "/tokenizer.bin"));
  EXPECT_EQ(load_tokenizer(data)->kind(), "byte");
}

TEST(Llama2cTokenizer, Tok512AgreesWithItsSentencePieceModel) {
  const std::string bin = kStories + "/tok512.bin", model = kStories + "/tok512.model";
  if (!std::filesystem::exists(bin) || !std::filesystem::exists(model))
    GTEST_SKIP() << bin << " or " << model << " not present";
  auto l2c = load_tokenizer(bin);
  auto sp = load_tokenizer(model);
  EXPECT_EQ(l2c->kind(), "llama2c");
  EXPECT_EQ(sp->kind(), "sentencepiece");
  ASSERT_EQ(l2c->vocab_size(), 512);
  EXPECT_EQ(l2c->bos_id(), sp->bos_id());
  EXPECT_EQ(l2c->eos_id(), sp->eos_id());
  const std::vector<std::string> texts = {
      "Once upon a time, there was a little girl named Lily.",
      "She loved to play outside in the park!",
      "Tom said, \"Let's go to the big tree.\" They ran very fast.",
      "The 3 cats ate 12 fish; 7 dogs watched (quietly).",
      "Hello world",
      "line one\nline two\n",
      "a",
      "Zebras? Quixotic jukebox: #42 & 100% ~ {x} [y] <z> @home",
  };
  for (const auto& text : texts) {
    const std::vector<int> ids = l2c->encode(text);
    EXPECT_EQ(ids, sp->encode(text)) << "'" << text << "'";
    EXPECT_EQ(l2c->decode(ids), text);
    EXPECT_EQ(sp->decode(ids), text);
  }
  // Runs of spaces are where they differ: tok512.model's normalizer removes extra whitespace,
  // run.c's encode keeps every space (so its round trip is exact).
  const std::string spaces = "  two leading spaces, and  two inside  ";
  EXPECT_EQ(l2c->decode(l2c->encode(spaces)), spaces);
  EXPECT_EQ(sp->decode(sp->encode(spaces)), "two leading spaces, and two inside");
  // Every piece decodes identically (id 0, <unk>, is shown differently by design).
  for (int id = 1; id < 512; ++id) {
    for (int prev : {1, 100}) {
      EXPECT_EQ(l2c->decode_token(prev, id), sp->decode_token(prev, id)) << prev << " " << id;
    }
  }
}

TEST(Llama2cTokenizer, Tok512EncodeMatchesRunC) {
  const std::string bin = kStories + "/tok512.bin";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << bin << " not present";
  // Read the vocabulary straight from the file for the literal run.c encode.
  const std::string bytes = read_bytes(bin);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (size_t pos = 4; pos < bytes.size();) {
    float score;
    int32_t len;
    std::memcpy(&score, bytes.data() + pos, 4);
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    pieces.push_back(bytes.substr(pos + 8, len));
    scores.push_back(score);
    pos += 8 + len;
  }
  ASSERT_EQ(pieces.size(), 512u);
  auto tok = load_tokenizer(bin);
  Rng rng(11);
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ .,!?'\"\n0123456789";
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int n = (int)rng.below(120);
    for (int i = 0; i < n; ++i) text += alphabet[rng.below(alphabet.size())];
    if (rng.below(4) == 0) text += "\xE2\x9C\x93 caf\xC3\xA9";  // ✓ café: byte fallback
    ASSERT_EQ(tok->encode(text), runc_encode(pieces, scores, text)) << "'" << text << "'";
  }
}

}  // namespace
}  // namespace chainlm
