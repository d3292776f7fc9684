// Re-synchronising a pool's byte streams at the start of an epoch, so that a pool can
// outlive epochs and aborted collectives.
//
// An aborted op may leave anything on a link: half a frame sent, frames never read, and
// the other side's op may still be reading when this side starts over. So, on every link
// of every pool of the epoch, each side
//
//   1. sends MARK(epoch, pool) after whatever it sent before (ops and this step run on
//      one thread, in order, so nothing of an older op can follow it), and sends it again
//      every kMarkRepeat until it sees the other side's MARK: the other side's old op may
//      have swallowed the first ones before it was aborted;
//   2. once it has seen the other side's MARK (proof that the other side's op is over and
//      it is reading for markers now), sends DONE(epoch, pool) and no more markers;
//   3. discards everything it receives up to the other side's DONE.
//
// After that both streams stand at a frame boundary, and the step doubles as a check
// that every link is alive. Everything is non-blocking, so two sides whose buffers are
// full of stale bytes cannot deadlock.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/errors.h"
#include "net/cancel.h"
#include "peer/remote_peer.h"

namespace pcomm::peer {

// How often MARK is repeated until the other side answers.
inline constexpr Millis kMarkRepeat{20};

// The resynchronisation timed out; stuck: the pools whose streams were not through.
class ResyncTimeout : public TimeoutError {
 public:
  ResyncTimeout(const std::string& what, std::vector<std::shared_ptr<Pool>> stuck_pools)
      : TimeoutError(what), stuck(std::move(stuck_pools)) {}
  std::vector<std::shared_ptr<Pool>> stuck;
};

// One epoch's re-synchronisation. It remembers each link's progress across attempts:
// when one pool breaks mid-way and is replaced, the links of the other pools must not
// send their MARKs again (the other side may be done with them and reading the next
// op's data by then).
class Resync {
 public:
  struct Stream;  // one link's progress (link_resync.cpp)
  explicit Resync(uint64_t epoch);
  ~Resync();
  Resync(const Resync&) = delete;
  Resync& operator=(const Resync&) = delete;
  // Runs until every link of these pools is through. Throws IoError (and marks the link
  // broken) when a link fails, ResyncTimeout naming the unfinished links at the
  // deadline, Aborted when cancel fired.
  void run(const std::vector<std::shared_ptr<Pool>>& pools, TimePoint deadline, const net::Cancel& cancel);

 private:
  uint64_t epoch_;
  std::map<std::shared_ptr<net::Link>, std::unique_ptr<Stream>> streams_;
};

}  // namespace pcomm::peer
