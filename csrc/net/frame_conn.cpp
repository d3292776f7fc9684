// FramedConnection implementation; see frame_conn.h.
#include "net/frame_conn.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>

#include "core/errors.h"
#include "net/tcp_link.h"
#include "proto/messages.h"

namespace pcomm::net {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
// How long a connection being closed with an Error frame may take to flush it.
constexpr Millis kErrorFlushGrace{500};
}  // namespace

std::shared_ptr<FramedConnection> FramedConnection::create(EventLoop& loop, std::shared_ptr<Link> link,
                                                           uint32_t max_payload) {
  return std::shared_ptr<FramedConnection>(new FramedConnection(loop, std::move(link), max_payload));
}

std::shared_ptr<FramedConnection> FramedConnection::create(EventLoop& loop, Socket socket, uint32_t max_payload) {
  return create(loop, std::make_shared<TcpLink>(std::move(socket), LinkKind::kDirect), max_payload);
}

FramedConnection::FramedConnection(EventLoop& loop, std::shared_ptr<Link> link, uint32_t max_payload)
    : loop_(loop), link_(std::move(link)), max_payload_(max_payload), remote_(link_->remote()) {}

FramedConnection::~FramedConnection() = default;

void FramedConnection::start(FrameHandler on_frame, CloseHandler on_close) {
  on_frame_ = std::move(on_frame);
  on_close_ = std::move(on_close);
  auto self = shared_from_this();
  loop_.add_fd(link_->fd(), EPOLLIN, [self](uint32_t events) { self->on_events(events); });
  // Bytes the link already holds (put back by an earlier reader) raise no fd event.
  if (link_->recv_ready()) loop_.post([self] { self->pump(); });
}

void FramedConnection::on_events(uint32_t events) {
  if (closed_) return;
  if ((events & (EPOLLHUP | EPOLLERR)) && watching_ == 0) {
    // Nothing can progress (a TLS handshake waiting for a key) and the socket is gone:
    // level-triggered epoll would report it again and again.
    close("connection closed while waiting");
    return;
  }
  if (events & EPOLLOUT) flush();
  if (closed_) return;
  // A TLS link may need to write to read (its handshake): any event may let input on.
  if (events & (EPOLLIN | EPOLLOUT | EPOLLHUP | EPOLLERR)) read_some();
}

void FramedConnection::pump() {
  if (!closed_) read_some();
}

void FramedConnection::read_some() {
  uint8_t buf[kReadChunk];
  for (int round = 0; round < 16 && !closed_; ++round) {
    size_t n = 0;
    try {
      n = link_->recv_some(buf, sizeof buf);
    } catch (const Error& e) {  // IoError, or a TLS handshake's AuthenticationError
      close(in_.size() == in_pos_ ? std::string(e.what()) : std::string(e.what()) + " (in the middle of a frame)");
      return;
    }
    if (n == 0) break;
    in_.insert(in_.end(), buf, buf + n);
    parse_frames();
  }
  if (closed_) return;
  // Output may wait for the link (a TLS handshake that just completed), and a link that
  // holds decrypted input raises no fd event for it.
  if (has_pending_output()) flush();
  if (closed_) return;
  update_interest();
  if (link_->recv_ready()) {
    std::weak_ptr<FramedConnection> weak = shared_from_this();
    loop_.post([weak] {
      if (auto self = weak.lock()) self->pump();
    });
  }
}

void FramedConnection::parse_frames() {
  // Kept first so it outlives `compact`: a handler may release the owner's reference.
  auto self = shared_from_this();
  // Frames are consumed from in_pos_; the buffer is compacted once per call, not per frame
  // (a stream of tiny frames must not cost quadratic time).
  struct Compact {
    FramedConnection& c;
    ~Compact() {
      c.in_.erase(c.in_.begin(), c.in_.begin() + static_cast<std::ptrdiff_t>(c.in_pos_));
      c.in_pos_ = 0;
    }
  } compact{*this};
  while (!closed_ && !close_after_flush_ && in_.size() - in_pos_ >= proto::kHeaderSize) {
    size_t used = in_pos_;
    proto::Header h;
    try {
      h = proto::decode_header(in_.data() + used);
    } catch (const ProtocolError& e) {
      close(e.what());
      return;
    }
    if (h.version != proto::kProtocolVersion) {
      send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kVersionMismatch),
                           "protocol version mismatch: remote speaks version " +
                               std::to_string(h.version) + ", this side speaks version " +
                               std::to_string(proto::kProtocolVersion));
      return;
    }
    if (h.length > max_payload_) {
      close("frame payload of " + std::to_string(h.length) + " bytes exceeds the limit of " +
            std::to_string(max_payload_));
      return;
    }
    size_t total = proto::kHeaderSize + h.length;
    if (in_.size() - used < total) return;  // wait for the rest
    // Control frames are small: copy the payload out so the handler may detach or close.
    auto start = in_.begin() + static_cast<std::ptrdiff_t>(used);
    std::vector<uint8_t> payload(start + proto::kHeaderSize, start + static_cast<std::ptrdiff_t>(total));
    in_pos_ += total;
    try {
      on_frame_(h.type, payload.data(), payload.size());
    } catch (const ProtocolError& e) {
      send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kProtocol), e.what());
      return;
    } catch (const Error& e) {
      send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest), e.what());
      return;
    } catch (const std::exception& e) {  // e.g. bad_alloc: still this connection only
      close(std::string("handling a frame failed: ") + e.what());
      return;
    }
  }
}

