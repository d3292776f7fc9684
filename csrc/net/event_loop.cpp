// EventLoop implementation; see event_loop.h.
#include "net/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "core/errors.h"
#include "core/log.h"
#include "net/socket.h"

namespace pcomm::net {

namespace {
constexpr int kMaxEventsPerWait = 64;
}

EventLoop::EventLoop() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw IoError("epoll_create1 failed: " + errno_text(errno));
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw IoError("eventfd failed: " + errno_text(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
}

EventLoop::~EventLoop() {
  stop();
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

void EventLoop::start() {
  thread_ = std::thread([this] { run(); });
}

void EventLoop::stop() {
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    stop_requested_ = true;
  }
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void EventLoop::add_fd(int fd, uint32_t events, FdHandler handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    throw IoError("epoll_ctl(ADD) failed: " + errno_text(errno));
  }
  handlers_[fd] = std::make_shared<FdHandler>(std::move(handler));
}

void EventLoop::modify_fd(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void EventLoop::remove_fd(int fd) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(fd);
}

EventLoop::TimerId EventLoop::run_after(Duration delay, Task task) {
  TimerId id = next_timer_id_++;
  TimePoint when = Clock::now() + delay;
  timers_.emplace(when, std::make_pair(id, std::move(task)));
  timer_index_[id] = when;
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  auto it = timer_index_.find(id);
  if (it == timer_index_.end()) return;
  auto range = timers_.equal_range(it->second);
  for (auto t = range.first; t != range.second; ++t) {
    if (t->second.first == id) {
      timers_.erase(t);
      break;
    }
  }
  timer_index_.erase(it);
}

void EventLoop::post(Task task) {
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    posted_.push_back(std::move(task));
  }
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

int EventLoop::next_timeout_ms() const {
  if (timers_.empty()) return 1000;
  auto left = timers_.begin()->first - Clock::now();
  if (left.count() <= 0) return 0;
  // Round up so a timer never fires early and the loop never spins.
  return static_cast<int>(std::chrono::ceil<Millis>(left).count());
}

void EventLoop::run_due_timers() {
  auto now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_index_.erase(node.mapped().first);
    guarded(node.mapped().second);
  }
}

void EventLoop::guarded(const std::function<void()>& work) {
  // A handler's failure must not take the loop (and every other connection) down;
  // components handle their own errors, this is the last line.
  try {
    work();
  } catch (const std::exception& e) {
    log_line(LogLevel::kError, "loop", std::string("a handler failed: ") + e.what());
  }
}

void EventLoop::run() {
  epoll_event events[kMaxEventsPerWait];
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events, kMaxEventsPerWait, next_timeout_ms());
    if (n < 0 && errno != EINTR) {
      log_line(LogLevel::kError, "loop", "epoll_wait failed: " + errno_text(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t count;
        [[maybe_unused]] auto r = ::read(wake_fd_, &count, sizeof count);
        continue;
      }
      // A handler may remove itself or others; hold a reference while it runs.
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;
      auto handler = it->second;
      uint32_t ev = events[i].events;
      guarded([&] { (*handler)(ev); });
    }
    std::vector<Task> tasks;
    bool stop;
    {
      std::lock_guard<std::mutex> lock(post_mutex_);
      tasks.swap(posted_);
      stop = stop_requested_;
    }
    for (auto& task : tasks) guarded(task);
    if (stop) return;
    run_due_timers();
  }
}

}  // namespace pcomm::net
