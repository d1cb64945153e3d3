// The data-parallel pieces in one process (bucket plan, single-rank communicator, batches that
// do not depend on how they are split), and the gradient reducer on 2 real MPI ranks: the test
// binary runs itself under mpirun. End-to-end runs are in tests/cli/distributed_train_test.cpp.
#include "train/distributed.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "../cli/run_mpi.h"
#include "core/error.h"
#include "core/rng.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;

TEST(GradientReducer, BucketsCoverTheBufferFromTheEndDownSplitAtReadyPoints) {
  const std::size_t n = 1000;
  const std::vector<std::size_t> ready = {100, 400, 950};
  GradientReducer r(Communicator::single(), nullptr, n, ready, 128, true);
  EXPECT_FALSE(r.overlap());  // one rank: nothing to overlap
  const auto& b = r.buckets();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front().second, n);
  EXPECT_EQ(b.back().first, 0u);
  for (std::size_t i = 0; i < b.size(); ++i) {
    EXPECT_LT(b[i].first, b[i].second);
    EXPECT_LE(b[i].second - b[i].first, 128u);
    if (i + 1 < b.size()) {
      EXPECT_EQ(b[i + 1].second, b[i].first);
    }
    for (std::size_t p : ready) EXPECT_FALSE(b[i].first < p && p < b[i].second) << "bucket straddles " << p;
  }
  // [950, 1000) is one bucket; [400, 950) is five of at most 128.
  using Range = std::pair<std::size_t, std::size_t>;
  EXPECT_EQ(b[0], Range(950, 1000));
  EXPECT_EQ(b[1], Range(822, 950));
  // With one rank, ready() and finish() reduce nothing and leave the buffer alone.
  std::vector<float> g(n, 1.5f);
  GradientReducer one(Communicator::single(), g.data(), n, ready, 128, false);
  one.begin();
  one.ready(400);
  one.finish();
  for (float x : g) ASSERT_EQ(x, 1.5f);
}

TEST(Communicator, OneProcessWithoutMpirunNeverStartsMpi) {
  if (launched_by_mpi()) GTEST_SKIP() << "running under mpirun";
  const Communicator& w = Communicator::world();
  EXPECT_EQ(w.size(), 1);
  EXPECT_EQ(w.rank(), 0);
  EXPECT_TRUE(w.is_root());
  EXPECT_EQ(w.first_error(""), "");
  EXPECT_EQ(w.first_error("x"), "x");
  double v[2] = {1, 2};
  w.allreduce_sum(v, 2);
  EXPECT_EQ(v[0], 1);
  EXPECT_GE(default_threads_per_rank(w), 1);
}

// Row g of a step's global batch is keyed by (seed, step, g) alone: micro-batches of 1, 2 or 4
// sequences train on the same data, so their losses agree to rounding.
// Each rank of a run under mpirun holds OpenMPI's buffers besides its share of the batch: the
// estimate fell with more ranks (smaller micro-batches) while the peak stayed (measured in
// bench/RESULTS.md, "Memory under mpirun"), so --memory-limit and the available-memory check
// let through runs that did not fit.
TEST(Trainer, TheMemoryEstimateOfARankCountsMpisBuffers) {
  // The measured "mid" model of bench/RESULTS.md.
  const ModelConfig c = config_from_json(
      nlohmann::json::parse(R"({"dim": 256, "n_layers": 4, "n_heads": 8, "n_kv_heads": 4,
                                "ffn_dim": 688, "vocab_size": 512, "max_seq_len": 64})"),
      "test");
  TrainOptions o;
  o.batch_size = 4;
  o.seq_len = 64;
  const MemoryEstimate one = Trainer::memory_estimate(c, o, 1),
                       two = Trainer::memory_estimate(c, o, 2);
  uint64_t mpi = 0;
  for (const auto& [what, bytes] : two.parts)
    if (what == "MPI buffers") mpi = bytes;
  EXPECT_GE(mpi, 8ull << 20) << two.describe();
  for (const auto& [what, bytes] : one.parts) EXPECT_NE(what, "MPI buffers");
  // The peaks measured: one process 107.3 MiB, each of 2 ranks 106.4: the estimates ~7 MiB
  // below both, not 17 below the second.
  EXPECT_GT((double)two.total(), 0.9 * (double)one.total())
      << one.describe() << " / " << two.describe();
}

