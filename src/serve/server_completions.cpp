// The completion endpoints of InferenceServer: /v1/completions and /v1/chat/completions
// requests into generations for the batch scheduler (one per choice: prompts x n), and their
// answers, whole or streamed as server-sent events.
#include <algorithm>
#include <utility>

#include "core/error.h"
#include "serve/chat_request.h"
#include "serve/server_impl.h"

namespace chainlm {

namespace {

using namespace server_detail;

const char* finish_reason(const GenerateResult& r, const CompletionText& text) {
  return text.stopped() || r.stop_reason == StopReason::eos ? "stop" : "length";
}

}  // namespace

json InferenceServer::Impl::stats_json(const Job& job, const Choice& c) const {
  const GenerateResult& r = c.result;
  json s = {{"chains", r.chains},
            {"seed", job.request.gen.sampling.seed + c.index},
            {"tokens_per_s", r.tokens_per_s},
            {"prefill_ms", r.prefill_ms},
            {"decode_ms_per_token", r.decode_ms_per_token},
            // Admission, then the wait for a session (behind other requests' choices).
            {"queue_ms", (job.queue_seconds + c.gen->session_wait_seconds()) * 1e3}};
  if (!job.request.chain_schedule.empty()) s["chain_schedule"] = job.request.chain_schedule;
  return s;
}

json InferenceServer::Impl::choice_json(const Job& job, const Choice& c, const std::string& text,
                                        const char* finish, bool chunk,
                                        const std::vector<TokenLogprob>* lp,
                                        const Utf8CharCount& before) const {
  json choice;
  if (!job.chat) {
    choice = {{"text", text}, {"index", c.index}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  } else if (chunk) {
    // The first chunk names the role; a finished turn's last chunk may carry no text.
    json delta = json::object();
    if (!c.role_sent) delta["role"] = "assistant";
    if (!text.empty() || !finish) delta["content"] = text;
    choice = {{"index", c.index}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  } else {
    choice = {{"index", c.index},
              {"message", {{"role", "assistant"}, {"content", text}}},
              {"logprobs", nullptr},
              {"finish_reason", nullptr}};
  }
  if (finish) choice["finish_reason"] = finish;
  if (lp)
    choice["logprobs"] = job.chat ? chat_logprobs_json(*lp) : completion_logprobs_json(*lp, before);
  return choice;
}

json InferenceServer::Impl::response_json(const Job& job, json choices, bool chunk) const {
  json out = {{"id", job.id},
              {"object", !job.chat ? "text_completion" : chunk ? "chat.completion.chunk" : "chat.completion"},
              {"created", job.created},
              {"model", opt.model_name},
              {"choices", std::move(choices)}};
  if (chunk && job.request.include_usage)
    out["usage"] = nullptr;  // OpenAI: on every chunk but the usage one
  return out;
}

json InferenceServer::Impl::usage_json(const Job& job) const {
  // Each prompt counts once, however many choices it has (as OpenAI counts n > 1).
  long prompt_tokens = 0, generated = 0;
  for (const Choice& c : job.choices) {
    if (c.index % job.request.n == 0) prompt_tokens += (long)c.prompt_tokens.size();
    generated += (long)c.result.tokens.size();
  }
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", generated}, {"total_tokens", prompt_tokens + generated}};
}

std::string InferenceServer::Impl::run(Job& job, Choice& c,
                                       const std::function<void(const std::string&, int)>& emit,
                                       const std::function<bool()>& flush) {
  // The tokens this choice took: a stop sequence or a client gone ends it there, though the
  // scheduler may have produced a token or two more meanwhile.
  size_t taken = 0;
  bool stopped_here = false;
  // The client went away: its generation stops (one still waiting for a session leaves the
  // scheduler's queue at its next turn).
  auto client_left = [&] {
    job.cancelled = true;
    for (Choice& other : job.choices) other.gen->mark_cancelled();  // none takes a freed session
    c.gen->cancel();
    stopped_here = true;
  };
  // Waiting for a session (behind other requests' choices) writes nothing, a stream included:
  // whether the client is still there is looked at meanwhile.
  while (!c.gen->wait_joined_for(std::chrono::milliseconds(kClientCheckMs)))
    if (job.client.gone()) {
      client_left();
      break;
    }
  // Unstreamed and without stop sequences only the client's leaving ends the generation early:
  // sleep until it ends rather than waking for each token, which takes a core from the compute
  // threads, looking now and then whether the client is still there.
  if (!stopped_here && !emit && job.request.stop.empty())
    while (!c.gen->wait_ended_for(std::chrono::milliseconds(kClientCheckMs)))
      if (flush && !flush()) {
        client_left();
        break;
      }
  // The tokens ready are taken together, at most every stream_interval_ms (the first at once):
  // the scheduler does not wake this thread for the tokens it publishes meanwhile.
  std::vector<GeneratedToken> batch;
  Clock::time_point hold_until{};
  while (!stopped_here && c.gen->take(batch, hold_until)) {
    for (GeneratedToken& t : batch) {
      ++taken;
      if (job.request.logprobs >= 0) c.logprobs.push_back(std::move(t.logprob));
      const std::string out = c.text.push(t.text);
      // A stop sequence ends the text inside or at the start of this token: the log-probabilities
      // keep the tokens whose text starts before the text's end, as the text does (before the
      // stream's next event takes them; those already sent stay).
      if (c.text.stopped()) {
        size_t keep = 0, at = 0;
        while (keep < c.logprobs.size() && at < c.text.text().size())
          at += c.logprobs[keep++].text.size();
        c.logprobs.resize(std::max(keep, std::min(c.logprobs_sent, c.logprobs.size())));
      }
      if (emit) emit(out, t.chains);
      if (c.text.stopped()) {
        c.gen->cancel();
        stopped_here = true;
        break;
      }
    }
    if (!stopped_here && flush && !flush()) client_left();
    hold_until = Clock::now() + std::chrono::milliseconds(opt.stream_interval_ms);
  }
  c.result = c.gen->result();
  // Every token it generated counts in the metrics, those past a stop or never taken (its
  // client left) too: the model computed them.
  const std::vector<int> generated = c.result.chains;
  if (stopped_here) {
    c.result.tokens.resize(taken);
    c.result.chains.resize(taken);
    c.result.stop_reason = StopReason::callback;
  }
  count_choice(job, c, generated);
  return c.text.finish();
}

void InferenceServer::Impl::count_choice(const Job& job, Choice& c,
                                         const std::vector<int>& generated) {
  c.counted = true;
  // The request's wait: for admission, then for its first choice's session (a request's choices
  // past the free sessions wait for them in the scheduler).
  if (c.index == 0) metrics.count_queue_wait(job.queue_seconds + c.gen->session_wait_seconds());
  if (!c.gen->joined()) return;  // never got a session: nothing ran, no prompt was read
  metrics.count_generation((int)c.prompt_tokens.size(), generated, c.gen->session_seconds(),
                           seconds_since(job.arrival), job.cancelled);
}

void InferenceServer::Impl::finish(Job& job, size_t first) {
  for (size_t i = first; i < job.choices.size(); ++i) job.choices[i].gen->mark_cancelled();
  for (size_t i = first; i < job.choices.size(); ++i) {
    Choice& c = job.choices[i];
    c.gen->cancel();
    // A choice that never streamed (a stream of n choices goes one after the other, and the
    // client left during an earlier one) ran in the scheduler all the same: its tokens count.
    if (!c.counted) count_choice(job, c, c.gen->result().chains);
  }
  job.slot.reset();  // the request's place is free once generation ends, before the answer goes out
}

bool InferenceServer::Impl::stream(Job& job, httplib::DataSink& sink) {
  if (job.streamed) return false;
  job.streamed = true;
  std::string held;  // events not written yet: a stream's tokens taken together go out in one write
  auto flush = [&] {
    const bool ok = held.empty() || sink.write(held.data(), held.size());
    held.clear();
    return ok;
  };
  auto hold = [&](const json& event) { held += "data: " + json_dump(event) + "\n\n"; };
  auto send_now = [&](const json& event) {
    hold(event);
    return flush();
  };
  size_t next_choice = 0;  // choices not run yet are cancelled if the stream ends early
  try {
    const bool with_lp = job.request.logprobs >= 0;
    for (Choice& c : job.choices) {
      ++next_choice;
      // The log-probabilities of the tokens whose text the events have released since the last
      // one: a token held back as the possible start of a stop sequence waits with its text (a
      // stop then drops both; its log-probability had gone out). `all`: the rest, at the end.
      Utf8CharCount lp_before;  // the choice's text before the first of them (its offset)
      auto fresh_logprobs = [&](bool all) -> std::vector<TokenLogprob> {
        size_t end = c.logprobs_sent, covered = c.logprobs_text;
        Utf8CharCount chars = c.logprobs_chars;
        // (A token without text, EOS under ignore_eos, waits for text past it: at the text's end
        // a stop drops it too.)
        const size_t released = c.text.text().size();
        while (end < c.logprobs.size() &&
               (all || (c.logprobs[end].text.empty()
                            ? covered < released
                            : covered + c.logprobs[end].text.size() <= released))) {
          chars.add(c.logprobs[end].text);
          covered += c.logprobs[end++].text.size();
        }
        std::vector<TokenLogprob> out(c.logprobs.begin() + (long)c.logprobs_sent,
                                      c.logprobs.begin() + (long)end);
        lp_before = c.logprobs_chars;
        c.logprobs_sent = end;
        c.logprobs_text = covered;
        c.logprobs_chars = chars;
        return out;
      };
      auto event = [&](const std::string& text, const char* finish,
                       const std::vector<TokenLogprob>* lp) {
        return response_json(
            job, json::array({choice_json(job, c, text, finish, true, lp, lp_before)}), true);
      };
      // A prompt of token ids may end inside a UTF-8 character that the completion finishes:
      // those bytes go out with the completion's first text, so that no event splits the
      // character (the joined events read as the non-streamed text). The log-probabilities'
      // offsets count them with the prompt.
      std::string carried;
      if (job.request.echo) {  // the prompt first, as its own event (with its log-probabilities)
        const auto lp = with_lp ? c.gen->prompt_logprobs() : std::vector<TokenLogprob>();
        const size_t whole = c.prompt.size() - incomplete_utf8_tail(c.prompt);
        carried = c.prompt.substr(whole);
        const bool sent =
            send_now(event(c.prompt.substr(0, whole), nullptr, with_lp ? &lp : nullptr));
        c.logprobs_chars.add(c.prompt);  // the generated tokens' offsets follow the prompt's
        if (!sent) {
          job.cancelled = true;
          break;
        }
      }
      auto with_carried = [&](const std::string& text) {
        return std::exchange(carried, std::string()) + text;
      };
      const std::string tail = run(
          job, c,
          [&](const std::string& text, int chains) {
            const auto lp = with_lp ? fresh_logprobs(false) : std::vector<TokenLogprob>();
            json e = event(with_carried(text), nullptr, with_lp ? &lp : nullptr);
            c.role_sent = true;
            e["chainlm"] = {{"chains", chains}};
            hold(e);
          },
          flush);
      if (job.cancelled) break;
      const auto lp = with_lp ? fresh_logprobs(true) : std::vector<TokenLogprob>();
      json last =
          event(with_carried(tail), finish_reason(c.result, c.text), with_lp ? &lp : nullptr);
      last["chainlm"] = stats_json(job, c);
      // A completion stream's usage is in its last choice's last event, or with
      // stream_options.include_usage in a chunk of its own (OpenAI's; every other has null).
      if (!job.chat && !job.request.include_usage && &c == &job.choices.back())
        last["usage"] = usage_json(job);
      hold(last);  // goes out with the next write
    }
    finish(job, next_choice);
    if (job.cancelled) return false;
    if (job.request.include_usage) {
      json usage = response_json(job, json::array(), true);
      usage["usage"] = usage_json(job);
      hold(usage);
    }
    held += "data: [DONE]\n\n";
    if (!flush()) return false;
    sink.done();
    return true;
  } catch (const std::exception& e) {
    finish(job, next_choice);
    // The status line has gone out: report the failure as the stream's last event.
    if (send_now(error_body(e.what(), "server_error", ""))) sink.done();
    return false;
  }
}

void InferenceServer::Impl::add_choices(Job& job, const std::string& prompt, std::vector<int> prompt_tokens,
                                        const std::vector<std::string>& stops) {
  for (int j = 0; j < job.request.n; ++j) {
    Choice c;
    c.index = (int)job.choices.size();
    c.prompt = prompt;
    c.prompt_tokens = prompt_tokens;
    c.text = CompletionText(stops);
    job.choices.push_back(std::move(c));
  }
}

void InferenceServer::Impl::completions(const std::string& body, ClientConnection client,
                                        httplib::Response& res) {
  auto job = std::make_shared<Job>();
  job->client = std::move(client);
  job->arrival = Clock::now();
  job->request = parse_completion_body(body, model.config(), tok.vocab_size());
  const CompletionRequest& r = job->request;
  const int max_len = model.config().max_seq_len;
  for (size_t p = 0; p < r.prompts.size(); ++p) {
    const PromptInput& in = r.prompts[p];
    const std::string where = r.prompts.size() > 1 ? cat("prompt[", p, "]") : std::string("prompt");
    // Each prompt is tokenized once, here: the length check and the generation use the same ids.
    std::vector<int> ids = {tok.bos_id()};
    if (in.is_tokens()) {  // token ids: in the vocabulary (the parser checked); their text for echo
      // Ids that already open with BOS (/tokenize's add_special output) keep that one.
      const bool has_bos = !in.tokens.empty() && in.tokens[0] == tok.bos_id();
      ids.insert(ids.end(), in.tokens.begin() + (has_bos ? 1 : 0), in.tokens.end());
      if ((int)ids.size() > max_len)  // after BOS is known: a list with its own fits one more id
        throw RequestError(
            "prompt", cat(where, " is ", ids.size(),
                          " tokens (BOS included), longer than the model's max_seq_len ", max_len));
      // As the completion's pieces are made (decode_token: a byte token is its raw byte), so a
      // character the prompt begins and the completion ends is whole once joined; decode() would
      // have put U+FFFD for the prompt's part (SentencePiece does).
      std::string text;
      int prev = tok.bos_id();
      for (int id : in.tokens) {
        text += tok.decode_token(prev, id);
        prev = id;
      }
      add_choices(*job, text, std::move(ids), r.stop);
      continue;
    }
    if (in.text.size() > max_prompt_bytes)
      throw RequestError("prompt", cat(where, " is ", in.text.size(), " bytes, over the server's limit of ",
                                       max_prompt_bytes, " bytes (no text that long fits the model's max_seq_len ",
                                       max_len, ")"));
    for (int t : tok.encode(in.text)) ids.push_back(t);
    if ((int)ids.size() > max_len)
      throw RequestError("prompt", cat(where, " is ", ids.size(), " tokens (BOS included), longer than the model's max_seq_len ",
                                       max_len));
    add_choices(*job, in.text, std::move(ids), r.stop);
  }
  start(job, res);
}

void InferenceServer::Impl::chat_completions(const std::string& body, ClientConnection client,
                                             httplib::Response& res) {
  auto job = std::make_shared<Job>();
  job->client = std::move(client);
  job->arrival = Clock::now();
  ChatRequest chat = parse_chat_request(parse_json_body(body), model.config(), tok.vocab_size());
  std::vector<ChatSegment> segments;
  try {
    segments = render_chat(opt.chat_template, chat.messages, true, opt.chat_style);
  } catch (const Error& e) {
    throw RequestError("messages", e.what());
  }
  size_t bytes = 0;
  for (const ChatSegment& g : segments) bytes += g.text.size();
  const ModelConfig& c = model.config();
  if (bytes > max_prompt_bytes)
    throw RequestError("messages", cat("the conversation is ", bytes, " bytes, over the server's limit of ",
                                       max_prompt_bytes, " bytes (no text that long fits the model's max_seq_len ",
                                       c.max_seq_len, ")"));
  std::vector<int> ids = chat_prompt_ids(tok, segments);
  if ((int)ids.size() > c.max_seq_len)
    throw RequestError("messages", cat("the conversation is ", ids.size(), " tokens in the ",
                                       chat_template_name(opt.chat_template),
                                       " template (BOS included), longer than the model's max_seq_len ",
                                       c.max_seq_len));
  job->request = std::move(chat.completion);
  // As a completion (and generate) ends: the context full, with the token its last position
  // gives, which is sampled and never fed back (this stopped one token short of /v1/completions).
  job->request.gen.max_tokens =
      std::min(job->request.gen.max_tokens, c.max_seq_len + 1 - (int)ids.size());
  job->chat = true;
  // The reply ends where the template's turn ends, besides the request's own stops.
  std::vector<std::string> stops = job->request.stop;
  for (const std::string& s : chat_stop_strings(opt.chat_template)) stops.push_back(s);
  add_choices(*job, "", std::move(ids), stops);
  start(job, res);
}

void InferenceServer::Impl::start(const std::shared_ptr<Job>& job, httplib::Response& res) {
  // Its socket is found now, while the connection is whole: once a stream's headers have gone
  // out, a client that leaves resets it, and a reset socket has no peer to be found by.
  job->client.look_up();
  CompletionRequest& r = job->request;
  if (!r.seed_given) {
    std::lock_guard<std::mutex> lock(seed_mutex);
    r.gen.sampling.seed = seeds() >> 11;  // below 2^53: exact as a JavaScript number
  }
  // Choice i samples with seed + i (greedy choices are then all the same, as they should be).
  for (Choice& c : job->choices) {
    GenerateOptions gen = r.gen;
    gen.sampling.seed += c.index;
    c.gen = std::make_shared<Generation>(model, tok, c.prompt_tokens, gen, r.logprobs, r.echo);
  }
  bool client_left = false;
  job->slot = admission.acquire([&] { return job->client.gone(); }, &client_left);
  if (client_left) {
    // Nobody reads this answer; the access log and the metrics show it (nginx's 499).
    metrics.count_client_left_queue();
    res.status = kClientClosedRequest;
    return;
  }
  if (!job->slot) {
    res.set_header("Retry-After", "1");
    // Refused because the server is stopping (its queue emptied by shutdown), or because the
    // queue was full: "busy, N waiting" said of a stopping server sent clients to retry it.
    if (admission.stopping())
      set_error(res, 503, "the server is stopping; the request was not started", "server_stopping");
    else
      set_error(res, 503,
                cat("the server is busy: all ", admission.max_sessions(),
                    " sessions are generating and the queue's ", admission.max_queue(),
                    " places are taken; retry later"),
                "server_busy");
    return;
  }
  job->queue_seconds = seconds_since(job->arrival);
  job->id = cat(job->chat ? "chatcmpl-" : "cmpl-", started_at, "-", next_id++);
  job->created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  // Every choice starts now: the scheduler computes them together.
  for (Choice& c : job->choices) scheduler->submit(c.gen);

  if (r.stream) {
    res.set_header("Cache-Control", "no-cache");
    // The provider owns the job, and so the request's place: it is freed when the response is
    // done with, whether the stream ended or its client went away.
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job](size_t, httplib::DataSink& sink) { return stream(*job, sink); },
        [this, job](bool) {
          if (job->slot) finish(*job, 0);  // a stream that never started: stop its generations
        });
    return;
  }
  json choices = json::array();
  try {
    for (Choice& c : job->choices) {
      // Nothing to write until the end: "flush" only asks whether the client is still there.
      run(*job, c, nullptr, [&] { return !job->client.gone(); });
      if (job->cancelled) break;
      // echo with logprobs: the prompt's tokens' log-probabilities first.
      std::vector<TokenLogprob> lp =
          r.echo && r.logprobs >= 0 ? c.gen->prompt_logprobs() : std::vector<TokenLogprob>();
      lp.insert(lp.end(), c.logprobs.begin(), c.logprobs.end());
      choices.push_back(choice_json(*job, c, (r.echo ? c.prompt : "") + c.text.text(), finish_reason(c.result, c.text),
                                    false, r.logprobs >= 0 ? &lp : nullptr));
      if (job->choices.size() > 1)
        choices.back()["chainlm"] = {{"chains", c.result.chains}, {"seed", r.gen.sampling.seed + c.index}};
    }
  } catch (...) {
    finish(*job, 0);  // a failed choice: the others stop too
    throw;
  }
  if (job->cancelled) {
    finish(*job, 0);  // the choices after it never ran to their end
    res.status = kClientClosedRequest;
    return;
  }
  finish(*job, job->choices.size());
  json out = response_json(*job, std::move(choices), false);
  out["usage"] = usage_json(*job);
  out["chainlm"] = stats_json(*job, job->choices[0]);
  res.set_content(json_dump(out), "application/json");
}

}  // namespace chainlm
