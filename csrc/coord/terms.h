// Terms: how a coordinator that starts on an existing run (a restart, or a standby that
// takes over) rebuilds the ring from the peers that re-register. Pure: no sockets, time
// passed in; unit-tested like Membership.
//
// Every peer that lost its coordinator re-registers (Rejoin) with the term, epoch and
// ring it last knew. The *last ring* is the ring of the newest (term, epoch) reported.
// The new coordinator gathers from the first re-registration on and forms its term:
//  - at once when every member of the last ring is back;
//  - once `window` has passed since the first re-registration, when a majority of the
//    last ring is back;
//  - once 3 x `window` has passed, with whoever came back, when fewer did (the rest may
//    be dead; fencing, not the majority, keeps two coordinators from sharing peers).
// The new ring keeps the last ring's order for those back, then the other re-registered
// peers by id; its first epoch is one past the highest epoch reported, and its term is
// next_term() of the highest term known (reported, or persisted by this coordinator).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/clock.h"

namespace pcomm::coord {

struct Registration {
  std::string peer;
  uint64_t term = 0;
  uint64_t epoch = 0;
  std::vector<std::string> ring;  // as the peer last knew it
};

struct TermDecision {
  bool form = false;
  std::vector<std::string> ring;  // when form
  uint64_t epoch = 0;             // the new term's first epoch
  std::string reason;             // why now (or what it waits for)
};

// Term numbers count in their high bits; the low kTermTieBits are random (never 0), so
// two coordinators that form a term from the same knowledge (a frozen one waking up to
// stale re-registrations while another formed one) get different numbers and the higher
// one wins everywhere; equal numbers would leave peers unable to tell the terms apart.
inline constexpr int kTermTieBits = 32;  // two draws collide with probability 2^-32
inline uint64_t next_term(uint64_t highest_known, uint64_t random) {
  uint64_t tie = random % ((uint64_t{1} << kTermTieBits) - 1) + 1;
  return (((highest_known >> kTermTieBits) + 1) << kTermTieBits) | tie;
}

TermDecision decide_term(const std::vector<Registration>& registered, TimePoint since, TimePoint now,
                         Duration window);

}  // namespace pcomm::coord
