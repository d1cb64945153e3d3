// The thread helpers: small work never enters a parallel region (libgomp ends every region, even
// a one-thread one, with a system call), large work is spread over the threads, and either way
// every index runs exactly once; per-thread scratch buffers are kept apart by owner and slot.
#include "core/threads.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/thread_scratch.h"

namespace chainlm {
namespace {

// Restores the OpenMP thread count a test changed.
struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

TEST(Threads, SmallWorkOrOneThreadStaysOutOfParallelRegions) {
  for (int threads : {1, 2, 4}) {
    const ThreadCount count(threads);
    EXPECT_EQ(worth_parallel(kParallelMinWork), threads > 1) << threads;
    EXPECT_FALSE(worth_parallel(kParallelMinWork - 1)) << threads;
    EXPECT_FALSE(worth_parallel(1000, /*min_work=*/1001)) << threads;
    // Every index once, and in a parallel region only when the work is worth it.
    for (long work : {10L, kParallelMinWork}) {
      const long n = 37;
      std::vector<int> seen(n, 0), in_region(n, -1);
      parallel_for(n, work, [&](long i) {
        ++seen[i];
        in_region[i] = omp_in_parallel() ? 1 : 0;
      });
      const int expected_region = worth_parallel(work) ? 1 : 0;
      for (long i = 0; i < n; ++i) {
        EXPECT_EQ(seen[i], 1) << "index " << i << ", work " << work << ", threads " << threads;
        EXPECT_EQ(in_region[i], expected_region) << "index " << i << ", work " << work << ", threads " << threads;
      }
    }
    int calls = 0, in_region = 0;
    for_column_ranges(100, 10, [&](int n0, int n1) {
      ++calls;
      in_region += omp_in_parallel();
      EXPECT_EQ(n0, 0);
      EXPECT_EQ(n1, 100);
    });
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(in_region, 0);
  }
}

TEST(Threads, ColumnRangesCoverEveryColumnOnce) {
  const ThreadCount count(3);
  std::vector<int> seen(1000, 0);
  for_column_ranges(1000, kParallelMinWork, [&](int n0, int n1) {
    for (int n = n0; n < n1; ++n) ++seen[n];  // ranges are disjoint: no two threads write one column
  });
  for (int n = 0; n < 1000; ++n) ASSERT_EQ(seen[n], 1) << n;
}

// The threads this process has now (libgomp's idle pools included).
int process_threads() {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task"))
    n += e.is_directory() ? 1 : 0;
  return n;
}

TEST(Threads, RunOnOwnThreadLeavesNoIdleOpenMpThreadsBehind) {
  const ThreadCount count(3);
  const int before = process_threads();
  int inside = 0, team = 0;
  run_on_own_thread([&] {
    inside = omp_get_max_threads();
    // Wider than any pool an earlier test left on this thread: run here, it would grow it.
#pragma omp parallel num_threads(16)
    {
#pragma omp single
      team = omp_get_num_threads();
    }
  });
  EXPECT_EQ(inside, 3) << "the calling thread's OpenMP thread count";
  EXPECT_EQ(team, 16);
  // The pool's threads end with the thread that owned it, shortly after it. (Fewer is fine: a
  // pool an earlier region left larger than a later one loses its spare threads meanwhile.)
  int after = process_threads();
  for (int i = 0; i < 500 && after > before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    after = process_threads();
  }
  EXPECT_LE(after, before) << "threads left behind by run_on_own_thread";
  EXPECT_THROW(run_on_own_thread([] { throw std::runtime_error("from the thread"); }),
               std::runtime_error);
}

struct OwnerA;
struct OwnerB;

TEST(ThreadScratch, OwnersAndSlotsHaveBuffersOfTheirOwnOnACacheLine) {
  float* a0 = thread_scratch<float, OwnerA, 2>(0, 100);
  float* a1 = thread_scratch<float, OwnerA, 2>(1, 100);
  float* b0 = thread_scratch<float, OwnerB>(0, 100);
  EXPECT_NE(a0, a1);
  EXPECT_NE(a0, b0);
  for (const float* p : {a0, a1, b0}) EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  a0[0] = 1.5f;
  a0[99] = 2.5f;
  // Asking for no more keeps the buffer and what it holds; a larger request grows it.
  float* again = thread_scratch<float, OwnerA, 2>(0, 50);
  EXPECT_EQ(again, a0);
  EXPECT_EQ(a0[0], 1.5f);
  float* grown = thread_scratch<float, OwnerA, 2>(0, 1 << 16);
  EXPECT_EQ(grown[99], 2.5f);
  // Another thread gets its own buffer.
  float* other = nullptr;
#pragma omp parallel num_threads(2)
  {
    if (omp_get_thread_num() == 1) other = thread_scratch<float, OwnerA, 2>(0, 100);
  }
  ASSERT_NE(other, nullptr);
  EXPECT_NE(other, grown);
}

}  // namespace
}  // namespace chainlm

namespace chainlm {
namespace {

// The count asked for is the count run: OpenBLAS's own setting capped OpenMP's at 64, so
// train and bench ran 64 threads for --threads 100 (serve ran 100).
TEST(Threads, TheCountAskedForIsNotCappedByOpenBlas) {
  const int saved = num_threads();
  set_num_threads(100);
  EXPECT_EQ(num_threads(), 100);
  set_num_threads(saved);
  EXPECT_EQ(num_threads(), saved);
}

}  // namespace
}  // namespace chainlm
