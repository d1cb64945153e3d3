#include "io/token_shard.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "io/atomic_file.h"

namespace chainlm {

static_assert(std::endian::native == std::endian::little, "chainlm assumes a little-endian host");

namespace {

constexpr char kMagic[8] = {'C', 'L', 'M', 'T', 'O', 'K', 'S', '1'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxVocab = 0x7fffffffu;

uint32_t bytes_per_token_for(uint32_t vocab_size) {
  return vocab_size < 65536 ? 2 : 4;
}

uint32_t load_u32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

void write_token_shard(const std::string& path, const std::vector<uint32_t>& tokens,
                       uint32_t vocab_size) {
  CHAINLM_CHECK(vocab_size > 0 && vocab_size <= kMaxVocab, path, ": vocab_size ", vocab_size,
                " is out of range (1..", kMaxVocab, ")");
  for (size_t i = 0; i < tokens.size(); ++i)
    CHAINLM_CHECK(tokens[i] < vocab_size, path, ": token ", tokens[i], " at position ", i,
                  " is >= vocab_size ", vocab_size);
  const uint32_t width = bytes_per_token_for(vocab_size);
  unsigned char header[kTokenShardHeaderBytes] = {};
  const uint32_t fields[4] = {kVersion, width, vocab_size, 0};
  const uint64_t count = tokens.size();
  std::memcpy(header, kMagic, 8);
  std::memcpy(header + 8, fields, 16);
  std::memcpy(header + 24, &count, 8);

  write_file_atomic(path, [&](std::FILE* f) {
    std::fwrite(header, 1, sizeof header, f);
    if (width == 4) {
      if (!tokens.empty()) std::fwrite(tokens.data(), 4, tokens.size(), f);
      return;
    }
    // Narrow in chunks so a large shard never needs a second full-size buffer.
    std::vector<uint16_t> chunk;
    for (size_t i = 0; i < tokens.size(); i += 1 << 16) {
      size_t n = std::min<size_t>(1 << 16, tokens.size() - i);
      chunk.assign(tokens.begin() + i, tokens.begin() + i + n);
      std::fwrite(chunk.data(), 2, n, f);
    }
  });
}

TokenShard::TokenShard(const std::string& path) : path_(path), file_(path, "token shard") {
  const uint64_t file_size = file_.size();
  CHAINLM_CHECK(file_size >= kTokenShardHeaderBytes, path, ": not a token shard: ", file_size,
                " bytes, shorter than the ", kTokenShardHeaderBytes, "-byte header");
  const unsigned char* bytes = file_.data();
  CHAINLM_CHECK(std::memcmp(bytes, kMagic, 8) == 0, path,
                ": not a token shard (bad magic; expected \"CLMTOKS1\")");
  const uint32_t version = load_u32(bytes + 8);
  CHAINLM_CHECK(version == kVersion, path, ": unsupported token shard version ", version,
                " (this build reads version ", kVersion, ")");
  bytes_per_token_ = load_u32(bytes + 12);
  vocab_size_ = load_u32(bytes + 16);
  std::memcpy(&count_, bytes + 24, 8);
  CHAINLM_CHECK(vocab_size_ > 0 && vocab_size_ <= kMaxVocab, path, ": corrupt header: vocab_size ",
                vocab_size_);
  CHAINLM_CHECK(bytes_per_token_ == bytes_per_token_for(vocab_size_), path,
                ": corrupt header: bytes_per_token ", bytes_per_token_,
                " does not match vocab_size ", vocab_size_);
  const uint64_t payload = file_size - kTokenShardHeaderBytes;
  CHAINLM_CHECK(count_ <= payload / bytes_per_token_ && count_ * bytes_per_token_ == payload, path,
                ": header says ", count_, " tokens (", bytes_per_token_,
                " bytes each) but the file has ", payload,
                " bytes of tokens; truncated or corrupt");
}

uint32_t TokenShard::at(uint64_t i) const {
  CHAINLM_CHECK(i < count_, path_, ": token index ", i, " out of range (", count_, " tokens)");
  const unsigned char* p = file_.data() + kTokenShardHeaderBytes + i * bytes_per_token_;
  if (bytes_per_token_ == 4) return load_u32(p);
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

void TokenShard::read(uint64_t start, uint64_t n, int32_t* out) const {
  CHAINLM_CHECK(start <= count_ && n <= count_ - start, path_, ": cannot read tokens [", start,
                ", ", start + n, ") from a shard of ", count_, " tokens");
  const unsigned char* p = file_.data() + kTokenShardHeaderBytes + start * bytes_per_token_;
  uint32_t bad = 0;  // OR of out-of-range flags, checked once after the copy loop
  if (bytes_per_token_ == 2) {
    for (uint64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      out[i] = v;
      bad |= v >= vocab_size_;
    }
  } else {
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t v = load_u32(p + 4 * i);
      out[i] = static_cast<int32_t>(v);
      bad |= v >= vocab_size_;
    }
  }
  if (bad) {
    for (uint64_t i = 0; i < n; ++i)
      CHAINLM_CHECK(static_cast<uint32_t>(out[i]) < vocab_size_, path_, ": corrupt shard: token ",
                    static_cast<uint32_t>(out[i]), " at position ", start + i, " is >= vocab_size ",
                    vocab_size_);
  }
}

}  // namespace chainlm
