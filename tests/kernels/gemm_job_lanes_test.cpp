// gemm_job_lanes: which products of a region must run in order on the same columns (one lane),
// and how finely each lane is cut into the units the threads claim.
#include "kernels/gemm_job_lanes.h"

#include <gtest/gtest.h>

#include <vector>

#include "kernels/gemm_panels.h"

namespace chainlm {
namespace {

GemmNtJob job(int N, int K, int turn = 0) {
  GemmNtJob g{1, N, K, nullptr, K, WeightRef{}, K, nullptr, N, 0.0f};
  static const float weight = 0.0f;
  g.B.f32 = &weight;
  g.turn = turn;
  return g;
}

TEST(GemmJobLanes, JobsOfOneNAndTurnShareALaneInTheirOrder) {
  // q, k, v of a step (k and v alike), then gate and up blocks of two chains (turns 0 and 1).
  const std::vector<GemmNtJob> jobs = {job(512, 512),   job(128, 512),    job(128, 512),
                                       job(352, 128),   job(352, 256, 1), job(352, 128),
                                       job(352, 256, 1)};
  std::vector<JobLane> lanes;
  std::vector<int> order;
  gemm_job_lanes(jobs.data(), (int)jobs.size(), 2, lanes, order);
  ASSERT_EQ(lanes.size(), 4u);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 5, 4, 6}));
  const int begins[] = {0, 1, 3, 5}, ends[] = {1, 3, 5, 7};
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(lanes[l].begin, begins[l]) << "lane " << l;
    EXPECT_EQ(lanes[l].end, ends[l]) << "lane " << l;
    EXPECT_GE(lanes[l].parts, 2) << "lane " << l << ": at least one part per thread";
  }
  // 512 x 512 floats (1 MiB) is cut by bytes; 352 x 128 x 2 (352 KiB) into fewer parts.
  EXPECT_EQ(lanes[0].parts, (int)(512L * 512 * 4 / kJobUnitWeightBytes));
  EXPECT_EQ(lanes[2].parts, (int)(2L * 352 * 128 * 4 / kJobUnitWeightBytes));
  // bf16 weights: half the bytes, half the parts.
  std::vector<GemmNtJob> bf16 = {job(512, 512)};
  static const bf16_t w = 0;
  bf16[0].B = WeightRef{};
  bf16[0].B.bf16 = &w;
  gemm_job_lanes(bf16.data(), 1, 2, lanes, order);
  EXPECT_EQ(lanes[0].parts, (int)(512L * 512 * 2 / kJobUnitWeightBytes));
}

TEST(GemmJobLanes, SmallLanesGetAPartPerThreadAndPartsKeepSixteenColumns) {
  std::vector<JobLane> lanes;
  std::vector<int> order;
  const std::vector<GemmNtJob> small = {job(8, 64)};
  gemm_job_lanes(small.data(), 1, 3, lanes, order);
  EXPECT_EQ(lanes[0].parts, 3);
  // 64 columns of 64 KiB rows: bytes would cut 40 parts, columns allow 4.
  const std::vector<GemmNtJob> long_rows = {job(64, 16384)};
  gemm_job_lanes(long_rows.data(), 1, 2, lanes, order);
  EXPECT_EQ(lanes[0].parts, 4);
}

TEST(GemmJobLanes, PartsCoverEveryColumnOnceAndPanelsWhole) {
  for (int phase : {0, 5})
    for (int N : {1, 31, 33, 301, 2001})
      for (int parts : {1, 2, 3, 7}) {
        GemmNtJob plain = job(N, 64), panels = job(N, 64);
        static const float p = 0.0f;
        panels.B = WeightRef{};
        panels.B.panels = &p;
        panels.B.panel_row = phase;
        for (const GemmNtJob* g : {&plain, &panels}) {
          std::vector<int> seen(N, 0);
          for (int part = 0; part < parts; ++part) {
            int n0, n1;
            job_part_columns(*g, part, parts, &n0, &n1);
            for (int n = n0; n < n1; ++n) ++seen[n];
            // A panel part starts on a panel's first row (or at the weight's first column).
            if (g == &panels && n1 > n0 && n0 > 0) {
              EXPECT_EQ((phase + n0) % kPanel, 0) << "N " << N << ", part " << part;
            }
          }
          for (int n = 0; n < N; ++n)
            ASSERT_EQ(seen[n], 1) << "N " << N << ", " << parts << " parts, column " << n
                                  << (g == &panels ? " (panels)" : "");
        }
      }
}

TEST(GemmJobLanes, PanelWeightsOfAnotherPhaseGetTheirOwnLane) {
  static const float p = 0.0f;
  std::vector<GemmNtJob> jobs = {job(100, 64), job(100, 64), job(100, 64)};
  for (int j : {1, 2}) {
    jobs[j].B = WeightRef{};
    jobs[j].B.panels = &p;
    jobs[j].B.panel_row = j == 1 ? 0 : 7;
  }
  std::vector<JobLane> lanes;
  std::vector<int> order;
  gemm_job_lanes(jobs.data(), 3, 2, lanes, order);
  EXPECT_EQ(lanes.size(), 3u);
}

}  // namespace
}  // namespace chainlm
