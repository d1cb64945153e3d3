#pragma once
// A tiny model on disk and an in-process InferenceServer on a free loopback port, for the serve
// tests, plus helpers to read server-sent events.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "io/test_temp_dir.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "serve/server.h"

namespace chainlm::testing {

// Once armed, holds the scheduler at the next token it generates (a SchedulerOptions::on_token
// calling at_token) until opened: requests sent meanwhile all join the batch together, or a
// test looks at a generation mid-way.
class Hold {
 public:
  void arm() {
    std::lock_guard<std::mutex> lock(m_);
    armed_ = true;
  }
  void at_token() {
    std::unique_lock<std::mutex> lock(m_);
    held_ = armed_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !armed_; });
  }
  bool wait_held(double seconds = 10) {
    std::unique_lock<std::mutex> lock(m_);
    return cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return held_; });
  }
  void open() {
    std::lock_guard<std::mutex> lock(m_);
    armed_ = false;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool armed_ = false, held_ = false;
};

// Blocks on_token at a chosen token until opened: holds a generation in flight.
class Gate {
 public:
  explicit Gate(int at_token) : at_(at_token) {}
  void at_token(int index) {
    if (index != at_) return;
    std::unique_lock<std::mutex> lock(m_);
    ++blocked_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void open() {
    std::lock_guard<std::mutex> lock(m_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait_blocked(int n) {
    std::unique_lock<std::mutex> lock(m_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return blocked_ >= n; });
  }

 private:
  const int at_;
  std::mutex m_;
  std::condition_variable cv_;
  int blocked_ = 0;
  bool open_ = false;
};

// A randomly initialized 3-chain model (chain widths 1, 1, 2) with the byte tokenizer, saved
// as a checkpoint directory. Random weights emit arbitrary bytes, invalid UTF-8 included.
// vocab_size past the byte tokenizer's 258 pads the vocabulary with ids that have no text.
inline void write_tiny_model(const std::string& dir, bool kv_share = true, int max_seq_len = 64,
                             int dim = 32, int n_layers = 2, PhdConfig phd = {},
                             int vocab_size = ByteTokenizer::kVocabSize) {
  ModelConfig c;
  c.dim = dim;
  c.n_layers = n_layers;
  c.n_heads = 4;
  c.n_kv_heads = kv_share ? 1 : 4;
  c.ffn_dim = 2 * dim;
  c.vocab_size = vocab_size;
  c.chains = {1, 1, 2};
  c.kv_share = kv_share;
  c.max_seq_len = max_seq_len;
  c.phd = phd;
  Model model(c);
  model.init_random(7);
  save_model(model, dir);
  save_tokenizer_to_dir("byte", dir);
}

// A 3-chain CoLM-Air model trained for a second (`chainlm prepare` and `chainlm train`) on
// sentences of a small grammar ("the small model reads the text."): all chains write them
// well, chain 1 alone does not, which is what the playground shows. Returns the run directory.
inline std::string write_trained_model(const TempDir& dir) {
  const std::vector<std::string> subjects = {"the small model", "a chain",         "the cat",
                                             "every sub-model", "the first chain", "a quick fox"};
  const std::vector<std::string> verbs = {"reads", "writes", "sees", "trades", "keeps", "finds"};
  const std::vector<std::string> objects = {"a long story",   "the text",     "speed for quality",
                                            "the next token", "a short poem", "the whole prompt"};
  std::string corpus;
  unsigned state = 1;
  auto pick = [&](const std::vector<std::string>& v) {
    state = state * 1103515245u + 12345u;
    return v[(state >> 16) % v.size()];
  };
  for (int i = 0; i < 400; ++i)
    corpus += pick(subjects) + " " + pick(verbs) + " " + pick(objects) + ".\n\n";
  write_bytes(dir.file("corpus.txt"), corpus);
  write_bytes(dir.file("config.json"),
              R"({"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 1, "ffn_dim": 128,
                  "vocab_size": 258, "chains": [1, 1, 2], "kv_share": true, "max_seq_len": 128})");
  auto q = [](const std::string& p) { return "'" + p + "'"; };
  const std::string prefix = std::string("'") + CHAINLM_BINARY + "' ";
  const std::string log = " >" + q(dir.file("train.log")) + " 2>&1";
  const std::string prepare = prefix + "prepare --tokenizer byte --input " +
                              q(dir.file("corpus.txt")) + " --out " + q(dir.file("data")) + log;
  const std::string train =
      prefix + "train --config " + q(dir.file("config.json")) + " --data " + q(dir.file("data")) +
      " --out " + q(dir.file("run")) +
      " --steps 200 --batch-size 8 --seq-len 64 --lr 3e-3 --threads 1 --quiet" + log;
  EXPECT_EQ(std::system(prepare.c_str()), 0) << read_bytes(dir.file("train.log"));
  EXPECT_EQ(std::system(train.c_str()), 0) << read_bytes(dir.file("train.log"));
  return dir.file("run");
}

// A model loaded from a checkpoint directory and a server over it, started on a free port.
class ServerUnderTest {
 public:
  ServerUnderTest(const std::string& model_dir, ServeOptions opt) {
    const std::string dir = resolve_checkpoint_dir(model_dir);  // a run directory: its latest
    model = load_model(dir);
    tokenizer = load_tokenizer(find_tokenizer_in_dir(dir));
    opt.host = "127.0.0.1";
    opt.port = 0;
    server = std::make_unique<InferenceServer>(*model, *tokenizer, std::move(opt));
    port = server->start();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(30, 0);
    return c;
  }
  nlohmann::json health() const {
    auto r = client().Get("/health");
    return r && r->status == 200 ? nlohmann::json::parse(r->body) : nlohmann::json();
  }
  // Polls /health until field has the value (false after timeout_s).
  bool wait_for(const std::string& field, int value, double timeout_s = 10) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < end) {
      const auto h = health();
      if (h.contains(field) && h[field] == value) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }

  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<InferenceServer> server;
  int port = 0;
};

