#include "serve/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/memory.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "infer/generator.h"
#include "infer/session.h"
#include "serve/batch_scheduler.h"
#include "serve/access.h"
#include "serve/admission.h"
#include "serve/chat_request.h"
#include "serve/logprobs.h"
#include "serve/completion_request.h"
#include "serve/completion_text.h"
#include "serve/metrics.h"
#include "serve/playground.h"
#include "serve/tokenize_request.h"

namespace chainlm {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// HTTP worker threads beyond the sessions and the queue: /health, /metrics, the page and
// refusals (400, 413, 503) stay answerable while every session and queue place is taken.
constexpr int kSpareHttpThreads = 4;
// And for connections that hold a thread without work: httplib gives each connection a thread
// while it is open, so idle keep-alive clients (until kKeepAliveSeconds) and slow senders
// (kReadTimeoutSeconds per read) would otherwise leave no thread for a real request. The
// threads wait in poll(); generations stay bounded by the sessions.
constexpr int kConnectionThreads = 256;

// Sessions when --max-sessions is not given: a full decoding batch (kMaxDecodeRows), or as
// many as the memory available (or --memory-limit) holds besides the weights, at least one.
int default_sessions(const ModelConfig& c, uint64_t weights, uint64_t memory_limit) {
  const uint64_t budget = memory_limit > 0 ? memory_limit : available_memory().bytes + weights;
  const uint64_t fixed = weights + kRuntimeOverheadBytes, per = InferenceSession::memory_bytes(c);
  const uint64_t fit = budget > fixed ? (budget - fixed) / per : 0;
  return (int)std::clamp<uint64_t>(fit, 1, kMaxDecodeRows);
}

json error_body(const std::string& message, const std::string& type, const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", nullptr}}}};
}

void set_error(httplib::Response& res, int status, const std::string& message,
               const std::string& type, const std::string& param = "") {
  res.status = status;
  res.set_content(json_dump(error_body(message, type, param)), "application/json");
}

std::string route_label(const std::string& path) {
  for (const char* known :
       {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"})
    if (path == known) return path;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

const char* finish_reason(const GenerateResult& r, const CompletionText& text) {
  return text.stopped() || r.stop_reason == StopReason::eos ? "stop" : "length";
}

// httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when Debian built the
// library): a burst of new connections beyond it has its SYNs dropped and retried a second
// later. This lets the server raise the backlog once bound.
// Header and body reads (a slow client holds a worker thread no longer than this) and idle
// keep-alive connections.
constexpr int kReadTimeoutSeconds = 10;
constexpr int kKeepAliveSeconds = 2;

class HttpServer : public httplib::Server {
 public:
  void raise_listen_backlog() {
    const socket_t sock = svr_sock_;
    if (sock != INVALID_SOCKET)
      ::listen(sock, SOMAXCONN);  // Linux updates a listening socket's backlog
  }
};

}  // namespace

struct InferenceServer::Impl {
  const Model& model;
  const Tokenizer& tok;
  ServeOptions opt;
  int threads = 1;
  MemoryEstimate memory;
  Admission admission;
  std::unique_ptr<BatchScheduler> scheduler;  // all model compute: continuous batching
  Metrics metrics;
  AccessPolicy access;
  HttpServer http;
  std::thread listener;
  int port = -1;
  std::atomic<bool> stopped{false};
  std::atomic<long> next_id{0};
  std::mutex seed_mutex;
  std::mt19937_64 seeds{std::random_device{}()};
  const long long started_at = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();

  Impl(const Model& m, const Tokenizer& t, ServeOptions o, int sessions, int compute_threads)
      : model(m),
        tok(t),
        opt(std::move(o)),
        threads(compute_threads),
        admission(sessions, opt.max_queue) {}

  // One completion from admission to the last token.
  struct Job {
    CompletionRequest request;
    std::shared_ptr<Admission::Slot> slot;  // the session place, freed with the job
    std::string id;
    long long created = 0;
    Clock::time_point arrival;
    double queue_seconds = 0;
    GenerateResult result;
    CompletionText text;
    bool cancelled = false;
    bool streamed = false;
    // The prompt's tokens (BOS first; a chat's conversation), then for /v1/chat/completions
    // the chunk format and whether the first chunk (which names the role) went out.
    std::vector<int> prompt_tokens;
    bool chat = false;
    bool include_usage = false;
    bool role_sent = false;
    std::vector<TokenLogprob> logprobs;  // per generated token, when the request asks
    size_t logprobs_sent = 0;            // those already in stream events
    size_t text_sent = 0;                // bytes of text already in stream events
  };

  void route();
  // Origin, Host, Content-Length and API key, before any route runs (serve/access.h).
  httplib::Server::HandlerResponse admit(const httplib::Request& req, httplib::Response& res);
  // Parse, check the prompt's length (RequestError: 400), then start().
  void completions(const std::string& body, httplib::Response& res);
  void chat_completions(const std::string& body, httplib::Response& res);
  // Admission (503 when full), then the answer, streamed or whole.
  void start(const std::shared_ptr<Job>& job, httplib::Response& res);
  // Generates; emit (if set) receives each token's releasable text and chains and returns
  // false when the client has gone away. Returns the text held back until the end (the last
  // event of a stream carries it).
  std::string run(Job& job, const std::function<bool(const std::string&, int)>& emit);
  // Sends the job as server-sent events; false when the stream did not end normally.
  bool stream(Job& job, httplib::DataSink& sink);
  // The response object (chunk: a stream event) in the format of the job's endpoint.
  // lp: the tokens whose log-probabilities the object carries (null: none asked).
  json completion_json(const Job& job, const std::string& text, const char* finish, bool chunk,
                       const std::vector<TokenLogprob>* lp = nullptr, size_t text_offset = 0) const;
  json usage_json(const Job& job) const;
  json stats_json(const Job& job) const;
  json models_json() const;
  json health_json() const;
};

void InferenceServer::Impl::route() {
  // Requests are counted before their response goes out, so a client that reads /metrics
  // right after its answer sees it counted: successes here, refusals in the error handler.
  auto counted = [this](const char* path, httplib::Server::Handler handler) {
    return [this, path, handler](const httplib::Request& req, httplib::Response& res) {
      handler(req, res);
      if (res.status < 400) metrics.count_request(path, res.status < 0 ? 200 : res.status);
    };
  };
  http.Get("/", counted("/", [](const httplib::Request&, httplib::Response& res) {
             const std::string_view page = playground_html();
             res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
           }));
  http.Get("/health", counted("/health", [this](const httplib::Request&, httplib::Response& res) {
             res.set_content(health_json().dump(), "application/json");
           }));
  http.Get("/metrics", counted("/metrics", [this](const httplib::Request&, httplib::Response& res) {
             const BatchScheduler::Counters sc = scheduler->counters();
             res.set_content(metrics.render({admission.running(), admission.waiting(),
                                             admission.max_sessions(), admission.max_queue(),
                                             current_rss_bytes(), peak_rss_bytes(), memory.total(),
                                             sc.decode_steps, sc.decode_rows, sc.prefill_pieces,
                                             sc.decode_seconds, sc.prefill_seconds}),
                             "text/plain; version=0.0.4; charset=utf-8");
           }));
  http.Get("/v1/models",
           counted("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
             res.set_content(json_dump(models_json()), "application/json");
           }));
  // POST bodies are read here rather than by httplib, so one limit holds for every encoding
  // (chunked included) and a body is never parsed as a form. (admit() has checked that a
  // Content-Length is a number.)
  auto post_json = [this](const char* path, std::function<void(const std::string&, httplib::Response&)> handle) {
    http.Post(path, [this, path, handle](const httplib::Request& req, httplib::Response& res,
                                         const httplib::ContentReader& read) {
      std::string body;
      // A declared length over the limit is refused unread; a chunked body when it passes it.
      bool too_large = req.has_header("Content-Length") &&
                       std::stoull(req.get_header_value("Content-Length")) > opt.max_body_bytes;
      const bool complete = !too_large && read([&](const char* data, size_t n) {
        if (body.size() + n > opt.max_body_bytes) {
          too_large = true;
          return false;
        }
        body.append(data, n);
        return true;
      });
      if (too_large || !complete) {
        res.set_header("Connection", "close");  // the rest of the body is not read
        if (too_large)
          set_error(res, 413,
                    cat("the request body is larger than the server accepts (--max-body-bytes ",
                        opt.max_body_bytes, ")"),
                    "invalid_request_error");
        else
          set_error(res, 400, "the request body could not be read to its end", "invalid_request_error");
        return;
      }
      try {
        handle(body, res);
      } catch (const RequestError& e) {
        set_error(res, 400, e.what(), "invalid_request_error", e.param());
      }
      if (res.status < 400) metrics.count_request(path, res.status < 0 ? 200 : res.status);
    });
  };
  post_json("/v1/completions", [this](const std::string& body, httplib::Response& res) { completions(body, res); });
  post_json("/v1/chat/completions",
            [this](const std::string& body, httplib::Response& res) { chat_completions(body, res); });
  post_json("/tokenize", [this](const std::string& body, httplib::Response& res) {
    const TokenizeRequest r = parse_tokenize_request(parse_json_body(body));
    std::vector<int> ids = tok.encode(r.content);
    if (r.add_special) ids.insert(ids.begin(), tok.bos_id());
    res.set_content(json_dump(json{{"tokens", ids}}), "application/json");
  });
  post_json("/detokenize", [this](const std::string& body, httplib::Response& res) {
    const std::vector<int> ids = parse_detokenize_request(parse_json_body(body), tok.vocab_size());
    res.set_content(json_dump(json{{"content", tok.decode(ids)}}), "application/json");
  });
  http.Get(R"(/v1/models/(.+))", counted("/v1/models/{id}", [this](const httplib::Request& req,
                                                                   httplib::Response& res) {
             const std::string id = req.matches[1];
             if (id != opt.model_name) {
               set_error(res, 404, cat("model '", id, "' not found; this server serves '", opt.model_name, "'"),
                         "not_found_error", "model");
               return;
             }
             res.set_content(json_dump(models_json()["data"][0]), "application/json");
           }));
  http.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return admit(req, res); });
  // Every 4xx/5xx gets an OpenAI-style JSON body; handlers that wrote their own keep it.
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    metrics.count_request(route_label(req.path), res.status);
    if (!res.body.empty()) return;
    if (res.status == 404)
      set_error(res, 404, cat("no route ", req.method, " ", req.path), "not_found_error");
    else if (res.status == 413)
      set_error(res, 413, "the request body is larger than the server accepts",
                "invalid_request_error");
    else
      set_error(res, res.status, cat("HTTP ", res.status), "invalid_request_error");
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        set_error(res, 500, what, "server_error");
      });
}

