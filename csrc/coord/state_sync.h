// StateSync: the coordinator's decisions for sync_shared_state, pure like Membership.
//
// Rules:
//  - Participants are the ring members when the first vote arrives; one that leaves the
//    run leaves the sync. When all have voted:
//  - Layouts must agree (same tensor names in the same order, dtypes, shapes); otherwise
//    every participant gets kInvalid naming the first difference.
//  - The chosen content (a revision plus one hash per tensor) is decided by
//    choose_content() below. Each participant gets a StatePlan: the chosen content, the
//    tensors whose hash differs from its own (to fetch), and the sources (participants
//    that voted and hold exactly the chosen content).
//  - The sync commits when every remaining participant reported success; any failure
//    report aborts it for all (receivers then keep their previous content).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coord/actions.h"
#include "coord/collectives.h"
#include "proto/state_messages.h"

namespace pcomm::coord {

// How revision and popularity combine (documented in docs/state.md):
//  1. receive_only participants never vote.
//  2. If any participant is send_only, the content of the send_only participants wins;
//     they must agree with each other (otherwise: error).
//  3. Otherwise, if any participant offers (a resumed checkpoint), the offered content
//     with the highest revision wins, unless a voter holds a higher revision still (an
//     offer never rolls back a run further ahead; then rule 4, offers voting as usual).
//     Among offers of one revision, the most offered, then the smaller list of hashes.
//     Offering peers holding an older offer receive the winner.
//  4. Otherwise the content held by the most voters wins; a tie goes to the higher
//     revision, then to the lexicographically smaller list of hashes (deterministic).
// Returns the index (into votes) of a voter holding the chosen content, or throws
// InvalidArgument with the reason.
size_t choose_content(const std::vector<std::pair<std::string, proto::StateVote>>& votes);

// The first layout difference between two votes, as text ("" when they agree).
std::string layout_difference(const std::string& peer_a, const proto::StateVote& a, const std::string& peer_b,
                              const proto::StateVote& b);

class StateSync {
 public:
  // now: when the vote arrived (the sync's stall counts from its first one).
  Actions on_vote(const std::string& peer, const proto::StateVote& vote, const View& view, TimePoint now = TimePoint{});
  Actions on_report(const std::string& peer, const proto::StateOutcome& report, const View& view);
  Actions on_view_changed(const View& view);
  bool busy() const { return active_; }
  bool planned() const { return sync_id_ != 0; }
  // The votes so far, while some participants have voted and others have not.
  std::optional<Stall> stall() const;
  // Participants of a planned sync (transferring: not idle).
  std::set<std::string> running_peers() const { return planned() ? participants_ : std::set<std::string>{}; }

 private:
  void try_plan(const View& view, Actions& out);
  void finish(proto::Outcome outcome, const std::string& message, Actions& out);

  bool active_ = false;
  uint64_t sync_id_ = 0;  // 0 until planned
  uint64_t next_sync_id_ = 1;
  std::set<std::string> participants_;
  std::map<std::string, proto::StateVote> votes_;
  TimePoint since_;  // the first vote
  std::set<std::string> succeeded_;
};

}  // namespace pcomm::coord
