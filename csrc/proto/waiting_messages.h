// Waiting: the coordinator tells the peers waiting in a barrier (update_topology, an
// all_reduce's announcements, a state sync's votes) which peers have not entered it yet,
// once the barrier is a second old and whenever that set changes (coord/stalls.h). A
// call that times out names them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/fields.h"
#include "proto/messages.h"

namespace pcomm::proto {

inline constexpr size_t kMaxWaitingNames = 16;

enum class BarrierKind : uint8_t { kTopology = 0, kCollective = 1, kStateSync = 2 };

struct Waiting {
  static constexpr MsgType kType = MsgType::kWaiting;
  uint8_t kind = 0;   // a BarrierKind
  uint32_t tag = 0;   // all_reduce: its tag
  uint64_t call = 0;  // the receiver's call (update_topology: its seq)
  std::vector<std::string> peers;  // the first kMaxWaitingNames missing peers
  uint32_t more = 0;               // missing peers not named
  template <typename V> void fields(V& v) { v(kind); v(tag); v(call); v(peers); v(more); }
  void validate() const {
    if (kind > 2) throw ProtocolError("Waiting.kind must be 0, 1 or 2");
    if (peers.size() > kMaxWaitingNames) throw ProtocolError("Waiting names at most 16 peers");
  }
};

// "2 peer(s) that had not called all_reduce with tag 0: a, b" (what a timeout appends).
inline std::string waiting_text(const Waiting& w, const std::string& call_name) {
  std::string names;
  for (const auto& p : w.peers) names += (names.empty() ? "" : ", ") + p;
  if (w.more) names += " and " + std::to_string(w.more) + " more";
  return "waiting for " + std::to_string(w.peers.size() + w.more) + " peer(s) that had not called " + call_name +
         ": " + names;
}

}  // namespace pcomm::proto