httplib::Server::HandlerResponse InferenceServer::Impl::admit(const httplib::Request& req,
                                                               httplib::Response& res) {
  using R = httplib::Server::HandlerResponse;
  const std::string host = req.get_header_value("Host");
  if (access.loopback_only && !is_loopback_host(host_of_host_header(host))) {
    res.set_header("Connection", "close");
    set_error(res, 403,
              cat("this server listens on loopback and answers only requests for localhost, 127.0.0.1 or "
                  "[::1], not for Host '",
                  host, "'"),
              "permission_error");
    return R::Handled;
  }
  const std::string origin = req.get_header_value("Origin");
  const OriginCheck from = check_origin(access, origin, host);
  if (from == OriginCheck::kRefused) {
    res.set_header("Connection", "close");
    set_error(res, 403,
              cat("requests from the web origin ", origin,
                  " are refused; start the server with --cors-origin ", origin, " to allow it"),
              "permission_error");
    return R::Handled;
  }
  if (from == OriginCheck::kAllowed) {
    res.set_header("Access-Control-Allow-Origin", origin);
    res.set_header("Vary", "Origin");
  }
  if (req.method == "OPTIONS") {  // a CORS preflight
    if (from != OriginCheck::kAllowed) {
      set_error(res, 403, "CORS preflight from an origin not allowed (--cors-origin)", "permission_error");
      return R::Handled;
    }
    res.status = 204;
    res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
    res.set_header("Access-Control-Max-Age", "600");
    return R::Handled;
  }
  if (req.has_header("Content-Length") && !valid_content_length(req.get_header_value("Content-Length"))) {
    res.set_header("Connection", "close");
    set_error(res, 400, cat("Content-Length '", req.get_header_value("Content-Length"), "' is not a length"),
              "invalid_request_error");
    return R::Handled;
  }
  if (!access.api_key.empty() && route_needs_key(req.path) &&
      !bearer_matches(req.get_header_value("Authorization"), access.api_key)) {
    res.set_header("WWW-Authenticate", "Bearer");
    set_error(res, 401, "this server needs an API key: send the header 'Authorization: Bearer KEY'",
              "authentication_error");
    return R::Handled;
  }
  return R::Unhandled;
}

