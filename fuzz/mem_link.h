// MemLink: a net::Link over bytes in memory, so the frame readers (FramedConnection on an
// event loop, net::read_frame) can be fed a fuzzed stream without sockets. Reads are cut
// into pieces of fuzzer-chosen sizes, which is how reassembly gets exercised; what the
// reader sends back (Error frames) is kept for the caller to check.
#pragma once

#include <sys/eventfd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/errors.h"
#include "net/link.h"

namespace pcomm::fuzz {

class MemLink : public net::Link {
 public:
  // chunk_seed 0: every read gets as much as it asks for; else sizes 1 to 23.
  MemLink(const uint8_t* data, size_t size, uint8_t chunk_seed)
      : Link(net::LinkKind::kDirect, "memory"), data_(data), size_(size), rng_(chunk_seed) {}

  // An fd the event loop can register: an eventfd that is never written, so readiness
  // comes only from the caller pumping the connection.
  int fd() const override {
    static const int idle = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return idle;
  }
  void shutdown() override { shut_ = true; }

  // From now on, a read past the last byte is the remote closing (IoError), not "would
  // block".
  void end_stream() { eof_ = true; }
  bool drained() const { return pos_ == size_; }
  bool was_shut() const { return shut_; }
  const std::vector<uint8_t>& sent() const { return sent_; }

 protected:
  size_t send_raw(const iovec* iov, int iovcnt) override {
    if (shut_) throw IoError("send on a shut link");
    size_t n = 0;
    for (int i = 0; i < iovcnt; ++i) {
      auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
      sent_.insert(sent_.end(), p, p + iov[i].iov_len);
      n += iov[i].iov_len;
    }
    return n;
  }

  size_t recv_raw(void* buf, size_t len) override {
    if (shut_) throw IoError("receive on a shut link");
    if (pos_ == size_) {
      if (eof_) throw IoError("connection closed by the remote side");
      return 0;
    }
    size_t n = std::min({len, size_ - pos_, next_chunk()});
    std::memcpy(buf, data_ + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  size_t next_chunk() {
    if (rng_ == 0) return SIZE_MAX;
    rng_ ^= static_cast<uint8_t>(rng_ << 3);  // a tiny xorshift: deterministic per seed
    rng_ ^= static_cast<uint8_t>(rng_ >> 5);
    rng_ ^= static_cast<uint8_t>(rng_ << 1);
    if (rng_ == 0) rng_ = 1;
    return 1 + rng_ % 23;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  uint8_t rng_;
  bool eof_ = false;
  bool shut_ = false;
  std::vector<uint8_t> sent_;
};

}  // namespace pcomm::fuzz
