// Socket implementation; see socket.h.
#include "net/socket.h"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "core/errors.h"
#include "net/cancel.h"

namespace pcomm::net {

std::string errno_text(int err) { return std::strerror(err); }

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.release();
  }
  return *this;
}

int Socket::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

static int new_tcp_socket() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw IoError("socket() failed: " + errno_text(errno));
  return fd;
}

static void share_port(int fd) {
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
}

Socket Socket::listen_on(const HostPort& hp, int backlog, bool shared) {
  sockaddr_in addr = resolve(hp);
  Socket s(new_tcp_socket());
  int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // A chosen port is shared before the bind; a picked one (port 0) after it, so the
  // kernel cannot pick a port another sharing socket holds (see reserve_port).
  if (shared && hp.port != 0) share_port(s.fd());
  if (::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw IoError("cannot listen on " + hp.str() + ": bind failed: " + errno_text(errno));
  }
  if (shared && hp.port == 0) share_port(s.fd());
  if (::listen(s.fd(), backlog) != 0) {
    throw IoError("cannot listen on " + hp.str() + ": " + errno_text(errno));
  }
  return s;
}

Socket Socket::connect_start(const sockaddr_in& addr) {
  Socket s(new_tcp_socket());
  s.set_nodelay();
  int rc = ::connect(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  if (rc != 0 && errno != EINPROGRESS) {
    throw IoError("connect to " + format_sockaddr(addr) + " failed: " + errno_text(errno));
  }
  return s;
}

Socket Socket::reserve_port() {
  Socket s(new_tcp_socket());
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(s.fd(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    throw IoError("cannot reserve a port: " + errno_text(errno));
  }
  // Shared only after the bind: bind(0) with SO_REUSEADDR set may pick a port that
  // another such socket holds; this way the port is ours, and our own dials may join.
  share_port(s.fd());
  return s;
}

Socket Socket::connect_start_from(uint16_t local_port, const sockaddr_in& addr) {
  Socket s(new_tcp_socket());
  s.set_nodelay();
  share_port(s.fd());
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_ANY);
  local.sin_port = htons(local_port);
  if (::bind(s.fd(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    throw IoError("cannot bind local port " + std::to_string(local_port) + ": " + errno_text(errno));
  }
  int rc = ::connect(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  if (rc != 0 && errno != EINPROGRESS) {
    throw IoError("connect to " + format_sockaddr(addr) + " from port " + std::to_string(local_port) +
                  " failed: " + errno_text(errno));
  }
  return s;
}

Socket Socket::connect_blocking(const sockaddr_in& addr, const Deadline& deadline, uint16_t local_port,
                                const Cancel* cancel, const std::function<void()>& every_slice, Duration slice) {
  Socket s = local_port ? connect_start_from(local_port, addr) : connect_start(addr);
  for (;;) {
    pollfd fds[2] = {{s.fd(), POLLOUT, 0}, {cancel ? cancel->fd() : -1, POLLIN, 0}};
    auto left = deadline.remaining();
    if (every_slice) left = std::min<Duration>(left, slice);
    int ms = static_cast<int>(std::chrono::ceil<Millis>(left).count());
    int rc = ::poll(fds, 2, ms);
    if (cancel && cancel->fired()) throw Aborted(cancel->reason());
    if (rc < 0 && errno == EINTR) continue;
    if (rc != 0) break;  // writable, or a poll error that finish_connect reports
    if (every_slice) every_slice();
    if (deadline.expired()) throw TimeoutError("connect to " + format_sockaddr(addr) + " timed out");
  }
  std::string err = s.finish_connect();
  if (!err.empty()) throw IoError("connect to " + format_sockaddr(addr) + " failed: " + err);
  return s;
}

std::string Socket::finish_connect() const {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno_text(errno);
  return err == 0 ? std::string() : errno_text(err);
}

namespace {
// One descriptor kept in reserve: when the process runs out, a pending connection cannot
// be accepted, and a level-triggered listener would wake its loop again and again. The
// reserve is given up for a moment to accept that connection and close it at once.
std::mutex spare_mutex;
int spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);

void refuse_one_pending(int listener) {
  std::lock_guard<std::mutex> lock(spare_mutex);
  if (spare_fd >= 0) ::close(spare_fd);
  int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) ::close(fd);
  spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}
}  // namespace

Socket Socket::accept_one() const {
  int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE)) refuse_one_pending(fd_);
  if (fd < 0) return Socket();
  Socket s(fd);
  s.set_nodelay();
  return s;
}

sockaddr_in Socket::local_address() const {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  return addr;
}

sockaddr_in Socket::remote_address() const {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getpeername(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  return addr;
}

void Socket::set_nodelay() const {
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace pcomm::net