json InferenceServer::Impl::health_json() const {
  return {{"status", stopped ? "stopping" : "ok"},     {"model", opt.model_name},
          {"sessions_in_flight", admission.running()}, {"queue_depth", admission.waiting()},
          {"max_sessions", admission.max_sessions()},  {"max_queue", admission.max_queue()},
          {"threads", threads},
          {"memory", {{"rss_bytes", current_rss_bytes()},
                      {"peak_rss_bytes", peak_rss_bytes()},
                      {"estimated_bytes", memory.total()}}}};
}

json InferenceServer::Impl::models_json() const {
  const ModelConfig& c = model.config();
  json sub = json::array();
  for (int k = 1; k <= c.n_chains(); ++k)
    sub.push_back({{"chains", k},
                   {"dim", model.layout().dim.prefix(k)},
                   {"parameters", model.num_params(k)}});
  std::string architecture = c.kv_share ? "CoLM-Air" : (c.n_chains() > 1 ? "CoLM" : "LLaMA");
  // PHD settings as config.json writes them, plus their name ("PHD-CSWA-2-16-32"); null without.
  json phd = nullptr;
  if (c.phd.enabled()) {
    phd = config_to_json(c)["phd"];
    phd["name"] = c.phd.name();
    architecture += " + " + c.phd.name();
  }
  json m = {{"id", opt.model_name},
            {"object", "model"},
            {"created", started_at},
            {"owned_by", "chainlm"},
            {"chains", c.n_chains()},
            {"chain_widths", c.chains},
            {"kv_share", c.kv_share},
            {"architecture", architecture},
            {"dim", c.dim},
            {"n_layers", c.n_layers},
            {"n_heads", c.n_heads},
            {"n_kv_heads", c.n_kv_heads},
            {"vocab_size", c.vocab_size},
            {"max_seq_len", c.max_seq_len},
            {"tokenizer", tok.kind()},
            {"sub_models", sub},
            {"phd", phd}};
  return {{"object", "list"}, {"data", json::array({m})}};
}

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

