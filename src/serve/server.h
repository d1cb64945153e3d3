#pragma once
// The HTTP server of `chainlm serve` (docs/serving.md): OpenAI-style completions with elastic
// chains, model listing, health, Prometheus metrics and the playground page, over cpp-httplib.
//
// One model is shared read-only by every request. One scheduler thread does all the model
// compute (serve/batch_scheduler.h): every active generation advances in one batched decoding
// step, with its own sub-model and its own KV cache (InferenceSession), and prompts are read in
// pieces between steps. At most max_sessions generations are active at once; at most max_queue
// requests wait for one and any beyond them get 503 with Retry-After.
#include "infer/kv_cache.h"
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "model/memory_estimate.h"
#include "model/model.h"
#include "serve/chat_template.h"

namespace chainlm {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0 = any free port (start() returns it)
  int threads = 0;                  // compute threads in all; 0 = all cores
  bool fixed_threads = false;       // decode on all of them even while fewer measure faster
  int max_sessions = 0;             // generations at once; 0 = a full decoding batch (8), or
                                    // as many sessions as memory holds if fewer
  int prefill_chunk = 256;          // prompt tokens read between two decoding steps
  int max_queue = 16;               // requests that may wait for a session
  // HTTP threads for connections beyond the sessions and the queue (idle keep-alive ones, slow
  // senders): see docs/serving.md. Fewer in tests that fill them all.
  int connection_threads = 256;
  // A streamed request's thread sleeps this long after each write and then writes every token
  // produced meanwhile at once (one event each; its first token and its end at once): each
  // wake-up takes a core from decoding (docs/serving.md, "Streaming"). 0: a write per token.
  int stream_interval_ms = 20;
  size_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  std::string model_name = "chainlm";
  // Access (serve/access.h): the API key every route but / and /health needs (empty: none), and
  // the browser origins allowed cross-site ("*": any).
  std::string api_key;
  std::vector<std::string> cors_origins;
  // How /v1/chat/completions turns messages into a prompt (serve/chat_template.h).
  ChatTemplate chat_template = ChatTemplate::kPlain;
  ChatStyle chat_style;  // what the model's own template adds to its family's
  // Memory budget (0 = what the machine has available): the model plus max_sessions sessions
  // at full context must fit, or the server refuses to start (docs/reliability.md).
  uint64_t memory_limit = 0;
  // The command a refusal names, and whether it takes --memory-limit (bench serve does not: its
  // refusal advised an option it lacks).
  std::string command = "serve";
  bool memory_limit_option = true;
  // What each session's KV cache holds (infer/kv_cache.h): auto, f32 or f16.
  KvCacheType kv_cache = KvCacheType::Auto;
  // One line on stderr per request answered (time, client, request line, status, duration): what
  // an operator greps after an incident. `chainlm serve` turns it on unless --no-request-log.
  bool request_log = false;
  // Called on the scheduler thread after each generated token (index from 0): blocking there
  // holds every generation in flight. Tests use it; production leaves it empty.
  std::function<void(int index)> on_token;
};

// Throws chainlm::Error naming why host:port cannot be listened on (in use, not an address of
// this machine, a privileged port), by binding a socket of its own and closing it: `serve`
// checks before it loads a model (a port in use was found after the whole load). Port 0 passes.
void check_can_listen(const std::string& host, int port);

// A model name for the API: non-empty UTF-8 without control characters (it goes into JSON, the
// metrics' labels and log lines). Throws naming `option` and the name, its bytes escaped.
void check_model_name(const std::string& name, const char* option);

class InferenceServer {
 public:
  // The model and tokenizer must outlive the server. Throws chainlm::Error on bad options.
  InferenceServer(const Model& model, const Tokenizer& tokenizer, ServeOptions options);
  ~InferenceServer();  // stops
  InferenceServer(const InferenceServer&) = delete;
  InferenceServer& operator=(const InferenceServer&) = delete;

  // Binds host:port and serves on a background thread; returns the bound port. Throws
  // chainlm::Error when the address cannot be bound.
  int start();
  // Refuses queued requests, stops accepting, lets running generations finish, joins. Idempotent.
  void stop();

  int port() const;
  int max_sessions() const;
  int max_queue() const;
  int threads() const;  // compute threads
  // Weights, max_sessions sessions (KV cache at max_seq_len, scratch) and the runtime.
  const MemoryEstimate& estimated_memory() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chainlm
