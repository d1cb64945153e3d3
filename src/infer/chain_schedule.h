#pragma once
// Which sub-model generates each token: "1:16,4" = 1 chain for 16 tokens, then 4 chains.
// Segments are "k:count"; the last may omit its count (it lasts to the end). A plain "k" is
// a constant schedule.
#include <string>
#include <utility>
#include <vector>

namespace chainlm {

class ChainSchedule {
 public:
  ChainSchedule() = default;
  explicit ChainSchedule(int k) : segments_{{k, -1}} {}
  // Throws chainlm::Error naming the bad segment; checks 1 <= k <= n_chains.
  static ChainSchedule parse(const std::string& text, int n_chains);
  // Active chains for generated token i (0-based).
  int chains_for(int i) const;
  bool empty() const { return segments_.empty(); }

 private:
  std::vector<std::pair<int, int>> segments_;  // (k, count); count -1 = open-ended
};

}  // namespace chainlm
