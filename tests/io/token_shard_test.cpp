#include "io/token_shard.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "error_of.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

uint32_t u32_at(const std::string& bytes, size_t offset) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
  return v;
}

TEST(TokenShard, RoundTripUint16) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  std::vector<uint32_t> tokens = {0, 1, 2, 299, 150, 7, 42};
  write_token_shard(path, tokens, 300);

  // The layout is a public format: check it byte by byte, not only through the reader.
  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 32u + 2 * tokens.size());
  EXPECT_EQ(bytes.substr(0, 8), "CLMTOKS1");
  EXPECT_EQ(u32_at(bytes, 8), 1u);
  EXPECT_EQ(u32_at(bytes, 12), 2u);
  EXPECT_EQ(u32_at(bytes, 16), 300u);
  EXPECT_EQ(u32_at(bytes, 20), 0u);
  EXPECT_EQ(u32_at(bytes, 24), tokens.size());
  EXPECT_EQ(u32_at(bytes, 28), 0u);
  EXPECT_EQ(static_cast<unsigned char>(bytes[32 + 2 * 3]), 299 & 0xff);
  EXPECT_EQ(static_cast<unsigned char>(bytes[32 + 2 * 3 + 1]), 299 >> 8);

  TokenShard shard(path);
  EXPECT_EQ(shard.size(), tokens.size());
  EXPECT_EQ(shard.vocab_size(), 300u);
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(shard.at(i), tokens[i]);
  std::vector<int32_t> out(3, -1);
  shard.read(2, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{2, 299, 150}));
}

TEST(TokenShard, RoundTripUint32) {
  TempDir dir;
  const std::string path = dir.file("big.bin");
  std::vector<uint32_t> tokens = {65535, 65536, 69999, 0, 12345};
  write_token_shard(path, tokens, 70000);
  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 32u + 4 * tokens.size());
  EXPECT_EQ(u32_at(bytes, 12), 4u);
  EXPECT_EQ(u32_at(bytes, 32 + 4 * 1), 65536u);

  TokenShard shard(path);
  EXPECT_EQ(shard.size(), tokens.size());
  std::vector<int32_t> out(tokens.size());
  shard.read(0, tokens.size(), out.data());
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(static_cast<uint32_t>(out[i]), tokens[i]);
}

TEST(TokenShard, BoundaryVocabUses16Bits) {
  TempDir dir;
  write_token_shard(dir.file("a.bin"), {65534}, 65535);
  write_token_shard(dir.file("b.bin"), {65535}, 65536);
  EXPECT_EQ(std::filesystem::file_size(dir.file("a.bin")), 34u);
  EXPECT_EQ(std::filesystem::file_size(dir.file("b.bin")), 36u);
  EXPECT_EQ(TokenShard(dir.file("b.bin")).at(0), 65535u);
}

TEST(TokenShard, BoundsChecked) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_token_shard(path, {1, 2, 3}, 10);
  TokenShard shard(path);
  std::vector<int32_t> out(4);
  EXPECT_THROW(shard.at(3), Error);
  EXPECT_THROW(shard.read(1, 3, out.data()), Error);
  EXPECT_THROW(shard.read(4, 0, out.data()), Error);
  EXPECT_NO_THROW(shard.read(3, 0, out.data()));
}

TEST(TokenShard, MoveKeepsMapping) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_token_shard(path, {5, 6, 7}, 10);
  TokenShard a(path);
  TokenShard b(std::move(a));
  EXPECT_EQ(b.at(2), 7u);
  TokenShard c(path);
  write_token_shard(dir.file("t.bin"), {9}, 10);
  TokenShard d(dir.file("t.bin"));
  c = std::move(d);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.at(0), 9u);
}

TEST(TokenShard, TokenOutOfVocabRejected) {
  TempDir dir;
  const std::string path = dir.file("bad.bin");
  EXPECT_THROW(write_token_shard(path, {1, 2, 300}, 300), Error);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_THROW(write_token_shard(path, {1}, 0), Error);
}

