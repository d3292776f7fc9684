// DataPlane: the peer's worker thread for collectives. Ops arrive in the order of their
// Go messages (the same order on every peer) and run one at a time on the links of their
// epoch; the ring writes into a scratch buffer kept between ops (so large tensors do not
// page-fault a fresh buffer every time), and the result is copied out only on commit.
// Tasks (an epoch's link preparation) run on the same thread in the same queue, so no op
// ever uses a link while its streams are being re-synchronised (link_resync.h).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "core/clock.h"
#include "peer/collective_op.h"
#include "net/link.h"

namespace pcomm::peer {

// The links of one epoch: lane i sends on to_right[i] and receives on from_left[i]
// (pools shared with other epochs; the two are the same pool in a ring of two).
struct LinkSet {
  uint64_t epoch = 0;
  std::string left_id, right_id;
  std::vector<std::shared_ptr<net::Link>> to_right, from_left;
};

class DataPlane {
 public:
  // report(request, op_id, outcome, message) tells the coordinator how this peer's part went.
  using Report = std::function<void(const AllReduceRequest&, uint64_t, proto::Outcome, const std::string&)>;

  DataPlane(Report report, Duration decision_grace);
  ~DataPlane();
  DataPlane(const DataPlane&) = delete;
  DataPlane& operator=(const DataPlane&) = delete;

  void enqueue(std::shared_ptr<CollectiveOp> op, std::shared_ptr<LinkSet> links);
  void enqueue_task(std::function<void()> task);
  void stop();

 private:
  void run();
  void execute(const std::shared_ptr<CollectiveOp>& op, const std::shared_ptr<LinkSet>& links);
  void* scratch(size_t bytes);

  Report report_;
  Duration decision_grace_;
  std::mutex mutex_;
  std::condition_variable cv_;
  struct Item {
    std::shared_ptr<CollectiveOp> op;
    std::shared_ptr<LinkSet> links;
    std::function<void()> task;
  };
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::unique_ptr<uint8_t[]> scratch_;
  size_t scratch_size_ = 0;
  size_t threads_ = 1;
  size_t chunk_bytes_ = 256 * 1024;
  std::thread thread_;
};

}  // namespace pcomm::peer
