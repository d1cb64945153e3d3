#pragma once
// Whether the client of the request a handler answers is still connected. A request can wait in
// the queue, or generate unstreamed, for minutes without writing a byte: without this a client
// that gave up (a timeout, Ctrl-C) kept its place and had its whole answer generated for nobody,
// and a client retrying on timeout queued the same work again and again.
//
// cpp-httplib 0.11 gives a handler no access to its socket, so the socket is found among the
// process's descriptors by the connection's two ends (the handler's thread owns that socket until
// it returns, so the descriptor cannot be closed or reused meanwhile).
#include <string>
#include <utility>
#include <vector>

namespace chainlm {

class ClientConnection {
 public:
  ClientConnection() = default;  // no connection: never gone
  // peer: the request's remote address and port as cpp-httplib gives them; local_port: the
  // server's. The socket is looked up by look_up(), or on the first call to gone().
  ClientConnection(std::string peer_addr, int peer_port, int local_port)
      : peer_addr_(std::move(peer_addr)), peer_port_(peer_port), local_port_(local_port) {}

  // True once the client has closed or reset the connection (bytes it sent ahead, a pipelined
  // request, do not count as gone). A connection whose socket is not found is never gone.
  bool gone();
  // Finds the socket now (gone() does on its first call otherwise). Called while the connection
  // is whole: a socket its client has reset has no peer, and is not found by it.
  void look_up();

 private:
  std::string peer_addr_;
  int peer_port_ = -1, local_port_ = -1;
  bool looked_up_ = false;
  int fd_ = -1;
};

// The descriptor of this process's connected TCP socket whose local port is local_port and whose
// peer is peer_addr:peer_port (numeric, as getnameinfo writes it), or -1.
int find_connection_socket(const std::string& peer_addr, int peer_port, int local_port);

// A peer as a key that a socket's own end and cpp-httplib's text of it give alike: the
// address's bytes and the port ("" for an address that is not numeric IPv4 or IPv6).
std::string peer_key(const std::string& peer_addr, int peer_port);

// This process's connected TCP sockets whose local port is local_port: descriptor and peer_key.
std::vector<std::pair<int, std::string>> connection_sockets(int local_port);
// The peer_key of descriptor fd if it is a connected TCP socket whose local port is local_port,
// else "".
std::string connection_peer(int fd, int local_port);

// A connected socket's peer has closed or reset it: poll() reports a hang-up or an error, or the
// socket is readable and a peek reads end of stream. Never blocks.
bool peer_closed(int fd);

}  // namespace chainlm
