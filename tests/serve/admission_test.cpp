// Admission: a bounded number of sessions, a bounded first-come first-served queue, refusals
// beyond it, and shutdown waking the waiters.
#include "serve/admission.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace chainlm {
namespace {

void wait_until(const std::function<bool()>& cond) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!cond() && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(cond());
}

TEST(Admission, RunsUpToMaxSessionsAndRefusesWithoutQueue) {
  Admission a(2, 0);
  auto s1 = a.acquire(), s2 = a.acquire();
  ASSERT_TRUE(s1 && s2);
  EXPECT_EQ(a.running(), 2);
  EXPECT_EQ(a.acquire(), nullptr);
  s1.reset();
  EXPECT_EQ(a.running(), 1);
  EXPECT_NE(a.acquire(), nullptr);  // admitted, and released at once
  EXPECT_EQ(a.running(), 1);
}

TEST(Admission, QueueIsBoundedAndFirstComeFirstServed) {
  Admission a(1, 2);
  auto holder = a.acquire();
  std::vector<int> order;
  std::mutex m;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.emplace_back([&, i] {
      auto slot = a.acquire();
      ASSERT_TRUE(slot);
      std::lock_guard<std::mutex> lock(m);
      order.push_back(i);
    });
    wait_until([&] { return a.waiting() == i + 1; });  // i queues before i + 1
  }
  EXPECT_EQ(a.acquire(), nullptr);  // the queue is full
  holder.reset();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  EXPECT_EQ(a.running(), 0);
  EXPECT_EQ(a.waiting(), 0);
}

TEST(Admission, ShutdownRefusesWaiters) {
  Admission a(1, 1);
  auto holder = a.acquire();
  std::atomic<bool> refused{false};
  std::thread waiter([&] { refused = a.acquire() == nullptr; });
  wait_until([&] { return a.waiting() == 1; });
  a.shutdown();
  waiter.join();
  EXPECT_TRUE(refused);
  EXPECT_EQ(a.acquire(), nullptr);
}

}  // namespace
}  // namespace chainlm
