// RingPlan: which bytes move when, in a ring all-reduce (reduce-scatter, then
// all-gather) of `count` elements over `world` peers, seen from `rank`.
//
// The buffer is split into `world` segments; each segment into chunks of at most
// `chunk_elems` elements; chunk c of every segment travels on lane c % lanes (one lane
// per TCP connection of the pool). Step s = 0 .. 2(world-1)-1:
//   reduce-scatter (s < world-1): send segment (rank - s), receive (rank - s - 1), reduce
//   all-gather    (s >= world-1): send segment (rank + 1 - t), receive (rank - t),
//                                 with t = s - (world-1)
// After reduce-scatter this peer owns the fully reduced segment (rank + 1). The send of
// (s, c) for s > 0 needs the receive of (s - 1, c): the segment sent at step s is the one
// received at step s - 1. Every lane is therefore an independent pipeline. A lane's
// reduce-scatter items are ordered by step, its all-gather items by chunk, then step;
// the right neighbour's receive order mirrors this peer's send order exactly.
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
  int64_t dep = -1;  // send items: index of the lane's receive item it waits for
};

struct LanePlan {
  std::vector<RingItem> sends;
  std::vector<RingItem> recvs;
};

class RingPlan {
 public:
  RingPlan(size_t count, size_t world, size_t rank, size_t lanes, size_t chunk_elems);

  size_t steps() const { return 2 * (world_ - 1); }
  size_t reduce_scatter_steps() const { return world_ - 1; }
  size_t segment_begin(size_t seg) const { return seg * count_ / world_; }
  size_t segment_count(size_t seg) const { return segment_begin(seg + 1) - segment_begin(seg); }
  size_t send_segment(size_t step) const;
  size_t recv_segment(size_t step) const;
  size_t owned_segment() const { return (rank_ + 1) % world_; }
  const std::vector<LanePlan>& lanes() const { return lanes_; }

 private:
  size_t count_, world_, rank_, lane_count_, chunk_elems_;
  std::vector<LanePlan> lanes_;
};

}  // namespace pcomm::collectives
