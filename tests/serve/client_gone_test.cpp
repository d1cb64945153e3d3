// A client that goes away while its request waits in the queue or generates unstreamed: the
// request gives up its place and its generation (nobody would read the answer), and those behind
// it move up. Also the two pieces under it: finding a request's socket and telling a closed
// connection from one with bytes sent ahead, and the queue's tickets of clients that left.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>

#include "serve/admission.h"
#include "serve/client_connection.h"
#include "serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using testing::connect_loopback;
using testing::Gate;
using testing::ServerUnderTest;
using testing::TempDir;

// A listening loopback socket on a free port, and its port.
int listen_loopback(int& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port = ntohs(addr.sin_port);
  return fd;
}

int local_port_of(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

TEST(ClientConnection, FindsTheServersSocketOfAConnectionAndSeesItsClientClose) {
  int port = 0;
  const int listener = listen_loopback(port);
  const int client = connect_loopback(port), other = connect_loopback(port);
  ASSERT_GE(client, 0);
  ASSERT_GE(other, 0);
  const int accepted = ::accept(listener, nullptr, nullptr),
            accepted_other = ::accept(listener, nullptr, nullptr);
  ASSERT_GE(accepted, 0);
  // The server's end of `client`'s connection, not the client's own socket (the same process
  // holds both here, as the load generator does), nor the other connection's.
  EXPECT_EQ(find_connection_socket("127.0.0.1", local_port_of(client), port), accepted);
  EXPECT_EQ(find_connection_socket("127.0.0.1", local_port_of(other), port), accepted_other);
  EXPECT_EQ(
      find_connection_socket("127.0.0.1", local_port_of(client), port + 1 == 65536 ? 1 : port + 1),
      -1);
  EXPECT_EQ(find_connection_socket("127.0.0.2", local_port_of(client), port), -1);

  ClientConnection conn("127.0.0.1", local_port_of(client), port);
  EXPECT_FALSE(conn.gone());
  // Bytes sent ahead (a pipelined request) are not a hang-up, and are left for the server to read.
  ASSERT_EQ(::send(client, "GET / HTTP/1.1\r\n", 16, 0), 16);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(conn.gone());
  char buf[16];
  EXPECT_EQ(::recv(accepted, buf, sizeof buf, MSG_DONTWAIT), 16);
  ::close(client);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(conn.gone());
  EXPECT_FALSE(ClientConnection().gone());  // no connection known: never gone
  for (int fd : {accepted, accepted_other, other, listener}) ::close(fd);
}

// A server listening on "::" (`--host ::`) sees IPv4 clients as IPv4-mapped IPv6 addresses, as
// cpp-httplib writes them ("::ffff:127.0.0.1"); IPv6 ones as themselves ("::1").
TEST(ClientConnection, FindsConnectionsOfAnIpv6Listener) {
  const int listener = ::socket(AF_INET6, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0) << "no IPv6 sockets on this machine";
  const int no = 0;
  ::setsockopt(listener, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof no);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_any;
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin6_port);
  const int v4 = connect_loopback(port);
  ASSERT_GE(v4, 0);
  const int accepted_v4 = ::accept(listener, nullptr, nullptr);
  EXPECT_EQ(find_connection_socket("::ffff:127.0.0.1", local_port_of(v4), port), accepted_v4);
  EXPECT_EQ(find_connection_socket("127.0.0.1", local_port_of(v4), port), -1);  // another address
  const int v6 = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 to{};
  to.sin6_family = AF_INET6;
  to.sin6_addr = in6addr_loopback;
  to.sin6_port = htons(static_cast<uint16_t>(port));
  if (::connect(v6, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) {  // ::1 may be absent
    const int accepted_v6 = ::accept(listener, nullptr, nullptr);
    sockaddr_in6 own{};
    len = sizeof own;
    ::getsockname(v6, reinterpret_cast<sockaddr*>(&own), &len);
    EXPECT_EQ(find_connection_socket("::1", ntohs(own.sin6_port), port), accepted_v6);
    ::close(accepted_v6);
  }
  for (int fd : {v6, v4, accepted_v4, listener}) ::close(fd);
}

TEST(Admission, AQueuedRequestWhoseClientLeftGivesItsPlaceToThoseBehind) {
  Admission a(1, 2);
  auto holder = a.acquire();
  std::atomic<bool> leave{false}, left_reported{false};
  std::promise<bool> behind_admitted;
  std::thread leaver([&] {
    bool left = false;
    auto slot = a.acquire([&] { return leave.load(); }, &left);
    left_reported = left && !slot;
  });
  while (a.waiting() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread behind([&] {
    bool left = true;
    auto slot = a.acquire([] { return false; }, &left);
    behind_admitted.set_value(slot != nullptr && !left);
  });
  while (a.waiting() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(a.acquire(), nullptr);  // full
  leave = true;
  leaver.join();
  EXPECT_TRUE(left_reported);
  EXPECT_EQ(a.waiting(), 1);
  EXPECT_EQ(a.running(), 1);
  holder.reset();  // the one behind the leaver is next
  EXPECT_TRUE(behind_admitted.get_future().get());
  behind.join();
  EXPECT_EQ(a.waiting(), 0);
  EXPECT_EQ(a.running(), 0);
  EXPECT_NE(a.acquire(), nullptr);
}

long metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stol(text.substr(at + name.size() + 2));
}

// A raw connection that sends an unstreamed completion request and never reads: closed by the test.
int send_completion(int port, const json& body) {
  const int fd = connect_loopback(port);
  const std::string b = body.dump();
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(b.size()) + "\r\n\r\n" + b;
  EXPECT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), (ssize_t)req.size());
  return fd;
}