// A stored token past the vocabulary (a flipped byte on disk) is found by check_tokens wherever
// it is, in both widths, past the first block of the scan too; read finds it only if it reads it.
TEST(TokenShard, CheckTokensFindsACorruptTokenAnywhere) {
  TempDir dir;
  for (const uint32_t vocab : {300u, 70000u}) {
    const uint32_t width = vocab < 65536 ? 2 : 4;
    for (const uint64_t at : {uint64_t{0}, uint64_t{70000}, uint64_t{199999}}) {
      SCOPED_TRACE(std::to_string(vocab) + " at " + std::to_string(at));
      std::vector<uint32_t> tokens(200000);
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (uint32_t)(i * 7919 % vocab);
      const std::string path = dir.file("s.bin");
      write_token_shard(path, tokens, vocab);
      TokenShard(path).check_tokens();  // intact
      {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp((std::streamoff)(kTokenShardHeaderBytes + at * width));
        const char ff[4] = {'\xff', '\xff', '\xff', '\xff'};
        f.write(ff, width);
      }
      TokenShard shard(path);
      int32_t one;
      shard.read(at == 0 ? 1 : 0, 1, &one);  // elsewhere, reads pass
      const std::string err = test::error_of([&] { shard.check_tokens(); });
      EXPECT_NE(err.find("corrupt shard: token " +
                         std::to_string(width == 2 ? 65535u : 4294967295u) + " at position " +
                         std::to_string(at) + " is >= vocab_size " + std::to_string(vocab)),
                std::string::npos)
          << err;
    }
  }
}

// Files in dir other than the ones named: a writer's temporary files must never outlive it.
std::vector<std::string> others_in(const std::string& dir, const std::vector<std::string>& named) {
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (std::find(named.begin(), named.end(), name) == named.end()) found.push_back(name);
  }
  return found;
}

// prepare streams documents through TokenShardWriter and moves one between the splits with take
// (SPEC: at least one document on each side): both token widths, ranges at the start, middle
// and end, and a range longer than the 1 MiB chunk the tail moves in.
TEST(TokenShardWriter, TakeRemovesTheRangeAndKeepsTheRest) {
  for (uint32_t vocab : {300u, 70000u}) {
    for (auto [start, n] :
         std::vector<std::pair<uint64_t, uint64_t>>{{0, 3}, {5, 4}, {9, 3}, {2, 0}, {0, 12}}) {
      TempDir dir;
      const std::string path = dir.file("s.bin");
      std::vector<uint32_t> tokens(12);
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (uint32_t)(i * 23 + 1) % vocab;
      TokenShardWriter w(path, vocab);
      w.append(tokens.data(), 7);
      w.append(tokens.data() + 7, 5);
      const std::vector<uint32_t> taken = w.take(start, n);
      EXPECT_EQ(taken, std::vector<uint32_t>(tokens.begin() + start, tokens.begin() + start + n));
      EXPECT_EQ(w.count(), 12 - n);
      w.append(tokens.data(), 2);  // appends go on after the moved tail
      w.commit();
      std::vector<uint32_t> expect(tokens.begin(), tokens.begin() + start);
      expect.insert(expect.end(), tokens.begin() + start + n, tokens.end());
      expect.insert(expect.end(), tokens.begin(), tokens.begin() + 2);
      TokenShard shard(path);
      ASSERT_EQ(shard.size(), expect.size()) << "vocab " << vocab << " take " << start << "+" << n;
      for (size_t i = 0; i < expect.size(); ++i) EXPECT_EQ(shard.at(i), expect[i]) << i;
      EXPECT_EQ(read_bytes(path).size(), 32 + expect.size() * (vocab < 65536 ? 2 : 4));
    }
  }
  TempDir dir;
  const std::string path = dir.file("long.bin");
  std::vector<uint32_t> tokens(1500000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (uint32_t)(i % 65521);
  TokenShardWriter w(path, 70000);
  w.append(tokens.data(), tokens.size());
  EXPECT_EQ(w.take(10, 5), std::vector<uint32_t>(tokens.begin() + 10, tokens.begin() + 15));
  w.commit();
  TokenShard shard(path);
  ASSERT_EQ(shard.size(), tokens.size() - 5);
  for (size_t i : {size_t(0), size_t(9), size_t(10), size_t(400000), tokens.size() - 6})
    EXPECT_EQ(shard.at(i), tokens[i < 10 ? i : i + 5]) << i;
}

// Until commit the shard is a temporary file beside the target: an existing file stays as it
// was, and a writer given up (an exception in prepare) leaves nothing behind.
TEST(TokenShardWriter, NothingAppearsBeforeCommit) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  write_token_shard(path, {1, 2, 3}, 100);
  const std::string before = read_bytes(path);
  {
    TokenShardWriter w(path, 100);
    const std::vector<uint32_t> tokens = {7, 8, 9, 10};
    w.append(tokens.data(), tokens.size());
    EXPECT_EQ(read_bytes(path), before);
    EXPECT_EQ(others_in(dir.path(), {"train.bin"}).size(), 1u);  // its temporary file
  }
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(others_in(dir.path(), {"train.bin"}), std::vector<std::string>{});
  {
    TokenShardWriter w(path, 100);
    const std::vector<uint32_t> bad = {5, 100};
    EXPECT_THROW(w.append(bad.data(), bad.size()), Error);
  }
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(others_in(dir.path(), {"train.bin"}), std::vector<std::string>{});
}

