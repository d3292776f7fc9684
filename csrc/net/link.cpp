// Link helpers shared by every kind; see link.h.
#include "net/link.h"

#include <cerrno>
#include <cstring>

#include "core/errors.h"
#include "net/cancel.h"

namespace pcomm::net {

const char* link_kind_name(LinkKind kind) {
  switch (kind) {
    case LinkKind::kDirect: return "direct";
    case LinkKind::kPunched: return "punched";
    case LinkKind::kRelayed: return "relayed";
  }
  return "?";
}

short Link::poll_events(bool send, bool recv) const {
  return static_cast<short>((send ? POLLOUT : 0) | (recv ? POLLIN : 0));
}

size_t Link::send_some(const iovec* iov, int iovcnt) {
  try {
    return send_raw(iov, iovcnt);
  } catch (const IoError&) {
    mark_broken();
    throw;
  }
}

size_t Link::recv_some(void* buf, size_t len) {
  if (pushback_pos_ < pushback_.size()) {
    size_t n = std::min(len, pushback_.size() - pushback_pos_);
    std::memcpy(buf, pushback_.data() + pushback_pos_, n);
    pushback_pos_ += n;
    if (pushback_pos_ == pushback_.size()) {
      pushback_.clear();
      pushback_pos_ = 0;
    }
    return n;
  }
  try {
    return recv_raw(buf, len);
  } catch (const IoError&) {
    mark_broken();
    throw;
  }
}

void Link::unread(const uint8_t* data, size_t size) {
  if (size == 0) return;
  std::vector<uint8_t> rest(data, data + size);
  rest.insert(rest.end(), pushback_.begin() + static_cast<std::ptrdiff_t>(pushback_pos_), pushback_.end());
  pushback_ = std::move(rest);
  pushback_pos_ = 0;
}

void Link::send_all(const void* data, size_t size, TimePoint deadline, const Cancel* cancel) {
  auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    iovec iov{const_cast<uint8_t*>(p), size};
    size_t n = send_some(&iov, 1);
    p += n;
    size -= n;
    if (size > 0 && n == 0) wait_links({{this, true, false}}, deadline, deadline, cancel, "send");
  }
}

void Link::recv_all(void* data, size_t size, TimePoint deadline, const Cancel* cancel) {
  auto* p = static_cast<uint8_t*>(data);
  while (size > 0) {
    size_t n = recv_some(p, size);
    p += n;
    size -= n;
    if (size > 0 && n == 0) wait_links({{this, false, true}}, deadline, deadline, cancel, "receive");
  }
}

void wait_links(const std::vector<LinkInterest>& interests, TimePoint deadline, TimePoint wake_by,
                const Cancel* cancel, const char* what) {
  for (const auto& in : interests) {
    if (in.recv && in.link->recv_ready()) return;  // bytes are waiting already
  }
  std::vector<pollfd> fds;
  fds.reserve(interests.size() + 1);
  if (cancel) fds.push_back(pollfd{cancel->fd(), POLLIN, 0});
  for (const auto& in : interests) {
    short events = in.link->poll_events(in.send, in.recv);
    if (events) fds.push_back(pollfd{in.link->fd(), events, 0});
  }
  for (;;) {
    if (cancel && cancel->fired()) throw Aborted(cancel->reason());
    auto now = Clock::now();
    if (now >= deadline) throw TimeoutError(std::string(what) + " timed out");
    if (now >= wake_by) return;
    auto left = std::min(deadline, wake_by) - now;
    int ms = static_cast<int>(std::chrono::ceil<Millis>(left).count());
    int rc = ::poll(fds.data(), fds.size(), ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) throw IoError(std::string("poll failed: ") + std::strerror(errno));
    if (cancel && cancel->fired()) throw Aborted(cancel->reason());
    if (rc > 0) return;  // errors and hang-ups surface in the next send/recv
  }
}

}  // namespace pcomm::net
