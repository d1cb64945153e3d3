#include "serve/batch_scheduler.h"

#include <algorithm>

#include "core/error.h"
#include "core/threads.h"
#include "infer/batch_decode.h"
#include "infer/decode_threads.h"
#include "infer/session.h"

namespace chainlm {

namespace {

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

Generation::Generation(const Model& model, const Tokenizer& tok, std::vector<int> prompt_tokens,
                       const GenerateOptions& options, int logprobs, bool prompt_logprobs)
    : prompt_(std::move(prompt_tokens)),
      options_(options),
      schedule_(check_generation(model, tok, prompt_, options)),
      logprobs_(logprobs),
      want_prompt_logprobs_(prompt_logprobs && logprobs >= 0),
      sampler_(options.sampling) {
  result_.prompt_tokens = prompt_;
}

bool Generation::take(std::vector<GeneratedToken>& out, Clock::time_point hold_until) {
  out.clear();
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_until(lock, hold_until, [&] { return ended_; });
  ++token_waiters_;
  changed_.wait(lock, [&] { return !ready_.empty() || ended_; });
  --token_waiters_;
  if (!ready_.empty()) {
    out.assign(std::make_move_iterator(ready_.begin()), std::make_move_iterator(ready_.end()));
    ready_.clear();
    return true;
  }
  if (!error_.empty()) throw Error(error_);
  return false;
}

void Generation::wait_ended() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return ended_; });
}

bool Generation::wait_ended_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return ended_; });
}

double Generation::session_wait_seconds() const {
  const Clock::time_point until = joined_ ? started_ : Clock::now();
  return std::chrono::duration<double>(until - submitted_).count();
}

bool Generation::wait_joined_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return joined_ || ended_; });
}

double Generation::session_seconds() const {
  if (!joined_) return 0;
  std::lock_guard<std::mutex> lock(mutex_);
  return std::chrono::duration<double>((ended_ ? ended_at_ : Clock::now()) - started_).count();
}

void Generation::cancel() {
  cancelled_ = true;
  wait_ended();
}

std::vector<TokenLogprob> Generation::prompt_logprobs() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return prompt_read_ || ended_; });
  if (!error_.empty()) throw Error(error_);
  return prompt_logprobs_;
}

GenerateResult Generation::result() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return result_;
}

void Generation::publish(GeneratedToken t) {
  std::lock_guard<std::mutex> lock(mutex_);
  result_.tokens.push_back(t.id);
  result_.chains.push_back(t.chains);
  ready_.push_back(std::move(t));
  if (token_waiters_ > 0) changed_.notify_all();
}

void Generation::end(StopReason reason, std::string error) {
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  result_.stop_reason = reason;
  const double total_ms = ms_between(started_, now);
  const int decoded = (int)result_.tokens.size() - 1;
  if (decoded > 0) result_.decode_ms_per_token = ms_between(first_token_, now) / decoded;
  result_.tokens_per_s = total_ms > 0 ? result_.tokens.size() * 1e3 / total_ms : 0;
  error_ = std::move(error);
  ended_at_ = now;
  ended_ = true;
  changed_.notify_all();
}

BatchScheduler::BatchScheduler(const Model& model, const Tokenizer& tok, SchedulerOptions options)
    : model_(model), tok_(tok), opt_(std::move(options)) {
  CHAINLM_CHECK(opt_.max_sequences >= 1, "the scheduler needs at least one sequence (got ", opt_.max_sequences, ")");
  CHAINLM_CHECK(opt_.prefill_chunk >= 1, "--prefill-chunk must be >= 1 (got ", opt_.prefill_chunk, ")");
  thread_ = std::thread([this] { loop(); });
}

BatchScheduler::~BatchScheduler() { stop(); }

void BatchScheduler::submit(const std::shared_ptr<Generation>& g) {
  g->submitted_ = Generation::Clock::now();
  if (g->options_.max_tokens == 0 && !g->want_prompt_logprobs_) {  // nothing to generate: no prefill either
    g->started_ = g->first_token_ = g->submitted_;
    g->joined_ = true;
    g->end(StopReason::max_tokens);
    return;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  CHAINLM_CHECK(!stopping_, "the server is stopping");
  incoming_.push_back(g);
  wake_.notify_all();
}

void BatchScheduler::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    wake_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

BatchScheduler::Counters BatchScheduler::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Counters c = counters_;
  c.waiting_to_join = (int)incoming_.size();
  return c;
}

void BatchScheduler::release(Generation& g) {
  g.session_->reset();
  free_.push_back(g.session_);
  g.session_ = nullptr;
}

