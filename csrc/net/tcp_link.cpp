// TcpLink; see tcp_link.h.
#include "net/tcp_link.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

#include "core/errors.h"

namespace pcomm::net {

TcpLink::TcpLink(Socket socket, LinkKind kind)
    : TcpLink(std::move(socket), kind, std::string()) {}

TcpLink::TcpLink(Socket socket, LinkKind kind, std::string remote)
    : Link(kind, remote.empty() ? format_sockaddr(socket.remote_address()) : std::move(remote)),
      socket_(std::move(socket)) {
  socket_.set_nodelay();
  // A link whose other end vanished without a reset (a NAT mapping or a relay host gone)
  // must fail, not hang: keepalive probes when idle, and a bound on unacknowledged data.
  int on = 1, idle = kKeepaliveIdle, interval = kKeepaliveInterval, count = kKeepaliveCount;
  unsigned user_timeout = kUserTimeoutMs;
  ::setsockopt(socket_.fd(), SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(socket_.fd(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(socket_.fd(), IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(socket_.fd(), IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(socket_.fd(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

void TcpLink::shutdown() {
  mark_broken();
  if (socket_.valid()) ::shutdown(socket_.fd(), SHUT_RDWR);
}

double TcpLink::rtt_seconds() const {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(socket_.fd(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
  return info.tcpi_rtt / 1e6;
}

size_t TcpLink::send_raw(const iovec* iov, int iovcnt) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(iovcnt);
  for (;;) {
    ssize_t n = ::sendmsg(socket_.fd(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw IoError("send to " + remote() + " failed: " + errno_text(errno));
  }
}

size_t TcpLink::recv_raw(void* buf, size_t len) {
  for (;;) {
    ssize_t n = ::recv(socket_.fd(), buf, len, MSG_DONTWAIT);
    if (n > 0) return static_cast<size_t>(n);
    if (n == 0) throw IoError("connection to " + remote() + " closed by the remote end");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw IoError("receive from " + remote() + " failed: " + errno_text(errno));
  }
}

}  // namespace pcomm::net
