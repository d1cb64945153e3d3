#include "serve/client_connection.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

namespace chainlm {

namespace {

// The numeric address and the port of one end of a socket; false if that end is not an IP one.
bool socket_end(int fd, bool peer, std::string& addr, int& port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0 || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) return false;
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return false;
  addr = host;
  port = std::atoi(serv);
  return true;
}

}  // namespace

int find_connection_socket(const std::string& peer_addr, int peer_port, int local_port) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  const int listing = ::dirfd(dir);
  std::string addr;
  int port = -1;
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == listing) continue;
    // The local end first: it rules out the listening socket and the clients' own sockets (the
    // in-process load generator's, whose local port is their own) in one call.
    if (!socket_end((int)fd, false, addr, port) || port != local_port) continue;
    if (!socket_end((int)fd, true, addr, port) || port != peer_port || addr != peer_addr) continue;
    found = (int)fd;
    break;
  }
  ::closedir(dir);
  return found;
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

bool ClientConnection::gone() {
  if (peer_port_ < 0) return false;
  if (!looked_up_) {
    looked_up_ = true;
    fd_ = find_connection_socket(peer_addr_, peer_port_, local_port_);
  }
  return fd_ >= 0 && peer_closed(fd_);
}

}  // namespace chainlm
