// EventLoop: one thread, one epoll set. Components (coordinator server, a peer's
// coordinator link, link builders) register file descriptors and timers here, and other
// threads hand it work with post(). All callbacks run on the loop thread, so state they
// touch needs no locks unless user-facing threads read it too.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/clock.h"

namespace pcomm::net {

class EventLoop {
 public:
  using FdHandler = std::function<void(uint32_t events)>;
  using Task = std::function<void()>;
  using TimerId = uint64_t;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Starts the loop thread. name shows in logs of uncaught errors.
  void start();
  // Stops the loop and joins its thread; idempotent. Must not be called from the loop.
  void stop();

  // Loop-thread only: watch fd for EPOLLIN/EPOLLOUT (level-triggered).
  void add_fd(int fd, uint32_t events, FdHandler handler);
  void modify_fd(int fd, uint32_t events);
  void remove_fd(int fd);

  // Loop-thread only: run task once after delay; cancel_timer is a no-op if it ran.
  TimerId run_after(Duration delay, Task task);
  void cancel_timer(TimerId id);

  // Any thread: run task on the loop thread soon.
  void post(Task task);

 private:
  void run();
  void run_due_timers();
  static void guarded(const std::function<void()>& work);
  int next_timeout_ms() const;

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  std::mutex post_mutex_;
  std::vector<Task> posted_;
  bool stop_requested_ = false;  // guarded by post_mutex_
  std::unordered_map<int, std::shared_ptr<FdHandler>> handlers_;
  std::multimap<TimePoint, std::pair<TimerId, Task>> timers_;
  std::unordered_map<TimerId, TimePoint> timer_index_;
  TimerId next_timer_id_ = 1;
};

}  // namespace pcomm::net