TEST(Trainer, MicroBatchSizeDoesNotChangeTheData) {
  const testing::TempDir tmp;  // removed however the test ends
  const std::string root = tmp.path().string();
  const std::string data = root + "/data";
  std::string text;
  Rng rng(3);
  static const char* words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "\n"};
  while (text.size() < 20000) text += words[rng.below(7)];
  test::make_byte_data_dir(text, data, 0.1);
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.ffn_dim = 64;
  c.vocab_size = 258;
  c.chains = {1, 1};
  c.max_seq_len = 32;
  validate_config(c, "test");
  std::vector<std::vector<double>> losses;
  for (int micro : {4, 2, 1}) {
    Model m(c);
    m.init_random(1);
    TrainOptions o;
    o.data_dir = data;
    o.out_dir = root + "/run" + std::to_string(micro);
    o.steps = 4;
    o.batch_size = 4;
    o.micro_batch = micro;
    o.seq_len = 16;
    o.quiet = true;
    Trainer t(m, o);
    EXPECT_EQ(t.rows_per_rank(), 4);
    EXPECT_EQ(t.micro_batch(), micro);
    std::vector<double> l;
    for (int s = 0; s < 4; ++s) l.push_back(t.train_step().loss);
    losses.push_back(l);
  }
  for (int s = 0; s < 4; ++s) {
    EXPECT_NEAR(losses[0][s], losses[1][s], 1e-5) << "step " << s;
    EXPECT_NEAR(losses[0][s], losses[2][s], 1e-5) << "step " << s;
  }
  // A micro-batch larger than the batch is a cap, not an error.
  Model m(c);
  TrainOptions o;
  o.data_dir = data;
  o.out_dir = root + "/cap";
  o.batch_size = 4;
  o.micro_batch = 16;
  o.seq_len = 16;
  EXPECT_EQ(Trainer(m, o).micro_batch(), 4);
  o.micro_batch = 3;
  EXPECT_THROW(Trainer(m, o), Error);
}

// On 2 ranks every element is the exact sum of the two ranks' values (chosen so that float
// addition is exact), whatever the bucket size, with and without the communication thread, and
// whether the backward announces finished layers or not.
void check_reducer_on_ranks() {
  const Communicator& comm = Communicator::world();
  ASSERT_EQ(comm.size(), 2);
  EXPECT_TRUE(comm.thread_serialized()) << "OpenMPI without MPI_THREAD_SERIALIZED: no overlap";
  const std::size_t n = 300007;
  const std::vector<std::size_t> ready = {1000, 50000, 123457, 299000};
  auto value = [](std::size_t i, int rank) { return (float)((i * 7 + rank * 3) % 1024) * 0.25f; };
  for (std::size_t bucket : {std::size_t(1000), std::size_t(65536), std::size_t(1) << 22}) {
    for (bool overlap : {false, true}) {
      std::vector<float> g(n);
      GradientReducer r(comm, g.data(), n, ready, bucket, overlap);
      EXPECT_EQ(r.overlap(), overlap && comm.thread_serialized());
      for (int step = 0; step < 3; ++step) {
        for (std::size_t i = 0; i < n; ++i) g[i] = value(i, comm.rank()) + (float)step;
        r.begin();
        if (step > 0)
          for (auto it = ready.rbegin(); it != ready.rend(); ++it) r.ready(*it);
        r.finish();
        for (std::size_t i = 0; i < n; ++i)
          ASSERT_EQ(g[i], value(i, 0) + value(i, 1) + 2.0f * step)
              << "element " << i << ", bucket " << bucket << ", overlap " << overlap << ", step " << step;
        EXPECT_GT(r.comm_seconds(), 0.0);
      }
    }
  }
  std::string e = comm.first_error(comm.rank() == 1 ? "rank 1 failed" : "");
  EXPECT_EQ(e, "rank 1 failed");
  double x[1] = {(double)comm.rank() + 1};
  comm.allreduce_max(x, 1);
  EXPECT_EQ(x[0], 2.0);
}

TEST(GradientReducer, SumsExactlyOnTwoRanks) {
  if (launched_by_mpi()) {
    check_reducer_on_ranks();
    return;
  }
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string cmd = testing::mpirun_command(2, 120) + " '" + self +
                          "' --gtest_filter=GradientReducer.SumsExactlyOnTwoRanks";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << cmd;
}

}  // namespace
}  // namespace chainlm
