#include "serve/client_connection.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

namespace chainlm {

namespace {

// The port of a socket's end in network order, and its address bytes (4 or 16); false when that
// end is not an IP one.
bool socket_end(int fd, bool peer, uint16_t& port, std::string& addr) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return false;
  if (ss.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    port = a.sin_port;
    addr.assign(reinterpret_cast<const char*>(&a.sin_addr), sizeof a.sin_addr);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    port = a.sin6_port;
    addr.assign(reinterpret_cast<const char*>(&a.sin6_addr), sizeof a.sin6_addr);
    return true;
  }
  return false;
}

// A numeric address (as cpp-httplib writes the peer's) as its bytes, "" if it is none.
std::string address_bytes(const std::string& text) {
  in6_addr a6{};
  in_addr a4{};
  if (::inet_pton(AF_INET, text.c_str(), &a4) == 1)
    return std::string(reinterpret_cast<const char*>(&a4), sizeof a4);
  // An IPv6 address may carry a zone ("fe80::1%eth0"): the address is before it.
  const std::string bare = text.substr(0, text.find('%'));
  if (::inet_pton(AF_INET6, bare.c_str(), &a6) == 1)
    return std::string(reinterpret_cast<const char*>(&a6), sizeof a6);
  return "";
}

}  // namespace

std::string peer_key(const std::string& peer_addr, int peer_port) {
  const std::string bytes = address_bytes(peer_addr);
  return bytes.empty() ? std::string() : bytes + ":" + std::to_string(peer_port);
}

std::string connection_peer(int fd, int local_port) {
  std::string addr;
  uint16_t port = 0;
  // The local end first: it rules out every descriptor that is no socket, and the clients' own
  // sockets (the in-process load generator's, whose local port is their own), in one call.
  if (!socket_end(fd, false, port, addr) || ntohs(port) != local_port) return "";
  if (!socket_end(fd, true, port, addr)) return "";  // the listening socket has no peer
  return addr + ":" + std::to_string(ntohs(port));
}

std::vector<std::pair<int, std::string>> connection_sockets(int local_port) {
  std::vector<std::pair<int, std::string>> out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return out;
  const int listing = ::dirfd(dir);
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == listing) continue;
    if (std::string peer = connection_peer((int)fd, local_port); !peer.empty())
      out.emplace_back((int)fd, std::move(peer));
  }
  ::closedir(dir);
  return out;
}

int find_connection_socket(const std::string& peer_addr, int peer_port, int local_port) {
  const std::string want = peer_key(peer_addr, peer_port);
  if (want.empty() || peer_port < 0 || local_port < 0) return -1;
  for (const auto& [fd, peer] : connection_sockets(local_port))
    if (peer == want) return fd;
  return -1;
}

bool peer_closed(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;  // nothing happened (or poll failed: assume alive)
  if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return true;
  // Readable: either bytes sent ahead (still there) or the end of the stream (gone).
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void ClientConnection::look_up() {
  if (looked_up_ || peer_port_ < 0) return;
  looked_up_ = true;
  fd_ = find_connection_socket(peer_addr_, peer_port_, local_port_);
}

bool ClientConnection::gone() {
  look_up();
  return fd_ >= 0 && peer_closed(fd_);
}

}  // namespace chainlm