class ClientGone : public ::testing::Test {
 protected:
  void SetUp() override { testing::write_tiny_model(model, true); }
  void waiting_for_a_session_client_leaves(bool stream);
  TempDir dir;
  std::string model = dir.file("air");
};

TEST_F(ClientGone, AQueuedRequestWhoseClientLeftNeverRunsAndTheNextMovesUp) {
  Gate gate(0);
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 1;
  o.max_queue = 2;
  o.on_token = [&gate](int i) { gate.at_token(i); };
  ServerUnderTest s(model, o);
  auto post = [&s](const json& body) {
    return s.client().Post("/v1/completions", body.dump(), "application/json");
  };
  auto held = std::async(std::launch::async, [&] {
    return post({{"prompt", "a"}, {"max_tokens", 3}});
  });
  ASSERT_TRUE(gate.wait_blocked(1));
  const int leaver = send_completion(s.port, {{"prompt", "b"}, {"max_tokens", 3}});
  ASSERT_TRUE(s.wait_for("queue_depth", 1));
  auto behind = std::async(std::launch::async, [&] {
    return post({{"prompt", "c"}, {"max_tokens", 3}});
  });
  ASSERT_TRUE(s.wait_for("queue_depth", 2));
  ::close(leaver);
  // The queue notices while the session is still held.
  ASSERT_TRUE(s.wait_for("queue_depth", 1)) << "the request of the client that left kept its place";
  gate.open();
  auto r1 = held.get(), r3 = behind.get();
  ASSERT_TRUE(r1 && r3);
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r3->status, 200) << r3->body;
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 0));
  const std::string m = s.client().Get("/metrics")->body;
  EXPECT_EQ(metric(m, "chainlm_requests_left_queue_total"), 1) << m;
  EXPECT_EQ(metric(m, "chainlm_generations_total"), 2) << m;  // the leaver's never ran
  EXPECT_NE(m.find("route=\"/v1/completions\",code=\"499\"} 1"), std::string::npos) << m;
}

TEST_F(ClientGone, AnUnstreamedGenerationStopsWhenItsClientLeaves) {
  Gate gate(1);
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 1;
  // Slow tokens after the gate: the generation would take ~1.2 s to its end.
  o.on_token = [&gate](int i) {
    gate.at_token(i);
    if (i > 1) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  };
  ServerUnderTest s(model, o);
  const int max_tokens = 60;
  const int fd =
      send_completion(s.port, {{"prompt", "a"}, {"max_tokens", max_tokens}, {"seed", 1}});
  ASSERT_TRUE(gate.wait_blocked(1));
  ::close(fd);
  gate.open();
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 0)) << "the session was not freed";
  const std::string m = s.client().Get("/metrics")->body;
  EXPECT_EQ(metric(m, "chainlm_generations_cancelled_total"), 1) << m;
  long generated = 0;
  for (int k = 1; k <= 3; ++k) {
    const std::string key = "chainlm_generated_tokens_total{chains=\"" + std::to_string(k) + "\"} ";
    const size_t at = m.find(key);
    if (at != std::string::npos) generated += std::stol(m.substr(at + key.size()));
  }
  EXPECT_LT(generated, max_tokens / 2) << "the generation ran on after its client left\n" << m;
  // The tokens it made before it stopped count (none were taken: they counted as none).
  EXPECT_GE(generated, 2) << m;
  auto next = s.client().Post("/v1/completions", json{{"prompt", "b"}, {"max_tokens", 2}}.dump(),
                              "application/json");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

