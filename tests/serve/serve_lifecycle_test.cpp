// `chainlm serve` from start to end as a supervisor sees it (a user trial of running it for days):
// a stop while the model loads, and the line a clean stop ends with.
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "cli/spawn_process.h"
#include "serve_test_util.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;

// Takes what has arrived on fd without waiting; true once the server has closed its side.
bool read_until_closed(int fd, std::string& got) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return n == 0;
    got.append(buf, (size_t)n);
  }
}

// A load that blocks (a tokenizer that is a FIFO nobody writes; slow or network storage alike)
// held SIGTERM and SIGINT blocked until it ended: `timeout` and supervisors could not stop the
// server, which then bound its port and announced itself. A stop while loading quits at once.
TEST(ServeLifecycle, AStopWhileTheModelLoadsQuitsAtOnce) {
  TempDir dir;
  const std::string model = dir.file("model"), fifo = dir.file("tokenizer.fifo");
  testing::write_tiny_model(model, true);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const int sig : {SIGTERM, SIGINT}) {
    const testing::Spawned s = testing::spawn_serve(
        dir, {"--model", model, "--tokenizer", fifo, "--port", "0", "--threads", "1"}, {},
        /*wait_for_port_seconds=*/0.5);
    ASSERT_NE(s.pid, 0);
    EXPECT_EQ(s.port, 0) << "the load cannot end: it waits for the FIFO's writer";
    kill(s.pid, sig);
    const int status = testing::wait_for_exit_or_kill(s.pid, 20);
    ASSERT_NE(status, -1) << "still running 20 s after the signal";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + sig) << status;
    EXPECT_NE(read_bytes(dir.file("serve.err"))
                  .find(cat("chainlm serve: ", sig == SIGINT ? "SIGINT" : "SIGTERM",
                            " while loading: quitting (nothing was served)")),
              std::string::npos)
        << read_bytes(dir.file("serve.err"));
    EXPECT_EQ(read_bytes(dir.file("serve.out")).find("http://"), std::string::npos);
  }
}

// A stop ended without a word after "stopping": a log could not tell a clean end from a crash.
TEST(ServeLifecycle, ACleanStopEndsWithALineOfItsOwn) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true);
  const testing::Spawned s =
      testing::spawn_serve(dir, {"--model", model, "--port", "0", "--threads", "1"}, {});
  ASSERT_NE(s.port, 0) << read_bytes(dir.file("serve.err"));
  httplib::Client c("127.0.0.1", s.port);
  ASSERT_TRUE(c.Get("/health"));
  kill(s.pid, SIGTERM);
  const int status = testing::wait_for_exit_or_kill(s.pid, 30);
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const std::string err = read_bytes(dir.file("serve.err"));
  const size_t stopping = err.find("chainlm serve: SIGTERM, stopping"),
               stopped = err.find("chainlm serve: stopped (");
  ASSERT_NE(stopped, std::string::npos) << err;
  EXPECT_LT(stopping, stopped) << err;
  EXPECT_NE(err.find(" s after SIGTERM)\n", stopped), std::string::npos) << err;
}

