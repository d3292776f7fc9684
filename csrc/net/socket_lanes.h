// SocketLanes: the Transport over a pool of TCP sockets (a LinkSet's to_right and
// from_left), plus Cancel, an eventfd another thread can fire to stop every wait().
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/socket.h"
#include "net/transport.h"

namespace pcomm::net {

// Fired once (from any thread) to interrupt an operation's waits; stays fired.
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

class SocketLanes : public Transport {
 public:
  // Sockets are borrowed: the LinkSet that owns them must outlive this object.
  SocketLanes(const std::vector<Socket>& to_right, const std::vector<Socket>& from_left,
              std::shared_ptr<Cancel> cancel);
  size_t lanes() const override { return send_fds_.size(); }
  size_t send_some(size_t lane, const iovec* iov, int iovcnt) override;
  size_t recv_some(size_t lane, void* buf, size_t len) override;
  void wait(const std::vector<Interest>& interests, TimePoint deadline, TimePoint wake_by) override;
  void abort(const std::string& reason) override { cancel_->fire(reason); }

 private:
  std::vector<int> send_fds_, recv_fds_;
  std::shared_ptr<Cancel> cancel_;
};

}  // namespace pcomm::net