InferenceServer::InferenceServer(const Model& model, const Tokenizer& tokenizer,
                                 ServeOptions options) {
  CHAINLM_CHECK(options.threads >= 0, "--threads must be >= 0 (got ", options.threads, ")");
  CHAINLM_CHECK(options.max_sessions >= 0, "--max-sessions must be >= 0 (got ",
                options.max_sessions, ")");
  CHAINLM_CHECK(options.max_queue >= 0, "--max-queue must be >= 0 (got ", options.max_queue, ")");
  CHAINLM_CHECK(options.port >= 0 && options.port <= 65535, "--port must be in 0..65535 (got ",
                options.port, ")");
  CHAINLM_CHECK(tokenizer.vocab_size() <= model.config().vocab_size, "the tokenizer has ",
                tokenizer.vocab_size(), " tokens but the model's vocab_size is ",
                model.config().vocab_size);
  const int threads = options.threads > 0 ? options.threads : num_threads();
  const int sessions = options.max_sessions > 0 ? options.max_sessions
                                                : default_sessions(model.config(), model.weight_bytes(), options.memory_limit);
  MemoryEstimate memory;
  const uint64_t weights = model.weight_bytes();
  memory.parts = {{"weights", weights},
                  {cat(sessions, " session(s) at ", model.config().max_seq_len, " tokens"),
                   (uint64_t)sessions * InferenceSession::memory_bytes(model.config())},
                  {"runtime", kRuntimeOverheadBytes}};
  // The weights are loaded already: they are part of the estimate but no longer available.
  check_memory_fits("serve", memory, 1, options.memory_limit,
                    "lower --max-sessions or serve a smaller model", weights);
  // One thread computes for every session (batch_scheduler.h), with all the compute threads.
  set_num_threads(threads);
  impl_ = std::make_unique<Impl>(model, tokenizer, std::move(options), sessions, threads);
  impl_->memory = std::move(memory);
  SchedulerOptions so;
  so.max_sequences = sessions;
  so.prefill_chunk = impl_->opt.prefill_chunk;
  so.threads = threads;
  so.on_token = impl_->opt.on_token;
  impl_->scheduler = std::make_unique<BatchScheduler>(model, tokenizer, so);
  const int pool = sessions + impl_->opt.max_queue + kSpareHttpThreads + kConnectionThreads;
  impl_->http.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  impl_->http.set_payload_max_length(impl_->opt.max_body_bytes);
  impl_->access = {impl_->opt.api_key, impl_->opt.cors_origins, is_loopback_host(impl_->opt.host)};
  // Each response goes out at once (no Nagle delay on reused connections); a slow or idle
  // client holds a worker thread for a bounded time.
  impl_->http.set_tcp_nodelay(true);
  impl_->http.set_read_timeout(kReadTimeoutSeconds, 0);
  impl_->http.set_keep_alive_timeout(kKeepAliveSeconds);
  // SO_REUSEADDR only: httplib also sets SO_REUSEPORT, with which a second server on the same
  // port starts without error and takes half of the first one's connections.
  impl_->http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof(yes));
  });
  impl_->route();
}

