// The few-row fp32 GEMMs of decoding (gemm_nt with 1, 2, 4 and 8 rows: one sequence, a PHD
// step's copies, a server's batch) streaming 40 weight matrices of N x K (1408 x 512 by default:
// 115 MB, past every cache) through chainlm's own entry point, row-major (the few-row kernel)
// and in panels (an fp32 inference model's form) in turns, min of 7 rounds of 3 passes. Its
// figures in bench/RESULTS.md come from two builds of the library (before and after a kernel
// change) run one after the other. Build (after `make build`):
//   g++ -O3 -std=c++20 -fopenmp -march=native -Isrc \
//     -isystem /usr/include/x86_64-linux-gnu/openblas-openmp bench/few_row_gemm_bench.cpp -Lbuild \
//     -Wl,--start-group -lchainlm_kernels -lchainlm_core -Wl,--end-group -ldnnl -lopenblas -o
//     /tmp/frg
// Run: /tmp/frg [threads] [N K]   (default 1408 512; 512 1408 is the FFN's down projection)
// Then 16-128 rows (short prompts): gemm_nt (the few-row kernel in chunks of 8 up to
// kMaxStreamedRows) against the two sgemm backends it replaced there, in turns.
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/aligned_vector.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/gemm.h"
#include "kernels/gemm_panels.h"
#include "kernels/onednn_matmul.h"

using namespace chainlm;

int main(int argc, char** argv) {
  set_num_threads(argc > 1 ? std::atoi(argv[1]) : 1);
  const int N = argc > 3 ? std::atoi(argv[2]) : 1408, K = argc > 3 ? std::atoi(argv[3]) : 512;
  const int matrices = 40;
  AlignedVector<float> W((size_t)matrices * N * K);
  for (size_t i = 0; i < W.size(); ++i) W[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  // The same matrices in panels (gemm_panels.h), as an fp32 inference model holds them.
  const std::size_t panel_size = panel_floats(N, K);
  AlignedVector<float> P((size_t)matrices * panel_size);
  for (int m = 0; m < matrices; ++m)
    pack_panels(N, K, W.data() + (size_t)m * N * K, K, P.data() + (size_t)m * panel_size);
  AlignedVector<float> A(128 * K), C(128 * N);
  for (int i = 0; i < 128 * K; ++i) A[i] = (float)(i % 13) * 0.1f;
  const int rows[] = {1, 2, 4, 8};
  double best[2][4] = {{1e9, 1e9, 1e9, 1e9}, {1e9, 1e9, 1e9, 1e9}};
  for (int round = 0; round < 7; ++round)
    for (int r = 0; r < 4; ++r)
      for (int way = 0; way < 2; ++way) {
        Timer t;
        for (int pass = 0; pass < 3; ++pass)
          for (int m = 0; m < matrices; ++m) {
            WeightRef w;
            if (way == 0)
              w.f32 = W.data() + (size_t)m * N * K;
            else
              w.panels = P.data() + (size_t)m * panel_size;
            gemm_nt(rows[r], N, K, A.data(), K, w, K, C.data(), N, 0.0f);
          }
        best[way][r] = std::min(best[way][r], t.seconds() / 3);
      }
  for (int way = 0; way < 2; ++way)
    for (int r = 0; r < 4; ++r)
      std::printf(
          "%s rows %d: %.2f ms per pass, %.1f GB/s of weights, %.1f GFLOP/s, %.2fx the time of 1 "
          "row\n",
          way == 0 ? "row-major" : "panels", rows[r], best[way][r] * 1e3,
          W.size() * 4.0 / best[way][r] / 1e9, 2.0 * rows[r] * W.size() / best[way][r] / 1e9,
          best[way][r] / best[way][0]);

  const char* names[] = {"gemm_nt", "oneDNN sgemm", "OpenBLAS sgemm"};
  for (int M : {16, 32, 64, 128}) {
    double ms[3] = {1e9, 1e9, 1e9};
    for (int round = 0; round < 5; ++round)
      for (int way = 0; way < 3; ++way) {
        Timer t;
        for (int m = 0; m < matrices; ++m) {
          const float* w = W.data() + (size_t)m * N * K;
          if (way == 0)
            gemm_nt(M, N, K, A.data(), K, w, K, C.data(), N, 0.0f);
          else if (way == 1)
            onednn_sgemm(false, true, M, N, K, A.data(), K, w, K, C.data(), N, 0.0f);
          else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A.data(), K, w, K,
                        0.0f, C.data(), N);
        }
        ms[way] = std::min(ms[way], t.seconds() * 1e3);
      }
    std::printf("rows %d:", M);
    for (int way = 0; way < 3; ++way)
      std::printf(" %s %.2f ms%s", names[way], ms[way], way < 2 ? "," : "\n");
  }
}
