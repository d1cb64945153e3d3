// gemm_nt_jobs: several few-row products in one parallel region give the very bits of the same
// products run one by one on one thread, in every weight form (fp32 panels included), with odd
// column counts (each thread's share starts mid-matrix), weights entered a few rows in (a
// panel's middle) and row lengths that are not whole quantization blocks. Products of bf16
// weights share one rounding of each input (the most rows and columns any of them reads), and
// quantized ones one quantization of it: the products here read two inputs, with different row
// and column counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "bf16_path.h"
#include "core/threads.h"
#include "gradcheck.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace chainlm {
namespace {

using test::random_vector;

// The weights of one product in the form asked for.
struct Weight {
  std::vector<float> f32;
  std::vector<bf16_t> bf16;
  std::vector<uint8_t> quant;
  std::vector<float> panels;
  WeightRef ref;
};

// Rows the products skip at the start of their weights.
constexpr int kFirstRow = 7;

Weight make_weight(int N, int ldb, int form, uint64_t seed) {
  Weight w;
  N += kFirstRow;
  w.f32 = random_vector((size_t)N * ldb, seed);
  if (form == 1) {
    w.bf16.resize(w.f32.size());
    for (size_t i = 0; i < w.f32.size(); ++i) w.bf16[i] = to_bf16(w.f32[i]);
    w.ref.bf16 = w.bf16.data();
  } else if (form == 2 || form == 3) {
    const QuantType type = form == 2 ? QuantType::kQ8_0 : QuantType::kQ4_0;
    const size_t row = quant_row_bytes(type, ldb);
    w.quant.resize(row * N);
    for (int n = 0; n < N; ++n)
      quantize_row(type, w.f32.data() + (size_t)n * ldb, ldb, w.quant.data() + row * n);
    w.ref.quant = w.quant.data();
    w.ref.quant_type = type;
  } else if (form == 4) {
    w.panels.resize(panel_floats(N, ldb));
    pack_panels(N, ldb, w.f32.data(), ldb, w.panels.data());
    w.ref.panels = w.panels.data();
  } else {
    w.ref.f32 = w.f32.data();
  }
  w.ref = w.ref.rows(kFirstRow, ldb);
  return w;
}

const char* form_name(int form) {
  static const char* names[] = {"fp32", "bf16",        "q8_0",
                                "q4_0", "fp32 panels", "bf16 without bf16 instructions"};
  return names[form];
}

TEST(GemmJobs, OneRegionGivesTheBitsOfTheProductsOneByOne) {
  const int threads = num_threads();
  for (int form = 0; form < 6; ++form) {
    // Form 5: bf16 weights on the path of CPUs without bf16 instructions.
    const test::Bf16Path path(form == 5);
    const int wform = form == 5 ? 1 : form;
    // (rows, N, K, ldb, beta): q, k, v-like products of one input, and blocks of another.
    struct Shape {
      int M, N, K, ldb;
      float beta;
    };
    // The fifth reads a prefix of the first input's columns (a Chain-of-Linear's block), as
    // quantized for the first two: its rows' blocks are further apart than it reads.
    const std::vector<Shape> shapes = {{1, 517, 256, 256, 0.0f},
                                       {8, 301, 256, 256, 0.0f},
                                       {5, 263, 77, 80, 1.0f},
                                       {3, 777, 512, 530, 0.5f},
                                       {6, 131, 128, 160, 0.0f}};
    const int lda = 600;
    const auto A = random_vector((size_t)8 * lda, 3), A2 = random_vector((size_t)8 * lda, 4);
    std::vector<Weight> weights;
    std::vector<std::vector<float>> C0, C1, C2;
    std::vector<GemmNtJob> jobs1, jobs2;
    for (size_t j = 0; j < shapes.size(); ++j) {
      const Shape& s = shapes[j];
      weights.push_back(make_weight(s.N, s.ldb, wform, 10 + j));
      C0.push_back(random_vector((size_t)s.M * (s.N + 3), 20 + j));
    }
    C1 = C0;
    C2 = C0;
    for (size_t j = 0; j < shapes.size(); ++j) {
      const Shape& s = shapes[j];
      // A's last product reads fewer rows and columns than its widest one.
      const float* a = j == 3 ? A2.data() : A.data();
      jobs1.push_back(
          {s.M, s.N, s.K, a, lda, weights[j].ref, s.ldb, C1[j].data(), s.N + 3, s.beta});
      jobs2.push_back(
          {s.M, s.N, s.K, a, lda, weights[j].ref, s.ldb, C2[j].data(), s.N + 3, s.beta});
    }
    set_num_threads(1);
    for (const GemmNtJob& g : jobs1)
      gemm_nt(g.M, g.N, g.K, g.A, g.lda, g.B, g.ldb, g.C, g.ldc, g.beta);
    set_num_threads(2);
    gemm_nt_jobs(jobs2.data(), (int)jobs2.size());
    set_num_threads(threads);
    for (size_t j = 0; j < shapes.size(); ++j) {
      ASSERT_EQ(std::memcmp(C1[j].data(), C2[j].data(), C1[j].size() * sizeof(float)), 0)
          << form_name(form) << ": product " << j << " differs from the product alone";
      ASSERT_NE(std::memcmp(C1[j].data(), C0[j].data(), C1[j].size() * sizeof(float)), 0)
          << form_name(form) << ": product " << j << " wrote nothing";
    }
  }
}

// A job's `then` runs once per thread's share of its columns, after they are final, and sees the
// same columns of an earlier job of the same N and turn final too (a batched step's SwiGLU reads
// the gate product's columns when the up product's are done), whichever thread the turn gives
// the larger share.
struct ThenLog {
  const std::vector<float>* want_gate;
  const std::vector<float>* want_up;
  const float* gate;
  int ld;
  std::vector<std::array<int, 3>> calls;  // thread, n0, n1
  bool final_when_called = true;
};
void check_then(const GemmNtJob& job, int n0, int n1, const void* ctx) {
  auto& log = *static_cast<ThenLog*>(const_cast<void*>(ctx));
  bool ok = true;
  for (int m = 0; m < job.M; ++m)
    for (int n = n0; n < n1; ++n) {
      ok &= job.C[(long)m * log.ld + n] == (*log.want_up)[(size_t)m * log.ld + n];
      ok &= log.gate[(long)m * log.ld + n] == (*log.want_gate)[(size_t)m * log.ld + n];
    }
#pragma omp critical(gemm_jobs_test_then)
  {
    log.calls.push_back({omp_get_thread_num(), n0, n1});
    log.final_when_called &= ok;
  }
}

TEST(GemmJobs, ThenSeesItsColumnsAndAnEarlierJobsFinalOnceEach) {
  const int threads = num_threads();
  for (int form : {0, 1, 4}) {
    const int M = 8, N = 301, K = 256, ld = N + 3;
    const auto A = random_vector((size_t)M * K, 5);
    const Weight wg = make_weight(N, K, form, 31), wu = make_weight(N, K, form, 32);
    std::vector<float> want_gate((size_t)M * ld, 0.0f), want_up((size_t)M * ld, 0.0f);
    set_num_threads(1);
    gemm_nt(M, N, K, A.data(), K, wg.ref, K, want_gate.data(), ld, 0.0f);
    gemm_nt(M, N, K, A.data(), K, wu.ref, K, want_up.data(), ld, 0.0f);
    int larger_share[2] = {-1, -1};  // by turn: the thread whose share had more columns
    for (int t : {1, 2})
      for (int turn : {0, 1}) {
      std::vector<float> gate((size_t)M * ld, 0.0f), up((size_t)M * ld, 0.0f);
      ThenLog log{&want_gate, &want_up, gate.data(), ld, {}, true};
      std::vector<GemmNtJob> jobs = {{M, N, K, A.data(), K, wg.ref, K, gate.data(), ld, 0.0f},
                                     {M, N, K, A.data(), K, wu.ref, K, up.data(), ld, 0.0f}};
      jobs[1].then = &check_then;
      jobs[1].then_ctx = &log;
      for (GemmNtJob& j : jobs) j.turn = turn;
      set_num_threads(t);
      gemm_nt_jobs(jobs.data(), (int)jobs.size());
      set_num_threads(1);
      EXPECT_TRUE(log.final_when_called) << form_name(form) << ", " << t << " thread(s)";
      // Every column once, one range per thread.
      std::vector<int> seen(N, 0);
      std::vector<int> by_thread(2, 0), columns(2, 0);
      for (const auto& [thread, n0, n1] : log.calls) {
        ++by_thread.at(thread);
        columns.at(thread) += n1 - n0;
        for (int n = n0; n < n1; ++n) ++seen[n];
      }
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), N)
          << form_name(form) << ", " << t << " thread(s)";
      EXPECT_EQ((int)log.calls.size(), t) << form_name(form);
      if (t == 2) {
        EXPECT_EQ(by_thread, (std::vector<int>{1, 1})) << form_name(form);
        ASSERT_NE(columns[0], columns[1]) << "the shares should be uneven here";
        larger_share[turn] = columns[1] > columns[0];
      }
    }
    // The turn hands the larger share to the other thread (so that a region of uneven
    // products, a CoLM FFN's 11-panel blocks, does not load one thread with every extra panel).
    EXPECT_NE(larger_share[0], larger_share[1]) << form_name(form);
  }
  set_num_threads(threads);
}

}  // namespace
}  // namespace chainlm