// A request of n choices whose client leaves while some still wait for a session: those never
// run. Cancelled one at a time, each choice that ended freed its session for the next one still
// waiting, which then read its prompt and generated (16 choices on 8 sessions: 16 generations
// counted and ~4,000 tokens made for nobody; a user trial).
TEST_F(ClientGone, ChoicesStillWaitingForASessionNeverRunWhenTheClientLeaves) {
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 2;
  o.on_token = [](int) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  };  // ~1 s a choice
  ServerUnderTest s(model, o);
  const int fd = send_completion(
      s.port, {{"prompt", "a"}, {"n", 6}, {"max_tokens", 50}, {"ignore_eos", true}, {"seed", 1}});
  // The first two choices hold the sessions, four wait (polled: the scheduler takes them in).
  long waiting = -1;
  for (int i = 0; i < 500 && waiting != 4; ++i) {
    waiting = metric(s.client().Get("/metrics")->body, "chainlm_generations_waiting_to_join");
    if (waiting != 4) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(waiting, 4);
  ::close(fd);
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 0));
  const std::string m = s.client().Get("/metrics")->body;
  EXPECT_EQ(metric(m, "chainlm_generations_total"), 2) << m;
  EXPECT_EQ(metric(m, "chainlm_generations_cancelled_total"), 2) << m;
  EXPECT_EQ(metric(m, "chainlm_prefill_pieces_total"), 2) << m;
  EXPECT_NE(m.find("route=\"/v1/completions\",code=\"499\"} 1"), std::string::npos) << m;
}

// A request admitted but waiting for a session (another request's n choices hold them all) whose
// client leaves gives its admission place up at once and never runs; it held the place until it
// got a session, and the retries of its client were refused with 503 meanwhile (a user trial).
// The wait for a session counts as the request's wait (queue_ms).
TEST_F(ClientGone, ARequestWaitingForASessionWhoseClientLeftGivesUpItsPlace) {
  for (bool stream : {false, true}) waiting_for_a_session_client_leaves(stream);
}

void ClientGone::waiting_for_a_session_client_leaves(bool stream) {
  SCOPED_TRACE(stream ? "a streamed request leaves" : "an unstreamed request leaves");
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 2;
  o.max_queue = 1;
  o.on_token = [](int) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  };  // ~1 s a choice
  ServerUnderTest s(model, o);
  auto post = [&s](const json& body) {
    return s.client().Post("/v1/completions", body.dump(), "application/json");
  };
  auto metrics = [&s] { return s.client().Get("/metrics")->body; };
  // Three choices: two take the sessions, the third waits for one.
  auto a = std::async(std::launch::async, [&] {
    return post({{"prompt", "a"}, {"n", 3}, {"max_tokens", 50}, {"ignore_eos", true}, {"seed", 1}});
  });
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 1));
  const int leaver =
      send_completion(s.port, {{"prompt", "b"}, {"max_tokens", 3}, {"stream", stream}});
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 2));  // admitted, behind A's third choice
  ::close(leaver);
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 1, 0.8))
      << "the place of the client that left was kept";
  // Its place takes another request, which waits for a session too: its wait says so.
  auto e = post({{"prompt", "e"}, {"max_tokens", 2}});
  auto r = a.get();
  ASSERT_TRUE(r && e);
  EXPECT_EQ(r->status, 200);
  ASSERT_EQ(e->status, 200) << e->body;
  EXPECT_GT(json::parse(e->body)["chainlm"]["queue_ms"].get<double>(), 200) << e->body;
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 0));
  const std::string m = metrics();
  EXPECT_EQ(metric(m, "chainlm_generations_total"), 4) << m;  // A's three and E: not the leaver
  EXPECT_EQ(metric(m, "chainlm_generations_cancelled_total"), 0) << m;
  // (A stream's status went out with its headers.)
  if (!stream) {
    EXPECT_NE(m.find("route=\"/v1/completions\",code=\"499\"} 1"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace chainlm
