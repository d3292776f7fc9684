// Socket: an owned, move-only TCP file descriptor with the few operations pcomm needs.
// All sockets are created non-blocking; the blocking connect waits with poll() and a
// Deadline, so it cannot hang past it. Byte transfers go through a Link (link.h).
#pragma once

#include <netinet/in.h>

#include <cstddef>
#include <functional>
#include <string>

#include "core/clock.h"
#include "net/address.h"

namespace pcomm::net {

class Cancel;

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { close(); }
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void close();

  // A listening socket bound to hp (port 0 picks a free port), non-blocking. With
  // share_port, outgoing connections may bind the same port too (connect_start_from):
  // SO_REUSEADDR + SO_REUSEPORT, as NAT traversal needs (see peer/remote_peer.h).
  static Socket listen_on(const HostPort& hp, int backlog = 512, bool share_port = false);
  // Starts a non-blocking connect; completion is signalled by writability (see
  // finish_connect). Throws IoError only for immediate failures.
  static Socket connect_start(const sockaddr_in& addr);
  // A socket bound to a free port (then marked SO_REUSEADDR + SO_REUSEPORT) and nothing
  // else: it holds the port for later connect_start_from calls and accepts nothing.
  static Socket reserve_port();
  // connect_start from a given local port (SO_REUSEADDR + SO_REUSEPORT), so the NAT
  // mapping of that port is the one used. A 4-tuple already in use fails with IoError.
  static Socket connect_start_from(uint16_t local_port, const sockaddr_in& addr);
  // Blocking connect bounded by the deadline; throws IoError or TimeoutError, and
  // Aborted when cancel (may be null) fires meanwhile. With `every_slice`, the wait runs
  // in slices of at most slice and calls it between them (it may throw: a Ctrl-C check).
  static Socket connect_blocking(const sockaddr_in& addr, const Deadline& deadline, uint16_t local_port = 0,
                                 const Cancel* cancel = nullptr, const std::function<void()>& every_slice = {},
                                 Duration slice = std::chrono::milliseconds(100));
  // After writability on a connect_start socket: empty string on success, else the error.
  std::string finish_connect() const;
  // Accepts one pending connection (non-blocking); invalid Socket when none is pending.
  Socket accept_one() const;

  sockaddr_in local_address() const;
  sockaddr_in remote_address() const;
  void set_nodelay() const;


 private:
  int fd_ = -1;
};


std::string errno_text(int err);

}  // namespace pcomm::net
