// The server's HTTP worker threads (serve/http_thread_pool.h): started as connections need them,
// the last idle one reused, ended after a while idle. cpp-httplib's pool started ~270 threads at
// once and used them all in turn, each keeping freed memory: a soak grew a server's RSS by half.
#include "serve/http_thread_pool.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "serve_test_util.h"

namespace chainlm {
namespace {

using namespace std::chrono_literals;

// A gate tasks wait at until opened.
struct Latch {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return open; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(m);
    open = true;
    cv.notify_all();
  }
};

bool eventually(const std::function<bool()>& f, std::chrono::milliseconds within = 10s) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (!f()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(HttpThreadPool, AtMostItsThreadsRunAtOnceAndTheRestWaitTheirTurn) {
  HttpThreadPool pool(3, 10s);
  Latch gate;
  std::atomic<int> running{0}, most{0}, done{0};
  for (int i = 0; i < 7; ++i)
    pool.enqueue([&] {
      const int now = ++running;
      int seen = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {
      }
      gate.wait();
      --running;
      ++done;
    });
  ASSERT_TRUE(eventually([&] { return running.load() == 3; }));
  EXPECT_EQ(pool.threads(), 3);
  EXPECT_EQ(done.load(), 0);
  gate.release();
  ASSERT_TRUE(eventually([&] { return done.load() == 7; }));
  EXPECT_EQ(most.load(), 3);
  EXPECT_EQ(pool.most_threads(), 3);
}

// One connection after another: one thread serves them all (httplib's pool woke each of its
// threads in turn).
TEST(HttpThreadPool, OneTaskAfterAnotherRunsOnOneThread) {
  HttpThreadPool pool(64, 10s);
  std::set<std::thread::id> ids;
  for (int i = 0; i < 50; ++i) {
    std::atomic<bool> ran{false};
    pool.enqueue([&] {
      ids.insert(std::this_thread::get_id());
      ran = true;
    });
    ASSERT_TRUE(eventually([&] { return ran.load(); }));
    // Back among the idle (as a closed connection's thread is before the next comes): the next
    // task goes to it, not to a new thread.
    ASSERT_TRUE(eventually([&] { return pool.idle_threads() == 1; }));
  }
  EXPECT_EQ(ids.size(), 1u);
  EXPECT_EQ(pool.most_threads(), 1);
}

TEST(HttpThreadPool, IdleThreadsEndAndNewOnesStartWhenNeeded) {
  HttpThreadPool pool(8, 50ms);
  Latch gate;
  std::atomic<int> done{0};
  for (int i = 0; i < 4; ++i)
    pool.enqueue([&] {
      gate.wait();
      ++done;
    });
  ASSERT_TRUE(eventually([&] { return pool.threads() == 4; }));
  gate.release();
  ASSERT_TRUE(eventually([&] { return done.load() == 4; }));
  EXPECT_TRUE(eventually([&] { return pool.threads() == 0; })) << pool.threads();
  std::atomic<bool> ran{false};
  pool.enqueue([&] { ran = true; });
  EXPECT_TRUE(eventually([&] { return ran.load(); }));
}

TEST(HttpThreadPool, ShutdownRunsEveryTaskLeftAndEndsEveryThread) {
  HttpThreadPool pool(2, 10s);
  std::atomic<int> done{0};
  for (int i = 0; i < 6; ++i)
    pool.enqueue([&] {
      std::this_thread::sleep_for(5ms);
      ++done;
    });
  pool.shutdown();
  EXPECT_EQ(done.load(), 6);
  EXPECT_EQ(pool.threads(), 0);
  pool.shutdown();  // again (the destructor does): nothing left to wait for
}

// The hook that may end connections holding every thread: called while a task waits, not before
// nor after.
TEST(HttpThreadPool, OnSaturatedIsCalledWhileATaskWaits) {
  HttpThreadPool pool(1, 10s);
  std::atomic<int> calls{0};
  pool.on_saturated(5ms, [&] { ++calls; });
  Latch gate;
  std::atomic<int> done{0};
  pool.enqueue([&] {
    gate.wait();
    ++done;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(calls.load(), 0) << "no task waits yet";
  pool.enqueue([&] { ++done; });
  EXPECT_TRUE(eventually([&] { return calls.load() >= 2; }));
  gate.release();
  ASSERT_TRUE(eventually([&] { return done.load() == 2; }));
  std::this_thread::sleep_for(30ms);  // (a call under way when the task left may still end)
  const int after = calls.load();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(calls.load(), after);
}

int threads_of_this_process() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

// A server starts its HTTP threads as connections come: 270 at start before (and every one of
// them used in turn over a long run).
TEST(HttpThreadPool, AServerStartsItsThreadsAsConnectionsCome) {
  testing::TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true);
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 2;
  const int before = threads_of_this_process();
  testing::ServerUnderTest s(model, o);
  for (int i = 0; i < 20; ++i) {  // one connection after another
    httplib::Client c = s.client();
    ASSERT_TRUE(c.Get("/health"));
  }
  // The listener, the scheduler, a few HTTP threads (a closing connection's may still be on
  // its way back to the idle list when the next comes): far from the 270 of a fixed pool.
  EXPECT_LT(threads_of_this_process() - before, 40);
}

}  // namespace
}  // namespace chainlm
