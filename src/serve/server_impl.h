#pragma once
// The inside of InferenceServer (server.h), shared by its two source files: server.cpp (HTTP
// set-up, routes, access checks, health and models) and server_completions.cpp (the
// completion and chat endpoints: requests into generations, answers whole or streamed).
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "serve/access.h"
#include "serve/admission.h"
#include "serve/batch_scheduler.h"
#include "serve/client_connection.h"
#include "serve/completion_request.h"
#include "serve/completion_text.h"
#include "serve/logprobs.h"
#include "serve/metrics.h"
#include "serve/server.h"

namespace chainlm {

namespace server_detail {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// How often a request that queues or generates without writing looks whether its client is
// still connected.
constexpr int kClientCheckMs = Admission::kGoneCheckMs;
// The status a request whose client left gets in the access log (nginx's; no client reads it).
constexpr int kClientClosedRequest = 499;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// An OpenAI-style error object.
inline json error_body(const std::string& message, const std::string& type, const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", nullptr}}}};
}

inline void set_error(httplib::Response& res, int status, const std::string& message, const std::string& type,
                      const std::string& param = "") {
  res.status = status;
  res.set_content(json_dump(error_body(message, type, param)), "application/json");
}

// httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when Debian built the
// library): a burst of new connections beyond it has its SYNs dropped and retried a second
// later. This lets the server raise the backlog once bound.
class HttpServer : public httplib::Server {
 public:
  void raise_listen_backlog() {
    const socket_t sock = svr_sock_;
    if (sock != INVALID_SOCKET)
      ::listen(sock, SOMAXCONN);  // Linux updates a listening socket's backlog
  }
};

}  // namespace server_detail

struct InferenceServer::Impl {
  using json = server_detail::json;
  using Clock = server_detail::Clock;

  const Model& model;
  const Tokenizer& tok;
  ServeOptions opt;
  int threads = 1;
  MemoryEstimate memory;
  Admission admission;
  std::unique_ptr<BatchScheduler> scheduler;  // all model compute: continuous batching
  Metrics metrics;
  AccessPolicy access;
  server_detail::HttpServer http;
  std::thread listener;
  int port = -1;
  std::atomic<bool> stopped{false};
  std::atomic<long> next_id{0};
  std::mutex seed_mutex;
  std::mt19937_64 seeds{std::random_device{}()};
  // The peers (peer_key) of requests between routing and their response's last byte: at a
  // stop, the connections a stop must wait for; the others, still sending a request past the
  // read timeout, are ended (cut_stalled_connections).
  std::mutex handling_mutex;
  std::multiset<std::string> handling;
  std::multiset<std::string> reading_body;  // of those, the requests whose body is still coming
  // While every HTTP thread holds a connection: when each connection a scan found without a
  // request in progress was first found so, or last ended a response (after it was found).
  std::map<std::string, Clock::time_point> idle_since;
  // Ends the connections without a request between routing and its last byte: all of them at a
  // stop (after the read timeout), or while the threads are all taken, those found so for the
  // read timeout. (server_connections.cpp, with the rest of this part.)
  void cut_stalled_connections(bool stopping);
  // The HTTP threads (HttpThreadPool), timeouts and socket options, for `sessions` sessions.
  void set_up_connections(int sessions);
  // A request reached routing / its response's last byte went out (the access log's moment).
  void request_routed(const httplib::Request& req);
  void request_answered(const httplib::Request& req);
  // While alive, the request's body is still coming: a stop ends it after the read timeout.
  class BodyComing {
   public:
    BodyComing(Impl& impl, const httplib::Request& req);
    ~BodyComing();
    BodyComing(const BodyComing&) = delete;
    BodyComing& operator=(const BodyComing&) = delete;