// A connected TCP socket to 127.0.0.1:port, or -1.
inline int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The data of each "data: ..." event of a server-sent-event body, in order.
inline std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    const std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

// A stream's text and its last event (finish_reason, usage, stats); fails the test on a
// malformed stream.
struct StreamedCompletion {
  std::string text;
  std::vector<int> chains;  // per token event
  nlohmann::json last;
  bool done = false;  // ended with data: [DONE]
};

inline StreamedCompletion parse_stream(const std::string& body) {
  StreamedCompletion s;
  const auto events = sse_data(body);
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i] == "[DONE]") {
      s.done = i + 1 == events.size();
      continue;
    }
    const auto j = nlohmann::json::parse(events[i]);
    EXPECT_EQ(j["object"], "text_completion") << events[i];
    const auto& choice = j["choices"][0];
    s.text += choice["text"].get<std::string>();
    if (choice["finish_reason"].is_null())
      s.chains.push_back(j["chainlm"]["chains"].get<int>());
    else
      s.last = j;
  }
  return s;
}

// `chainlm serve ARGS` with this process's environment (OPENBLAS_CORETYPE and the like kept),
// CHAINLM_API_KEY removed and `env` added: its port (0 when it did not come up) and pid; stdout
// and stderr go to files in dir.
struct Spawned {
  pid_t pid = 0;
  int port = 0;
};
// Starts `chainlm serve ARGS` (stdout and stderr to serve.out and serve.err in `dir`) and waits
// up to wait_for_port_seconds for the port it prints (0 if none came).
inline Spawned spawn_serve(const TempDir& dir, std::vector<std::string> args,
                           std::vector<std::string> env, double wait_for_port_seconds = 10) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, dir.file("serve.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, dir.file("serve.err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  args.insert(args.begin(), {CHAINLM_BINARY, "serve"});
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> inherited;
  for (char** e = environ; *e; ++e)
    if (std::string(*e).rfind("CHAINLM_API_KEY=", 0) != 0) inherited.emplace_back(*e);
  inherited.insert(inherited.end(), env.begin(), env.end());
  for (auto& e : inherited) envp.push_back(e.data());
  envp.push_back(nullptr);
  Spawned s;
  if (posix_spawn(&s.pid, CHAINLM_BINARY, &actions, nullptr, argv.data(), envp.data()) != 0) s.pid = 0;
  posix_spawn_file_actions_destroy(&actions);
  for (int i = 0; i < wait_for_port_seconds * 100 && s.pid && s.port == 0; ++i) {
    const std::string text = read_bytes(dir.file("serve.out"));
    const size_t at = text.find("chainlm serve: http://");
    const size_t colon = at == std::string::npos ? at : text.find(':', at + 22);
    if (colon != std::string::npos && text.find('\n', colon) != std::string::npos)
      s.port = std::stoi(text.substr(colon + 1));
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return s;
}

inline void stop(const Spawned& s) {
  kill(s.pid, SIGTERM);
  int status = 0;
  waitpid(s.pid, &status, 0);
}

}  // namespace chainlm::testing
