// The few-row quantized GEMMs of decoding (gemm_nt_quant with 1 to 8 rows: one sequence, a PHD
// step's copies, a server's batch), Q8_0 and Q4_0, streaming MATS weight matrices of N x K
// (1408 x 512 by default; 120 of them: 91 MB in Q8_0, past this VM's caches) through chainlm's
// own entry point, min of 7 rounds of 3 passes. Prints the time per pass, the weight bytes a
// second, and the time of M rows over one row's: the figure that says how much a batch of M
// requests costs over one. Its figures in bench/RESULTS.md come from two builds of the library
// (before and after a kernel change) run one after the other. Build (after `make build`):
//   g++ -O3 -std=c++20 -fopenmp -march=native -Isrc bench/quant_few_row_bench.cpp -Lbuild \
//     -Wl,--start-group -lchainlm_kernels -lchainlm_core -Wl,--end-group -ldnnl -lopenblas \
//     -o /tmp/qfr
// Run: MATS=120 /tmp/qfr [threads] [N K]   (default 1 thread, 1408 512; 512 1408 is the FFN's
// down projection)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/aligned_vector.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

using namespace chainlm;

int main(int argc, char** argv) {
  set_num_threads(argc > 1 ? std::atoi(argv[1]) : 1);
  const int N = argc > 3 ? std::atoi(argv[2]) : 1408, K = argc > 3 ? std::atoi(argv[3]) : 512;
  const int matrices = std::getenv("MATS") ? std::atoi(std::getenv("MATS")) : 120;
  std::vector<float> W((size_t)N * K);
  for (size_t i = 0; i < W.size(); ++i) W[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  AlignedVector<float> A((size_t)kMaxDecodeRows * K), C((size_t)kMaxDecodeRows * N);
  for (size_t i = 0; i < A.size(); ++i) A[i] = (float)(i % 13) * 0.1f - 0.6f;
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    const size_t row_bytes = quant_row_bytes(type, K);
    std::vector<uint8_t> Q((size_t)matrices * N * row_bytes);
    for (int m = 0; m < matrices; ++m)
      quantize_rows(type, W.data(), N, K, Q.data() + (size_t)m * N * row_bytes);
    std::vector<double> best(kMaxDecodeRows + 1, 1e9);
    for (int round = 0; round < 7; ++round)
      for (int M = 1; M <= kMaxDecodeRows; ++M) {
        Timer t;
        for (int pass = 0; pass < 3; ++pass)
          for (int m = 0; m < matrices; ++m)
            gemm_nt_quant(M, N, K, A.data(), K, type, Q.data() + (size_t)m * N * row_bytes, K,
                          C.data(), N, 0.0f);
        best[M] = std::min(best[M], t.seconds() / 3);
      }
    for (int M = 1; M <= kMaxDecodeRows; ++M)
      std::printf("%s rows %d: %.2f ms per pass, %.1f GB/s of weights, %.2fx the time of 1 row\n",
                  quant_type_name(type), M, best[M] * 1e3, Q.size() / best[M] / 1e9,
                  best[M] / best[1]);
  }
}
