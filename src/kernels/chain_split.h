#pragma once
// How one hidden width is cut into chains: chain i owns columns [begin(i), end(i)).
// Sub-model k uses the prefix [0, end(k-1)).
#include <vector>

namespace chainlm {

struct ChainSplit {
  std::vector<int> offsets;  // n+1 cumulative widths, offsets[0] = 0

  ChainSplit() = default;
  // Splits `width` in proportion to `chains` (caller has checked divisibility).
  ChainSplit(int width, const std::vector<int>& chains);
  static ChainSplit single(int width) { return ChainSplit(width, {1}); }

  int n() const { return static_cast<int>(offsets.size()) - 1; }
  int begin(int i) const { return offsets[i]; }
  int end(int i) const { return offsets[i + 1]; }
  int width(int i) const { return offsets[i + 1] - offsets[i]; }
  // Width of the first k chains.
  int prefix(int k) const { return offsets[k]; }
  int total() const { return offsets.back(); }
};

}  // namespace chainlm
