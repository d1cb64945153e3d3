// One decoding row's attention over a head's cached keys, as a decoding step does it on one
// thread: scores 16 keys at a time (row_scores16), the probabilities, the weighted sum of the
// values (row_weighted_sum); fp32 keys and values `stride` floats apart (a KV cache row holds
// every KV head). Best of 7 rounds of 2,000 heads. Its figures in bench/RESULTS.md come from two
// builds of the library (before and after a kernel change) run one after the other. Build
// (after `make build`):
//   g++ -O3 -std=c++20 -fopenmp -march=native -Isrc bench/decode_attention_bench.cpp -Lbuild \
//     -lchainlm_kernels -lchainlm_core -o /tmp/dab
// Run: /tmp/dab [keys hd]   (default 1024 64)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/rng.h"
#include "kernels/attention_tiles.h"

using namespace chainlm;

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1024, hd = argc > 2 ? std::atoi(argv[2]) : 64;
  if (n < 16 || n % 16 != 0 || hd < 8) {
    std::fprintf(stderr, "keys: a multiple of 16; hd: at least 8\n");
    return 2;
  }
  const long stride = 2L * hd;  // two KV heads per cache row
  Rng rng(1);
  std::vector<float> k((size_t)n * stride), v((size_t)n * stride), q(hd), sc(n), out(hd);
  for (float& x : k) x = rng.normal() * 0.1f;
  for (float& x : v) x = rng.normal();
  for (float& x : q) x = rng.normal();
  double best = 1e30, sink = 0;
  for (int round = 0; round < 7; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < 2000; ++it) {
      float mx = -1e30f;
      for (int j = 0; j < n; j += 16)
        mx = std::max(mx, attn::row_scores16(q.data(), k.data() + j * stride, stride, 16, hd,
                                             0xFFFFu, sc.data() + j));
      const float sum = attn::row_probabilities(sc.data(), n, 0.125f, mx * 0.125f);
      attn::row_weighted_sum(sc.data(), n, v.data(), stride, hd, out.data());
      sink += out[0] / sum;
    }
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("{\"keys\":%d,\"hd\":%d,\"us_per_head\":%.3f,\"check\":%g}\n", n, hd,
              best / 2000 * 1e6, sink);
}