void FramedConnection::send(std::vector<uint8_t> frame) {
  if (closed_ || close_after_flush_) return;
  last_send_ = Clock::now();
  if (out_pos_ == out_.size()) {
    out_ = std::move(frame);
    out_pos_ = 0;
  } else {
    out_.insert(out_.end(), frame.begin(), frame.end());
  }
  flush();
}

void FramedConnection::send_error_and_close(uint16_t code, const std::string& text) {
  if (closed_ || close_after_flush_) return;
  proto::ErrorMsg msg{static_cast<proto::ErrorCode>(code), text};
  send(proto::frame_of(msg));
  close_reason_ = text;
  close_after_flush_ = true;
  if (closed_) return;
  if (out_pos_ == out_.size()) {
    close(text);
    return;
  }
  std::weak_ptr<FramedConnection> weak = shared_from_this();
  loop_.run_after(kErrorFlushGrace, [weak] {
    if (auto self = weak.lock()) self->close(self->close_reason_);
  });
}

void FramedConnection::flush() {
  while (out_pos_ < out_.size()) {
    iovec iov{out_.data() + out_pos_, out_.size() - out_pos_};
    size_t n = 0;
    try {
      n = link_->send_some(&iov, 1);
    } catch (const Error& e) {
      close(e.what());
      return;
    }
    if (n == 0) break;
    out_pos_ += n;
  }
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
    if (close_after_flush_) {
      close(close_reason_);
      return;
    }
  }
  update_interest();
}

void FramedConnection::update_interest() {
  if (closed_) return;
  // What the link needs polled for: a TLS link mid-handshake decides itself (nothing at
  // all while it waits for a key: its owner pumps it when the key arrives).
  short wanted = link_->poll_events(out_pos_ < out_.size(), true);
  uint32_t events = ((wanted & POLLIN) ? uint32_t(EPOLLIN) : 0u) | ((wanted & POLLOUT) ? uint32_t(EPOLLOUT) : 0u);
  if (events == watching_) return;
  watching_ = events;
  loop_.modify_fd(link_->fd(), events);
}

void FramedConnection::close(const std::string& reason) {
  if (closed_) return;
  auto self = shared_from_this();  // on_close may drop the owner's last reference
  closed_ = true;
  loop_.remove_fd(link_->fd());
  link_->shutdown();
  auto handler = std::move(on_close_);
  on_close_ = nullptr;
  // close() may run inside on_frame_ itself: destroy that handler later, not under it.
  loop_.post([frame_handler = std::move(on_frame_)] {});
  on_frame_ = nullptr;
  // Run the owner's handler later on the loop, never inside the owner's own call that
  // happened to close us (a send that failed, a loop over connections): no reentrancy.
  if (handler) loop_.post([handler, reason] { handler(reason); });
}

std::shared_ptr<Link> FramedConnection::detach() {
  PCOMM_CHECK(!closed_, ProtocolError, "detach of a closed connection");
  PCOMM_CHECK(!has_pending_output(), ProtocolError, "handshake reply not flushed");
  closed_ = true;
  loop_.remove_fd(link_->fd());
  on_close_ = nullptr;
  loop_.post([frame_handler = std::move(on_frame_)] {});  // detach() may run inside it
  on_frame_ = nullptr;
  link_->unread(in_.data() + in_pos_, in_.size() - in_pos_);
  in_.clear();
  in_pos_ = 0;
  return std::move(link_);
}

}  // namespace pcomm::net
