// Cancel: fired once, from any thread, to interrupt every wait of one operation (a
// collective, a link setup). It is an eventfd that stays readable once fired, so a
// poll() that includes it wakes at once; fired() and reason() tell why.
#pragma once

#include <atomic>
#include <mutex>
#include <string>

namespace pcomm::net {

class Cancel {
 public:
  Cancel();
  ~Cancel();
  Cancel(const Cancel&) = delete;
  Cancel& operator=(const Cancel&) = delete;
  void fire(const std::string& reason);
  bool fired() const { return fired_.load(); }
  std::string reason() const;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::atomic<bool> fired_{false};
  mutable std::mutex mutex_;
  std::string reason_;
};

}  // namespace pcomm::net
