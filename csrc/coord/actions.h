// Action: what the coordinator's pure decision logic (Membership, Collectives) asks the
// server to do. The server (coordinator.cpp) turns each into a message or a drop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/messages.h"
#include "proto/state_messages.h"

namespace pcomm::coord {

struct Action {
  enum class Kind {
    kWelcome,         // peer, accepted
    kTopology,        // peer, topology
    kEpochReady,      // peer, epoch
    kTopologyDone,    // peer, seq, epoch
    kPendingChanged,  // pending
    kDrop,            // peer, reason
    kCollGo,          // peer, tag, op_id, epoch
    kCollResult,      // peer, tag, op_id, outcome, reason
    kRelink,          // (none): start a new epoch with the same ring (links are suspect)
    kStatePlan,       // peer, state_plan
    kStateResult,     // peer, seq (call), op_id (sync id), outcome, reason
  };
  Kind kind = Kind::kWelcome;
  std::string peer;
  bool accepted = false;
  proto::Topology topology;
  uint64_t epoch = 0;
  uint64_t seq = 0;          // kTopologyDone: the call's sequence; kColl*: the peer's call id
  uint32_t pending = 0;
  std::string reason;
  uint32_t tag = 0;
  uint64_t op_id = 0;
  proto::Outcome outcome = proto::Outcome::kCommit;
  proto::StatePlan state_plan;
};
using Actions = std::vector<Action>;

inline Action make_action(Action::Kind kind, const std::string& peer = {}, bool accepted = false) {
  Action a;
  a.kind = kind;
  a.peer = peer;
  a.accepted = accepted;
  return a;
}

// A kInvalid answer (kCollResult or kStateResult) to one peer's call.
inline Action refusal(Action::Kind kind, const std::string& peer, uint64_t call, const std::string& reason) {
  Action a = make_action(kind, peer);
  a.seq = call;
  a.outcome = proto::Outcome::kInvalid;
  a.reason = reason;
  return a;
}

}  // namespace pcomm::coord
