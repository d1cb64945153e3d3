// A request's side of a generation (serve/batch_scheduler.h): wait_ended() sleeps until the
// generation has ended, however many tokens come meanwhile, and take() then hands over every
// token in order without waiting; an unstreamed request without stop sequences waits so. take()
// sleeps through the tokens published during its hold (a stream's interval).
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "serve/batch_scheduler.h"
#include "serve_test_util.h"

namespace chainlm {
namespace {

using testing::TempDir;

TEST(Generation, WaitEndedReturnsAtTheEndThenTakeHandsOverEveryToken) {
  TempDir dir;
  testing::write_tiny_model(dir.path());
  const std::unique_ptr<Model> model = load_model(dir.path());
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(find_tokenizer_in_dir(dir.path()));

  // The scheduler is held at its fourth token until released.
  std::mutex m;
  std::condition_variable cv;
  bool held = false, released = false;
  SchedulerOptions o;
  o.threads = 1;
  o.on_token = [&](int index) {
    if (index != 3) return;
    std::unique_lock<std::mutex> lock(m);
    held = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  };
  BatchScheduler scheduler(*model, *tok, o);
  GenerateOptions g;
  g.max_tokens = 12;
  g.stop_at_eos = false;
  g.sampling.temperature = 0.0f;
  std::vector<int> prompt = tok->encode("abc");
  prompt.insert(prompt.begin(), tok->bos_id());
  auto gen = std::make_shared<Generation>(*model, *tok, prompt, g, -1, false);
  scheduler.submit(gen);

  auto ended = std::async(std::launch::async, [&] { gen->wait_ended(); });
  {
    std::unique_lock<std::mutex> lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return held; }));
  }
  EXPECT_EQ(ended.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout)
      << "wait_ended returned with the generation still going";
  {
    std::lock_guard<std::mutex> lock(m);
    released = true;
  }
  cv.notify_all();
  ASSERT_EQ(ended.wait_for(std::chrono::seconds(30)), std::future_status::ready);

  const GenerateResult r = gen->result();
  EXPECT_EQ(r.stop_reason, StopReason::max_tokens);
  ASSERT_EQ((int)r.tokens.size(), 12);
  std::vector<int> taken;
  std::vector<GeneratedToken> batch;
  while (gen->take(batch, {}))
    for (const GeneratedToken& t : batch) taken.push_back(t.id);
  EXPECT_EQ(taken, r.tokens);
}

// take() with a hold: the tokens published meanwhile do not end it, the generation's end does,
// and then every token comes in one call.
TEST(Generation, TakeSleepsThroughTokensUntilItsHoldOrTheEnd) {
  TempDir dir;
  testing::write_tiny_model(dir.path());
  const std::unique_ptr<Model> model = load_model(dir.path());
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(find_tokenizer_in_dir(dir.path()));
  std::mutex m;
  std::condition_variable cv;
  bool held = false, released = false;
  SchedulerOptions o;
  o.threads = 1;
  o.on_token = [&](int index) {  // held before publishing token 3: tokens 0-2 are out
    if (index != 3) return;
    std::unique_lock<std::mutex> lock(m);
    held = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  };
  BatchScheduler scheduler(*model, *tok, o);
  GenerateOptions g;
  g.max_tokens = 12;
  g.stop_at_eos = false;
  g.sampling.temperature = 0.0f;
  std::vector<int> prompt = tok->encode("abc");
  prompt.insert(prompt.begin(), tok->bos_id());
  auto gen = std::make_shared<Generation>(*model, *tok, prompt, g, -1, false);
  scheduler.submit(gen);
  {
    std::unique_lock<std::mutex> lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return held; }));
  }
  std::vector<GeneratedToken> batch;
  auto took = std::async(std::launch::async, [&] {
    return gen->take(batch, std::chrono::steady_clock::now() + std::chrono::hours(1));
  });
  EXPECT_EQ(took.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout)
      << "take returned during its hold with tokens ready";
  {
    std::lock_guard<std::mutex> lock(m);
    released = true;
  }
  cv.notify_all();
  ASSERT_EQ(took.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "the end did not end the hold";
  ASSERT_TRUE(took.get());
  const GenerateResult r = gen->result();
  std::vector<int> ids;
  for (const GeneratedToken& t : batch) ids.push_back(t.id);
  EXPECT_EQ(ids, r.tokens);  // all twelve, in order, in one call
  ASSERT_EQ(batch.size(), 12u);
  EXPECT_EQ(batch[11].index, 11);
  // A hold already past: nothing left, so the end.
  EXPECT_FALSE(gen->take(batch, std::chrono::steady_clock::time_point{}));
  EXPECT_TRUE(batch.empty());
}

}  // namespace
}  // namespace chainlm