void BatchScheduler::on_logits(Generation& g, const float* logits) {
  const ModelConfig& c = model_.config();
  const int i = (int)g.result_.tokens.size();  // only this thread appends to it
  if (i == 0) {
    g.first_token_ = Generation::Clock::now();
    g.result_.prefill_ms = ms_between(g.started_, g.first_token_);
    std::lock_guard<std::mutex> lock(g.mutex_);
    g.prompt_read_ = true;
    g.changed_.notify_all();
  }
  if (g.options_.max_tokens == 0) {  // only the prompt was wanted (its log-probabilities)
    g.end(StopReason::max_tokens);
    return;
  }
  // Ids past the tokenizer's (a vocab_size padded beyond it) have no text: never sampled, and
  // not among the log-probabilities' alternatives (which are the model's own: over every row).
  const int Vt = tok_.vocab_size();
  const int next = g.sampler_.sample(logits, Vt);
  g.pending_ = -1;
  if (g.options_.stop_at_eos && (tok_.is_eos(next) || next == tok_.bos_id())) {
    g.end(StopReason::eos);
    return;
  }
  GeneratedToken t;
  t.index = i;
  t.id = next;
  t.chains = g.schedule_.chains_for(i);
  const int prev = g.session_->tokens().back();
  t.text = tok_.decode_token(prev, next);
  if (g.logprobs_ >= 0)
    t.logprob = token_logprob(logits, c.vocab_size, Vt, next, g.logprobs_,
                              [&](int id) { return tok_.decode_token(prev, id); });
  if (opt_.on_token) opt_.on_token(i);
  g.publish(std::move(t));
  if (i + 1 >= g.options_.max_tokens)
    g.end(StopReason::max_tokens);
  else if (g.session_->length() >= c.max_seq_len)
    g.end(StopReason::max_seq_len);
  else
    g.pending_ = next;
}

// A prompt's last piece of one token (a CoLM-Air prompt after its chain-1 body, or a prompt
// of one token) runs with every other sequence's decoding step rather than as a pass of its
// own: a step's rows cost little more than one row, and a one-token piece is the pass a
// decoding step makes for its row (batch_decode.h: the same bits), so the request gets the
// tokens it gets alone. PHD steps run a token's hidden copies, which a prompt's last pass may
// not (InferenceSession::phd_hidden_positions): its prompts keep their own passes.
bool BatchScheduler::last_prompt_token(const Generation& g) const {
  // (A session one token short of its prompt has generated nothing and has no token pending.)
  return !model_.config().phd.enabled() && g.session_->length() + 1 == (int)g.prompt_.size();
}

void BatchScheduler::prefill_piece(Generation& g) {
  InferenceSession& s = *g.session_;
  const int before = s.length(), V = model_.config().vocab_size;
  float* rows = nullptr;
  if (g.want_prompt_logprobs_) {
    piece_logits_.resize((size_t)opt_.prefill_chunk * V);
    rows = piece_logits_.data();
  }
  // Prompt log-probabilities need the requested sub-model's logits at every position, so such
  // a prompt is not read by chain 1 alone.
  const float* logits = s.prefill_part(g.prompt_, g.schedule_.chains_for(0),
                                       g.options_.chain1_prefill && !g.want_prompt_logprobs_, opt_.prefill_chunk, rows);
  if (rows) {
    // Row r predicts the token after position before + r.
    std::vector<TokenLogprob> lps;
    for (int p = before; p < s.length() && p + 1 < (int)g.prompt_.size(); ++p) {
      const int prev = g.prompt_[p], id = g.prompt_[p + 1];
      lps.push_back(token_logprob(rows + (size_t)(p - before) * V, V, tok_.vocab_size(), id,
                                  g.logprobs_, [&](int t) { return tok_.decode_token(prev, t); }));
    }
    std::lock_guard<std::mutex> lock(g.mutex_);
    for (auto& lp : lps) g.prompt_logprobs_.push_back(std::move(lp));
  }
  if (logits) on_logits(g, logits);
}

