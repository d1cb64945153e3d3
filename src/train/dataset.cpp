#include "train/dataset.h"

#include "core/error.h"
#include "core/rng.h"

namespace chainlm {

TokenDataset::TokenDataset(const std::string& shard_path) : shard_(shard_path) {
  // Every token in range before the first step (sampling checks only what it reads).
  content_crc_ = shard_.check_tokens();
}

void TokenDataset::train_batch(uint64_t seed, long step, int micro, int batch_rows, int row0,
                               int rows, int T, int* tokens, int* targets) const {
  const uint64_t n = shard_.size();
  CHAINLM_CHECK(n >= (uint64_t)T + 1, shard_.path(), ": holds ", n,
                " tokens, fewer than one training window of seq_len+1 = ", T + 1);
  std::vector<int32_t> window(T + 1);
  for (int r = 0; r < rows; ++r) {
    const uint64_t row = (uint64_t)row0 + r;
    Rng rng(seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)step << 20) ^ ((uint64_t)micro << 10) ^
            (row * 0xD1B54A32D192ED03ull));
    rng.next_u64();
    const uint64_t start = rng.below(n - T);
    (void)batch_rows;
    shard_.read(start, T + 1, window.data());
    for (int t = 0; t < T; ++t) {
      tokens[(long)r * T + t] = window[t];
      targets[(long)r * T + t] = window[t + 1];
    }
  }
}

long TokenDataset::num_windows(int T) const {
  return shard_.size() > (uint64_t)T ? (long)((shard_.size() - 1) / T) : 0;
}

void TokenDataset::window(long index, int T, int* tokens, int* targets) const {
  std::vector<int32_t> w(T + 1);
  shard_.read((uint64_t)index * T, T + 1, w.data());
  for (int t = 0; t < T; ++t) {
    tokens[t] = w[t];
    targets[t] = w[t + 1];
  }
}

}  // namespace chainlm
