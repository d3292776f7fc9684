// RingPlan construction; see ring_plan.h.
#include "collectives/ring_plan.h"

#include <algorithm>
#include <map>
#include <utility>

#include "core/errors.h"

namespace pcomm::collectives {

RingPlan::RingPlan(size_t count, size_t world, size_t rank, size_t chunk_elems)
    : count_(count), world_(world), rank_(rank), chunk_elems_(chunk_elems) {
  PCOMM_CHECK(world >= 1 && rank < world, InvalidArgument, "bad ring position");
  PCOMM_CHECK(chunk_elems >= 1, InvalidArgument, "bad ring plan parameters");
  if (world == 1) return;
  std::map<std::pair<size_t, size_t>, int64_t> recv_index;  // (step, chunk) -> index
  auto add = [&](size_t s, size_t c, bool recv) {
    size_t seg = recv ? recv_segment(s) : send_segment(s);
    size_t n = segment_count(seg);
    if (c * chunk_elems_ >= n) return;  // this segment has fewer chunks
    RingItem item;
    item.step = static_cast<uint32_t>(s);
    item.segment = static_cast<uint32_t>(seg);
    item.begin = segment_begin(seg) + c * chunk_elems_;
    item.count = std::min(chunk_elems_, n - c * chunk_elems_);
    if (recv) {
      recv_index[{s, c}] = static_cast<int64_t>(recvs_.size());
      recvs_.push_back(item);
    } else {
      if (s > 0) item.dep = recv_index.at({s - 1, c});
      sends_.push_back(item);
    }
  };
  // The largest segment is the last one (segment_begin rounds down).
  size_t max_chunks = (segment_count(world - 1) + chunk_elems_ - 1) / chunk_elems_;
  for (size_t s = 0; s < reduce_scatter_steps(); ++s) {
    for (size_t c = 0; c < max_chunks; ++c) {
      add(s, c, true);
      add(s, c, false);
    }
  }
  for (size_t c = 0; c < max_chunks; ++c) {
    for (size_t s = reduce_scatter_steps(); s < steps(); ++s) {
      add(s, c, true);
      add(s, c, false);
    }
  }
}

size_t RingPlan::send_segment(size_t step) const {
  size_t rs = reduce_scatter_steps();
  if (step < rs) return (rank_ + world_ - step % world_) % world_;
  size_t t = step - rs;
  return (rank_ + 1 + world_ - t % world_) % world_;
}

size_t RingPlan::recv_segment(size_t step) const {
  size_t rs = reduce_scatter_steps();
  if (step < rs) return (rank_ + 2 * world_ - step % world_ - 1) % world_;
  size_t t = step - rs;
  return (rank_ + world_ - t % world_) % world_;
}

}  // namespace pcomm::collectives
