#pragma once
// Token shards: the tokenized corpus on disk, memory-mapped for training. Little-endian:
//   bytes 0..7   magic "CLMTOKS1"
//   8..11        uint32 version (1)
//   12..15       uint32 bytes_per_token: 2 when vocab_size < 65536, else 4
//   16..19       uint32 vocab_size
//   20..23       uint32 reserved (0)
//   24..31       uint64 count
//   32..         count tokens
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "io/mapped_file.h"

namespace chainlm {

inline constexpr size_t kTokenShardHeaderBytes = 32;

// Writes a shard atomically; every token must be < vocab_size (at most 2^31 - 1, since the
// engine indexes tokens as int32).
void write_token_shard(const std::string& path, const std::vector<uint32_t>& tokens,
                       uint32_t vocab_size);

// A shard written as its tokens arrive (`chainlm prepare` streams a corpus through it), so that no
// step needs the whole token stream in memory. The file appears at `path` only at commit(),
// atomically as write_token_shard's; a writer destroyed before that leaves `path` untouched.
class TokenShardWriter {
 public:
  TokenShardWriter(const std::string& path, uint32_t vocab_size);

  // Every token must be < vocab_size. Throws naming the path on a failed write (a full disk is
  // found at the first failed write, not after the whole corpus).
  void append(const uint32_t* tokens, size_t n);
  uint64_t count() const { return count_; }
  // Removes tokens [start, start + n) from the shard being written and returns them; the tokens
  // after them move down. Costs a pass over the rest of the file: for the rare moves of a whole
  // document from one split to the other.
  std::vector<uint32_t> take(uint64_t start, uint64_t n);
  // Writes the header's count and syncs the file: a full disk fails here, with `path` untouched
  // (prepare finishes both shards before it marks its directory and replaces either).
  void finish();
  // finish(), then the shard replaces `path`.
  void commit();

 private:
  AtomicFile file_;
  uint32_t vocab_size_, width_;
  uint64_t count_ = 0;
  bool finished_ = false;
  std::vector<uint16_t> narrow_;  // append's 2-byte staging buffer
};

// True when the file starts with the token-shard magic ("CLMTOKS1").
bool is_token_shard_file(const std::string& path);

class TokenShard {
 public:
  // Maps the file and validates magic, version, token width and size against count.
  explicit TokenShard(const std::string& path);

  const std::string& path() const { return path_; }
  uint64_t size() const { return count_; }
  uint32_t vocab_size() const { return vocab_size_; }
  uint32_t at(uint64_t i) const;  // bounds-checked
  // "N tokens, vocab V, crc32 C of S sampled bytes": the count, the vocabulary and a CRC of up to
  // 64 blocks of 64 KiB spread over the file. Ranks of a training compare theirs: a stale or
  // other copy of the data on one machine differs in it (not proof of equality, but cheap on a
  // multi-GB shard).
  std::string fingerprint() const;
  // Copies tokens [start, start + n) into out; throws if the range leaves the shard or a
  // stored token is >= vocab_size (a corrupt shard must not index past an embedding table).
  void read(uint64_t start, uint64_t n, int32_t* out) const;
  // Throws, naming the first, if any stored token is >= vocab_size: a whole pass over the file
  // (training checks its shards at start; a corrupt token that sampling reached only hours in
  // failed the run there, and one it never reached let the run pass). Returns the CRC-32 of all
  // the tokens' bytes, made in the same pass: the ranks of a training compare theirs, which
  // fingerprint() only samples.
  uint32_t check_tokens() const;

 private:
  std::string path_;
  MappedFile file_;
  uint64_t count_ = 0;
  uint32_t vocab_size_ = 0;
  uint32_t bytes_per_token_ = 0;
};

}  // namespace chainlm
