// StateSession: one sync_shared_state call on one peer, shared by the caller (waits for
// the plan and the result), the loop thread (delivers them, and hands over incoming fetch
// connections) and the StateServer threads that serve this peer's tensors meanwhile.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "peer/collective_op.h"
#include "peer/state_transfer.h"
#include "proto/state_messages.h"

namespace pcomm::peer {

class StateSession {
 public:
  // interrupt: checked every 100 ms by the caller's waits (Ctrl-C); may be empty.
  StateSession(uint64_t call, const std::vector<StateTensor>& tensors, TimePoint deadline,
               std::function<bool()> interrupt)
      : call_(call), server_(tensors, deadline), interrupt_(std::move(interrupt)) {}

  uint64_t call() const { return call_; }

  // Loop thread.
  void set_plan(const proto::StatePlan& plan);
  void set_result(const proto::StateOutcome& result);
  void fail(ErrorKind kind, const std::string& message);
  // Who the coordinator says has not voted yet (appended to a timeout's message).
  void note_waiting(const std::string& text);
  // Whether a fetch connection for sync_id (0 is not a valid id) is ours to serve.
  bool accepts(uint64_t sync_id) const;
  void serve(std::shared_ptr<net::Link> link) { server_.serve(std::move(link)); }

  // Caller thread. Each throws the failure or the coordinator's refusal.
  proto::StatePlan wait_plan(TimePoint deadline);
  // Returns normally on commit.
  void wait_result(TimePoint deadline);
  // This peer reported success: from now on only the coordinator's decision ends the
  // call, and a coordinator that replaces a lost one makes it (communicator_failover.cpp).
  void note_reported();
  bool awaiting_decision() const;
  void stop_serving() { server_.stop(); }
  uint64_t bytes_served() const { return server_.bytes_sent(); }
  uint64_t sync_id() const;

 private:
  void throw_if_failed() const;
  std::string waiting_;  // under mutex_
  // cv wait until pred or the deadline, running the interrupt check between slices.
  template <typename Pred>
  void wait_locked(std::unique_lock<std::mutex>& lock, TimePoint deadline, Pred pred);

  uint64_t call_;
  StateServer server_;
  std::function<bool()> interrupt_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<proto::StatePlan> plan_;
  std::optional<proto::StateOutcome> result_;
  std::optional<std::pair<ErrorKind, std::string>> failure_;
  bool reported_ = false;
};

}  // namespace pcomm::peer
