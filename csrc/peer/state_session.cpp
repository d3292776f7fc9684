// StateSession; see state_session.h.
#include "peer/state_session.h"

#include "core/errors.h"

namespace pcomm::peer {

namespace {
constexpr Millis kInterruptCheck{100};
}

template <typename Pred>
void StateSession::wait_locked(std::unique_lock<std::mutex>& lock, TimePoint deadline, Pred pred) {
  while (!pred() && Clock::now() < deadline) {
    if (!interrupt_) {
      cv_.wait_until(lock, deadline, pred);
      return;
    }
    cv_.wait_until(lock, std::min(deadline, Clock::now() + kInterruptCheck), pred);
    if (pred()) return;
    lock.unlock();  // the check may take the GIL: never while holding our mutex
    bool interrupted = interrupt_();
    lock.lock();
    if (interrupted) throw Interrupted("sync_shared_state interrupted");
  }
}

void StateSession::set_plan(const proto::StatePlan& plan) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!plan_) plan_ = plan;
  cv_.notify_all();
}

void StateSession::note_waiting(const std::string& text) {
  std::lock_guard<std::mutex> lock(mutex_);
  waiting_ = text;
}

void StateSession::set_result(const proto::StateOutcome& result) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!result_) result_ = result;
  cv_.notify_all();
}

void StateSession::fail(ErrorKind kind, const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!failure_) failure_ = std::make_pair(kind, message);
  cv_.notify_all();
}

void StateSession::note_reported() {
  std::lock_guard<std::mutex> lock(mutex_);
  reported_ = true;
}

bool StateSession::awaiting_decision() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reported_ && !result_ && !failure_;
}

uint64_t StateSession::sync_id() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plan_ ? plan_->sync_id : 0;
}

bool StateSession::accepts(uint64_t sync_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  // Before our plan arrives we cannot check the id; the tensors are fixed for the whole
  // call, so serving them is safe either way.
  return sync_id != 0 && (!plan_ || plan_->sync_id == sync_id);
}

void StateSession::throw_if_failed() const {
  if (failure_) throw_error(failure_->first, failure_->second);
  if (result_ && result_->outcome != proto::Outcome::kCommit) {
    throw_error(proto::error_kind(result_->outcome), result_->message);
  }
}

proto::StatePlan StateSession::wait_plan(TimePoint deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  wait_locked(lock, deadline, [this] { return plan_ || result_ || failure_; });
  throw_if_failed();
  if (result_) throw ProtocolError("the coordinator decided a sync this peer had no plan for");
  if (!plan_) {
    throw TimeoutError("sync_shared_state timed out waiting for the other peers' votes" +
                       (waiting_.empty() ? std::string() : "; " + waiting_));
  }
  return *plan_;
}

void StateSession::wait_result(TimePoint deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  wait_locked(lock, deadline, [this] { return result_ || failure_; });
  throw_if_failed();
  if (!result_) throw CoordinatorLostError("no commit or abort of the shared-state sync from the coordinator in time");
}

}  // namespace pcomm::peer
