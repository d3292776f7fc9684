// LinkLanes: the Transport (what collectives/ sees) over Links: lane i sends on the i-th
// link to the right ring neighbour and receives on the i-th link from the left one. In a
// ring of two both are the same links (TCP is full duplex). Cancel stops every wait.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "net/cancel.h"
#include "net/link.h"
#include "net/transport.h"

namespace pcomm::net {

class LinkLanes : public Transport {
 public:
  LinkLanes(std::vector<std::shared_ptr<Link>> to_right, std::vector<std::shared_ptr<Link>> from_left,
            std::shared_ptr<Cancel> cancel);
  size_t lanes() const override { return std::max(to_right_.size(), from_left_.size()); }
  bool sends_on(size_t lane) const override { return lane < to_right_.size(); }
  size_t send_some(size_t lane, const iovec* iov, int iovcnt) override;
  size_t recv_some(size_t lane, void* buf, size_t len) override;
  void wait(const std::vector<Interest>& interests, TimePoint deadline, TimePoint wake_by) override;
  void abort(const std::string& reason) override { cancel_->fire(reason); }

 private:
  std::vector<std::shared_ptr<Link>> to_right_, from_left_;
  std::shared_ptr<Cancel> cancel_;
};

}  // namespace pcomm::net
