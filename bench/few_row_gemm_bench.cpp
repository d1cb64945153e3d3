// The few-row fp32 GEMMs of decoding (gemm_nt with 1, 2, 4 and 8 rows: one sequence, a PHD
// step's copies, a server's batch) streaming 40 weight matrices of 1408 x 512 (115 MB, past every
// cache) through chainlm's own entry point, min of 7 rounds of 3 passes. Its figures in
// bench/RESULTS.md come from two builds of the library (before and after a kernel change) run one
// after the other. Build (after `make build`):
//   g++ -O3 -std=c++20 -fopenmp -march=native -Isrc bench/few_row_gemm_bench.cpp -Lbuild \
//     -Wl,--start-group -lchainlm_kernels -lchainlm_core -Wl,--end-group -ldnnl -lopenblas -o
//     /tmp/frg
// Run: /tmp/frg [threads]
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/aligned_vector.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/gemm.h"

using namespace chainlm;

int main(int argc, char** argv) {
  set_num_threads(argc > 1 ? std::atoi(argv[1]) : 1);
  const int N = 1408, K = 512, matrices = 40;
  AlignedVector<float> W((size_t)matrices * N * K);
  for (size_t i = 0; i < W.size(); ++i) W[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  AlignedVector<float> A(8 * K), C(8 * N);
  for (int i = 0; i < 8 * K; ++i) A[i] = (float)(i % 13) * 0.1f;
  const int rows[] = {1, 2, 4, 8};
  double best[4] = {1e9, 1e9, 1e9, 1e9};
  for (int round = 0; round < 7; ++round)
    for (int r = 0; r < 4; ++r) {
      Timer t;
      for (int pass = 0; pass < 3; ++pass)
        for (int m = 0; m < matrices; ++m)
          gemm_nt(rows[r], N, K, A.data(), K, W.data() + (size_t)m * N * K, K, C.data(), N, 0.0f);
      best[r] = std::min(best[r], t.seconds() / 3);
    }
  for (int r = 0; r < 4; ++r)
    std::printf(
        "rows %d: %.2f ms per pass, %.1f GB/s of weights, %.1f GFLOP/s, %.2fx the time of 1 row\n",
        rows[r], best[r] * 1e3, W.size() * 4.0 / best[r] / 1e9,
        2.0 * rows[r] * W.size() / best[r] / 1e9, best[r] / best[0]);
}