// cpp-httplib times out each read of a request, not the whole of it: a client sending a header
// line every 2 s was never timed out, and held a stop for as long as it went on (a soak trial:
// 54 s, until it stopped sending). After the read timeout (10 s) a stop ends such connections,
// and only those: a stream in progress finishes whole.
TEST(ServeLifecycle, AStopEndsARequestStillTricklingInAfterTheReadTimeout) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true);
  testing::Gate gate(2);  // the stream waits at its third token until opened
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 2;
  o.on_token = [&](int i) { gate.at_token(i); };
  testing::ServerUnderTest s(model, o);
  std::string streamed;
  std::thread stream([&] {
    auto r = s.client().Post(
        "/v1/completions",
        R"({"prompt": "hi", "max_tokens": 6, "stream": true, "ignore_eos": true, "seed": 1})",
        "application/json");
    if (r) streamed = r->body;
  });
  ASSERT_TRUE(gate.wait_blocked(1));

  // One connection sends its headers a line every 2 s; another its body (200 bytes declared) a
  // byte a second: a slow upload had held a stop for as long as it went on, too.
  const int fd = testing::connect_loopback(s.port), body_fd = testing::connect_loopback(s.port);
  ASSERT_GE(fd, 0);
  ASSERT_GE(body_fd, 0);
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), (ssize_t)head.size());
  const std::string body_head = head +
                                "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                                "{\"prompt\": ";
  ASSERT_EQ(::send(body_fd, body_head.data(), body_head.size(), MSG_NOSIGNAL),
            (ssize_t)body_head.size());
  std::atomic<bool> quit{false};
  std::atomic<double> cut_after{-1}, body_cut_after{-1};
  std::string answer, body_answer;
  const auto stop_started = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  std::thread trickle([&] {
    // Up to 30 s, until the server ends both connections.
    for (int i = 0; i < 60 && !quit && (cut_after < 0 || body_cut_after < 0); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const double now =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_started).count();
      if (cut_after < 0 && (read_until_closed(fd, answer) ||
                            (i % 4 == 3 && ::send(fd, "X-A: b\r\n", 8, MSG_NOSIGNAL) != 8)))
        cut_after = now;
      if (body_cut_after < 0 && (read_until_closed(body_fd, body_answer) ||
                                 (i % 2 == 1 && ::send(body_fd, " ", 1, MSG_NOSIGNAL) != 1)))
        body_cut_after = now;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::thread stopping([&] { s.server->stop(); });
  // The trickling connections end after the read timeout, while the stream is still held.
  while ((cut_after < 0 || body_cut_after < 0) &&
         std::chrono::steady_clock::now() - stop_started < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  gate.open();
  stream.join();
  stopping.join();
  quit = true;
  trickle.join();
  ::close(fd);
  ::close(body_fd);
  for (const double after : {cut_after.load(), body_cut_after.load()}) {
    EXPECT_GE(after, 9.5);
    EXPECT_LT(after, 14.0) << "the stop waited for a trickling client";
  }
  // Answered 408, not closed without a word.
  EXPECT_EQ(answer.rfind("HTTP/1.1 408 Request Timeout", 0), 0u) << answer;
  EXPECT_EQ(body_answer.rfind("HTTP/1.1 408 Request Timeout", 0), 0u) << body_answer;
  const size_t json_at = answer.find("\r\n\r\n");
  ASSERT_NE(json_at, std::string::npos) << answer;
  EXPECT_EQ(nlohmann::json::parse(answer.substr(json_at + 4))["error"]["code"], 408) << answer;
  const auto parsed = testing::parse_stream(streamed);
  EXPECT_TRUE(parsed.done) << streamed;
  EXPECT_EQ(parsed.last["usage"]["completion_tokens"], 6) << streamed;
}

// While every HTTP thread held a trickling connection, no other request was answered for as long
// as they went on (a soak trial: 300 of them, a probe timed out 20 s in). Connections without a
// request in progress for the read timeout are then ended, and the others are served.
TEST(ServeLifecycle, TricklingConnectionsHoldingEveryThreadAreEndedAfterTheReadTimeout) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true);
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 1;
  o.max_queue = 0;
  o.connection_threads = 0;  // 5 HTTP threads: one session, four spare
  testing::ServerUnderTest s(model, o);
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) {
    const int fd = testing::connect_loopback(s.port);
    ASSERT_GE(fd, 0);
    const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), (ssize_t)head.size());
    fds.push_back(fd);
  }
  std::atomic<bool> quit{false};
  std::atomic<int> ended{0};
  std::vector<std::string> answers(fds.size());
  std::thread trickle([&] {
    std::vector<bool> open(fds.size(), true);
    for (int i = 0; i < 60 && !quit; ++i) {  // a header line every 2 s, for up to 30 s
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      for (size_t k = 0; k < fds.size(); ++k) {
        if (!open[k]) continue;
        if (read_until_closed(fds[k], answers[k]) ||
            (i % 4 == 3 && ::send(fds[k], "X-A: b\r\n", 8, MSG_NOSIGNAL) != 8)) {
          open[k] = false;
          ++ended;
        }
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // every thread taken
  const auto asked = std::chrono::steady_clock::now();
  httplib::Client c = s.client();
  auto r = c.Get("/health");
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  quit = true;
  trickle.join();
  for (int fd : fds) ::close(fd);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(waited, 15.0) << "answered only when the trickling stopped";
  EXPECT_EQ(ended.load(), 5);
  for (const std::string& a : answers)  // a request timed out, said so
    EXPECT_EQ(a.rfind("HTTP/1.1 408 Request Timeout", 0), 0u) << a;
}

}  // namespace
}  // namespace chainlm
