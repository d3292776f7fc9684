// Link: one ordered, reliable byte stream to one remote peer. Every byte path of a peer
// (ring lanes, state-transfer fetches, link handshakes) goes through a Link, never a raw
// fd, so a new kind of path (relayed, and TLS on top of any of them) is a new subclass
// and nothing else changes (as Gloo's algorithms see only transport/pair.h).
//
// Kinds: TCP (dialed, accepted or hole-punched: the same once open; tcp_link.h) and
// relayed (a TCP stream to a relay that splices it to the other peer).
//
// Readiness is the Link's, not the fd's: recv_ready() is true when bytes can be read
// without waiting (bytes put back with unread(), or a TLS link's decrypted bytes), and
// poll_events() says what to poll the fd for so that a direction can progress (a TLS
// link may need POLLIN to make progress on a send). wait_links() combines both.
//
// Threads: one thread sends and one thread receives at a time (they may differ);
// shutdown() and mark_broken() may be called from any thread.
#pragma once

#include <poll.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"

namespace pcomm::net {

class Cancel;

enum class LinkKind : uint8_t { kDirect = 0, kPunched = 1, kRelayed = 2 };
const char* link_kind_name(LinkKind kind);

class Link {
 public:
  virtual ~Link() = default;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Non-blocking: move what can be moved now and return the byte count (0: would
  // block). Throw IoError when the stream is broken or closed by the other end; the
  // link is then marked broken.
  size_t send_some(const iovec* iov, int iovcnt);
  size_t recv_some(void* buf, size_t len);

  // The fd to poll, and for which events, so that the wanted directions can progress.
  virtual int fd() const = 0;
  virtual short poll_events(bool send, bool recv) const;
  // Bytes can be received without waiting on the fd.
  bool recv_ready() const { return pushback_pos_ < pushback_.size() || holds_input(); }
  // Puts bytes back in front of the stream (a reader that read past what it needed).
  void unread(const uint8_t* data, size_t size);

  // Blocking-style full transfers, bounded by the deadline and interrupted by cancel
  // (may be null): IoError, TimeoutError or Aborted.
  void send_all(const void* data, size_t size, TimePoint deadline, const Cancel* cancel = nullptr);
  void recv_all(void* data, size_t size, TimePoint deadline, const Cancel* cancel = nullptr);

  // Ends the stream both ways; threads waiting on it wake and fail. Any thread.
  virtual void shutdown() = 0;
  bool broken() const { return broken_.load(); }
  void mark_broken() { broken_ = true; }

  LinkKind kind() const { return kind_; }
  // Where the bytes go, for logs and comm.links(): "198.18.0.2:40000", or for a relayed
  // link "relay 198.18.0.9:7000".
  const std::string& remote() const { return remote_; }
  // The kernel's smoothed round-trip estimate of the underlying TCP connection (for a
  // relayed link: to the relay), in seconds; 0 when unknown.
  virtual double rtt_seconds() const { return 0; }

 protected:
  Link(LinkKind kind, std::string remote) : kind_(kind), remote_(std::move(remote)) {}
  virtual size_t send_raw(const iovec* iov, int iovcnt) = 0;
  virtual size_t recv_raw(void* buf, size_t len) = 0;
  // A subclass that buffers input in user space (TLS) says so here.
  virtual bool holds_input() const { return false; }

 private:
  LinkKind kind_;
  std::string remote_;
  std::atomic<bool> broken_{false};
  std::vector<uint8_t> pushback_;  // receive side only
  size_t pushback_pos_ = 0;
};

struct LinkInterest {
  Link* link;
  bool send;
  bool recv;
};
// Sleeps until one of the interests can progress, or until wake_by (whichever is
// first). Throws TimeoutError("<what> timed out") at the deadline and Aborted when
// cancel (may be null) fired.
void wait_links(const std::vector<LinkInterest>& interests, TimePoint deadline, TimePoint wake_by,
                const Cancel* cancel, const char* what);

}  // namespace pcomm::net
