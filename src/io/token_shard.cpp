#include "io/token_shard.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

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

// One stored token of `width` (2 or 4) bytes.
uint32_t load_token(const unsigned char* p, uint32_t width) {
  if (width == 4) return load_u32(p);
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// `path`, once vocab_size is known to fit: checked before the temporary file is made.
const std::string& path_with_checked_vocab(const std::string& path, uint32_t vocab_size) {
  CHAINLM_CHECK(vocab_size > 0 && vocab_size <= kMaxVocab, path, ": vocab_size ", vocab_size,
                " is out of range (1..", kMaxVocab, ")");
  return path;
}

}  // namespace

void write_token_shard(const std::string& path, const std::vector<uint32_t>& tokens,
                       uint32_t vocab_size) {
  TokenShardWriter writer(path, vocab_size);
  writer.append(tokens.data(), tokens.size());
  writer.commit();
}

TokenShardWriter::TokenShardWriter(const std::string& path, uint32_t vocab_size)
    : file_(path_with_checked_vocab(path, vocab_size)),
      vocab_size_(vocab_size),
      width_(bytes_per_token_for(vocab_size)) {
  unsigned char header[kTokenShardHeaderBytes] = {};  // count (bytes 24..31) is set by commit()
  const uint32_t fields[4] = {kVersion, width_, vocab_size_, 0};
  std::memcpy(header, kMagic, 8);
  std::memcpy(header + 8, fields, 16);
  if (std::fwrite(header, 1, sizeof header, file_.file()) != sizeof header)
    file_.fail_write("write failed", errno);
}

void TokenShardWriter::append(const uint32_t* tokens, size_t n) {
  for (size_t i = 0; i < n; ++i)
    CHAINLM_CHECK(tokens[i] < vocab_size_, file_.path(), ": token ", tokens[i], " at position ",
                  count_ + i, " is >= vocab_size ", vocab_size_);
  std::FILE* f = file_.file();
  if (width_ == 4) {
    if (n > 0 && std::fwrite(tokens, 4, n, f) != n) file_.fail_write("write failed", errno);
  } else {
    // Narrow in chunks so a large append never needs a second full-size buffer.
    for (size_t i = 0; i < n; i += 1 << 16) {
      const size_t m = std::min<size_t>(1 << 16, n - i);
      narrow_.assign(tokens + i, tokens + i + m);
      if (std::fwrite(narrow_.data(), 2, m, f) != m) file_.fail_write("write failed", errno);
    }
  }
  count_ += n;
}

std::vector<uint32_t> TokenShardWriter::take(uint64_t start, uint64_t n) {
  CHAINLM_CHECK(start <= count_ && n <= count_ - start, file_.path(), ": cannot take tokens [",
                start, ", ", start + n, ") from ", count_);
  std::FILE* f = file_.file();
  if (std::fflush(f) != 0) file_.fail_write("write failed", errno);
  const int fd = ::fileno(f);
  auto at = [&](uint64_t token) { return (off_t)(kTokenShardHeaderBytes + token * width_); };
  auto read_exact = [&](void* dst, size_t bytes, off_t offset) {
    if (::pread(fd, dst, bytes, offset) != (ssize_t)bytes)
      file_.fail_write("reading back failed", errno ? errno : EIO);
  };
  std::vector<unsigned char> bytes(n * width_);
  if (n > 0) read_exact(bytes.data(), bytes.size(), at(start));
  std::vector<uint32_t> taken(n);
  for (uint64_t i = 0; i < n; ++i) taken[i] = load_token(bytes.data() + width_ * i, width_);
  // The tokens after the range move down by n, a chunk at a time.
  std::vector<unsigned char> chunk(size_t(1) << 20);
  for (uint64_t from = start + n; from < count_ && n > 0;) {
    const uint64_t m = std::min<uint64_t>(chunk.size() / width_, count_ - from);
    read_exact(chunk.data(), m * width_, at(from));
    if (::pwrite(fd, chunk.data(), m * width_, at(from - n)) != (ssize_t)(m * width_))
      file_.fail_write("write failed", errno);
    from += m;
  }
  count_ -= n;
  if (::ftruncate(fd, at(count_)) != 0) file_.fail_write("truncate failed", errno);
  if (::fseeko(f, at(count_), SEEK_SET) != 0) file_.fail_write("seek failed", errno);
  return taken;
}

void TokenShardWriter::finish() {
  if (finished_) return;
  std::FILE* f = file_.file();
  if (std::fflush(f) != 0) file_.fail_write("write failed", errno);
  if (::pwrite(::fileno(f), &count_, 8, 24) != 8) file_.fail_write("write failed", errno);
  file_.sync();
  finished_ = true;
}

void TokenShardWriter::commit() {
  finish();
  file_.commit();
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

std::string TokenShard::fingerprint() const {
  const uint64_t bytes = file_.size();
  constexpr uint64_t kBlock = 64 << 10, kBlocks = 64;
  uint32_t crc = 0;
  uint64_t sampled = 0;
  if (bytes <= kBlock * kBlocks) {
    crc = crc32_of(file_.data(), bytes);
    sampled = bytes;
  } else {
    std::string blocks;
    for (uint64_t i = 0; i < kBlocks; ++i) {
      const uint64_t at = (bytes - kBlock) * i / (kBlocks - 1);
      blocks.append(reinterpret_cast<const char*>(file_.data()) + at, kBlock);
    }
    crc = crc32_of(blocks.data(), blocks.size());
    sampled = blocks.size();
  }
  return cat(count_, " tokens, vocab ", vocab_size_, ", crc32 ", crc32_hex(crc), " of ", sampled,
             " sampled bytes");
}

bool is_token_shard_file(const std::string& path) {
  // A shard is a regular file (it is mapped); opening a FIFO to look would wait for a writer,
  // and reading a pipe would take its first bytes from whoever reads it next.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, sizeof magic);
  return in.gcount() == 8 && std::memcmp(magic, "CLMTOKS1", 8) == 0;
}

uint32_t TokenShard::check_tokens() const {
  // In blocks: a maximum the loop vectorizes, then the block's tokens one by one only where it
  // is out of range (read names the first); each block's CRC while it is in cache.
  constexpr uint64_t kBlock = 1 << 16;
  const unsigned char* base = file_.data() + kTokenShardHeaderBytes;
  uLong crc = crc32_z(0L, Z_NULL, 0);
  for (uint64_t start = 0; start < count_; start += kBlock) {
    const uint64_t n = std::min(kBlock, count_ - start);
    uint32_t top = 0;
    if (bytes_per_token_ == 2) {
      uint16_t m = 0;
      const unsigned char* p = base + start * 2;
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        m = std::max(m, v);
      }
      top = m;
    } else {
      const unsigned char* p = base + start * 4;
      for (uint64_t i = 0; i < n; ++i) top = std::max(top, load_u32(p + 4 * i));
    }
    if (top >= vocab_size_) {
      std::vector<int32_t> tokens(n);
      read(start, n, tokens.data());  // throws naming the first
    }
    crc = crc32_z(crc, base + start * bytes_per_token_, n * bytes_per_token_);
  }
  return static_cast<uint32_t>(crc);
}

uint32_t TokenShard::at(uint64_t i) const {
  CHAINLM_CHECK(i < count_, path_, ": token index ", i, " out of range (", count_, " tokens)");
  return load_token(file_.data() + kTokenShardHeaderBytes + i * bytes_per_token_, bytes_per_token_);
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
