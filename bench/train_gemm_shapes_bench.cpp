// The GEMMs of one ref30m training step (batch 8 x 256 = 2048 rows, dim 512, ffn 1408, vocab
// 4096, 8 layers) timed alone, bf16 and fp32, through chainlm's own entry points (gemm.h): the
// forward (nt), input-gradient (nn) and weight-gradient (tn) products of each projection and of
// the head. Their sum over a step is the step's GEMM-only time in each precision, which bounds
// what bf16 can gain over fp32 before anything else in the step counts (bench/RESULTS.md,
// issue 14 fifth part).
// Build (after `make build`):
//   g++ -O2 -std=c++20 -fopenmp -Isrc bench/train_gemm_shapes_bench.cpp -Lbuild \
//     -Wl,--start-group -lchainlm_kernels -lchainlm_core -Wl,--end-group -ldnnl -lopenblas -o /tmp/tgs
// Run: OMP_WAIT_POLICY=passive /tmp/tgs
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "core/threads.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"

using namespace chainlm;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main() {
  set_num_threads(2);
  // kind: t = forward C = A B^T, n = input gradient C = A B, T = weight gradient C = A^T B.
  // count: how many such products one step has (8 layers; q, k, v, o share a shape, w1 and w3).
  struct Shape {
    const char* name;
    char kind;
    int M, N, K, count;
  };
  const Shape shapes[] = {
      {"fwd q/k/v/o", 't', 2048, 512, 512, 32},  {"fwd w1/w3", 't', 2048, 1408, 512, 16},
      {"fwd w2", 't', 2048, 512, 1408, 8},       {"fwd head", 't', 2048, 4096, 512, 1},
      {"dx q/k/v/o", 'n', 2048, 512, 512, 32},   {"dx w1/w3", 'n', 2048, 512, 1408, 16},
      {"dx w2", 'n', 2048, 1408, 512, 8},        {"dx head", 'n', 2048, 512, 4096, 1},
      {"dw q/k/v/o", 'T', 512, 512, 2048, 32},   {"dw w1/w3", 'T', 1408, 512, 2048, 16},
      {"dw w2", 'T', 512, 1408, 2048, 8},        {"dw head", 'T', 4096, 512, 2048, 1}};
  std::vector<bf16_t> Ah(2048 * 4096, 0x3f80), Bh(4096 * 2048, 0x3c00);
  std::vector<float> A(2048 * 4096, 0.5f), B(4096 * 2048, 0.25f), C(4096 * 4096);
  double total[2] = {0, 0};
  for (const Shape& s : shapes)
    for (int fp32 = 0; fp32 < 2; ++fp32) {
      auto run = [&] {
        if (fp32) {
          if (s.kind == 't') gemm_nt(s.M, s.N, s.K, A.data(), s.K, B.data(), s.K, C.data(), s.N, 0.f);
          if (s.kind == 'n') gemm_nn(s.M, s.N, s.K, A.data(), s.K, B.data(), s.N, C.data(), s.N, 0.f);
          if (s.kind == 'T') gemm_tn(s.M, s.N, s.K, A.data(), s.M, B.data(), s.N, C.data(), s.N, 1.f);
        } else {
          if (s.kind == 't') gemm_nt_bf16(s.M, s.N, s.K, Ah.data(), s.K, Bh.data(), s.K, C.data(), s.N, 0.f);
          if (s.kind == 'n') gemm_nn_bf16(s.M, s.N, s.K, Ah.data(), s.K, Bh.data(), s.N, C.data(), s.N, 0.f);
          if (s.kind == 'T') gemm_tn_bf16(s.M, s.N, s.K, Ah.data(), s.M, Bh.data(), s.N, C.data(), s.N, 1.f);
        }
      };
      run();
      double best = 1e9;
      for (int r = 0; r < 7; ++r) {
        const double t = now();
        run();
        run();
        best = std::min(best, (now() - t) / 2);
      }
      total[fp32] += best * s.count;
      std::printf("%-12s %s %6.0f GFLOP/s %7.2f ms x %d\n", s.name, fp32 ? "fp32" : "bf16",
                  2.0 * s.M * s.N * s.K / best / 1e9, best * 1e3, s.count);
    }
  std::printf("GEMM-only step: bf16 %.0f ms, fp32 %.0f ms, fp32/bf16 %.2f\n", total[0] * 1e3,
              total[1] * 1e3, total[1] / total[0]);
}
