// fp32 weights in panels (kernels/gemm_panels.h): every output is its products summed in k
// order by fused multiply-adds from 0 (the test's own loop, bit for bit, and the fp64 product
// within that order's rounding bound), for any rows, any column range (entered mid-panel, as a
// thread's share or a chain block is), weights entered at a column (a sub-model's prefix) and
// one or two threads; so a row's bits never depend on the rows beside it.
#include "kernels/gemm_panels.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/threads.h"
#include "gradcheck.h"
#include "kernels/gemm.h"

namespace chainlm {
namespace {

using test::random_vector;

struct Packed {
  int N, ld;
  std::vector<float> W, P;
  Packed(int N_, int ld_, uint64_t seed)
      : N(N_), ld(ld_), W(random_vector((size_t)N_ * ld_, seed)) {
    P.resize(panel_floats(N, ld));
    pack_panels(N, ld, W.data(), ld, P.data());
  }
};

// C[m][c] for weight rows col0 + c over columns [k0, k0 + K) of W: fused multiply-adds in k order.
float in_order(const float* a, const float* w, int K) {
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc = std::fma(a[k], w[k], acc);
  return acc;
}

void check(const Packed& w, int M, int N, int K, int col0, int k0, float beta) {
  const int lda = K + 5, ldc = N + 3;
  const auto A = random_vector((size_t)M * lda, 11 + M);
  const auto C0 = random_vector((size_t)M * ldc, 12);
  std::vector<float> C = C0;
  WeightRef ref;
  ref.panels = w.P.data();
  ref = ref.rows(col0, w.ld).offset(k0);
  gemm_nt(M, N, K, A.data(), lda, ref, w.ld, C.data(), ldc, beta);
  const double u = std::numeric_limits<float>::epsilon() / 2;
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < N; ++c) {
      const float* a = A.data() + (size_t)m * lda;
      const float* row = w.W.data() + (size_t)(col0 + c) * w.ld + k0;
      const float sum = in_order(a, row, K);
      const float want = beta == 0.0f ? sum : sum + beta * C0[(size_t)m * ldc + c];
      const float got = C[(size_t)m * ldc + c];
      ASSERT_EQ(std::memcmp(&got, &want, sizeof got), 0)
          << "M " << M << " N " << N << " K " << K << " col0 " << col0 << " k0 " << k0 << " beta "
          << beta << ": row " << m << " column " << c << " got " << got << ", summed in order "
          << want;
      // Sequential summation of K products: within gamma_K of the sum of |products| (plus the
      // beta term's two roundings).
      double exact = 0, mag = 0;
      for (int k = 0; k < K; ++k)
        exact += (double)a[k] * row[k], mag += std::fabs((double)a[k] * row[k]);
      const double c0 = beta == 0.0f ? 0.0 : (double)beta * C0[(size_t)m * ldc + c];
      const double bound =
          K * u / (1 - K * u) * mag * 1.0001 + 2 * u * (std::fabs(exact) + std::fabs(c0)) + 1e-30;
      ASSERT_LE(std::fabs(got - (exact + c0)), bound) << "row " << m << " column " << c;
    }
  // Columns outside [0, N) of C are untouched.
  for (int m = 0; m < M; ++m)
    for (int c = N; c < ldc; ++c) ASSERT_EQ(C[(size_t)m * ldc + c], C0[(size_t)m * ldc + c]);
}

TEST(GemmPanels, EveryOutputIsItsProductsSummedInOrder) {
  const int threads = num_threads();
  for (int t : {1, 2}) {
    set_num_threads(t);
    const Packed w(133, 150, 5);  // 5 panels, the last one 5 rows
    for (int M : {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 70})
      for (auto [N, K, col0, k0] : std::vector<std::array<int, 4>>{{133, 150, 0, 0},
                                                                   {1, 7, 0, 0},
                                                                   {31, 64, 1, 0},
                                                                   {100, 129, 33, 21},
                                                                   {64, 1, 64, 149},
                                                                   {97, 40, 36, 110}})
        for (float beta : {0.0f, 0.5f}) {
          SCOPED_TRACE(::testing::Message() << t << " threads");
          check(w, M, N, K, col0, k0, beta);
        }
  }
  set_num_threads(threads);
}

// Enough work for two threads (kParallelMinWork): each takes whole panels; the bits are those of
// one thread, and of each row alone.
TEST(GemmPanels, RowsKeepTheirBitsWhateverTheBatchAndTheThreads) {
  const int threads = num_threads();
  const Packed w(517, 256, 7);
  const int K = 256, N = 517 - 9, lda = K;
  const auto A = random_vector((size_t)kMaxStreamedRows * lda, 8);
  WeightRef ref;
  ref.panels = w.P.data();
  ref = ref.rows(9, w.ld);
  std::vector<float> alone((size_t)kMaxStreamedRows * N);
  set_num_threads(1);
  for (int m = 0; m < kMaxStreamedRows; ++m)
    gemm_nt(1, N, K, A.data() + (size_t)m * lda, lda, ref, w.ld, alone.data() + (size_t)m * N, N,
            0.0f);
  for (int t : {1, 2}) {
    set_num_threads(t);
    for (int M : {2, 4, 8, 13, kMaxStreamedRows}) {
      ASSERT_TRUE(t == 1 || worth_parallel((long)M * N * K))
          << "the case no longer splits over threads";
      std::vector<float> batch((size_t)M * N);
      gemm_nt(M, N, K, A.data(), lda, ref, w.ld, batch.data(), N, 0.0f);
      for (int m = 0; m < M; ++m)
        ASSERT_EQ(std::memcmp(batch.data() + (size_t)m * N, alone.data() + (size_t)m * N,
                              N * sizeof(float)),
                  0)
            << "row " << m << " of " << M << " on " << t << " threads differs from the row alone";
    }
  }
  set_num_threads(threads);
}

TEST(GemmPanels, ThreadSharesAreWholePanelsCoveringTheColumns) {
  for (auto [col0, N, nt] : std::vector<std::array<int, 3>>{
           {0, 128, 2}, {5, 100, 2}, {31, 2, 2}, {40, 517, 3}, {0, 1, 2}}) {
    int covered = 0;
    for (int t = 0; t < nt; ++t) {
      int n0, n1;
      panel_column_share(col0, N, t, nt, &n0, &n1);
      ASSERT_EQ(n0, covered) << "col0 " << col0 << " N " << N << ": share " << t << " leaves a gap";
      ASSERT_GE(n1, n0);
      if (n1 < N) {
        ASSERT_EQ((col0 + n1) % kPanel, 0) << "share " << t << " ends inside a panel";
      }
      covered = n1;
    }
    ASSERT_EQ(covered, N);
  }
}

TEST(GemmPanels, PackingPadsTheLastPanelWithZeros) {
  const Packed w(40, 3, 2);
  ASSERT_EQ(w.P.size(), 2u * 3 * kPanel);
  for (int n = 0; n < 2 * kPanel; ++n)
    for (int k = 0; k < 3; ++k) {
      const float got = w.P[(size_t)(n / kPanel) * 3 * kPanel + k * kPanel + n % kPanel];
      ASSERT_EQ(got, n < 40 ? w.W[(size_t)n * 3 + k] : 0.0f) << "row " << n << " column " << k;
    }
}

}  // namespace
}  // namespace chainlm
