// FramedConnection: a Link on an EventLoop that speaks pcomm frames (coordinator link,
// link and fetch handshakes).
// It reassembles frames from the byte stream, enforces the header rules (magic, protocol
// version, payload size limit) and queues outgoing frames. Any violation closes this
// connection only: on_close is called once with the reason (posted to the loop, so never
// inside the caller's stack), and nothing else is affected.
// A version mismatch is answered with an Error frame naming both versions before closing.
//
// Loop-thread only, except where noted. Held by shared_ptr: the loop keeps it alive while
// one of its callbacks runs, so a callback may drop the owner's reference.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "net/event_loop.h"
#include "net/link.h"
#include "net/socket.h"
#include "proto/wire.h"

namespace pcomm::net {

class FramedConnection : public std::enable_shared_from_this<FramedConnection> {
 public:
  using FrameHandler = std::function<void(uint16_t type, const uint8_t* payload, size_t size)>;
  using CloseHandler = std::function<void(const std::string& reason)>;

  static std::shared_ptr<FramedConnection> create(EventLoop& loop, std::shared_ptr<Link> link,
                                                  uint32_t max_payload = proto::kMaxControlPayload);
  // A plain TCP connection (kind direct).
  static std::shared_ptr<FramedConnection> create(EventLoop& loop, Socket socket,
                                                  uint32_t max_payload = proto::kMaxControlPayload);
  ~FramedConnection();

  // Registers with the loop and starts reading. Handlers are set before start().
  void start(FrameHandler on_frame, CloseHandler on_close);
  void send(std::vector<uint8_t> frame);
  // Reads and handles whatever input is already buffered in the kernel, now. Deadline
  // checks call this first, so a process resumed after a freeze judges its peers by what
  // they sent, not by how long it itself was stopped.
  void pump();
  // Sends an Error frame, then closes once it is flushed (or after a short grace period).
  void send_error_and_close(uint16_t code, const std::string& text);
  // Closes now; on_close runs with reason (unless already closed).
  void close(const std::string& reason);
  bool closed() const { return closed_; }
  // Raises (or lowers) the largest payload accepted: small until a peer is known.
  void set_max_payload(uint32_t max_payload) { max_payload_ = max_payload; }
  bool has_pending_output() const { return out_pos_ < out_.size(); }
  TimePoint last_send_time() const { return last_send_; }
  // Stops watching the link and hands it over (a data link after its handshake); bytes
  // already read past the last frame are put back into the link, so nothing is lost.
  std::shared_ptr<Link> detach();
  const std::shared_ptr<Link>& link() const { return link_; }
  std::string remote() const { return remote_; }

 private:
  FramedConnection(EventLoop& loop, std::shared_ptr<Link> link, uint32_t max_payload);
  void on_events(uint32_t events);
  void read_some();
  void parse_frames();
  void flush();
  void update_interest();

  EventLoop& loop_;
  std::shared_ptr<Link> link_;
  uint32_t max_payload_;
  std::string remote_;
  FrameHandler on_frame_;
  CloseHandler on_close_;
  std::vector<uint8_t> in_;
  size_t in_pos_ = 0;  // in_[0, in_pos_) is parsed (parse_frames compacts it away)
  std::vector<uint8_t> out_;
  size_t out_pos_ = 0;
  bool closed_ = false;
  TimePoint last_send_{};
  bool close_after_flush_ = false;
  uint32_t watching_ = 0x001;  // EPOLLIN, as start() registers
  std::string close_reason_;
};

}  // namespace pcomm::net
