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

std::set<std::string> not_idle(const std::vector<Stall>& stalls, const std::set<std::string>& busy) {
  std::set<std::string> out = busy;
  for (const auto& s : stalls) {
    for (const auto& [peer, call] : s.entered) out.insert(peer);
  }
  return out;
}

std::map<std::string, std::string> stragglers(const std::vector<Stall>& stalls, const std::set<std::string>& active,
                                              const std::map<std::string, TimePoint>& last_not_idle, TimePoint now,
                                              Duration straggler_timeout) {
  std::map<std::string, std::string> out;
  for (const auto& s : stalls) {
    for (const auto& peer : s.missing) {
      if (active.count(peer) || out.count(peer)) continue;
      TimePoint idle_from = s.since;
      auto seen = last_not_idle.find(peer);
      if (seen != last_not_idle.end() && seen->second > idle_from) idle_from = seen->second;
      if (now - idle_from < straggler_timeout) continue;
      out[peer] = "did not call " + describe(s) + " within the straggler timeout (" +
                  format_seconds(straggler_timeout) + ") while " + std::to_string(s.entered.size()) +
                  " peer(s) waited in it";
    }
  }
  return out;
}

}  // namespace pcomm::coord
