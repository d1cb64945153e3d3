#pragma once
// Batches of (input, target) windows from a token shard.
// Training windows start at offsets drawn from a counter-based RNG keyed by (seed, step,
// micro-step), so any step's batch can be recomputed from nothing: resuming a run, or
// splitting a batch across MPI ranks, needs no loader state.
#include <cstdint>
#include <string>
#include <vector>

#include "io/token_shard.h"

namespace chainlm {

class TokenDataset {
 public:
  explicit TokenDataset(const std::string& shard_path);

  uint64_t size() const { return shard_.size(); }
  uint32_t vocab_size() const { return shard_.vocab_size(); }
  const std::string& path() const { return shard_.path(); }
  std::string fingerprint() const { return shard_.fingerprint(); }
  // The CRC-32 of every token's bytes (TokenShard::check_tokens, at construction).
  uint32_t content_crc() const { return content_crc_; }

  // Fills tokens and targets (rows*T each) with rows [row0, row0 + rows) of the
  // batch_rows-row batch of (step, micro).
  void train_batch(uint64_t seed, long step, int micro, int batch_rows, int row0, int rows, int T,
                   int* tokens, int* targets) const;

  // Number of consecutive, non-overlapping windows of T+1 tokens (validation).
  long num_windows(int T) const;
  void window(long index, int T, int* tokens, int* targets) const;

 private:
  TokenShard shard_;
  uint32_t content_crc_ = 0;
};

}  // namespace chainlm
