// gemm_nt_jobs under ThreadInvariantProducts (kernels/gemm_tiles.cpp): the library products of an
// inference pass in tiles fixed by their shapes. Against a float64 reference (fp32 at fp32's
// rounding, bf16 on operands rounded to bf16), with the same bits on one, two and three threads,
// on both GEMM backends and both bf16 paths: row and column counts that are not whole tiles,
// rows at the few-row kernels' edge, and a running sum over a weight's column blocks (later jobs
// adding into an earlier one's C over fewer rows: infer/head_logits.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "bf16_path.h"
#include "core/threads.h"
#include "gradcheck.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "kernels/gemm_backend.h"

namespace chainlm {
namespace {

using test::random_vector;

struct Case {
  int M, N, K;
  float beta;
  bool adds_to_previous;  // writes the previous job's C (a running sum), over M of its rows
};

TEST(GemmTiles, TiledProductsMatchTheReferenceWithTheSameBitsOnAnyThreadCount) {
  const int threads = num_threads();
  const GemmBackend backend = gemm_backend();
  // 300 x 517: two tiles of rows (the second partial), five of columns (the last partial);
  // 33 rows: one past the few-row kernels; then a running sum of three blocks of K, the last two
  // over fewer rows (the second at the tile's edge, the third in the few-row kernels).
  const std::vector<Case> cases = {{300, 517, 96, 0.0f, false},
                                   {33, 130, 64, 0.5f, false},
                                   {290, 200, 40, 0.0f, false},
                                   {256, 200, 24, 1.0f, true},
                                   {5, 200, 32, 1.0f, true}};
  const int lda = 96, ldb = 96;
  const std::vector<float> A = random_vector((size_t)300 * lda, 1);
  // Each job's output (a job that adds to the previous one shares its C and row stride) and the
  // first column of A it reads: a running sum's blocks read successive columns, as the head's
  // chain blocks do.
  struct Placement {
    int c, k0, ldc;
  };
  std::vector<Placement> at;
  for (size_t j = 0, c = 0, k0 = 0; j < cases.size(); ++j) {
    if (j > 0 && !cases[j].adds_to_previous) {
      ++c;
      k0 = 0;
    }
    at.push_back(
        {(int)c, (int)k0, (j > 0 && cases[j].adds_to_previous ? at[j - 1].ldc : cases[j].N + 5)});
    k0 += cases[j].K;
  }
  for (GemmBackend b : {GemmBackend::OneDnn, GemmBackend::OpenBlas}) {
    set_gemm_backend(b);
    for (int form = 0; form < 3;
         ++form) {  // fp32, bf16 (instructions where the CPU has them), bf16 emulated
      std::optional<test::Bf16Path> path;
      if (form > 0) path.emplace(/*emulated=*/form == 2);
      SCOPED_TRACE(std::string(gemm_backend_name(b)) + (form == 0   ? " fp32"
                                                        : form == 1 ? " bf16"
                                                                    : " bf16 emulated"));
      std::vector<std::vector<float>> W;
      std::vector<std::vector<bf16_t>> Wh;
      for (size_t j = 0; j < cases.size(); ++j) {
        W.push_back(random_vector((size_t)cases[j].N * ldb, 10 + j));
        Wh.emplace_back(W.back().size());
        for (size_t i = 0; i < W.back().size(); ++i) Wh.back()[i] = to_bf16(W.back()[i]);
      }
      // C of each output (a job that adds to the previous one shares its C), from one start.
      std::vector<std::vector<float>> start;
      for (size_t j = 0; j < cases.size(); ++j)
        if (!cases[j].adds_to_previous)
          start.push_back(random_vector((size_t)cases[j].M * (cases[j].N + 5), 30 + j));
      std::vector<std::vector<float>> out[3];
      for (int t = 1; t <= 3; ++t) {
        std::vector<std::vector<float>>& C = out[t - 1];
        C = start;
        std::vector<GemmNtJob> jobs;
        for (size_t j = 0; j < cases.size(); ++j) {
          const Case& s = cases[j];
          WeightRef w;
          if (form == 0)
            w.f32 = W[j].data();
          else
            w.bf16 = Wh[j].data();
          jobs.push_back({s.M, s.N, s.K, A.data() + at[j].k0, lda, w, ldb, C[at[j].c].data(),
                          at[j].ldc, s.beta});
        }
        set_num_threads(t);
        const ThreadInvariantProducts tiled;
        gemm_nt_jobs(jobs.data(), (int)jobs.size());
      }
      set_num_threads(threads);
      for (size_t c = 0; c < start.size(); ++c) {
        EXPECT_EQ(std::memcmp(out[0][c].data(), out[1][c].data(), out[0][c].size() * sizeof(float)),
                  0)
            << "output " << c;
        EXPECT_EQ(std::memcmp(out[0][c].data(), out[2][c].data(), out[0][c].size() * sizeof(float)),
                  0)
            << "output " << c;
      }
      // The reference: every job's product in float64, in order, onto the start.
      std::vector<std::vector<double>> ref;
      for (const auto& s : start) ref.emplace_back(s.begin(), s.end());
      std::vector<std::vector<double>> bound(ref.size());
      for (size_t c = 0; c < ref.size(); ++c) bound[c].assign(ref[c].size(), 0.0);
      for (size_t j = 0; j < cases.size(); ++j) {
        const Case& s = cases[j];
        const int c = at[j].c, k0 = at[j].k0, ldc = at[j].ldc;
        for (int m = 0; m < s.M; ++m)
          for (int n = 0; n < s.N; ++n) {
            double sum = 0, mag = 0;
            for (int k = 0; k < s.K; ++k) {
              const float a = A[(size_t)m * lda + k0 + k], w = W[j][(size_t)n * ldb + k];
              const double x =
                  form == 0 ? (double)a * w
                            : (double)from_bf16(to_bf16(a)) * from_bf16(Wh[j][(size_t)n * ldb + k]);
              sum += x;
              mag += std::fabs(x);
            }
            double& r = ref[c][(size_t)m * ldc + n];
            bound[c][(size_t)m * ldc + n] =
                std::fabs(s.beta * r) * 1e-6 + bound[c][(size_t)m * ldc + n] + mag * s.K * 1.2e-7;
            r = s.beta * r + sum;
          }
      }
      for (size_t c = 0; c < ref.size(); ++c)
        for (size_t i = 0; i < ref[c].size(); ++i)
          ASSERT_LE(std::fabs(out[0][c][i] - ref[c][i]), bound[c][i] + 1e-6)
              << "output " << c << " element " << i;
    }
  }
  set_gemm_backend(backend);
}

}  // namespace
}  // namespace chainlm
