// LinkLanes; see link_lanes.h.
#include "net/link_lanes.h"

#include "core/errors.h"

namespace pcomm::net {

LinkLanes::LinkLanes(std::vector<std::shared_ptr<Link>> to_right, std::vector<std::shared_ptr<Link>> from_left,
                     std::shared_ptr<Cancel> cancel)
    : to_right_(std::move(to_right)), from_left_(std::move(from_left)), cancel_(std::move(cancel)) {
  PCOMM_CHECK(!to_right_.empty() && !from_left_.empty(), InvalidArgument, "a lane pool is empty");
}

size_t LinkLanes::send_some(size_t lane, const iovec* iov, int iovcnt) {
  try {
    return to_right_[lane]->send_some(iov, iovcnt);
  } catch (const IoError& e) {
    throw IoError("data link to the right neighbour failed (lane " + std::to_string(lane) + "): " + e.what());
  }
}

size_t LinkLanes::recv_some(size_t lane, void* buf, size_t len) {
  if (lane >= from_left_.size()) return 0;  // a send-only lane
  try {
    return from_left_[lane]->recv_some(buf, len);
  } catch (const IoError& e) {
    throw IoError("data link from the left neighbour failed (lane " + std::to_string(lane) + "): " + e.what());
  }
}

void LinkLanes::wait(const std::vector<Interest>& interests, TimePoint deadline, TimePoint wake_by) {
  std::vector<LinkInterest> links;
  links.reserve(2 * interests.size());
  for (const auto& in : interests) {
    if (in.send && in.lane < to_right_.size()) links.push_back({to_right_[in.lane].get(), true, false});
    if (in.recv && in.lane < from_left_.size()) links.push_back({from_left_[in.lane].get(), false, true});
  }
  wait_links(links, deadline, wake_by, cancel_.get(), "data transfer");
}

}  // namespace pcomm::net
