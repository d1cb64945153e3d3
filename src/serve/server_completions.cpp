// The completion endpoints of InferenceServer: /v1/completions and /v1/chat/completions
// requests into generations for the batch scheduler, and their answers, whole or streamed as
// server-sent events.
#include <algorithm>

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

json InferenceServer::Impl::stats_json(const Job& job) const {
  const GenerateResult& r = job.result;
  json s = {{"chains", r.chains},
            {"seed", job.request.gen.sampling.seed},
            {"tokens_per_s", r.tokens_per_s},
            {"prefill_ms", r.prefill_ms},
            {"decode_ms_per_token", r.decode_ms_per_token},
            {"queue_ms", job.queue_seconds * 1e3}};
  if (!job.request.chain_schedule.empty()) s["chain_schedule"] = job.request.chain_schedule;
  return s;
}

json InferenceServer::Impl::completion_json(const Job& job, const std::string& text, const char* finish,
                                            bool chunk, const std::vector<TokenLogprob>* lp,
                                            size_t text_offset) const {
  json choice;
  if (!job.chat) {
    choice = {{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  } else if (chunk) {
    // The first chunk names the role; a finished turn's last chunk may carry no text.
    json delta = json::object();
    if (job.role_sent == false) delta["role"] = "assistant";
    if (!text.empty() || !finish) delta["content"] = text;
    choice = {{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  } else {
    choice = {{"index", 0},
              {"message", {{"role", "assistant"}, {"content", text}}},
              {"logprobs", nullptr},
              {"finish_reason", nullptr}};
  }
  if (finish) choice["finish_reason"] = finish;
  if (lp) choice["logprobs"] = job.chat ? chat_logprobs_json(*lp) : completion_logprobs_json(*lp, text_offset);
  json out = {{"id", job.id},
              {"object", !job.chat ? "text_completion" : chunk ? "chat.completion.chunk" : "chat.completion"},
              {"created", job.created},
              {"model", opt.model_name},
              {"choices", json::array({choice})}};
  if (chunk && job.include_usage) out["usage"] = nullptr;  // OpenAI: on every chunk but the usage one
  return out;
}

json InferenceServer::Impl::usage_json(const Job& job) const {
  const int prompt_tokens = (int)job.result.prompt_tokens.size(), generated = (int)job.result.tokens.size();
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", generated}, {"total_tokens", prompt_tokens + generated}};
}

std::string InferenceServer::Impl::run(Job& job,
                                       const std::function<bool(const std::string&, int)>& emit) {
  const Clock::time_point start = Clock::now();
  auto gen = std::make_shared<Generation>(model, tok, job.prompt_tokens, job.request.gen, job.request.logprobs);
  scheduler->submit(gen);
  // The tokens this request took: a stop sequence or a client gone ends it there, though the
  // scheduler may have produced a token or two more meanwhile.
  size_t taken = 0;
  GeneratedToken t;
  while (gen->next(t)) {
    ++taken;
    if (job.request.logprobs >= 0) job.logprobs.push_back(std::move(t.logprob));
    const std::string out = job.text.push(t.text);
    if (emit && !emit(out, t.chains)) job.cancelled = true;
    if (job.cancelled || job.text.stopped()) {
      gen->cancel();
      break;
    }
  }
  job.result = gen->result();
  if (taken < job.result.tokens.size() || job.cancelled || job.text.stopped()) {
    job.result.tokens.resize(taken);
    job.result.chains.resize(taken);
    job.result.stop_reason = StopReason::callback;
  }
  metrics.count_generation((int)job.result.prompt_tokens.size(), job.result.chains,
                           seconds_since(start), seconds_since(job.arrival), job.cancelled);
  job.slot.reset();  // the session is free once generation ends, before the answer goes out
  return job.text.finish();
}

bool InferenceServer::Impl::stream(Job& job, httplib::DataSink& sink) {
  if (job.streamed) return false;
  job.streamed = true;
  auto send = [&](const json& event) {
    const std::string line = "data: " + json_dump(event) + "\n\n";
    return sink.write(line.data(), line.size());
  };
  try {
    // The log-probabilities of the tokens generated since the last event.
    auto fresh_logprobs = [&]() -> std::vector<TokenLogprob> {
      std::vector<TokenLogprob> out(job.logprobs.begin() + (long)job.logprobs_sent, job.logprobs.end());
      job.logprobs_sent = job.logprobs.size();
      return out;
    };
    const bool with_lp = job.request.logprobs >= 0;
    if (job.request.echo) {  // the prompt first, as its own event
      if (!send(completion_json(job, job.request.prompt, nullptr, true))) return false;
    }
    const std::string tail = run(job, [&](const std::string& text, int chains) {
      const auto lp = with_lp ? fresh_logprobs() : std::vector<TokenLogprob>();
      json event = completion_json(job, text, nullptr, true, with_lp ? &lp : nullptr, job.text_sent);
      job.text_sent += text.size();
      job.role_sent = true;
      event["chainlm"] = {{"chains", chains}};
      return send(event);
    });
    if (job.cancelled) return false;
    const auto lp = with_lp ? fresh_logprobs() : std::vector<TokenLogprob>();
    json last = completion_json(job, tail, finish_reason(job.result, job.text), true, with_lp ? &lp : nullptr,
                                job.text_sent);
    if (!job.chat) last["usage"] = usage_json(job);
    last["chainlm"] = stats_json(job);
    if (!send(last)) return false;
    if (job.include_usage) {
      json usage = completion_json(job, "", nullptr, true);
      usage["choices"] = json::array();
      usage["usage"] = usage_json(job);
      if (!send(usage)) return false;
    }
    static const std::string done = "data: [DONE]\n\n";
    if (!sink.write(done.data(), done.size())) return false;
    sink.done();
    return true;
  } catch (const std::exception& e) {
    // The status line has gone out: report the failure as the stream's last event.
    if (send(error_body(e.what(), "server_error", ""))) sink.done();
    return false;
  }
}

void InferenceServer::Impl::completions(const std::string& body, httplib::Response& res) {
  auto job = std::make_shared<Job>();
  job->arrival = Clock::now();
  job->request = parse_completion_body(body, model.config());
  CompletionRequest& r = job->request;
  // The prompt is tokenized once, here: the length check and the generation use the same ids.
  job->prompt_tokens = {tok.bos_id()};
  if (!r.prompt_tokens.empty()) {  // token ids: checked by the parser; their text for echo
    job->prompt_tokens.insert(job->prompt_tokens.end(), r.prompt_tokens.begin(), r.prompt_tokens.end());
    r.prompt = tok.decode(r.prompt_tokens);
  } else {
    for (int t : tok.encode(r.prompt)) job->prompt_tokens.push_back(t);
  }
  if ((int)job->prompt_tokens.size() > model.config().max_seq_len)
    throw RequestError("prompt", cat("prompt is ", job->prompt_tokens.size(),
                                     " tokens (BOS included), longer than the model's max_seq_len ",
                                     model.config().max_seq_len));
  job->text = CompletionText(job->request.stop);
  start(job, res);
}

void InferenceServer::Impl::chat_completions(const std::string& body, httplib::Response& res) {
  auto job = std::make_shared<Job>();
  job->arrival = Clock::now();
  ChatRequest chat = parse_chat_request(parse_json_body(body), model.config());
  std::vector<ChatSegment> segments;
  try {
    segments = render_chat(opt.chat_template, chat.messages, true);
  } catch (const Error& e) {
    throw RequestError("messages", e.what());
  }
  // BOS and EOS are the tokenizer's ids; generation puts the first BOS itself.
  std::vector<int> ids = {tok.bos_id()};
  for (size_t i = 0; i < segments.size(); ++i) {
    const ChatSegment& g = segments[i];
    if (g.kind == ChatSegment::kText)
      for (int t : tok.encode(g.text)) ids.push_back(t);
    else if (g.kind == ChatSegment::kEos)
      ids.push_back(tok.eos_id());
    else if (i > 0)
      ids.push_back(tok.bos_id());
  }
  const ModelConfig& c = model.config();
  if ((int)ids.size() > c.max_seq_len)
    throw RequestError("messages", cat("the conversation is ", ids.size(), " tokens in the ",
                                       chat_template_name(opt.chat_template),
                                       " template (BOS included), longer than the model's max_seq_len ",
                                       c.max_seq_len));
  job->request = std::move(chat.completion);
  job->request.gen.max_tokens = std::min(job->request.gen.max_tokens, c.max_seq_len - (int)ids.size());
  job->prompt_tokens = std::move(ids);
  job->chat = true;
  job->include_usage = chat.include_usage;
  // The reply ends where the template's turn ends, besides the request's own stops.
  std::vector<std::string> stops = job->request.stop;
  for (const std::string& s : chat_stop_strings(opt.chat_template)) stops.push_back(s);
  job->text = CompletionText(stops);
  start(job, res);
}

void InferenceServer::Impl::start(const std::shared_ptr<Job>& job, httplib::Response& res) {
  CompletionRequest& r = job->request;
  if (!r.seed_given) {
    std::lock_guard<std::mutex> lock(seed_mutex);
    r.gen.sampling.seed = seeds() >> 11;  // below 2^53: exact as a JavaScript number
  }
  job->slot = admission.acquire();
  if (!job->slot) {
    res.set_header("Retry-After", "1");
    set_error(
        res, 503,
        cat("the server is busy: all ", admission.max_sessions(), " sessions are generating and ",
            admission.max_queue(), " requests are waiting; retry later"),
        "server_busy");
    return;
  }
  job->queue_seconds = seconds_since(job->arrival);
  job->id = cat(job->chat ? "chatcmpl-" : "cmpl-", started_at, "-", next_id++);
  job->created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();

  if (r.stream) {
    res.set_header("Cache-Control", "no-cache");
    // The provider owns the job, and so the session place: it is freed when the response is
    // done with, whether the stream ended or its client went away.
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job](size_t, httplib::DataSink& sink) { return stream(*job, sink); });
    return;
  }
  run(*job, nullptr);
  json out = completion_json(*job, (r.echo ? r.prompt : "") + job->text.text(),
                             finish_reason(job->result, job->text), false,
                             job->request.logprobs >= 0 ? &job->logprobs : nullptr);
  out["usage"] = usage_json(*job);
  out["chainlm"] = stats_json(*job);
  res.set_content(json_dump(out), "application/json");
}

}  // namespace chainlm
