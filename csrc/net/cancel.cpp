// Cancel; see cancel.h.
#include "net/cancel.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "core/errors.h"

namespace pcomm::net {

Cancel::Cancel() {
  fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd_ < 0) throw IoError(std::string("eventfd failed: ") + std::strerror(errno));
}

Cancel::~Cancel() { ::close(fd_); }

void Cancel::fire(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fired_) return;
    reason_ = reason;
    fired_ = true;
  }
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);  // never read: stays readable
}

std::string Cancel::reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reason_;
}

}  // namespace pcomm::net
