// Stalls; see stalls.h for the rule.
#include "coord/stalls.h"

namespace pcomm::coord {

std::string describe(const Stall& stall) {
  switch (stall.kind) {
    case Stall::Kind::kTopology: return "update_topology";
    case Stall::Kind::kCollective: return "all_reduce with tag " + std::to_string(stall.tag);
    case Stall::Kind::kStateSync: return "sync_shared_state";
  }
  return "a collective call";
}

std::map<std::string, std::string> stragglers(const std::vector<Stall>& stalls, const std::set<std::string>& busy,
                                              TimePoint now, Duration straggler_timeout) {
  std::set<std::string> waiting = busy;  // in some barrier or running: not idle
  for (const auto& s : stalls) {
    for (const auto& [peer, call] : s.entered) waiting.insert(peer);
  }
  std::map<std::string, std::string> out;
  for (const auto& s : stalls) {
    if (now - s.since < straggler_timeout) continue;
    for (const auto& peer : s.missing) {
      if (waiting.count(peer) || out.count(peer)) continue;
      out[peer] = "did not call " + describe(s) + " within the straggler timeout (" +
                  format_seconds(straggler_timeout) + ") while " + std::to_string(s.entered.size()) +
                  " peer(s) waited in it";
    }
  }
  return out;
}

}  // namespace pcomm::coord
