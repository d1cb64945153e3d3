// A request's side of a generation (serve/batch_scheduler.h): wait_ended() sleeps until the
// generation has ended, however many tokens come meanwhile, and take() then hands over every
// token in order without waiting; an unstreamed request without stop sequences waits so. take()
// sleeps through the tokens published during its hold (a stream's interval).
#include <gtest/gtest.h>

#include <future>

#include "serve/batch_scheduler.h"
#include "serve_test_util.h"

namespace chainlm {
namespace {

using testing::TempDir;

// A 12-token greedy generation of the tiny model whose scheduler is held before publishing
// token 3 (tokens 0-2 are out) until release().
class HeldGeneration {
 public:
  HeldGeneration() {
    testing::write_tiny_model(dir_.path());
    model_ = load_model(dir_.path());
    tok_ = load_tokenizer(find_tokenizer_in_dir(dir_.path()));
    SchedulerOptions o;
    o.threads = 1;
    hold_.arm();
    o.on_token = [this](int index) {
      if (index == 3) hold_.at_token();
    };
    scheduler_ = std::make_unique<BatchScheduler>(*model_, *tok_, o);
    GenerateOptions g;
    g.max_tokens = 12;
    g.stop_at_eos = false;
    g.sampling.temperature = 0.0f;
    std::vector<int> prompt = tok_->encode("abc");
    prompt.insert(prompt.begin(), tok_->bos_id());
    gen = std::make_shared<Generation>(*model_, *tok_, prompt, g, -1, false);
    scheduler_->submit(gen);
  }
  ~HeldGeneration() { release(); }
  bool wait_held() { return hold_.wait_held(30); }
  void release() { hold_.open(); }

 private:
  TempDir dir_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  testing::Hold hold_;

 public:
  std::shared_ptr<Generation> gen;  // (after what it uses, destroyed before it)

 private:
  std::unique_ptr<BatchScheduler> scheduler_;  // last: stopped before what its thread uses
};

TEST(Generation, WaitEndedReturnsAtTheEndThenTakeHandsOverEveryToken) {
  HeldGeneration h;
  auto ended = std::async(std::launch::async, [&] { h.gen->wait_ended(); });
  ASSERT_TRUE(h.wait_held());
  EXPECT_EQ(ended.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout)
      << "wait_ended returned with the generation still going";
  h.release();
  ASSERT_EQ(ended.wait_for(std::chrono::seconds(30)), std::future_status::ready);

  const GenerateResult r = h.gen->result();
  EXPECT_EQ(r.stop_reason, StopReason::max_tokens);
  ASSERT_EQ((int)r.tokens.size(), 12);
  std::vector<int> taken;
  std::vector<GeneratedToken> batch;
  while (h.gen->take(batch, {}))
    for (const GeneratedToken& t : batch) taken.push_back(t.id);
  EXPECT_EQ(taken, r.tokens);
}

// take() with a hold: the tokens published meanwhile do not end it, the generation's end does,
// and then every token comes in one call.
TEST(Generation, TakeSleepsThroughTokensUntilItsHoldOrTheEnd) {
  HeldGeneration h;
  ASSERT_TRUE(h.wait_held());
  std::vector<GeneratedToken> batch;
  auto took = std::async(std::launch::async, [&] {
    return h.gen->take(batch, std::chrono::steady_clock::now() + std::chrono::hours(1));
  });
  EXPECT_EQ(took.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout)
      << "take returned during its hold with tokens ready";
  h.release();
  ASSERT_EQ(took.wait_for(std::chrono::seconds(30)), std::future_status::ready)
      << "the end did not end the hold";
  ASSERT_TRUE(took.get());
  const GenerateResult r = h.gen->result();
  std::vector<int> ids;
  for (const GeneratedToken& t : batch) ids.push_back(t.id);
  EXPECT_EQ(ids, r.tokens);  // all twelve, in order, in one call
  ASSERT_EQ(batch.size(), 12u);
  EXPECT_EQ(batch[11].index, 11);
  // A hold already past: nothing left, so the end.
  EXPECT_FALSE(h.gen->take(batch, std::chrono::steady_clock::time_point{}));
  EXPECT_TRUE(batch.empty());
}

}  // namespace
}  // namespace chainlm
