// PathAgent: this peer's half of hole punching and relaying, as the coordinator signals
// them (proto/path_messages.h). It opens the sockets; RemotePeer (remote_peer.h) decides
// when to ask for which path.
//
//  - request(): the requester asks for a punched or relayed path and blocks until its
//    links are open (it then speaks first on them: LinkHello or FetchHello).
//  - The other side (the responder) opens the same links when the coordinator says so
//    and hands each to `inbound`, where the requester's first frame routes it, exactly
//    like a connection accepted on the data port.
//
// Hole punch (DCUtR's timing, run by the coordinator): both sides get PunchGo with a
// delay such that both dial at the same instant; each dials the other's mapping from its
// own port (the shared port for a pool, so the mapping the coordinator observed is the
// one used; a reserved fresh port for a stream). A dial refused by RST is retried from
// the same port until the attempt ends; SYNs that cross make a TCP simultaneous open.
//
// Threads: coordinator messages arrive on the loop thread; each punch or relay join runs
// on a short-lived worker thread; request() blocks its caller. stop() ends them all.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "net/cancel.h"
#include "net/link.h"
#include "net/socket.h"
#include "proto/path_messages.h"

namespace pcomm::peer {

// Tunables of punching and relaying (the path choice's are in remote_peer.cpp).
// How long one punch attempt may take from the dial time until the connection is open.
inline constexpr Millis kPunchAttempt{2500};
// Pause before redialling after a dial was refused (RST) during an attempt.
inline constexpr Millis kPunchRedial{40};
// A port reserved for a punch whose PunchGo never came is let go after this.
inline constexpr Millis kReservedPortTtl{6000};
// Punches and relay joins running at once; more wait their turn (bounded threads).
inline constexpr size_t kMaxWorkers = 32;

class PathAgent {
 public:
  using Send = std::function<void(std::vector<uint8_t> frame)>;
  using Inbound = std::function<void(std::shared_ptr<net::Link> link)>;

  PathAgent(const Logger& log, Send send_to_coordinator, Inbound inbound);
  ~PathAgent();
  PathAgent(const PathAgent&) = delete;
  PathAgent& operator=(const PathAgent&) = delete;

  void set_shared_port(uint16_t port) { shared_port_ = port; }

  // Requester side: a punched (count 1) or relayed (count links) path to peer. Throws
  // IoError when the coordinator or the dial gave up, TimeoutError at the deadline,
  // Aborted when cancel fired.
  // fresh_port: punch from a newly reserved port instead of the shared one.
  std::vector<std::shared_ptr<net::Link>> request(const std::string& peer, proto::PathKind kind,
                                                  proto::PathPurpose purpose, uint32_t count, TimePoint deadline,
                                                  const net::Cancel* cancel, bool fresh_port = false);

  // Loop thread: the coordinator's signals.
  void on_punch_prepare(const proto::PunchPrepare& m);
  void on_punch_go(const proto::PunchGo& m);
  void on_relay_offer(const proto::RelayOffer& m);
  void on_path_failed(const proto::PathFailed& m);

  // Fails every request, stops every worker and joins them. Idempotent.
  void stop();

 private:
  struct Waiter {
    std::vector<std::shared_ptr<net::Link>> links;
    std::optional<std::string> error;
    bool done = false;
    bool fresh_port = false;
  };
  struct Reserved {
    net::Socket socket;
    TimePoint since;
  };
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void deliver(uint64_t intent, bool requester, std::vector<std::shared_ptr<net::Link>> links,
               const std::string& error);
  void spawn(std::function<void()> work);
  std::shared_ptr<net::Link> punch(const proto::PunchGo& go);

  const Logger& log_;
  Send send_;
  Inbound inbound_;
  std::atomic<uint16_t> shared_port_{0};
  net::Cancel stopping_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<uint64_t, Waiter> waiters_;          // requests in flight, by intent
  std::map<uint64_t, Reserved> reserved_;       // fresh ports held for punches, by intent
  std::vector<Worker> workers_;                 // finished ones are joined by spawn()
  std::deque<std::function<void()>> backlog_;   // work waiting for a free worker
  bool stopped_ = false;
};

// Opens a relayed link: joins `token` at the relay and waits until the other side joined.
std::shared_ptr<net::Link> join_relay(const std::string& relay, const std::string& token, TimePoint deadline,
                                      const net::Cancel* cancel);

}  // namespace pcomm::peer
