#include "kernels/chain_split.h"

#include <numeric>

namespace chainlm {

ChainSplit::ChainSplit(int width, const std::vector<int>& chains) {
  long sum = std::accumulate(chains.begin(), chains.end(), 0L);
  offsets.assign(1, 0);
  long acc = 0;
  for (int c : chains) {
    acc += c;
    offsets.push_back(static_cast<int>(width * acc / sum));
  }
}

}  // namespace chainlm
