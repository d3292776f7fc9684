// CollectiveOp; see collective_op.h for the phases and rules.
#include "peer/collective_op.h"

#include "core/errors.h"

namespace pcomm::peer {

namespace {
// How long a caller that gives up waits for the worker to let go of its memory. The
// worker checks its cancel flag at least once per chunk, so this is never reached in
// practice; it only guards against a bug turning into a hang.
constexpr std::chrono::seconds kReleaseWait{10};
}  // namespace

CollectiveOp::CollectiveOp(AllReduceRequest request, GiveUp give_up, Completed completed)
    : request_(request),
      give_up_(std::move(give_up)),
      completed_(std::move(completed)),
      started_(Clock::now()),
      deadline_(started_ + request.timeout) {}

bool CollectiveOp::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return phase_ == Phase::kDone;
}

bool CollectiveOp::wait_done(Duration slice) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return const_cast<std::condition_variable&>(cv_).wait_for(lock, slice, [this] { return phase_ == Phase::kDone; });
}

uint64_t CollectiveOp::op_id() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return op_id_;
}
int CollectiveOp::world() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return world_;
}
int CollectiveOp::rank() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rank_;
}

void CollectiveOp::complete_locked(std::unique_lock<std::mutex>& lock, std::optional<ErrorKind> error,
                                   const std::string& message) {
  (void)lock;  // held throughout: the caller must not see kDone before the tag is free
  if (phase_ == Phase::kDone) return;
  phase_ = Phase::kDone;
  error_ = error;
  message_ = message;
  info_.world_size = world_;
  info_.seconds = duration_to_seconds(Clock::now() - started_);
  // Free the tag before the caller can wake (lock order: op mutex, then the
  // communicator's), so a caller that returns from wait() may reuse the tag at once.
  if (completed_) completed_(this, error_, message_, info_);
  cv_.notify_all();
}

ReduceInfo CollectiveOp::wait(Duration timeout) {
  TimePoint until = std::min(Clock::now() + timeout, deadline_);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (phase_ == Phase::kDone) {
      if (error_) throw_error(*error_, message_);
      return info_;
    }
    // After reporting success, follow the coordinator (see the header).
    if (phase_ != Phase::kReported && Clock::now() >= until) break;
    cv_.wait_until(lock, phase_ == Phase::kReported ? Clock::now() + Millis(100) : until);
  }
  // Give up: stop the worker, wait until it no longer touches our memory, tell the world.
  std::string why = "all_reduce with tag " + std::to_string(request_.tag) + " timed out after " +
                    format_seconds(Clock::now() - started_);
  if (phase_ == Phase::kAnnounced && !waiting_.empty()) why += "; " + waiting_;
  cancel_->fire(why);
  cv_.wait_for(lock, kReleaseWait, [this] { return !touching_user_memory_; });
  bool started = phase_ == Phase::kQueued || phase_ == Phase::kRunning;
  // The worker reports for ops it owns (queued or running); otherwise we withdraw here,
  // before completing, so a retry's announcement cannot overtake the withdrawal.
  if (!started && give_up_) give_up_(request_, op_id_, why);
  complete_locked(lock, ErrorKind::kTimeout, why);
  throw_error(*error_, message_);
}

void CollectiveOp::note_waiting(const std::string& text) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (phase_ == Phase::kAnnounced) waiting_ = text;
}

void CollectiveOp::set_go(uint64_t op_id, int world, int rank) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (phase_ != Phase::kAnnounced) return;
  op_id_ = op_id;
  world_ = world;
  rank_ = rank;
  phase_ = Phase::kQueued;
}

bool CollectiveOp::awaiting_decision() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return phase_ == Phase::kReported && !decided_;
}

void CollectiveOp::decide(std::optional<ErrorKind> error, const std::string& message) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (phase_ == Phase::kDone || decided_) return;
  decided_ = true;
  decision_error_ = error;
  decision_message_ = message;
  if (error) cancel_->fire(message);
  if (phase_ == Phase::kRunning || phase_ == Phase::kReported) {
    cv_.notify_all();  // the worker owns the op and finishes it
    return;
  }
  if (error) {
    complete_locked(lock, error, message);
  } else if (phase_ == Phase::kAnnounced) {
    // A commit before Go cannot happen; treat it as a protocol failure, never as success.
    complete_locked(lock, ErrorKind::kProtocol, "commit for an operation that never started");
  }
}

bool CollectiveOp::begin_run() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (phase_ != Phase::kQueued) return false;
  if (decided_ && decision_error_) {
    complete_locked(lock, decision_error_, decision_message_);
    return false;
  }
  phase_ = Phase::kRunning;
  touching_user_memory_ = true;
  return true;
}

bool CollectiveOp::end_run(std::optional<ErrorKind> error, const std::string& message, uint64_t sent,
                           uint64_t received, const Report& report) {
  std::unique_lock<std::mutex> lock(mutex_);
  touching_user_memory_ = false;
  info_.bytes_sent = sent;
  info_.bytes_received = received;
  cv_.notify_all();
  if (phase_ == Phase::kDone) {  // the caller gave up meanwhile
    report(proto::Outcome::kTimeout, "the caller gave up");
    return false;
  }
  if (!error && !(decided_ && decision_error_)) {
    phase_ = Phase::kReported;
    report(proto::Outcome::kCommit, "");
    return true;
  }
  auto outcome = error ? proto::outcome_of(*error) : proto::Outcome::kAborted;
  report(outcome, error ? message : decision_message_);
  // Prefer the coordinator's account (it names the lost peer) when it already came.
  if (decided_ && decision_error_) {
    complete_locked(lock, decision_error_, decision_message_);
  } else {
    complete_locked(lock, error, message);
  }
  return false;
}

void CollectiveOp::await_decision(TimePoint deadline, const std::function<void()>& copy_out) {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait_until(lock, deadline, [this] { return decided_ || phase_ == Phase::kDone; });
  if (phase_ == Phase::kDone) return;
  if (!decided_) {
    complete_locked(lock, ErrorKind::kCoordinatorLost, "no commit or abort from the coordinator in time");
    return;
  }
  if (decision_error_) {
    complete_locked(lock, decision_error_, decision_message_);
    return;
  }
  touching_user_memory_ = true;
  lock.unlock();
  copy_out();
  lock.lock();
  touching_user_memory_ = false;
  complete_locked(lock, std::nullopt, "");
}

}  // namespace pcomm::peer
