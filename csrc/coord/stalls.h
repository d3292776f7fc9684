// Stalls: barriers that some ring members have entered and others have not, and the
// rule that ends them. Pure: no sockets, time passed in.
//
// Every collective step of a run is a barrier over the ring: update_topology, the
// announcements of an all_reduce (per tag), the votes of a sync_shared_state. While one
// is incomplete the coordinator
//  - tells the members who entered which peers they are waiting for (Waiting, once the
//    stall is kWaitingNotice old and whenever that set changes), so a call that times
//    out can name them;
//  - drops every missing peer that has been idle for straggler_timeout while the stall
//    lasted: in no barrier and running no operation (a hung data loader, a stuck GPU).
//    A peer's clock starts at the later of the stall's start and the last time it was
//    seen not idle, so a peer that just left another call (its own deadline ran out)
//    gets the full timeout. All of them at once, whatever barrier they hold up; the
//    members who entered continue with the smaller world. A missing peer that waits in
//    another barrier is not idle: two groups waiting in different barriers is a program
//    bug that each caller's deadline reports (naming the peers), not a reason to drop
//    anyone.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/clock.h"
#include "proto/waiting_messages.h"

namespace pcomm::coord {

inline constexpr Duration kWaitingNotice = std::chrono::seconds(1);

struct Stall {
  using Kind = proto::BarrierKind;
  Kind kind = Kind::kTopology;
  uint32_t tag = 0;  // kCollective: the all_reduce's tag
  TimePoint since;   // when the first member entered
  std::map<std::string, uint64_t> entered;  // member -> its call number
  std::vector<std::string> missing;         // ring members that have not entered
};

// "update_topology", "all_reduce with tag 3", "sync_shared_state".
std::string describe(const Stall& stall);

// The peers that are not idle now: busy (running an operation: started collectives, a
// planned state sync), or entered in some stall.
std::set<std::string> not_idle(const std::vector<Stall>& stalls, const std::set<std::string>& busy);

// The peers to drop now under the rule above, each with the reason it is told.
// active: not_idle() now. last_not_idle: when each peer was last seen not idle (absent: never).
std::map<std::string, std::string> stragglers(const std::vector<Stall>& stalls, const std::set<std::string>& active,
                                              const std::map<std::string, TimePoint>& last_not_idle, TimePoint now,
                                              Duration straggler_timeout);

}  // namespace pcomm::coord
