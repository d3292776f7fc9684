// RingPlan: which bytes move when, in a ring all-reduce (reduce-scatter, then
// all-gather) of `count` elements over `world` peers, seen from `rank`.
//
// The buffer is split into `world` segments and each segment into chunks of at most
// `chunk_elems` elements. Step s = 0 .. 2(world-1)-1:
//   reduce-scatter (s < world-1): send segment (rank - s), receive (rank - s - 1), reduce
//   all-gather    (s >= world-1): send segment (rank + 1 - t), receive (rank - t),
//                                 with t = s - (world-1)
// After reduce-scatter this peer owns the fully reduced segment (rank + 1). The send of
// (s, c) for s > 0 needs the receive of (s - 1, c): the segment sent at step s is the one
// received at step s - 1 (`dep`). Items are listed in the order they are sent:
// reduce-scatter step by step, all-gather chunk by chunk (every step of chunk 0, then
// of chunk 1...), so a received all-gather chunk can be forwarded at once. The right
// neighbour's receive list is this peer's send list, item for item, so an item's index
// names it on the wire.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pcomm::collectives {

struct RingItem {
  uint32_t step = 0;
  uint32_t segment = 0;
  size_t begin = 0;  // first element
  size_t count = 0;  // elements
  int64_t dep = -1;  // send items: index of the receive item it waits for
};

class RingPlan {
 public:
  RingPlan(size_t count, size_t world, size_t rank, size_t chunk_elems);

  size_t steps() const { return 2 * (world_ - 1); }
  size_t reduce_scatter_steps() const { return world_ - 1; }
  size_t segment_begin(size_t seg) const { return seg * count_ / world_; }
  size_t segment_count(size_t seg) const { return segment_begin(seg + 1) - segment_begin(seg); }
  size_t send_segment(size_t step) const;
  size_t recv_segment(size_t step) const;
  const std::vector<RingItem>& sends() const { return sends_; }
  const std::vector<RingItem>& recvs() const { return recvs_; }

 private:
  size_t count_, world_, rank_, chunk_elems_;
  std::vector<RingItem> sends_, recvs_;
};

}  // namespace pcomm::collectives
