#include "serve/server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>

#include "core/error.h"
#include "core/memory.h"
#include "core/number_format.h"
#include "core/printable.h"
#include "core/threads.h"
#include "core/version.h"
#include "infer/session.h"
#include "kernels/gemm.h"
#include "serve/client_connection.h"
#include "serve/playground.h"
#include "serve/server_impl.h"
#include "serve/tokenize_request.h"

namespace chainlm {

namespace {

// When the request this thread answers arrived at routing (one thread answers a request from
// routing to its last byte); unset for one cpp-httplib refused before.
thread_local std::optional<std::chrono::steady_clock::time_point> request_started;

// The access log's line, written after the response's last byte (a stream's too):
// "2026-12-06T01:35:15Z 127.0.0.1:53422 \"POST /v1/completions\" 200 412.3 ms".
void log_request(const httplib::Request& req, const httplib::Response& res) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  ::gmtime_r(&t, &utc);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &utc);
  char took[32] = "-";  // (without a unit: no time was taken)
  if (request_started)
    std::snprintf(took, sizeof took, "%.1f ms",
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                            *request_started)
                      .count());
  request_started.reset();
  // The method and target as sent (the query too: the decoded path dropped it), control bytes,
  // invalid UTF-8 and quotes escaped: one UTF-8 line per request.
  const std::string target = req.target.empty() ? req.path : req.target;
  const std::string path =
      printable(req.method.empty() ? std::string("-") : req.method + " " + target, "\"");
  // cpp-httplib fills the peer in only for a request line it could parse: else "-".
  const std::string peer = req.remote_addr.empty()
                               ? std::string("-")
                               : req.remote_addr + ":" + std::to_string(req.remote_port);
  std::fprintf(stderr, "%s %s \"%s\" %d %s\n", when, peer.c_str(), path.c_str(), res.status, took);
}

// Makes cpp-httplib end the connection once `res` is written: it goes on reading the next
// request otherwise, and a body left unread (a 413's) was read as requests (its JSON as a request
// line: counted as 414s in /metrics). A response whose content provider reports failure ends the
// connection; this one writes the whole body first, then reports it.
void end_connection_after(httplib::Response& res) {
  auto body = std::make_shared<std::string>(std::move(res.body));
  res.body.clear();
  const std::string type = res.get_header_value("Content-Type");
  res.headers.erase("Content-Type");
  res.set_content_provider(body->size(), type,
                           [body](size_t offset, size_t length, httplib::DataSink& sink) {
                             sink.write(body->data() + offset, length);
                             return false;
                           });
}

// Ends the connection after this response (a body left unread, a request refused as unsafe).
// cpp-httplib 0.11 decides that from the request's own Connection header alone: a
// "Connection: close" set on the response went out twice beside its "Keep-Alive: timeout=2"
// (its own for a client that asked to close, and ours). The request is httplib's non-const
// object handed to handlers as const.
void close_connection_after(const httplib::Request& req) {
  auto& headers = const_cast<httplib::Request&>(req).headers;
  headers.erase("Connection");
  headers.emplace("Connection", "close");
}

// Whether the request says a body follows: a length or chunks (RFC 9112 6.3); without either
// its body is empty.
bool declares_body(const httplib::Request& req) {
  return req.has_header("Content-Length") || req.has_header("Transfer-Encoding");
}

using namespace server_detail;

void check_port(int port) {
  CHAINLM_CHECK(port >= 0 && port <= 65535, "--port must be in 0..65535 (got ", port, ")");
}

// Sessions when --max-sessions is not given: a full decoding batch (kMaxDecodeRows), or as
// many as the memory available (or --memory-limit) holds besides the weights, at least one.
int default_sessions(const ModelConfig& c, uint64_t weights, uint64_t memory_limit, KvCacheType kv_cache) {
  const uint64_t budget = memory_limit > 0 ? memory_limit : available_memory().bytes + weights;
  const uint64_t fixed = weights + kRuntimeOverheadBytes, per = InferenceSession::memory_bytes(c, 512, kv_cache);
  const uint64_t fit = budget > fixed ? (budget - fixed) / per : 0;
  return (int)std::clamp<uint64_t>(fit, 1, kMaxDecodeRows);
}

