// Communicator, shared-state part: sync_shared_state and its messages. The decisions are
// the coordinator's (coord/state_sync.h); the bytes move in peer/state_transfer.h.
#include <cstring>

#include "core/errors.h"
#include "peer/communicator.h"
#include "state/hash.h"

namespace pcomm::peer {

namespace {
// Pieces of a transfer: large enough to stream well, small enough that a lost source
// costs little to redo and several connections share a tensor.
constexpr uint64_t kPieceBytes = 4ull << 20;
// Past its deadline, a peer that reported success waits this long for the decision.
constexpr std::chrono::seconds kDecisionGrace{10};
}  // namespace

SyncResult Communicator::sync_shared_state(const std::vector<StateTensor>& tensors, uint64_t revision,
                                           proto::SyncStrategy strategy, Duration timeout) {
  Deadline deadline(timeout);
  proto::StateVote vote;
  vote.strategy = strategy;
  vote.revision = revision;
  for (const auto& t : tensors) {
    vote.tensors.push_back(proto::TensorMeta{t.name, t.dtype, t.shape, t.nbytes, state::hash_bytes(t.data, t.nbytes)});
  }
  std::shared_ptr<StateSession> session;
  std::string self;
  proto::RingMember self_member;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    await_reconnected(lock, deadline, "sync_shared_state");
    if (state_ == State::kFailed) raise_failure();
    if (state_ != State::kActive) throw InvalidArgument("not connected: call connect() first");
    if (state_session_) throw InvalidArgument("a sync_shared_state call is already in progress on this peer");
    vote.call = next_call_++;
    session = std::make_shared<StateSession>(vote.call, tensors, deadline.at(), interrupt_check_);
    state_session_ = session;
    self = peer_id_;
    self_member = self_member_;
  }
  auto end_session = [&] {
    session->stop_serving();  // no thread reads the tensors after this
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_session_ == session) state_session_.reset();
  };
  loop_.post([this, vote] {
    if (coord_ && welcomed_) coord_->send(proto::frame_of(proto::StateMsg::kStateVote, vote.encode()));
  });

  SyncResult result;
  std::vector<std::unique_ptr<uint8_t[]>> incoming;
  proto::StatePlan plan;
  bool reported = false;
  try {
    plan = session->wait_plan(deadline.at());
    // Fetch what differs into fresh buffers; nothing becomes visible before the commit.
    std::vector<uint64_t> sizes;
    std::vector<uint8_t*> buffers;
    for (uint32_t i : plan.fetch) {
      incoming.emplace_back(new uint8_t[tensors[i].nbytes]);
      sizes.push_back(tensors[i].nbytes);
      buffers.push_back(incoming.back().get());
    }
    FetchSpec spec{options_.run,  self,        plan.sync_id,    plan.sources, options_.connections_per_peer,
                   deadline.at(), interrupt_check_,
                   [this, self_member](const std::string& peer, TimePoint until) {
                     return remotes_->get(peer)->open_stream(self_member, until, nullptr);
                   }};
    result.bytes_received = fetch_pieces(spec, make_pieces(plan.fetch, sizes, buffers, kPieceBytes));
    for (size_t k = 0; k < plan.fetch.size(); ++k) {
      uint32_t i = plan.fetch[k];
      if (state::hash_bytes(buffers[k], sizes[k]) != plan.hashes[i]) {
        throw ProtocolError("tensor '" + tensors[i].name + "' arrived with the wrong hash");
      }
    }
    session->note_reported();  // before the report: a lost coordinator must not abort it after
    send_state_report(vote.call, plan.sync_id, proto::Outcome::kCommit, "");
    reported = true;
    // Having reported success, follow the coordinator's decision (as all_reduce does).
    session->wait_result(std::max(deadline.at(), Clock::now()) + kDecisionGrace);
  } catch (const Error& e) {
    if (!reported) {
      send_state_report(vote.call, session->sync_id(), proto::outcome_of(kind_of(e)), e.what());
    }
    end_session();
    throw;
  }
  // Committed: make the new bytes visible.
  for (size_t k = 0; k < plan.fetch.size(); ++k) {
    uint32_t i = plan.fetch[k];
    std::memcpy(tensors[i].data, incoming[k].get(), tensors[i].nbytes);
  }
  end_session();
  result.tensors_received = static_cast<uint32_t>(plan.fetch.size());
  result.bytes_sent = session->bytes_served();
  result.revision = plan.revision;
  result.content_hash = state::hash_combine(0, plan.revision);
  for (uint64_t h : plan.hashes) result.content_hash = state::hash_combine(result.content_hash, h);
  std::lock_guard<std::mutex> lock(mutex_);
  state_revision_ = result.revision;
  state_hash_ = result.content_hash;
  return result;
}

void Communicator::send_state_report(uint64_t call, uint64_t sync_id, proto::Outcome outcome,
                                     const std::string& message) {
  proto::StateOutcome report{call, sync_id, outcome, message};
  loop_.post([this, report] {
    if (coord_ && welcomed_) coord_->send(proto::frame_of(proto::StateMsg::kStateDone, report.encode()));
  });
}

void Communicator::on_state_plan(const proto::StatePlan& plan) {
  std::shared_ptr<StateSession> session;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    session = state_session_;
  }
  if (session && session->call() == plan.call) session->set_plan(plan);
}

void Communicator::on_state_result(const proto::StateOutcome& result) {
  std::shared_ptr<StateSession> session;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    session = state_session_;
    if (!session || session->call() != result.call) return;
    if (result.outcome == proto::Outcome::kCommit) {  // remembered for a coordinator that replaces this one
      state_committed_.emplace_back(term_, result.sync_id);
      if (state_committed_.size() > kCommitsKept) state_committed_.pop_front();
    }
  }
  session->set_result(result);
}

void Communicator::route_fetch_hello(const proto::FetchHello& hello,
                                     const std::shared_ptr<net::FramedConnection>& conn) {
  std::shared_ptr<StateSession> session;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    session = state_session_;
  }
  if (!session || !session->accepts(hello.sync_id)) {
    conn->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest),
                               "this peer is not serving shared state for sync " + std::to_string(hello.sync_id));
    return;
  }
  // The receiver waits for this ack before its first request, so nothing follows the
  // hello in our buffer and the socket can leave the loop.
  conn->send(proto::frame_of(proto::StateMsg::kFetchAck, {}));
  session->serve(conn->detach());
}

}  // namespace pcomm::peer
