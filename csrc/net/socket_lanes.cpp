// SocketLanes and Cancel; see socket_lanes.h.
#include "net/socket_lanes.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "core/errors.h"

namespace pcomm::net {

Cancel::Cancel() {
  fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd_ < 0) throw IoError("eventfd failed: " + errno_text(errno));
}

Cancel::~Cancel() { ::close(fd_); }

void Cancel::fire(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fired_) return;
    reason_ = reason;
    fired_ = true;
  }
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);  // never read: stays readable
}

std::string Cancel::reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reason_;
}

SocketLanes::SocketLanes(const std::vector<Socket>& to_right, const std::vector<Socket>& from_left,
                         std::shared_ptr<Cancel> cancel)
    : cancel_(std::move(cancel)) {
  PCOMM_CHECK(to_right.size() == from_left.size(), InvalidArgument, "lane pools differ in size");
  for (const auto& s : to_right) send_fds_.push_back(s.fd());
  for (const auto& s : from_left) recv_fds_.push_back(s.fd());
}

size_t SocketLanes::send_some(size_t lane, const iovec* iov, int iovcnt) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(iovcnt);
  for (;;) {
    ssize_t n = ::sendmsg(send_fds_[lane], &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw IoError("data link to the right neighbour failed (lane " + std::to_string(lane) + "): " + errno_text(errno));
  }
}

size_t SocketLanes::recv_some(size_t lane, void* buf, size_t len) {
  for (;;) {
    ssize_t n = ::recv(recv_fds_[lane], buf, len, MSG_DONTWAIT);
    if (n > 0) return static_cast<size_t>(n);
    if (n == 0) {
      throw IoError("data link from the left neighbour closed (lane " + std::to_string(lane) + ")");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw IoError("data link from the left neighbour failed (lane " + std::to_string(lane) + "): " + errno_text(errno));
  }
}

void SocketLanes::wait(const std::vector<Interest>& interests, TimePoint deadline, TimePoint wake_by) {
  std::vector<pollfd> fds;
  fds.reserve(2 * interests.size() + 1);
  fds.push_back(pollfd{cancel_->fd(), POLLIN, 0});
  for (const auto& in : interests) {
    if (in.send) fds.push_back(pollfd{send_fds_[in.lane], POLLOUT, 0});
    if (in.recv) fds.push_back(pollfd{recv_fds_[in.lane], POLLIN, 0});
  }
  for (;;) {
    if (cancel_->fired()) throw Aborted(cancel_->reason());
    auto now = Clock::now();
    if (now >= deadline) throw TimeoutError("data transfer timed out");
    if (now >= wake_by) return;
    auto left = std::min(deadline, wake_by) - now;
    int ms = static_cast<int>(std::chrono::ceil<Millis>(left).count());
    int rc = ::poll(fds.data(), fds.size(), ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) throw IoError("poll failed: " + errno_text(errno));
    if (cancel_->fired()) throw Aborted(cancel_->reason());
    if (rc > 0) return;  // errors and hang-ups surface in the next send/recv
  }
}

}  // namespace pcomm::net
