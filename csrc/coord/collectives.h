// Collectives: the coordinator's decisions about collective operations, pure like
// Membership (no sockets, no clock). It turns announcements into a start (CollGo) and
// completion reports into one outcome for everybody (CollResult).
//
// Rules (DESIGN.md, "Lifecycle of a peer", step 3):
//  - An operation is keyed by its tag. Its participants are the ring members when the
//    first announcement arrives; a participant that leaves the run leaves the operation.
//  - When every participant has announced: if they disagree (count, dtype, op,
//    quantization) everyone gets kInvalid naming the difference. Otherwise, once the
//    epoch is ready and its ring is exactly the participants, everyone gets CollGo with
//    a fresh op id, in the same order for everyone.
//  - A running operation commits when every participant reported success. Any failure
//    report aborts it for everyone, and the links are rebuilt (a Relink action), since
//    an aborted transfer leaves bytes of unknown state on them. An epoch change (a peer
//    lost) aborts every running operation with kPeerLost.
//  - A participant that gives up on an announced operation (op id 0, failure) aborts it
//    for everyone who announced.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "coord/actions.h"
#include "coord/stalls.h"
#include "core/clock.h"
#include "proto/messages.h"

namespace pcomm::coord {

// The membership facts a collective decision depends on.
struct View {
  uint64_t epoch = 0;
  std::vector<std::string> ring;
  bool ready = false;
  std::map<std::string, std::string> addresses;  // ring member -> data address
  bool has(const std::string& peer) const { return std::find(ring.begin(), ring.end(), peer) != ring.end(); }
};

class Collectives {
 public:
  // now: when the announcement arrived (the op's stall counts from its first one).
  Actions on_announce(const std::string& peer, const proto::Announce& announce, const View& view,
                      TimePoint now = TimePoint{});
  Actions on_report(const std::string& peer, const proto::CollOutcome& report, const View& view);
  // Call after any change of epoch, ring or readiness.
  Actions on_view_changed(const View& view);
  bool busy() const { return !ops_.empty(); }
  // Operations started (CollGo sent) and not yet decided.
  size_t running() const;
  // Operations announced by some participants and not by others.
  std::vector<Stall> stalls() const;
  // Participants of started operations (running the ring: not idle).
  std::set<std::string> running_peers() const;

 private:
  struct Op {
    std::set<std::string> participants;
    std::map<std::string, proto::Announce> announced;
    uint64_t op_id = 0;  // 0 until started
    uint64_t epoch = 0;
    TimePoint since;     // the first announcement
    std::set<std::string> succeeded;
  };
  void try_start(uint32_t tag, const View& view, Actions& out);
  void finish(uint32_t tag, proto::Outcome outcome, const std::string& message, Actions& out);

  std::map<uint32_t, Op> ops_;
  uint64_t next_op_id_ = 1;
};

// The first difference between two announcements, as text ("" when they agree).
std::string announce_difference(const std::string& peer_a, const proto::Announce& a, const std::string& peer_b,
                                const proto::Announce& b);

}  // namespace pcomm::coord
