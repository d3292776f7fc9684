// Transport: what the data plane (collectives/) sees of a link pool. Lanes are ordered,
// reliable byte streams: lane i sends to the right ring neighbour and receives from the
// left one. The two neighbours' pools may differ in size (a punched path has one
// connection, a direct one several): lanes() is the larger, and a lane past the smaller
// pool carries one direction only (sends_on() false, or recv_some() always 0). Everything is non-blocking, with one wait() that sleeps until some lane can
// progress. No socket type appears here, so algorithms never touch socket code (as
// Gloo's algorithms only see transport/pair.h).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <string>
#include <vector>

#include "core/clock.h"

namespace pcomm::net {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual size_t lanes() const = 0;
  virtual bool sends_on(size_t lane) const { (void)lane; return true; }
  // Moves what it can without blocking and returns the byte count (0: would block).
  // Throws IoError when the stream is broken or closed by the other end.
  virtual size_t send_some(size_t lane, const iovec* iov, int iovcnt) = 0;
  virtual size_t recv_some(size_t lane, void* buf, size_t len) = 0;

  struct Interest {
    size_t lane;
    bool send;
    bool recv;
  };
  // Sleeps until one of the interests can progress, or until wake_by (whichever is
  // first). Throws TimeoutError at the deadline and Aborted when the operation was
  // cancelled from another thread.
  virtual void wait(const std::vector<Interest>& interests, TimePoint deadline, TimePoint wake_by) = 0;
  // Makes every current and later wait() throw Aborted(reason); callable from any thread.
  virtual void abort(const std::string& reason) = 0;
};

}  // namespace pcomm::net