InferenceServer::~InferenceServer() {
  stop();
}

int InferenceServer::start() {
  CHAINLM_CHECK(!impl_->listener.joinable(), "the server is already started");
  Impl& s = *impl_;
  s.port = s.opt.port == 0 ? s.http.bind_to_any_port(s.opt.host)
                           : (s.http.bind_to_port(s.opt.host, s.opt.port) ? s.opt.port : -1);
  CHAINLM_CHECK(s.port > 0, "cannot listen on ", s.opt.host, ":", s.opt.port,
                " (address in use, or not an address of this machine)");
  s.http.raise_listen_backlog();
  s.listener = std::thread([&s] { s.http.listen_after_bind(); });
  // Until httplib marks itself running, its stop() does nothing, and a stop() in that window
  // (a SIGTERM right after start) would leave the listener blocked in accept() for ever.
  while (!s.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return s.port;
}

void InferenceServer::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  impl_->admission.shutdown();
  impl_->http.stop();
  if (impl_->listener.joinable()) impl_->listener.join();
  impl_->scheduler->stop();  // after the HTTP threads: their generations have ended
}

int InferenceServer::port() const {
  return impl_->port;
}
int InferenceServer::max_sessions() const {
  return impl_->admission.max_sessions();
}
int InferenceServer::max_queue() const {
  return impl_->admission.max_queue();
}
const MemoryEstimate& InferenceServer::estimated_memory() const { return impl_->memory; }

int InferenceServer::threads() const { return impl_->threads; }

}  // namespace chainlm
