// Membership: the coordinator's decisions, with no sockets and no clock of its own.
//
// Every input is an event plus the current time; every output is a list of Actions the
// server carries out (send a message, drop a connection). Tests drive it directly.
//
// Rules (DESIGN.md, "Lifecycle of a peer"):
//  - A hello when nobody is accepted is accepted at once (a new epoch with just it).
//    Otherwise the peer waits as pending.
//  - update_topology is a barrier over the accepted ring. When every ring member is in it
//    and the current epoch's links are ready: if peers are pending they are all admitted
//    (a new epoch: old ring order, then newcomers by join order) and the callers are
//    released once that epoch's links are ready; otherwise the callers are released at
//    once (cheap: one round trip, no relinking).
//  - A peer lost (socket closed, left, or silent past the heartbeat timeout) leaves at
//    once: if it was in the ring, a new epoch starts with the survivors. If the ring
//    becomes empty while peers are pending, they are admitted at once.
//  - Admission waits while collectives are announced or running (set_collectives_busy).
//  - An epoch is ready when every ring member reported its links ready. When a peer
//    reports that it cannot reach a neighbour, the later joiner of the two is dropped.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/clock.h"
#include "coord/actions.h"
#include "coord/stalls.h"
#include "proto/messages.h"

namespace pcomm::coord {

struct PeerRecord {
  std::string data_address;      // as advertised (the peer's local candidate)
  std::string observed_address;  // as the coordinator saw it (the NAT mapping)
  uint8_t nat = 0;               // proto::NatFlags
  uint64_t join_seq = 0;
  bool accepted = false;
  TimePoint last_heard;
};

// Pure helpers, exposed for tests.
// New ring: current order kept, admitted peers appended by join order.
std::vector<std::string> ring_order(const std::vector<std::string>& current,
                                    const std::vector<std::string>& admitted,
                                    const std::map<std::string, PeerRecord>& peers);
// Peers silent for longer than timeout at time now, in id order.
std::vector<std::string> expired_peers(const std::map<std::string, PeerRecord>& peers,
                                       TimePoint now, Duration timeout);
// Of two peers that cannot link, the one to drop: the later joiner.
std::string peer_to_drop_on_link_failure(const std::string& reporter, const std::string& neighbour,
                                         const std::map<std::string, PeerRecord>& peers);

class Membership {
 public:
  explicit Membership(Duration heartbeat_timeout) : heartbeat_timeout_(heartbeat_timeout) {}

  // observed_address and nat: what the server learned of the peer's network position
  // (see coordinator.h, "NAT observation"); they travel in every Topology.
  Actions on_hello(const std::string& peer, const std::string& data_address, TimePoint now,
                   const std::string& observed_address = "", uint8_t nat = 0);
  void on_heard(const std::string& peer, TimePoint now);
  Actions on_update_topology(const std::string& peer, uint64_t seq, TimePoint now);
  // The caller's update_topology timed out: it no longer counts toward the barrier.
  void on_cancel_update_topology(const std::string& peer, uint64_t seq);
  Actions on_links_ready(const std::string& peer, uint64_t epoch, TimePoint now);
  Actions on_links_failed(const std::string& peer, uint64_t epoch, const std::string& neighbour,
                          TimePoint now);
  // Socket closed or clean leave; no Drop action is emitted for the peer itself. The
  // reason (proto::kLeftReason for a clean leave) reaches the survivors in the next Topology.
  Actions on_lost(const std::string& peer, TimePoint now, const std::string& reason = "lost");
  // Heartbeat deadlines: emits a Drop for every expired peer and the resulting changes.
  Actions on_tick(TimePoint now);
  // While collectives are announced or running, pending peers are not admitted (a new
  // ring would abort them); the barrier completes once they are done.
  Actions set_collectives_busy(bool busy);
  // A new epoch with the same ring: every peer rebuilds its data links (after an aborted
  // collective left bytes of unknown state on them).
  Actions relink();

  // Peers that on_tick(now) would drop, without dropping them.
  std::vector<std::string> expired(TimePoint now) const { return expired_peers(peers_, now, heartbeat_timeout_); }

  // The update_topology barrier, while some ring members are in it and others are not.
  std::optional<Stall> stall() const;
  // Admitted in a round and waiting for that epoch's links: in a barrier, not idle.
  std::vector<std::string> releasing() const;
  // Drops these peers at once (stragglers), each told its reason; one new epoch.
  Actions drop(const std::map<std::string, std::string>& reasons);
  // A new term (coord/terms.h): these re-registered peers become the ring, in this
  // order, followed by ring members that joined before they came back, at `epoch` (or
  // the next epoch, if that is later). Pending peers stay pending; barriers start over.
  // Emits the epoch's Topology, whose `gone` lists these departures (the last ring's
  // members that did not come back).
  Actions restore(const std::vector<proto::RingMember>& ring, uint64_t epoch, TimePoint now,
                  const std::vector<proto::Departure>& gone = {});

  uint64_t epoch() const { return epoch_; }
  const std::vector<std::string>& ring() const { return ring_; }
  bool epoch_ready() const { return epoch_ready_; }
  uint32_t pending_count() const;
  bool knows(const std::string& peer) const { return peers_.count(peer) != 0; }
  bool is_accepted(const std::string& peer) const;
  std::string data_address(const std::string& peer) const;
  // The peer as a Topology describes it (empty peer_id when unknown).
  proto::RingMember member(const std::string& peer) const;

 private:
  void new_epoch(std::vector<std::string> ring, Actions& out);
  void remove(const std::string& peer, Actions& out, const std::string& reason);
  void evaluate(Actions& out);
  std::vector<std::string> pending_in_join_order() const;

  Duration heartbeat_timeout_;
  std::map<std::string, PeerRecord> peers_;
  uint64_t next_join_seq_ = 1;
  uint64_t epoch_ = 0;
  std::vector<std::string> ring_;
  std::vector<proto::Departure> departed_;  // ring members gone since the last Topology, with why
  bool epoch_ready_ = false;
  std::set<std::string> links_ready_;
  std::map<std::string, uint64_t> waiters_;   // in update_topology: peer -> seq
  TimePoint barrier_since_{};                  // when waiters_ last became non-empty
  std::map<std::string, uint64_t> releasing_; // admitted a round; release when ready
  bool collectives_busy_ = false;
};

}  // namespace pcomm::coord
