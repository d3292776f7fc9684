// Communicator, collectives part: starting an all-reduce, and the coordinator's Go and
// results for it. The op itself is CollectiveOp (collective_op.h); the ring runs on the
// DataPlane worker (data_plane.h). See communicator.h for threads and lock order.
#include "core/errors.h"
#include "peer/communicator.h"

namespace pcomm::peer {

std::shared_ptr<CollectiveOp> Communicator::all_reduce(const AllReduceRequest& request) {
  std::shared_ptr<CollectiveOp> op;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    await_reconnected(lock, Deadline(request.timeout), "all_reduce");
    if (state_ == State::kFailed) raise_failure();
    if (state_ != State::kActive) throw InvalidArgument("not connected: call connect() first");
    if (ops_.count(request.tag)) {
      throw InvalidArgument("an all_reduce with tag " + std::to_string(request.tag) +
                            " is already in flight on this peer; wait for it or use another tag");
    }
    AllReduceRequest numbered = request;
    numbered.call = next_call_++;
    op = std::make_shared<CollectiveOp>(
        numbered,
        [this](const AllReduceRequest& r, uint64_t op_id, const std::string& why) {
          send_coll_report(r.tag, r.call, op_id, proto::Outcome::kTimeout, why);
        },
        [this, tag = request.tag](const CollectiveOp* done, const std::optional<ErrorKind>& error,
                                  const std::string& message, const ReduceInfo& info) {
          std::lock_guard<std::mutex> guard(mutex_);
          auto it = ops_.find(tag);
          if (it != ops_.end() && it->second.get() == done) ops_.erase(it);
          activity_.record(tag, error.has_value(), message, info);
        });
    ops_[request.tag] = op;
  }
  proto::Announce announce;
  announce.tag = request.tag;
  announce.call = op->request().call;
  announce.count = request.count;
  announce.dtype = static_cast<uint8_t>(request.dtype);
  announce.op = static_cast<uint8_t>(request.op);
  announce.quantization = static_cast<uint8_t>(request.quantization);
  loop_.post([this, announce] {
    if (coord_ && welcomed_) coord_->send(proto::frame_of(announce));
  });
  return op;
}

void Communicator::send_coll_report(uint32_t tag, uint64_t call, uint64_t op_id, proto::Outcome outcome,
                                    const std::string& message) {
  proto::CollOutcome report{tag, call, op_id, outcome, message};
  loop_.post([this, report] {
    if (coord_ && welcomed_) coord_->send(proto::frame_of(proto::MsgType::kCollDone, report.encode()));
  });
}

void Communicator::fail_ops(ErrorKind kind, const std::string& message) {
  std::map<uint32_t, std::shared_ptr<CollectiveOp>> ops;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ops = ops_;
  }
  for (auto& [tag, op] : ops) op->decide(kind, message);
}

void Communicator::on_coll_go(const proto::CollGo& go) {
  std::shared_ptr<CollectiveOp> op;
  std::shared_ptr<LinkSet> links;
  int world = 0, rank = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = ops_.find(go.tag);
    if (it != ops_.end() && it->second->request().call == go.call) op = it->second;
    if (links_ && links_->epoch == go.epoch && epoch_ == go.epoch) links = links_;
    world = static_cast<int>(ring_.size());
    rank = rank_;
  }
  if (!op) {
    // This peer gave up on it already; make sure the others do not wait for it.
    send_coll_report(go.tag, go.call, go.op_id, proto::Outcome::kAborted,
                     "this peer no longer runs that call with tag " + std::to_string(go.tag));
    return;
  }
  if (!links) {
    op->set_go(go.op_id, world, rank);
    op->decide(ErrorKind::kPeerLost, "no data links for epoch " + std::to_string(go.epoch));
    send_coll_report(go.tag, go.call, go.op_id, proto::Outcome::kPeerLost, "no data links for epoch " + std::to_string(go.epoch));
    return;
  }
  op->set_go(go.op_id, world, rank);
  data_plane_->enqueue(op, links);
}

void Communicator::on_coll_result(const proto::CollOutcome& result) {
  std::shared_ptr<CollectiveOp> op;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = ops_.find(result.tag);
    // A result for another call with this tag (an older, abandoned one) is not ours.
    if (it != ops_.end() && it->second->request().call == result.call) op = it->second;
  }
  if (!op) return;
  if (result.outcome == proto::Outcome::kCommit) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      committed_.emplace_back(term_, result.op_id);
      if (committed_.size() > kCommitsKept) committed_.pop_front();
    }
    op->decide(std::nullopt, "");
  } else {
    op->decide(proto::error_kind(result.outcome), result.message);
  }
}

}  // namespace pcomm::peer
