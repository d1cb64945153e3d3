// chainlm serve: an HTTP API (OpenAI-style completions with elastic chains) and a playground
// page over one model (docs/serving.md).
#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/number_format.h"
#include "core/printable.h"
#include "core/stop_signals.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/run_path.h"
#include "serve/access.h"
#include "serve/chat_template.h"
#include "serve/server.h"

namespace chainlm::cli {

namespace {

struct ChosenTemplate {
  ChatTemplate family = ChatTemplate::kPlain;
  ChatStyle style;
};

// --chat-template, or the family of the chat_template in the model directory's
// tokenizer_config.json (a Hugging Face directory) or chat_template.jinja, or a GGUF file's
// tokenizer.chat_template, or plain. A template that is none of the known families is reported
// and plain used.
ChosenTemplate choose_chat_template(const std::string& given, const std::string& model) {
  CarriedChatTemplate carried;
  try {
    carried = carried_chat_template(model);
  } catch (const Error& e) {
    // With --chat-template, a broken file only loses its additions; without, it is the way out.
    if (given.empty()) fail(e.what(), "; fix it, or pass --chat-template to choose a template");
  }
  const std::string& jinja = carried.jinja;
  const std::string& source = carried.source;
  if (!given.empty()) {
    // The family named; the model's own additions (a default system turn, today's date) kept
    // when its template is of that family.
    const ChatTemplate family = parse_chat_template(given);
    const auto own = jinja.empty() ? std::nullopt : detect_chat_template(jinja);
    return {family, own == family ? detect_chat_style(jinja, family) : ChatStyle{}};
  }
  if (jinja.empty()) return {};
  if (const auto t = detect_chat_template(jinja)) return {*t, detect_chat_style(jinja, *t)};
  std::fprintf(stderr,
               "chainlm serve: %s has a chat template of no family chainlm knows; using plain "
               "(pass --chat-template to choose one)\n",
               source.c_str());
  return {};
}

// The host as a URL writes it: an IPv6 address in brackets (http://[::1]:8080/).
std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos && host.front() != '[' ? "[" + host + "]" : host;
}

// "runs/x/" -> "x", "stories260K.bin" -> "stories260K": the API's name of the model. A file
// name's bytes need not be UTF-8 or printable: they are escaped (a name with 0xFF made /health
// a 500 and /metrics a line Prometheus refuses).
std::string model_name_of(const std::string& model_arg) {
  std::filesystem::path p(model_arg);
  if (!p.has_filename()) p = p.parent_path();
  std::string name = p.stem().string();
  return name.empty() ? "chainlm" : printable(name);
}

// The stop signals' one watcher, from before the model loads (the signals are blocked in every
// thread, and it takes them with sigwait). While loading, a stop quits at once with 128 + the
// signal: nothing is served yet, and a load from slow storage (or a FIFO) had held SIGTERM
// blocked until it ended, then bound the port and announced itself. Once serving, the first
// signal asks for the graceful stop; a second, kSameStopMs or more later, quits at once
// (requests in progress are cut), as in train.
class StopWatch {
 public:
  // The server listens: from now on a stop is graceful.
  void serving() {
    std::lock_guard<std::mutex> lock(m_);
    serving_ = true;
  }
  // Blocks until the first stop signal (after serving()), and returns it.
  int wait() {
    std::unique_lock<std::mutex> lock(m_);
    stopped_.wait(lock, [&] { return sig_ != 0; });
    return sig_;
  }