// The ranks of a data-parallel run compare fingerprints: a copy of the same data matches, a
// shard of other tokens (at either end of a multi-MB file, where the sampled blocks lie) or
// another count does not.
TEST(TokenShard, FingerprintTellsOtherDataApart) {
  TempDir dir;
  std::vector<uint32_t> tokens(3000000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (uint32_t)((i * 2654435761u) % 300);
  write_token_shard(dir.file("a.bin"), tokens, 300);
  write_token_shard(dir.file("same.bin"), tokens, 300);
  const std::string a = TokenShard(dir.file("a.bin")).fingerprint();
  EXPECT_EQ(TokenShard(dir.file("same.bin")).fingerprint(), a);
  EXPECT_NE(a.find("3000000 tokens, vocab 300"), std::string::npos) << a;
  for (size_t at : {size_t(0), tokens.size() - 1}) {
    std::vector<uint32_t> other = tokens;
    other[at] = (other[at] + 1) % 300;
    write_token_shard(dir.file("b.bin"), other, 300);
    EXPECT_NE(TokenShard(dir.file("b.bin")).fingerprint(), a) << at;
  }
  tokens.pop_back();
  write_token_shard(dir.file("c.bin"), tokens, 300);
  EXPECT_NE(TokenShard(dir.file("c.bin")).fingerprint(), a);
}

TEST(TokenShard, TruncatedFile) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_token_shard(path, {1, 2, 3, 4}, 100);
  std::string bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() - 1));
  EXPECT_THROW(TokenShard{path}, Error);
  write_bytes(path, bytes.substr(0, 20));  // inside the header
  EXPECT_THROW(TokenShard{path}, Error);
  write_bytes(path, bytes + "xx");  // trailing garbage
  EXPECT_THROW(TokenShard{path}, Error);
}

// A header claiming 10^12 tokens (or so many that count * width overflows 64 bits) over a
// file of a few bytes is refused from the file size, before anything is read or allocated.
TEST(TokenShard, TrillionTokensClaimedAreRefused) {
  TempDir dir;
  const std::string path = dir.file("huge.bin");
  write_token_shard(path, {1, 2, 3, 4}, 100);
  const std::string good = read_bytes(path);
  for (const uint64_t claimed : {uint64_t{1000000000000}, uint64_t{1} << 63, ~uint64_t{0}}) {
    std::string bad = good;
    std::memcpy(bad.data() + 24, &claimed, 8);
    write_bytes(path, bad);
    try {
      TokenShard shard(path);
      FAIL() << claimed << " tokens accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("header says " + std::to_string(claimed) +
                         " tokens (2 bytes each) but the file has 8 bytes of tokens"),
                std::string::npos)
          << msg;
    }
  }
}

TEST(TokenShard, CorruptHeader) {
  TempDir dir;
  const std::string path = dir.file("c.bin");
  write_token_shard(path, {1, 2}, 100);
  const std::string good = read_bytes(path);

  std::string bad_magic = good;
  bad_magic[0] = 'X';
  write_bytes(path, bad_magic);
  try {
    TokenShard shard(path);
    FAIL() << "expected bad magic error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("magic"), std::string::npos) << e.what();
  }

  std::string bad_version = good;
  bad_version[8] = 2;
  write_bytes(path, bad_version);
  EXPECT_THROW(TokenShard{path}, Error);

  std::string bad_width = good;
  bad_width[12] = 4;  // 4-byte tokens with a vocab < 65536 is inconsistent
  write_bytes(path, bad_width);
  EXPECT_THROW(TokenShard{path}, Error);

  std::string huge_count = good;
  huge_count[31] = 0x7f;  // count near 2^63: must not overflow the size check
  write_bytes(path, huge_count);
  EXPECT_THROW(TokenShard{path}, Error);

  std::string bad_token = good;
  bad_token[32] = static_cast<char>(200);  // token 200 >= vocab 100
  write_bytes(path, bad_token);
  TokenShard shard(path);
  std::vector<int32_t> out(2);
  EXPECT_THROW(shard.read(0, 2, out.data()), Error);

  EXPECT_THROW(TokenShard{dir.file("missing.bin")}, Error);
}

}  // namespace
}  // namespace chainlm
