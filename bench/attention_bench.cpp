// Causal attention forward/backward throughput vs cblas_sgemm on the same machine.
// Build (from the repo root):
//   g++ -std=c++20 -O3 -march=native -fopenmp -Isrc $(pkg-config --cflags openblas)
//     bench/attention_bench.cpp src/kernels/attention*.cpp $(pkg-config --libs openblas)
//     -o /tmp/attention_bench          (one line)
// Run: /tmp/attention_bench [B T H Hkv hd seconds [K W C]]  (default 8 1024 8 8 64 3; threads:
// OMP_NUM_THREADS). Reports the best of interleaved rounds of sgemm, forward, backward.
// FLOPs: causal forward 4*B*H*hd*T(T+1)/2, backward 2.5x that.
// With K > 1 it also times the PHD mask (SPEC B2; W = window, C = chunk) over the K*T rows of
// the repeated stream, interleaved with the causal pass over T rows, and prints the ratio.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/rng.h"
#include "core/timer.h"
#include "kernels/attention.h"

using namespace chainlm;

// Best time of each function over interleaved rounds, so a neighbour's load on the shared
// cores hits all of them alike and the best rounds are compared.
template <typename... F>
std::vector<double> best_seconds(double min_total, F&&... fs) {
  (fs(), ...);  // warm-up
  std::vector<double> best(sizeof...(fs), 1e30);
  double total = 0;
  for (int round = 0; total < min_total || round < 5; ++round) {
    size_t i = 0;
    auto time_one = [&](auto& f) {
      Timer t;
      f();
      const double s = t.seconds();
      best[i] = std::min(best[i], s);
      total += s;
      ++i;
    };
    (time_one(fs), ...);
  }
  return best;
}

int main(int argc, char** argv) {
  const int B = argc > 1 ? std::atoi(argv[1]) : 8;
  const int T = argc > 2 ? std::atoi(argv[2]) : 1024;
  const int H = argc > 3 ? std::atoi(argv[3]) : 8;
  const int Hkv = argc > 4 ? std::atoi(argv[4]) : H;
  const int hd = argc > 5 ? std::atoi(argv[5]) : 64;

  const int n = 1024;
  std::vector<float> a((size_t)n * n, 1.0f), b((size_t)n * n, 0.5f), c((size_t)n * n);
  auto gemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  };

  std::vector<int> kv_map(H);
  for (int h = 0; h < H; ++h) kv_map[h] = h / (H / Hkv);
  AttentionShape s;
  s.batch = B, s.q_len = s.kv_len = T, s.n_heads = H, s.head_dim = hd;
  s.q_stride = s.o_stride = H * hd, s.kv_stride = Hkv * hd;
  s.kv_head_of = kv_map.data();
  s.scale = 1.0f / std::sqrt((float)hd);
  Rng rng(1);
  auto rand_vec = [&](size_t len) {
    std::vector<float> x(len);
    for (auto& e : x) e = rng.normal();
    return x;
  };
  auto q = rand_vec((size_t)B * T * H * hd), dout = rand_vec(q.size());
  auto k = rand_vec((size_t)B * T * Hkv * hd), v = rand_vec(k.size());
  std::vector<float> o(q.size()), lse((size_t)B * H * T), dq(q.size()), dk(k.size()), dv(k.size());

  auto forward = [&] { attention_forward(s, q.data(), k.data(), v.data(), o.data(), lse.data()); };
  auto backward = [&] {
    attention_backward(s, q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(),
                       dq.data(), dk.data(), dv.data());
  };
  const double seconds = argc > 6 ? std::atof(argv[6]) : 3.0;
  const auto best = best_seconds(seconds, gemm, forward, backward);
  const double gemm_gflops = 2.0 * n * n * n / best[0] / 1e9;
  const double fwd_s = best[1], bwd_s = best[2];
  const double fwd_flops = 4.0 * B * H * hd * (T * (T + 1.0) / 2);
  const double fwd_g = fwd_flops / fwd_s / 1e9, bwd_g = 2.5 * fwd_flops / bwd_s / 1e9;
  const double both_g = 3.5 * fwd_flops / (fwd_s + bwd_s) / 1e9;
  std::printf("threads %d  B %d T %d H %d Hkv %d hd %d\n", omp_get_max_threads(), B, T, H, Hkv, hd);
  std::printf("sgemm 1024^3      %7.1f GFLOP/s\n", gemm_gflops);
  std::printf("attention forward %7.1f GFLOP/s  (%5.1f%% of sgemm, %.2f ms)\n", fwd_g,
              100 * fwd_g / gemm_gflops, fwd_s * 1e3);
  std::printf("attention backward%7.1f GFLOP/s  (%5.1f%% of sgemm, %.2f ms)\n", bwd_g,
              100 * bwd_g / gemm_gflops, bwd_s * 1e3);
  std::printf("forward+backward  %7.1f GFLOP/s  (%5.1f%% of sgemm)\n", both_g,
              100 * both_g / gemm_gflops);

  const int K = argc > 7 ? std::atoi(argv[7]) : 1;
  if (K > 1) {
    const int W = argc > 8 ? std::atoi(argv[8]) : 0, C = argc > 9 ? std::atoi(argv[9]) : 0;
    AttentionShape ps = s;
    ps.q_len = ps.kv_len = K * T;
    ps.mask = AttentionMask::phd(K, W, C);
    auto pq = rand_vec((size_t)B * K * T * H * hd), pdout = rand_vec(pq.size());
    auto pk = rand_vec((size_t)B * K * T * Hkv * hd), pv = rand_vec(pk.size());
    std::vector<float> po(pq.size()), plse((size_t)B * H * K * T), pdq(pq.size()), pdk(pk.size()),
        pdv(pk.size());
    auto phd_both = [&] {
      attention_forward(ps, pq.data(), pk.data(), pv.data(), po.data(), plse.data());
      attention_backward(ps, pq.data(), pk.data(), pv.data(), po.data(), plse.data(), pdout.data(),
                         pdq.data(), pdk.data(), pdv.data());
    };
    auto causal_both = [&] {
      forward();
      backward();
    };
    const auto t = best_seconds(seconds, causal_both, phd_both);
    std::printf("PHD K %d W %d C %d over %d rows: forward+backward %.2f ms vs causal over %d rows "
                "%.2f ms: ratio %.2f (K = %d)\n",
                K, W, C, K * T, t[1] * 1e3, T, t[0] * 1e3, t[1] / t[0], K);
  }
  return 0;
}