std::string route_label(const std::string& path) {
  for (const char* known :
       {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"})
    if (path == known) return path;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

}  // namespace

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
             res.set_content(json_dump(health_json()), "application/json");
           }));
  http.Get("/metrics", counted("/metrics", [this](const httplib::Request&, httplib::Response& res) {
             const BatchScheduler::Counters sc = scheduler->counters();
             res.set_content(
                 metrics.render({admission.running(), admission.waiting(), admission.max_sessions(),
                                 admission.max_queue(), current_rss_bytes(), peak_rss_bytes(),
                                 memory.total(), sc.decode_steps, sc.decode_rows, sc.prefill_pieces,
                                 sc.decode_seconds, sc.prefill_seconds, sc.decode_threads,
                                 sc.waiting_to_join}),
                 "text/plain; version=0.0.4; charset=utf-8");
           }));
  http.Get("/v1/models",
           counted("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
             res.set_content(json_dump(models_json()), "application/json");
           }));
  // POST bodies are read here rather than by httplib, so one limit holds for every encoding
  // (chunked included) and a body is never parsed as a form. (admit() has checked that a
  // Content-Length is a number.)
  using PostHandler =
      std::function<void(const httplib::Request&, const std::string&, httplib::Response&)>;
  auto post_json = [this](const char* path, PostHandler handle) {
    http.Post(path, [this, path, handle](const httplib::Request& req, httplib::Response& res,
                                         const httplib::ContentReader& read) {
      std::string body;
      // A body over the limit (a declared length, or chunks passing it) is refused, and read on
      // and dropped up to kDrainBytes more: closing with it unread reset the connection while
      // the client still wrote, and a client that writes its whole request before reading
      // (python's http.client) got a broken pipe instead of the 413. Never buffered.
      constexpr uint64_t kDrainBytes = 16 << 20;
      const uint64_t declared = req.has_header("Content-Length")
                                    ? std::stoull(req.get_header_value("Content-Length"))
                                    : 0;
      bool too_large = declared > opt.max_body_bytes;
      uint64_t dropped = 0;
      // A body declared far over the limit is not read at all (its client may see the reset).
      const bool drain = !too_large || declared - opt.max_body_bytes <= kDrainBytes;
      // While the body comes, a stop may end it after the read timeout (cut_stalled_connections).
      const BodyComing coming(*this, req);
      // Neither a length nor chunks: the body is empty (RFC 9112 6.3). Read "until the client
      // closes", it held the request the read timeout (10 s) and then got a 400.
      const bool complete =
          !declares_body(req) || (drain && read([&](const char* data, size_t n) {
                                    if (!too_large && body.size() + n <= opt.max_body_bytes) {
                                      body.append(data, n);
                                      return true;
                                    }
                                    if (!too_large) std::string().swap(body);
                                    too_large = true;
                                    dropped += n;
                                    return dropped <= kDrainBytes;
                                  }));
      if (too_large || !complete) {
        close_connection_after(req);  // beyond what was drained, the body is not read
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
        handle(req, body, res);
      } catch (const RequestError& e) {
        set_error(res, 400, e.what(), "invalid_request_error", e.param());
      }
      if (res.status < 400) metrics.count_request(path, res.status < 0 ? 200 : res.status);
    });
  };
  // The generating endpoints watch their client's connection while they queue or generate
  // without writing (client_connection.h).
  auto client_of = [this](const httplib::Request& req) {
    return ClientConnection(req.remote_addr, req.remote_port, port);
  };
  post_json("/v1/completions",
            [this, client_of](const httplib::Request& req, const std::string& body,
                              httplib::Response& res) { completions(body, client_of(req), res); });
  post_json(
      "/v1/chat/completions",
      [this, client_of](const httplib::Request& req, const std::string& body,
                        httplib::Response& res) { chat_completions(body, client_of(req), res); });
  post_json("/tokenize",
            [this](const httplib::Request&, const std::string& body, httplib::Response& res) {
              const TokenizeRequest r = parse_tokenize_request(parse_json_body(body));
              std::vector<int> ids = tok.encode(r.content);
              if (r.add_special) ids.insert(ids.begin(), tok.bos_id());
              res.set_content(json_dump(json{{"tokens", ids}}), "application/json");
            });
  post_json("/detokenize", [this](const httplib::Request&, const std::string& body,
                                  httplib::Response& res) {
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
  // A body-carrying method on a path with no route: cpp-httplib read its body before answering
  // 404, and one without a length "until the client closes" (10 s, then a 400 that named the
  // request malformed). Answered unread; the connection closes when a body was declared.
  auto no_route = [](const httplib::Request& req, httplib::Response& res,
                     const httplib::ContentReader&) {
    if (declares_body(req)) close_connection_after(req);
    res.status = 404;  // the error handler writes the body every 404 gets
  };
  http.Post(".*", no_route);
  http.Put(".*", no_route);
  http.Patch(".*", no_route);
  http.Delete(".*", no_route);
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    request_started = std::chrono::steady_clock::now();
    request_routed(req);
    return admit(req, res);
  });
  // After a response's last byte (a stream's too), for every request, routed or refused before.
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    if (request_started) request_answered(req);  // (set by the routing above)
    if (opt.request_log)
      log_request(req, res);
    else
      request_started.reset();
  });
  // Every 4xx/5xx gets an OpenAI-style JSON body; handlers that wrote their own keep it.
  auto describe_error = [](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404)
      set_error(res, 404, cat("no route ", req.method, " ", req.path), "not_found_error");
    else if (res.status == 413)
      set_error(res, 413, "the request body is larger than the server accepts",
                "invalid_request_error");
    else if (res.status == 414)
      set_error(res, 414,
                cat("the request's URI is longer than the server reads (",
                    CPPHTTPLIB_REQUEST_URI_MAX_LENGTH, " bytes)"),
                "invalid_request_error");
    else if (res.status == 400) {
      // cpp-httplib answers so a request it could not read: its request line, a header line over
      // its limit, or headers cut short (a read timeout). It closes the connection after, which
      // the response says (it advertised keep-alive).
      close_connection_after(req);
      set_error(
          res, 400,
          cat("the request is not HTTP the server can read (a malformed request line or header, a "
              "header line over ",
              CPPHTTPLIB_HEADER_MAX_LENGTH, " bytes, or headers cut short)"),
          "invalid_request_error");
    } else
      set_error(res, res.status, cat("HTTP ", res.status), "invalid_request_error");
  };
  http.set_error_handler(
      [this, describe_error](const httplib::Request& req, httplib::Response& res) {
        metrics.count_request(route_label(req.path), res.status);
        describe_error(req, res);
        // (Not while stopping: httplib then ends every connection after its response anyway,
        // and calls no content provider, so the body would not go out at all.)
        if (req.get_header_value("Connection") == "close" && !res.body.empty() && !stopped)
          end_connection_after(res);
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
  // Which one is meant cannot be told (RFC 9112 3.2, 6.3): two Content-Lengths would let the
  // rest of a body be read as the next request.
  for (const char* header : {"Host", "Content-Length"})
    if (req.get_header_value_count(header) > 1) {
      close_connection_after(req);
      set_error(res, 400, cat("the request carries more than one ", header, " header"),
                "invalid_request_error");
      return R::Handled;
    }
  if (!req.has_header("Host") && req.version != "HTTP/1.0") {
    // RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request without Host.
    close_connection_after(req);
    set_error(res, 400, "an HTTP/1.1 request must carry a Host header", "invalid_request_error");
    return R::Handled;
  }
  // An HTTP/1.0 request may leave Host out (curl -0, ab, old proxies). Browsers always send it,
  // so a request without one is no DNS-rebound page, which is what the loopback check is for.
  if (access.loopback_only && req.has_header("Host") &&
      !is_loopback_host(host_of_host_header(host))) {
    close_connection_after(req);
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
    close_connection_after(req);
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
  if (req.method == "OPTIONS") {
    res.status = 204;
    res.set_header("Allow", "GET, POST, OPTIONS");
    // Answered here, before routing: counted here (a browser's preflights went uncounted).
    metrics.count_request(route_label(req.path), 204);
    if (from != OriginCheck::kAllowed) return R::Handled;  // no preflight: what any OPTIONS gets
    // A preflight from an allowed origin: the headers the page asks to send are allowed (the
    // openai npm client adds X-Stainless-* ones; a fixed list made the browser refuse them).
    res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.set_header(
        "Access-Control-Allow-Headers",
        preflight_allowed_headers(req.get_header_value("Access-Control-Request-Headers")));
    res.headers.erase("Vary");  // set_header adds a second one beside the Origin one above
    res.set_header("Vary", "Origin, Access-Control-Request-Headers");
    res.set_header("Access-Control-Max-Age", "600");
    return R::Handled;
  }
  if (req.has_header("Content-Length") && !valid_content_length(req.get_header_value("Content-Length"))) {
    close_connection_after(req);
    set_error(res, 400, cat("Content-Length '", req.get_header_value("Content-Length"), "' is not a length"),
              "invalid_request_error");
    return R::Handled;
  }
  if (!access.api_key.empty() && route_needs_key(req.path) &&
      !bearer_matches(req.get_header_value("Authorization"), access.api_key)) {
    res.set_header("WWW-Authenticate", "Bearer");
    const std::string sent = req.get_header_value("Authorization");
    // Which of the three mistakes it is (the key itself is never repeated back).
    const char* why =
        !req.has_header("Authorization")
            ? "this server needs an API key: send the header 'Authorization: Bearer KEY'"
        : !starts_with_bearer(sent) ? "the Authorization header is not of the form 'Bearer KEY' "
                                      "(this server takes an API key)"
                                    : "the API key sent is not this server's key";
    set_error(res, 401, why, "authentication_error");
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
  const std::string architecture = c.architecture();
  // PHD settings as config.json writes them, plus their name ("PHD-CSWA-2-16-32"); null without.
  json phd = nullptr;
  if (c.phd.enabled()) {
    phd = config_to_json(c)["phd"];
    phd["name"] = c.phd.name();
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

InferenceServer::InferenceServer(const Model& model, const Tokenizer& tokenizer,
                                 ServeOptions options) {
  CHAINLM_CHECK(options.threads >= 0, "--threads must be >= 0 (got ", options.threads, ")");
  check_model_name(options.model_name, "the model's name (--name)");
  CHAINLM_CHECK(!options.model_name.empty(), "the model's name (--name) is empty");
  CHAINLM_CHECK(options.max_sessions >= 0, "--max-sessions must be >= 0 (got ",
                options.max_sessions, ")");
  CHAINLM_CHECK(options.max_queue >= 0, "--max-queue must be >= 0 (got ", options.max_queue, ")");
  CHAINLM_CHECK(options.connection_threads >= 0, "connection_threads must be >= 0 (got ",
                options.connection_threads, ")");
  CHAINLM_CHECK(options.max_body_bytes > 0, "--max-body-bytes must be positive (got ",
                options.max_body_bytes, "): no request could be answered");
  check_port(options.port);
  CHAINLM_CHECK(tokenizer.vocab_size() <= model.config().vocab_size, "the tokenizer has ",
                tokenizer.vocab_size(), " tokens but the model's vocab_size is ",
                model.config().vocab_size);
  const int threads = options.threads > 0 ? options.threads : num_threads();
  const KvCacheType kv_cache = resolve_kv_cache_type(options.kv_cache, model);  // refuses f16 for PHD now
  const int sessions = options.max_sessions > 0
                           ? options.max_sessions
                           : default_sessions(model.config(), model.weight_bytes(), options.memory_limit, kv_cache);
  MemoryEstimate memory;
  const uint64_t weights = model.weight_bytes();
  memory.parts = {
      {"weights", weights},
      {cat(count_of(sessions, "session"), " at ", model.config().max_seq_len, " tokens"),
       (uint64_t)sessions * InferenceSession::memory_bytes(model.config(), 512, kv_cache)},
      {"runtime", kRuntimeOverheadBytes}};
  // The weights are loaded already: they are part of the estimate but no longer available.
  // One session cannot be lowered: a smaller or quantized model is what fits then.
  const std::string f16 = kv_cache == KvCacheType::F32 && !model.config().phd.enabled()
                              ? ", --kv-cache f16 (half the cache)"
                              : "";
  check_memory_fits(options.command, memory, 1, options.memory_limit,
                    sessions > 1        ? "lower --max-sessions" + f16 + " or serve a smaller model"
                    : model.quantized() ? "serve a smaller model" + f16
                                        : "serve a smaller model" + f16 +
                                              ", or this one quantized (chainlm quantize)",
                    weights, options.memory_limit_option);
  // One thread computes for every session (batch_scheduler.h), with all the compute threads.
  set_num_threads(threads);
  impl_ = std::make_unique<Impl>(model, tokenizer, std::move(options), sessions, threads);
  impl_->memory = std::move(memory);
  impl_->metrics.set_build_info({{"version", kChainlmVersion},
                                 {"model", impl_->opt.model_name},
                                 {"weights", model.weight_format()}});
  size_t longest_piece = 1;
  for (int id = 0; id < tokenizer.vocab_size(); ++id)
    longest_piece = std::max(longest_piece, tokenizer.decode({id}).size());
  // 4: a character (which a token may be no less than) takes up to 4 bytes of UTF-8, and
  // normalization may shrink a character to 1; +1 for a tokenizer's leading space.
  impl_->max_prompt_bytes = (size_t)model.config().max_seq_len * 4 * (longest_piece + 1);
  SchedulerOptions so;
  so.max_sequences = sessions;
  so.prefill_chunk = impl_->opt.prefill_chunk;
  so.threads = threads;
  so.adaptive_threads = !impl_->opt.fixed_threads;
  so.kv_cache = kv_cache;
  so.on_token = impl_->opt.on_token;
  impl_->scheduler = std::make_unique<BatchScheduler>(model, tokenizer, so);
  impl_->set_up_connections(sessions);
  impl_->access = {impl_->opt.api_key, impl_->opt.cors_origins, is_loopback_host(impl_->opt.host)};
  impl_->route();
}

InferenceServer::~InferenceServer() {
  stop();
}

void check_model_name(const std::string& name, const char* option) {
  CHAINLM_CHECK(printable(name) == name, option,
                " must be UTF-8 text without control characters: it names the model in the API, "
                "the metrics and the log (got '",
                printable(name), "')");
}

void check_can_listen(const std::string& host, int port) {
  check_port(port);  // first: getaddrinfo refused -5 as if the host were wrong (a user trial)
  if (port == 0) return;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int gai = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
  CHAINLM_CHECK(gai == 0 && found, "cannot listen on ", host, ":", port, ": ", host,
                " is not an address (", ::gai_strerror(gai), ")");
  int err = 0;
  for (addrinfo* a = found; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // as httplib binds
    const bool bound = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    err = bound ? 0 : errno;
    ::close(fd);
    if (bound) break;
  }
  ::freeaddrinfo(found);
  if (err == 0) return;
  fail("cannot listen on ", host, ":", port, ": ",
       err == EADDRINUSE
           ? cat("the port is in use (another server? `ss -ltnp 'sport = :", port, "'` names it)")
       : err == EADDRNOTAVAIL ? cat(host, " is not an address of this machine")
       : err == EACCES        ? std::string("ports below 1024 need privileges")
                              : std::string(std::strerror(err)));
}

int InferenceServer::start() {
  CHAINLM_CHECK(!impl_->listener.joinable(), "the server is already started");
  Impl& s = *impl_;
  s.port = s.opt.port == 0 ? s.http.bind_to_any_port(s.opt.host)
                           : (s.http.bind_to_port(s.opt.host, s.opt.port) ? s.opt.port : -1);
  if (s.port <= 0) check_can_listen(s.opt.host, s.opt.port);  // says why
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
