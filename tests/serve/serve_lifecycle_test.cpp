// `chainlm serve` from start to end as a supervisor sees it (a user trial of running it for days):
// a stop while the model loads, and the line a clean stop ends with.
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "serve_test_util.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;

// Waits up to `seconds` for the process to end; its wait status, or -1 if it is still running.
int wait_for_exit(pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
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
    const int status = wait_for_exit(s.pid, 20);
    if (status == -1) {  // (the old binary: still loading; end it for the next test)
      kill(s.pid, SIGKILL);
      waitpid(s.pid, nullptr, 0);
    }
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
  const int status = wait_for_exit(s.pid, 30);
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

  const int fd = testing::connect_loopback(s.port);
  ASSERT_GE(fd, 0);
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), (ssize_t)head.size());
  std::atomic<bool> quit{false};
  std::atomic<double> cut_after{-1};
  const auto stop_started = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  std::thread trickle([&] {
    // A header line every 2 s for up to 30 s, until the server ends the connection.
    for (int i = 0; i < 60 && !quit; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      if (i % 4 == 3 && ::send(fd, "X-A: b\r\n", 8, MSG_NOSIGNAL) != 8) break;
      char c;
      if (::recv(fd, &c, 1, MSG_DONTWAIT) == 0) break;  // ended by the server
    }
    cut_after =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_started).count();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::thread stopping([&] { s.server->stop(); });
  // The trickling connection ends after the read timeout, while the stream is still held.
  while (cut_after < 0 &&
         std::chrono::steady_clock::now() - stop_started < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  gate.open();
  stream.join();
  stopping.join();
  quit = true;
  trickle.join();
  ::close(fd);
  EXPECT_GE(cut_after.load(), 9.5);
  EXPECT_LT(cut_after.load(), 14.0) << "the stop waited for the trickling client";
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
  std::thread trickle([&] {
    std::vector<bool> open(fds.size(), true);
    for (int i = 0; i < 60 && !quit; ++i) {  // a header line every 2 s, for up to 30 s
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      for (size_t k = 0; k < fds.size(); ++k) {
        if (!open[k]) continue;
        char c;
        if (::recv(fds[k], &c, 1, MSG_DONTWAIT) == 0 ||
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
}

}  // namespace
}  // namespace chainlm
