// RemotePeer: everything this peer knows about reaching one other peer, and the one
// place that decides how (iroh's RemoteStateActor; STYLE.md #3). It owns the pool of
// links to that peer, which ring lanes and epochs reuse for as long as it works.
//
// Path state machine, run by the side that opens the pool (the driver):
//
//   candidates --> direct --> punch (up to kPunchAttempts) --> relay
//       |            |            |                              |
//       |            +------------+------------------------------+--> pool open
//       +-- what the coordinator learned at join: each peer's local address, the endpoint
//           it observed (the NAT mapping of the peer's shared port), whether a dial-back
//           to that endpoint got through (reachable) and whether the mapping changes
//           with the destination (randomizing NAT: punching is hopeless, go to a relay).
//
//  - direct: dial the other side's observed endpoint when it is reachable (or its local
//    address when both sit behind the same public address); connections_per_peer TCP
//    connections from ephemeral ports.
//  - punch: when neither side is reachable and neither NAT randomizes; one connection
//    from the shared port (a 4-tuple can exist once), coordinator-timed (path_agent.h).
//  - relay: when nothing else works; connections_per_peer circuits through a relay.
//
// Who drives is decided the same way on both sides from the same facts: the unreachable
// side when only one is reachable (it can dial out), else the lower peer id. The other
// side (the follower) waits for the driver's pool to arrive, by any path; a newer pool
// replaces an older one, whose links are closed (so the other side notices too).
//
// A working pool survives epochs and relinks: each epoch only re-synchronises its
// streams (link_resync.h). A pool is replaced when one of its links broke. A relayed
// pool is offered an upgrade by one punch attempt at an epoch boundary, at most once
// per kUpgradeInterval. A stream for a state fetch (open_stream) follows the same
// order with the fetcher as requester: direct, punch from a fresh port, relay.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "net/cancel.h"
#include "net/link.h"
#include "peer/path_agent.h"
#include "proto/messages.h"

namespace pcomm::peer {

// Tunables of the path choice (punching and relaying have theirs in path_agent.h).
// One direct connection attempt; a reachable peer answers well within this.
inline constexpr Millis kDirectDialTimeout{1500};
// Punch attempts before falling back to a relay (go-libp2p and DCUtR use 3).
inline constexpr int kPunchAttempts = 3;
// One punch request: the coordinator's RTT measurement, the delay and the attempt.
inline constexpr Millis kPunchRequestTimeout{4000};
// How often a relayed path tries to become a punched one (at an epoch boundary).
inline constexpr std::chrono::seconds kUpgradeInterval{60};
// After every punch attempt to a peer failed, go straight to a relay for this long.
inline constexpr std::chrono::seconds kPunchBackoff{60};
// The punch phase may use at most this share of the time left, so the relay fallback
// always has its turn within the epoch's link set-up.
inline constexpr double kPunchShare = 0.6;
// A handshake (LinkHello, LinkAck) after the path opened gets its own budget.
inline constexpr Millis kHandshakeTimeout{2000};
// Pools being received from a driver and not complete yet, per remote peer.
inline constexpr size_t kMaxPartialPools = 4;

// What both sides need to choose a path; a pure function of the coordinator's facts.
struct PathChoice {
  bool self_drives = false;
  std::vector<std::string> direct;  // addresses the driver dials, in order; empty: none
  bool punchable = false;
};
PathChoice choose_path(const proto::RingMember& self, const proto::RingMember& remote);

struct Pool {
  uint64_t id = 0;
  net::LinkKind kind = net::LinkKind::kDirect;
  std::vector<std::shared_ptr<net::Link>> links;
  std::string peer;  // the remote peer's id (for messages)
  bool broken() const;
  void shutdown();
};

// A neighbour link as comm.links() shows it.
struct LinkInfo {
  std::string peer_id;
  std::string kind;
  std::string remote;
  uint32_t connections = 0;
  double rtt_seconds = 0;
};

struct PathEnv {
  std::string run;
  uint32_t connections = 1;
  PathAgent* agent = nullptr;
  const Logger* log = nullptr;
  // Told (loop thread, may not block) when a follower's pool was replaced by a newer one.
  std::function<void(const std::string& peer)> replaced;
  // Runs with a secret: wraps a link this side opened in TLS with the pair's key and
  // completes the handshake (blocking); empty otherwise.
  using Secure = std::function<std::shared_ptr<net::Link>(std::shared_ptr<net::Link>, const std::string& peer,
                                                          TimePoint deadline, const net::Cancel* cancel)>;
  Secure secure;
};

class RemotePeer {
 public:
  RemotePeer(std::string id, const PathEnv& env) : id_(std::move(id)), env_(env) {}
  const std::string& id() const { return id_; }

