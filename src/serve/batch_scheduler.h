#pragma once
// Continuous batching for `chainlm serve` (docs/serving.md, "Batching"). One scheduler thread
// does all of the server's model compute. Each turn it runs one decoding step for every
// generation past its prompt (and every prompt with only its last token left), as one batched
// pass (infer/batch_decode.h: each request keeps its own sub-model, chain schedule and
// sampling), then reads prompt pieces of at most
// prefill_chunk tokens, oldest prompt first, until it has read prefill_chunk tokens: a long
// prompt delays the others' next tokens by one piece, not by the whole prompt, and many short
// prompts are read in one turn. Generations join between turns and leave when they end or are
// cancelled.
//
// A request's tokens do not depend on the others: decoding steps are batch-invariant bit for
// bit, and a prompt is always prefilled in the same pieces.
#include "infer/kv_cache.h"
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "infer/generator.h"
#include "io/tokenizer.h"
#include "model/model.h"
#include "serve/logprobs.h"

namespace chainlm {

class InferenceSession;

// One generated token as the scheduler hands it to the request's thread.
struct GeneratedToken {
  int index = 0;   // 0-based among the generated tokens
  int id = 0;
  int chains = 0;  // sub-model that produced it
  std::string text;
  TokenLogprob logprob;  // when the generation asks for log-probabilities
};

// One request's generation, shared by the thread that answers the request (the consumer) and
// the scheduler (the producer).
class Generation {
 public:
  // prompt_tokens start with BOS; logprobs >= 0 asks each token's log-probability with that
  // many alternatives, and with prompt_logprobs the prompt's tokens' too (each after BOS; the
  // prompt then runs with the requested chains throughout, and max_tokens 0 still reads it).
  // Checks the options as generate_tokens does (chainlm::Error).
  Generation(const Model& model, const Tokenizer& tok, std::vector<int> prompt_tokens,
             const GenerateOptions& options, int logprobs = -1, bool prompt_logprobs = false);

  // Every token ready, in order: first sleeps until `hold_until` (tokens published meanwhile
  // do not wake this thread) or the end, then waits for at least one token. False once
  // generation has ended and every token has been taken; throws chainlm::Error if generation
  // failed.
  bool take(std::vector<GeneratedToken>& out, std::chrono::steady_clock::time_point hold_until);
  // Waits until the generation has ended, without waking for each token (a request that nothing
  // can end early: its tokens are then taken at once).
  void wait_ended();
  // The same for at most `timeout`: true if it has ended.
  bool wait_ended_for(std::chrono::milliseconds timeout);
  // Stops generating (the client went away, or a stop sequence appeared) and waits until the
  // scheduler has let go of it. One still waiting for a session leaves at the scheduler's next
  // turn without ever running.
  void cancel();
  // cancel() without the wait. A request ending its choices marks them all first: cancelling them
  // one at a time let the next choice still waiting take each session the last one freed.
  void mark_cancelled() { cancelled_ = true; }
  // Whether it got a session (began to run), and how long it waited for one after submit()
  // (seconds; so far, while it waits).
  bool joined() const { return joined_.load(); }
  // Waits at most `timeout` for it to get a session (or end): true if it has.
  bool wait_joined_for(std::chrono::milliseconds timeout);
  double session_wait_seconds() const;
  // How long it has held its session (until it ended); 0 if it never got one.
  double session_seconds() const;
  // After take() returned false or cancel(): prompt, tokens produced (all of them, even those
  // not taken), chains, timings and why it ended. Its text stays empty: the request's thread
  // builds the text from the tokens it takes.
  GenerateResult result() const;
  // With prompt_logprobs: waits until the prompt has been read, then the log-probabilities of
  // its tokens after BOS. Throws chainlm::Error if generation failed first.
  std::vector<TokenLogprob> prompt_logprobs();

 private:
  friend class BatchScheduler;
  using Clock = std::chrono::steady_clock;
  void publish(GeneratedToken t);
  void end(StopReason reason, std::string error = "");

  const std::vector<int> prompt_;
  const GenerateOptions options_;
  const ChainSchedule schedule_;
  const int logprobs_;
  const bool want_prompt_logprobs_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<GeneratedToken> ready_;
  std::vector<TokenLogprob> prompt_logprobs_;
  bool prompt_read_ = false;
  bool ended_ = false;
  // Threads waiting in take() past their hold: a token wakes only them. Each wake-up of a request's
  // thread takes a core from the compute threads for ~0.1 ms on a small VM (bench/RESULTS.md).
  int token_waiters_ = 0;
  std::string error_;
  GenerateResult result_;
  std::atomic<bool> cancelled_{false};

  // The scheduler's side.
  InferenceSession* session_ = nullptr;
  Sampler sampler_;
  int pending_ = -1;  // the sampled token the next decoding step appends
  Clock::time_point submitted_, started_, first_token_, ended_at_;
  std::atomic<bool> joined_{false};
};

struct SchedulerOptions {
  int max_sequences = 8;     // generations decoding at once (each holds a session)
  int prefill_chunk = 256;   // prompt tokens per piece
  int threads = 1;           // compute threads of the scheduler
  // Decoding steps on fewer threads while that measures faster (another process keeping a core
  // busy; infer/decode_threads.h); false: always `threads`.
  bool adaptive_threads = true;
  KvCacheType kv_cache = KvCacheType::Auto;  // what each session's KV cache holds (infer/kv_cache.h)
  // Called on the scheduler thread after each generated token (its index), before the
  // request's thread sees it. Tests hold generations in flight with it.
  std::function<void(int index)> on_token;
};

class BatchScheduler {
 public:
  BatchScheduler(const Model& model, const Tokenizer& tok, SchedulerOptions options);
  ~BatchScheduler();  // stop()
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Queues a generation; it starts when a session is free.
  void submit(const std::shared_ptr<Generation>& g);
  // Ends every generation (unfinished ones with an error) and joins the thread. Idempotent.
  void stop();

  struct Counters {
    long decode_steps = 0, decode_rows = 0, prefill_pieces = 0;
    double decode_seconds = 0, prefill_seconds = 0;  // spent in steps and in pieces
    int decode_threads = 0;  // the thread count the steps run on now (0 before the first)
    int waiting_to_join = 0;  // submitted generations not yet taken into the steps
  };
  Counters counters() const;

 private:
  void loop();
  // The sampled token after logits; ends the generation when it should.
  void on_logits(Generation& g, const float* logits);
  // Whether g's prompt has only its last token left, which the next decoding step reads.
  bool last_prompt_token(const Generation& g) const;
  // One prompt piece of g; with prompt log-probabilities, those of the piece's next tokens.
  void prefill_piece(Generation& g);
  void release(Generation& g);

  const Model& model_;
  const Tokenizer& tok_;
  const SchedulerOptions opt_;
  std::vector<std::unique_ptr<InferenceSession>> sessions_;
  std::vector<InferenceSession*> free_;
  std::vector<float> piece_logits_;  // every row's logits of a piece, for prompt log-probabilities

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Generation>> incoming_;
  bool stopping_ = false;
  Counters counters_;
  std::thread thread_;
};

}  // namespace chainlm