   private:
    Impl& impl_;
    const std::string peer_;
  };
  // A prompt longer than this many bytes has more tokens than the model's context, whatever
  // they are (a token decodes to at most the tokenizer's longest piece, and a character to at
  // least one byte): it is refused before the tokenizer spends time on it.
  size_t max_prompt_bytes = 0;
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
  // One choice of a completion: a generation from one prompt.
  struct Choice {
    int index = 0;
    std::string prompt;               // its prompt's text (for echo)
    std::vector<int> prompt_tokens;   // BOS first (a chat: the conversation)
    std::shared_ptr<Generation> gen;  // in the batch scheduler
    GenerateResult result;            // the tokens it took, once ended
    CompletionText text;
    std::vector<TokenLogprob> logprobs;  // per generated token, when the request asks
    size_t logprobs_sent = 0;            // those already in stream events
    size_t logprobs_text = 0;            // bytes of text of those
    Utf8CharCount logprobs_chars;        // and its characters, after echo's prompt (text_offset)
    bool role_sent = false;              // chat streams: the first chunk names the role
    bool counted = false;                // in the metrics (run() counts it, or finish())
  };

  // One completion request from admission to its last choice's last token.
  struct Job {
    CompletionRequest request;
    std::shared_ptr<Admission::Slot> slot;  // the request's place, freed with the job
    std::string id;
    long long created = 0;
    Clock::time_point arrival;
    double queue_seconds = 0;
    std::vector<Choice> choices;  // prompt p's n choices are p*n .. p*n+n-1
    ClientConnection client;      // watched while the request queues or generates unstreamed
    bool cancelled = false;       // its client went away
    bool streamed = false;
    bool chat = false;  // /v1/chat/completions: its chunk format
  };

  void route();
  // Origin, Host, Content-Length and API key, before any route runs (serve/access.h).
  httplib::Server::HandlerResponse admit(const httplib::Request& req, httplib::Response& res);
  // Parse, check the prompts' lengths (RequestError: 400), then start().
  void completions(const std::string& body, ClientConnection client, httplib::Response& res);
  void chat_completions(const std::string& body, ClientConnection client, httplib::Response& res);
  // A choice for each prompt (its tokens, BOS first) n times, each with its own text filter.
  void add_choices(Job& job, const std::string& prompt, std::vector<int> prompt_tokens,
                   const std::vector<std::string>& stops);
  // Admission (503 when full; given up if the client leaves while queued), every choice's
  // generation submitted, then the answer, streamed or whole.
  void start(const std::shared_ptr<Job>& job, httplib::Response& res);
  // Takes a choice's tokens, those ready together at most every stream_interval_ms; emit (if
  // set) receives each token's releasable text and chains, and flush (if set), after each batch,
  // writes what emit was given and returns false when the client has gone away. Returns the text
  // held back until the end (the choice's last stream event carries it).
  std::string run(Job& job, Choice& choice,
                  const std::function<void(const std::string&, int)>& emit,
                  const std::function<bool()>& flush);
  // Cancels the choices from `first` on and frees the request's place.
  void finish(Job& job, size_t first);
  // A choice's generation in the metrics, once: `generated` the chains of every token it made
  // (none, and no prompt read, if it never got a session); the first choice also gives the
  // request's wait (admission and session).
  void count_choice(const Job& job, Choice& c, const std::vector<int>& generated);
  // Sends the job as server-sent events, choice after choice; false when the stream did not end
  // normally.
  bool stream(Job& job, httplib::DataSink& sink);
  // A choice object (chunk: of a stream event) in the format of the job's endpoint.
  // lp: the tokens whose log-probabilities it carries (null: none asked).
  json choice_json(const Job& job, const Choice& c, const std::string& text, const char* finish,
                   bool chunk, const std::vector<TokenLogprob>* lp = nullptr,
                   const Utf8CharCount& before = {}) const;
  // The response object (or stream event) around choice objects.
  json response_json(const Job& job, json choices, bool chunk) const;
  json usage_json(const Job& job) const;
  json stats_json(const Job& job, const Choice& c) const;
  json models_json() const;
  json health_json() const;
};

}  // namespace chainlm
