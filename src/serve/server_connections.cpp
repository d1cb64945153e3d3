// The server's HTTP connections: the threads that hold them, their timeouts, and which of them
// are in the middle of a request, so that a stop, or every thread taken, ends the stalled ones.
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <chrono>

#include "serve/client_connection.h"
#include "serve/http_thread_pool.h"
#include "serve/server_impl.h"

namespace chainlm {

namespace {

// HTTP worker threads beyond the sessions and the queue: /health, /metrics, the page and
// refusals (400, 413, 503) stay answerable while every session and queue place is taken.
constexpr int kSpareHttpThreads = 4;
// And ServeOptions::connection_threads (256) for connections that hold a thread without work:
// httplib gives each connection a thread while it is open, so idle keep-alive clients (until
// kKeepAliveSeconds) and slow senders (kReadTimeoutSeconds per read) would otherwise leave no
// thread for a real request. The threads wait in poll(); generations stay bounded by the
// sessions. When every thread is taken all the same, connections without a request in progress
// for kReadTimeoutSeconds are ended (cut_stalled_connections).
// Header and body reads (a slow client holds a worker thread no longer than this) and idle
// keep-alive connections.
constexpr int kReadTimeoutSeconds = 10;
constexpr int kKeepAliveSeconds = 2;
// How long an HTTP thread without a connection lives on: past a keep-alive's gap between
// requests, short enough that a burst's threads give their memory back soon after it.
constexpr std::chrono::milliseconds kIdleThreadLinger{5000};

}  // namespace

void InferenceServer::Impl::set_up_connections(int sessions) {
  const int pool = sessions + opt.max_queue + kSpareHttpThreads + opt.connection_threads;
  // Threads as connections need them, the last idle one reused, ended after a while idle
  // (http_thread_pool.h: every thread of a fixed pool ended up holding its freed memory).
  // A stop ends the connections still sending a request after the read timeout: cpp-httplib
  // times out each read, so a header line every few seconds had held the stop for ever.
  http.new_task_queue = [pool, this] {
    auto* q = new HttpThreadPool(pool, kIdleThreadLinger);
    q->on_stuck_shutdown(std::chrono::seconds(kReadTimeoutSeconds),
                         [this] { cut_stalled_connections(true); });
    q->on_saturated(std::chrono::seconds(1), [this] { cut_stalled_connections(false); });
    return q;
  };
  http.set_payload_max_length(opt.max_body_bytes);
  // Each response goes out at once (no Nagle delay on reused connections); a slow or idle
  // client holds a worker thread for a bounded time.
  http.set_tcp_nodelay(true);
  http.set_read_timeout(kReadTimeoutSeconds, 0);
  http.set_keep_alive_timeout(kKeepAliveSeconds);
  // SO_REUSEADDR only: httplib also sets SO_REUSEPORT, with which a second server on the same
  // port starts without error and takes half of the first one's connections.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof(yes));
  });
}

void InferenceServer::Impl::request_routed(const httplib::Request& req) {
  std::lock_guard<std::mutex> lock(handling_mutex);
  handling.insert(peer_key(req.remote_addr, req.remote_port));
}

void InferenceServer::Impl::request_answered(const httplib::Request& req) {
  const std::string peer = peer_key(req.remote_addr, req.remote_port);
  std::lock_guard<std::mutex> lock(handling_mutex);
  if (const auto it = handling.find(peer); it != handling.end()) handling.erase(it);
  if (const auto idle = idle_since.find(peer); idle != idle_since.end())
    idle->second = Clock::now();
}

InferenceServer::Impl::BodyComing::BodyComing(Impl& impl, const httplib::Request& req)
    : impl_(impl), peer_(peer_key(req.remote_addr, req.remote_port)) {
  std::lock_guard<std::mutex> lock(impl_.handling_mutex);
  impl_.reading_body.insert(peer_);
}

InferenceServer::Impl::BodyComing::~BodyComing() {
  std::lock_guard<std::mutex> lock(impl_.handling_mutex);
  impl_.reading_body.erase(impl_.reading_body.find(peer_));
}

void InferenceServer::Impl::cut_stalled_connections(bool stopping) {
  const auto sockets = connection_sockets(port);
  const auto now = Clock::now();
  std::vector<std::pair<int, std::string>> cut;
  {
    std::lock_guard<std::mutex> lock(handling_mutex);
    std::map<std::string, Clock::time_point> seen;
    for (const auto& [fd, peer] : sockets) {
      // A request in progress is kept; at a stop, not one whose body is still coming.
      if (handling.count(peer) && !(stopping && reading_body.count(peer))) continue;
      // Bytes not read yet: a connection waiting for a thread, its request sent (a thread
      // reading a slow sender takes each byte as it comes). It gets its turn.
      int unread = 0;
      if (::ioctl(fd, FIONREAD, &unread) == 0 && unread > 0) {
        if (const auto it = idle_since.find(peer); it != idle_since.end()) seen.insert(*it);
        continue;
      }
      if (stopping) {
        cut.emplace_back(fd, peer);
        continue;
      }
      const auto it = idle_since.find(peer);
      const auto since = it == idle_since.end() ? now : it->second;
      seen[peer] = since;  // (connections gone are forgotten)
      if (now - since >= std::chrono::seconds(kReadTimeoutSeconds)) cut.emplace_back(fd, peer);
    }
    if (!stopping) idle_since.swap(seen);
  }
  // It is answered 408 here (cpp-httplib's own 400 for a request cut short was lost to the
  // reset its close sends when more of the request has come), then its reads end and cpp-httplib
  // closes it. The descriptor is checked again just before: one closed since the scan and taken
  // by a new connection is not that connection.
  static const std::string kBody =
      "{\"error\": {\"message\": \"the request did not arrive within the read timeout\", "
      "\"type\": \"invalid_request_error\", \"code\": 408}}\n";
  static const std::string kTimedOut =
      "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
  for (const auto& [fd, peer] : cut)
    if (connection_peer(fd, port) == peer) {
      (void)::send(fd, kTimedOut.data(), kTimedOut.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::shutdown(fd, SHUT_RDWR);
    }
}

}  // namespace chainlm