  void set_info(const proto::RingMember& info);
  // Whether this side opens the pool (choose_path); false while the peer is unknown.
  bool self_drives(const proto::RingMember& self) const;
  // The pool to use now: the working one, or a new one (driver) / the driver's next one
  // (follower). Blocking; any thread but the loop's.
  // allow_upgrade: a working relayed pool may try a punch now (once per epoch: a retry
  // within the epoch must not replace a pool the other side has finished with).
  std::shared_ptr<Pool> pool(const proto::RingMember& self, TimePoint deadline, const net::Cancel& cancel,
                             bool allow_upgrade = true);
  // A new stream to this peer for a state fetch; this side speaks first on it.
  std::shared_ptr<net::Link> open_stream(const proto::RingMember& self, TimePoint deadline,
                                         const net::Cancel* cancel);
  // Whether a pool connection with this LinkHello would be taken: not from a peer this
  // side drives for (self as the last topology described it), nor a duplicate slot.
  bool accepts(const proto::RingMember& self, uint64_t pool, uint32_t index, uint32_t count) const;
  // A pool connection that arrived and passed its LinkHello (loop thread).
  void offer(uint64_t pool, uint32_t index, uint32_t count, std::shared_ptr<net::Link> link);
  std::optional<LinkInfo> info() const;
  void close();
  // Closes pools that began arriving before cutoff and are still incomplete; returns
  // whether any topology named this peer yet.
  bool sweep(TimePoint cutoff);
  TimePoint created() const { return created_; }

 private:
  std::shared_ptr<Pool> establish(const proto::RingMember& self, const PathChoice& choice, TimePoint deadline,
                                  const net::Cancel& cancel);
  // fresh_port: dial from a new port, not the shared one (a broken punched pool's 4-tuple
  // may still exist, or a failed attempt's).
  std::shared_ptr<Pool> try_punch(const proto::RingMember& self, bool fresh_port, TimePoint deadline,
                                  const net::Cancel& cancel);
  // Driver: LinkHello on every link, then every LinkAck; the links become one pool.
  std::shared_ptr<Pool> handshake(const std::string& self_id, std::vector<std::shared_ptr<net::Link>> links,
                                  net::LinkKind kind, TimePoint deadline, const net::Cancel* cancel);
  void adopt(std::shared_ptr<Pool> pool);  // mutex_ held
  // The link in TLS when the run has a secret (env_.secure), else as it is.
  std::shared_ptr<net::Link> secured(std::shared_ptr<net::Link> link, TimePoint deadline, const net::Cancel* cancel);

  std::string id_;
  PathEnv env_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<proto::RingMember> info_;
  std::shared_ptr<Pool> current_;
  std::map<uint64_t, Pool> partial_;  // follower: pools still arriving, by id
  std::map<uint64_t, TimePoint> partial_since_;
  TimePoint created_ = Clock::now();
  TimePoint last_upgrade_try_{};
  bool punched_before_ = false;  // the shared port punched to this peer: later punches use a fresh one
  TimePoint punch_failed_at_{};  // every attempt failed then (kPunchBackoff)
  bool closed_ = false;
};

// The directory of RemotePeers, by peer id. Any thread.
class RemotePeers {
 public:
  explicit RemotePeers(PathEnv env) : env_(std::move(env)) {}
  std::shared_ptr<RemotePeer> get(const std::string& id);  // created on first use
  std::shared_ptr<RemotePeer> find(const std::string& id) const;
  void update(const std::vector<proto::RingMember>& members);
  std::vector<LinkInfo> links(const std::vector<std::string>& neighbours) const;
  void clear();  // closes every pool (a new session)
  // Closes what strangers left: incomplete pools older than cutoff, and peers no
  // topology has named that first showed up before cutoff.
  void sweep(TimePoint cutoff);

 private:
  PathEnv env_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<RemotePeer>> peers_;
};

}  // namespace pcomm::peer
