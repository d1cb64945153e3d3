#include "io/token_shard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
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
