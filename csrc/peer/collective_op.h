// CollectiveOp: one all-reduce call on one peer, shared by the caller (wait/done), the
// peer's loop thread (Go and the coordinator's decision) and the data-plane worker.
//
// Phases:  announced -> queued (Go arrived) -> running (ring) -> reported (told the
// coordinator it succeeded) -> done.  Failures can end it from any phase.
//
// Rules that keep the invariants:
//  - The caller's buffers are written only after the coordinator committed, and only by
//    the worker while it holds `touching_user_memory`; an op that failed or was given up
//    never writes them (input preserved on failure).
//  - Once this peer reported success it follows the coordinator's decision, even past the
//    caller's timeout: giving up then could disagree with peers that committed. Waiting
//    is still bounded: a silent coordinator fails every op (CoordinatorLostError).
//  - Before a caller that gives up returns, the worker has stopped touching its memory.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/clock.h"
#include "core/dtype.h"
#include "net/cancel.h"
#include "proto/messages.h"

namespace pcomm::peer {

struct AllReduceRequest {
  uint32_t tag = 0;
  uint64_t call = 0;  // set by the communicator: names this call on the wire
  DType dtype = DType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  Quantization quantization = Quantization::kNone;
  void* data = nullptr;  // input; also the output unless `out` is set
  void* out = nullptr;
  size_t count = 0;
  Duration timeout{};
};

struct ReduceInfo {
  int world_size = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  double seconds = 0;
};


class CollectiveOp {
 public:
  enum class Phase { kAnnounced, kQueued, kRunning, kReported, kDone };
  // Told when the caller gives up (op_id 0 if not started yet), so the coordinator hears.
  using GiveUp = std::function<void(const AllReduceRequest& request, uint64_t op_id, const std::string& why)>;
  // Tells the coordinator how this peer's part went (see end_run).
  using Report = std::function<void(proto::Outcome outcome, const std::string& message)>;
  // Told once, as the op ends (op mutex held: it must not call back into the op): the
  // tag is free again; error is empty on success.
  using Completed = std::function<void(const CollectiveOp* op, const std::optional<ErrorKind>& error,
                                       const std::string& message, const ReduceInfo& info)>;

  CollectiveOp(AllReduceRequest request, GiveUp give_up, Completed completed);

  // Caller side.
  bool done() const;
  // Waits up to `slice` for the op to end; never gives it up (so Python can check for
  // Ctrl-C between slices). True once it ended.
  bool wait_done(Duration slice) const;
  ReduceInfo wait(Duration timeout);

  // Loop thread.
  void set_go(uint64_t op_id, int world, int rank);
  // Who the coordinator says has not announced this op yet (appended to a timeout).
  void note_waiting(const std::string& text);
  // The coordinator's decision, or a local failure of the whole communicator.
  void decide(std::optional<ErrorKind> error, const std::string& message);

  // Worker.
  bool begin_run();  // false: the op ended before it could start
  // After the ring: reports to the coordinator (before anyone can see the op end, so a
  // retry's announcement never overtakes this report) and returns true if the op
  // succeeded and now waits for the decision.
  bool end_run(std::optional<ErrorKind> error, const std::string& message, uint64_t sent, uint64_t received,
               const Report& report);
  // Waits for the decision; on commit runs copy_out (with the user-memory flag held).
  void await_decision(TimePoint deadline, const std::function<void()>& copy_out);

  // Reported success and waits for the coordinator's decision: a coordinator that was
  // lost meanwhile leaves it waiting for the next one (peer/communicator_failover.cpp).
  bool awaiting_decision() const;
  const AllReduceRequest& request() const { return request_; }
  uint64_t op_id() const;
  int world() const;
  int rank() const;
  TimePoint deadline() const { return deadline_; }
  const std::shared_ptr<net::Cancel>& cancel() const { return cancel_; }

 private:
  void complete_locked(std::unique_lock<std::mutex>& lock, std::optional<ErrorKind> error, const std::string& message);

  AllReduceRequest request_;
  GiveUp give_up_;
  Completed completed_;
  TimePoint started_;
  TimePoint deadline_;
  std::shared_ptr<net::Cancel> cancel_ = std::make_shared<net::Cancel>();

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  Phase phase_ = Phase::kAnnounced;
  uint64_t op_id_ = 0;
  int world_ = 0;
  int rank_ = 0;
  bool touching_user_memory_ = false;
  bool decided_ = false;  // a decision (or local failure) arrived
  std::optional<ErrorKind> decision_error_;
  std::string decision_message_;
  std::optional<ErrorKind> error_;  // final outcome once done
  std::string message_;
  std::string waiting_;  // the coordinator's last Waiting notice, while announced
  ReduceInfo info_;
};

}  // namespace pcomm::peer