 private:
  friend std::shared_ptr<StopWatch> watch_stop_signals(const sigset_t& signals);
  void on_signal(int sig) {
    const char* name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    std::unique_lock<std::mutex> lock(m_);
    const auto now = std::chrono::steady_clock::now();
    if (!serving_) {
      std::fprintf(stderr, "chainlm serve: %s while loading: quitting (nothing was served)\n",
                   name);
      std::_Exit(128 + sig);
    }
    if (sig_ == 0) {
      sig_ = sig;
      first_ = now;
      stopped_.notify_all();
    } else if (now - first_ >= std::chrono::milliseconds(kSameStopMs)) {
      std::fprintf(
          stderr,
          "chainlm serve: second stop signal: quitting at once (requests in progress are cut)\n");
      std::_Exit(128 + sig);
    }  // (else the same stop delivered twice: `timeout` sends it so)
  }
  std::mutex m_;
  std::condition_variable stopped_;
  bool serving_ = false;
  int sig_ = 0;
  std::chrono::steady_clock::time_point first_;
};

// The watcher's thread runs until the process ends (it waits in sigwait, which nothing cancels):
// detached, it shares the StopWatch.
std::shared_ptr<StopWatch> watch_stop_signals(const sigset_t& signals) {
  auto watch = std::make_shared<StopWatch>();
  std::thread([watch, signals] {
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) == 0) watch->on_signal(sig);
    }
  }).detach();
  return watch;
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("serve", "Serve a model over HTTP: completions API and playground");
  struct Args {
    std::string model, tokenizer, name, memory_limit, precision = "fp32", chat_template, kv_cache = "auto";
    ServeOptions serve;
  };
  auto a = std::make_shared<Args>();
  a->serve.request_log = true;
  cmd->add_option("--model", a->model, "Checkpoint or run directory, llama2.c .bin, HF directory or GGUF file")
      ->required();
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer (default: the one in the checkpoint)");
  cmd->add_option("--host", a->serve.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->serve.port, "Port; 0 = any free port (printed)")
      ->capture_default_str();
  cmd->add_option("--threads", a->serve.threads,
                  "Compute threads in all; 0 = all cores, or OMP_NUM_THREADS when set");
  cmd->add_flag(
      "--fixed-threads", a->serve.fixed_threads,
      "Decode on --threads threads always (default: on fewer while another process keeps a core "
      "busy and that measures faster)");
  add_precision_option(cmd, a->precision, kInferencePrecisionHelp);
  add_kv_cache_option(cmd, a->kv_cache);
  cmd->add_flag(
      "--no-request-log", [a](int64_t) { a->serve.request_log = false; },
      "Print no line per request (default: time, client, request line, status and duration on "
      "stderr)");
  cmd->add_option("--max-sessions", a->serve.max_sessions,
                  "Generations decoded at once, batched into one step (each holds a KV cache); "
                  "0 = 8, or fewer if memory holds fewer");
  cmd->add_option("--prefill-chunk", a->serve.prefill_chunk,
                  "Prompt tokens read between two decoding steps (a long prompt does not stall the "
                  "others' tokens)")
      ->capture_default_str()
      ->check(whole_number_in(1, 1 << 16));
  add_stream_interval_option(cmd, a->serve.stream_interval_ms);
  cmd->add_option("--max-queue", a->serve.max_queue,
                  "Requests that may wait for a session; beyond them 503")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", a->serve.max_body_bytes, "Larger request bodies get 413")
      ->capture_default_str();
  cmd->add_option("--memory-limit", a->memory_limit,
                  "Memory budget, e.g. 4G (default: what the machine has available); the "
                  "server refuses to start when the model and its sessions would not fit");
  auto* api_key =
      cmd->add_option(
             "--api-key", a->serve.api_key,
             "Every route but / and /health needs 'Authorization: Bearer KEY' (401 otherwise); "
             "prefer the environment variable, which other users cannot see in the process list")
          ->envname("CHAINLM_API_KEY");
  cmd->add_option("--cors-origin", a->serve.cors_origins,
                  "A web origin (e.g. https://app.example) whose pages may call the API; repeatable; '*' = any. "
                  "Default: none, and requests from other origins' pages are refused");
  cmd->add_option(
      "--chat-template", a->chat_template,
      "How /v1/chat/completions writes a conversation: plain, chatml, llama2, llama3, llama3.1, "
      "zephyr (default: recognized from the model's chat template: a directory's "
      "tokenizer_config.json or chat_template.jinja, a GGUF's tokenizer.chat_template; else "
      "plain)");
  cmd->add_option("--name", a->name,
                  "Model name in the API (default: the --model file or directory name)");
  cmd->callback([a, api_key, cmd]() {
    apply_threads_option(a->serve.threads);  // the server keeps the count (0: the one set here)
    check_model_name(a->name, "--name");
    // SIGINT and SIGTERM are taken by sigwait below: block them before any thread starts so
    // every thread inherits the mask and none is interrupted.
    // An empty key (--api-key "$KEY" with KEY unset) would serve without authentication.
    // (CLI11 skips an empty environment variable, so that one is looked at here.)
    const char* env_key = std::getenv("CHAINLM_API_KEY");
    CHAINLM_CHECK((api_key->count() == 0 || !a->serve.api_key.empty()) &&
                      (api_key->count() > 0 || env_key == nullptr || *env_key != '\0'),
                  "serve: the API key is empty (--api-key \"\" or CHAINLM_API_KEY set to nothing): "
                  "pass the key, "
                  "or leave both out (unset CHAINLM_API_KEY) to serve without one");
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    const auto stop = watch_stop_signals(stop_signals);

    check_can_listen(a->serve.host, a->serve.port);  // before the load, not after it
    // This thread computes nothing after loading: its parallel regions (bf16 conversion) run on
    // a thread of their own so that no idle OpenMP pool outlives them (run_on_own_thread).
    // A run directory serves the checkpoint `latest` names now, and keeps it: said at start,
    // since users watching a run took the server for one that follows it (a user trial).
    std::string checkpoint;
    try {
      if (std::filesystem::is_directory(a->model)) checkpoint = resolve_checkpoint_dir(a->model);
    } catch (const Error&) {  // the load below says what is wrong
    }
    LoadedModel loaded;
    run_on_own_thread([&] {
      loaded =
          load_model_and_tokenizer(a->model, a->tokenizer, true, parse_precision(a->precision));
    });
    a->serve.model_name = a->name.empty() ? model_name_of(a->model) : a->name;
    if (cmd->count("--memory-limit"))  // (given empty: refused as not a size)
      a->serve.memory_limit = parse_byte_size(a->memory_limit, "--memory-limit");
    const ChosenTemplate chat = choose_chat_template(a->chat_template, a->model);
    a->serve.chat_template = chat.family;
    a->serve.chat_style = chat.style;
    a->serve.kv_cache = resolve_kv_cache_type(parse_kv_cache_type(a->kv_cache), *loaded.model);
    InferenceServer server(*loaded.model, *loaded.tokenizer, a->serve);
    const int port = server.start();
    stop->serving();
    const ModelConfig& c = loaded.model->config();
    std::printf(
        "chainlm serve: http://%s:%d/ (model %s, %s; batches of up to %s on %s, queue "
        "%d)\n",
        url_host(a->serve.host).c_str(), port, a->serve.model_name.c_str(),
        count_of(c.n_chains(), "chain").c_str(), count_of(server.max_sessions(), "session").c_str(),
        count_of(server.threads(), "thread").c_str(), server.max_queue());
    std::printf("chainlm serve: memory estimated %s\n", server.estimated_memory().describe().c_str());
    if (!checkpoint.empty() && checkpoint != a->model)
      std::printf(
          "chainlm serve: weights of %s (what %s/latest named at start; a restart serves "
          "a newer one)\n",
          checkpoint.c_str(), a->model.c_str());
    std::string style;  // what the model's template adds to its family
    if (!chat.style.default_system.empty()) style = " (with its default system message)";
    if (chat.family == ChatTemplate::kLlama31)
      style = chat.style.today ? " (today's date)" : cat(" (", chat.style.date, ")");
    std::printf("chainlm serve: chat template %s%s, KV cache %s\n", chat_template_name(chat.family),
                style.c_str(), kv_cache_type_name(a->serve.kv_cache));
    if (const std::string m = chat_tokenizer_mismatch(chat.family, *loaded.tokenizer); !m.empty())
      std::fprintf(stderr, "chainlm serve: warning: %s\n", m.c_str());
    if (a->serve.api_key.empty() && !is_loopback_host(a->serve.host))
      std::fprintf(stderr,
                   "chainlm serve: warning: listening on %s, reachable from other machines, without an API key: "
                   "anyone who can connect can generate (set CHAINLM_API_KEY or --api-key)\n",
                   a->serve.host.c_str());
    std::fflush(stdout);
    const int sig = stop->wait();
    std::fprintf(
        stderr,
        "chainlm serve: %s, stopping: requests in progress finish (send it again, a second or more "
        "later, to quit at once)\n",
        sig == SIGINT ? "SIGINT" : "SIGTERM");
    const auto stopping = std::chrono::steady_clock::now();
    server.stop();
    // The last line: a clean end, told apart from a crash in the log.
    std::fprintf(stderr, "chainlm serve: stopped (%.1f s after %s)\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - stopping).count(),
                 sig == SIGINT ? "SIGINT" : "SIGTERM");
  });
}

}  // namespace chainlm::cli