void BatchScheduler::loop() {
  set_num_threads_of_this_thread(opt_.threads);
  const int threads = num_threads();
  DecodeThreadTuner tuner(threads, opt_.adaptive_threads);
  int last_shape = 0;  // the last turn's decoding rows (decode_shape), when it read no prompt piece
  Generation::Clock::time_point last_start;
  BatchDecoder decoder(model_);
  std::vector<std::shared_ptr<Generation>> active;  // in the order they joined
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !active.empty(); });
      if (stopping_) break;
      // Those cancelled while they waited for a session (their clients left) leave without
      // running: a request's choices past the free sessions wait here, and a request behind them
      // held its admission place until it got a session only to end at once (a user trial).
      for (auto it = incoming_.begin(); it != incoming_.end();) {
        if (!(*it)->cancelled_) {
          ++it;
          continue;
        }
        (*it)->end(StopReason::callback);
        it = incoming_.erase(it);
      }
      // Sessions are made when first needed (each holds a KV cache for the whole context), then
      // reused.
      while (!incoming_.empty()) {
        std::shared_ptr<Generation> g = incoming_.front();
        if (free_.empty()) {
          if ((int)sessions_.size() >= opt_.max_sequences) break;
          try {
            sessions_.push_back(std::make_unique<InferenceSession>(model_, 512, opt_.kv_cache));
          } catch (const std::exception& e) {  // out of memory: this request fails, not the server
            incoming_.pop_front();
            g->end(StopReason::callback, cat("no memory for a session: ", e.what()));
            continue;
          }
          free_.push_back(sessions_.back().get());
        }
        incoming_.pop_front();
        g->session_ = free_.back();
        free_.pop_back();
        g->started_ = Generation::Clock::now();
        {
          std::lock_guard<std::mutex> glock(g->mutex_);
          g->joined_ = true;
        }
        g->changed_.notify_all();  // a request's thread waiting for its session to come
        active.push_back(std::move(g));
      }
    }
    // Cancelled generations leave before the step.
    for (auto& g : active)
      if (g->cancelled_ && !g->ended_) g->end(StopReason::callback);
    try {
      // One decoding step for every generation past its prompt, and for every prompt whose
      // last token is all that is left of it (see last_prompt_token).
      std::vector<DecodeRow> rows;
      std::vector<Generation*> decoding;
      for (auto& g : active) {
        if (g->ended_) continue;
        if (g->pending_ >= 0)
          rows.push_back({g->session_, g->pending_, g->schedule_.chains_for((int)g->result_.tokens.size())});
        else if (last_prompt_token(*g))
          rows.push_back({g->session_, g->prompt_.back(), g->schedule_.chains_for(0)});
        else
          continue;
        decoding.push_back(g.get());
      }
      const Generation::Clock::time_point step_start = Generation::Clock::now();
      // The last turn, if it was a step alone, timed to this one for the tuner.
      if (last_shape > 0 && !rows.empty())
        tuner.record(last_shape, std::chrono::duration<double>(step_start - last_start).count());
      last_shape = 0;
      Generation::Clock::time_point logits_done = step_start;
      if (!rows.empty()) {
        set_num_threads_of_this_thread(tuner.threads());  // prompt pieces keep every thread
        const std::vector<const float*> logits = decoder.step(rows);
        set_num_threads_of_this_thread(threads);
        {
          // Counted before the tokens go out: a client that has its last token, then reads
          // /metrics (bench serve between levels), sees the step that made it.
          std::lock_guard<std::mutex> lock(mutex_);
          ++counters_.decode_steps;
          counters_.decode_threads = tuner.chosen();
          counters_.decode_rows += (long)rows.size();
          logits_done = Generation::Clock::now();
          counters_.decode_seconds +=
              std::chrono::duration<double>(logits_done - step_start).count();
        }
        for (size_t r = 0; r < rows.size(); ++r) on_logits(*decoding[r], logits[r]);
      }
      // Prompt pieces, oldest prompt first, until prefill_chunk tokens have been read. A
      // prompt's pieces are always the same (prefill_chunk tokens each, the rest last), so its
      // bits do not depend on what else is read in the same turn.
      const Generation::Clock::time_point prefill_start = Generation::Clock::now();
      int read = 0, pieces = 0;
      for (auto& g : active) {
        if (read >= opt_.prefill_chunk) break;
        if (g->ended_ || g->pending_ >= 0) continue;  // ended, or past its prompt
        const int before = g->session_->length();
        // Pieces run on the decoding steps' count (a pass gives the same bits on any count,
        // infer/session.cpp): beside a busy process, 16-token prompts on two threads took ~40% of
        // a small model's serving time against ~10% on one.
        set_num_threads_of_this_thread(tuner.chosen());
        prefill_piece(*g);
        read += g->session_->length() - before;
        ++pieces;
      }
      set_num_threads_of_this_thread(threads);
      const Generation::Clock::time_point end = Generation::Clock::now();
      if (pieces == 0) {
        int chains = 0;
        for (const DecodeRow& r : rows) chains += r.chains;
        last_shape = DecodeThreadTuner::decode_shape((int)rows.size(), chains);
        last_start = step_start;
      }
      std::lock_guard<std::mutex> lock(mutex_);
      counters_.prefill_pieces += pieces;
      counters_.prefill_seconds += std::chrono::duration<double>(end - prefill_start).count();
      if (!rows.empty())  // the sampling after the step, counted above up to its logits
        counters_.decode_seconds +=
            std::chrono::duration<double>(prefill_start - logits_done).count();
    } catch (const std::exception& e) {
      // A step failed (out of memory, say): its generations cannot go on.
      for (auto& g : active)
        if (!g->ended_) g->end(StopReason::callback, cat("generation failed: ", e.what()));
    }
    // Ended generations give their sessions back.
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& g : active)
      if (g->ended_) release(*g);
    active.erase(std::remove_if(active.begin(), active.end(), [](const auto& g) { return g->session_ == nullptr; }),
                 active.end());
  }
  for (auto& g : active)
    if (!g->ended_) g->end(StopReason::callback, "the server stopped before the generation ended");
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& g : incoming_) g->end(StopReason::callback, "the server stopped before the generation started");
  incoming_.clear();
}

}  // namespace chainlm
