// LinkBuilder implementation; see links.h.
#include "peer/links.h"

#include <sys/epoll.h>

#include "core/errors.h"
#include "net/address.h"

namespace pcomm::peer {

namespace {
// Pause between attempts to dial a neighbour that refused or dropped the connection
// (it may not have processed the new topology yet).
constexpr Millis kDialRetry{50};
}  // namespace

LinkBuilder::LinkBuilder(net::EventLoop& loop, LinkPlan plan, const Logger& log, Done done, Failed failed)
    : loop_(loop), plan_(std::move(plan)), log_(log), done_(std::move(done)), failed_(std::move(failed)) {}

LinkBuilder::~LinkBuilder() = default;

void LinkBuilder::start() {
  uint32_t k = plan_.connections;
  dialing_.resize(k);
  outgoing_.resize(k);
  to_right_.resize(k);
  from_left_.resize(k);
  std::weak_ptr<LinkBuilder> weak = shared_from_this();
  deadline_timer_ = loop_.run_after(plan_.timeout, [weak] {
    auto self = weak.lock();
    if (!self || self->finished_) return;
    for (const auto& s : self->to_right_) {
      if (!s.valid()) {
        self->fail(self->plan_.right_id, "could not open all connections to the right neighbour at " +
                                             self->plan_.right_address + ": " + self->last_dial_error_);
        return;
      }
    }
    self->fail(self->plan_.left_id, "the left neighbour did not open all its connections in time");
  });
  for (uint32_t i = 0; i < k; ++i) dial(i);
}

void LinkBuilder::dial(uint32_t index) {
  if (finished_) return;
  try {
    auto addr = net::resolve(net::parse_host_port(plan_.right_address, false));
    dialing_[index] = net::Socket::connect_start(addr);
  } catch (const Error& e) {
    retry_dial(index, e.what());
    return;
  }
  std::weak_ptr<LinkBuilder> weak = shared_from_this();
  loop_.add_fd(dialing_[index].fd(), EPOLLOUT, [weak, index](uint32_t) {
    if (auto self = weak.lock()) self->on_dial_writable(index);
  });
}

void LinkBuilder::on_dial_writable(uint32_t index) {
  net::Socket s = std::move(dialing_[index]);
  loop_.remove_fd(s.fd());
  std::string err = s.finish_connect();
  if (!err.empty()) {
    retry_dial(index, err);
    return;
  }
  auto conn = net::FramedConnection::create(loop_, std::move(s));
  outgoing_[index] = conn;
  std::weak_ptr<LinkBuilder> weak = shared_from_this();
  std::weak_ptr<net::FramedConnection> weak_conn = conn;
  conn->start(
      [weak, weak_conn, index](uint16_t type, const uint8_t* p, size_t n) {
        auto self = weak.lock();
        auto c = weak_conn.lock();
        if (!self || !c || self->finished_) return;
        if (type == static_cast<uint16_t>(proto::MsgType::kError)) {
          throw ProtocolError("neighbour refused the link: " + proto::ErrorMsg::decode(p, n).text);
        }
        if (type != static_cast<uint16_t>(proto::MsgType::kLinkAck)) {
          throw ProtocolError("expected LinkAck, got message type " + std::to_string(type));
        }
        if (proto::EpochMsg::decode(p, n).epoch != self->plan_.epoch) throw ProtocolError("LinkAck for another epoch");
        self->outgoing_[index].reset();
        self->to_right_[index] = c->detach();
        self->finish_if_complete();
      },
      [weak, index](const std::string& reason) {
        auto self = weak.lock();
        if (!self || self->finished_ || self->to_right_[index].valid()) return;
        self->outgoing_[index].reset();
        self->retry_dial(index, reason);
      });
  proto::LinkHello hello{plan_.run, plan_.self_id, plan_.epoch, index, plan_.connections};
  conn->send(proto::frame_of(hello));
}

void LinkBuilder::retry_dial(uint32_t index, const std::string& why) {
  if (finished_) return;
  last_dial_error_ = why;
  log_.debug("link ", index, " to ", plan_.right_id, " failed (", why, "); retrying");
  std::weak_ptr<LinkBuilder> weak = shared_from_this();
  loop_.run_after(kDialRetry, [weak, index] {
    if (auto self = weak.lock()) self->dial(index);
  });
}

void LinkBuilder::offer(const proto::LinkHello& hello, std::shared_ptr<net::FramedConnection> conn) {
  auto refuse = [&](const std::string& why) {
    conn->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest), why);
  };
  if (finished_) return refuse("link setup for epoch " + std::to_string(plan_.epoch) + " is over");
  if (hello.from_peer != plan_.left_id) {
    return refuse("peer " + hello.from_peer + " is not the left neighbour in epoch " + std::to_string(plan_.epoch));
  }
  if (hello.count != plan_.connections || hello.index >= plan_.connections) {
    return refuse("pool size mismatch: expected " + std::to_string(plan_.connections) + " connections");
  }
  if (from_left_[hello.index].valid()) return refuse("duplicate connection index " + std::to_string(hello.index));
  conn->send(proto::frame_of(proto::MsgType::kLinkAck, proto::EpochMsg{plan_.epoch}.encode()));
  net::Socket s = conn->detach();
  from_left_[hello.index] = std::move(s);
  finish_if_complete();
}

void LinkBuilder::finish_if_complete() {
  if (finished_) return;
  for (const auto& s : to_right_) if (!s.valid()) return;
  for (const auto& s : from_left_) if (!s.valid()) return;
  finished_ = true;
  loop_.cancel_timer(deadline_timer_);
  LinkSet set{plan_.epoch, plan_.left_id, plan_.right_id, std::move(to_right_), std::move(from_left_)};
  done_(std::move(set));
}

void LinkBuilder::fail(const std::string& neighbour, const std::string& reason) {
  if (finished_) return;
  cancel();
  failed_(neighbour, reason);
}

void LinkBuilder::cancel() {
  finished_ = true;
  loop_.cancel_timer(deadline_timer_);
  for (auto& s : dialing_) {
    if (s.valid()) loop_.remove_fd(s.fd());
    s.close();
  }
  for (auto& c : outgoing_) {
    if (c) c->close("link setup cancelled");
    c.reset();
  }
  to_right_.clear();
  from_left_.clear();
}

}  // namespace pcomm::peer
