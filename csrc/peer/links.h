// Data links of one epoch: a pool of TCP connections to the right ring neighbour (dialed
// by us) and a pool from the left neighbour (dialed by it). LinkBuilder runs on the
// peer's EventLoop and drives both pools to completion or failure:
//
//   dial right (retry until the deadline) -> send LinkHello -> wait LinkAck   } x pool
//   accept from left: LinkHello checked (run, epoch, sender, index) -> LinkAck } x pool
//
// When all are open it hands over a LinkSet (plain sockets, taken out of the loop) for
// the data plane; when the deadline passes it reports which neighbour it could not reach.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "net/event_loop.h"
#include "net/frame_conn.h"
#include "net/socket.h"
#include "proto/messages.h"

namespace pcomm::peer {

struct LinkSet {
  uint64_t epoch = 0;
  std::string left_id, right_id;
  std::vector<net::Socket> to_right;   // we send on these (index = stripe)
  std::vector<net::Socket> from_left;  // we receive on these
};

struct LinkPlan {
  std::string run;
  std::string self_id;
  uint64_t epoch = 0;
  std::string left_id, right_id;
  std::string right_address;
  uint32_t connections = 1;
  Duration timeout = std::chrono::seconds(10);
};

class LinkBuilder : public std::enable_shared_from_this<LinkBuilder> {
 public:
  using Done = std::function<void(LinkSet)>;
  using Failed = std::function<void(const std::string& neighbour, const std::string& reason)>;

  LinkBuilder(net::EventLoop& loop, LinkPlan plan, const Logger& log, Done done, Failed failed);
  ~LinkBuilder();
  void start();
  // An incoming connection whose LinkHello names this builder's epoch.
  void offer(const proto::LinkHello& hello, std::shared_ptr<net::FramedConnection> conn);
  // Abandons the build (a newer epoch superseded it); closes everything it holds.
  void cancel();
  uint64_t epoch() const { return plan_.epoch; }

 private:
  void dial(uint32_t index);
  void on_dial_writable(uint32_t index);
  void retry_dial(uint32_t index, const std::string& why);
  void finish_if_complete();
  void fail(const std::string& neighbour, const std::string& reason);

  net::EventLoop& loop_;
  LinkPlan plan_;
  const Logger& log_;
  Done done_;
  Failed failed_;
  bool finished_ = false;
  net::EventLoop::TimerId deadline_timer_ = 0;
  std::vector<net::Socket> dialing_;  // connects in progress, by index
  std::vector<std::shared_ptr<net::FramedConnection>> outgoing_;  // awaiting LinkAck
  std::vector<net::Socket> to_right_, from_left_;
  std::string last_dial_error_;
};

}  // namespace pcomm::peer
