// TcpLink: a Link over one TCP connection, whether it was dialed, accepted or opened by
// a hole punch (the same once open: only the kind recorded differs). RelayedLink is a
// TcpLink to a relay that has paired it with the other peer's connection; after the
// relay's handshake its bytes are the other peer's, so nothing else differs.
#pragma once

#include <string>

#include "net/link.h"
#include "net/socket.h"

namespace pcomm::net {

// Dead-peer detection on every TCP link: keepalive after this many idle seconds, probes
// this many seconds apart, this many unanswered probes; and unacknowledged data older
// than kUserTimeoutMs fails the connection (TCP_USER_TIMEOUT).
inline constexpr int kKeepaliveIdle = 30;
inline constexpr int kKeepaliveInterval = 5;
inline constexpr int kKeepaliveCount = 4;
inline constexpr unsigned kUserTimeoutMs = 20000;

class TcpLink : public Link {
 public:
  TcpLink(Socket socket, LinkKind kind);
  int fd() const override { return socket_.fd(); }
  void shutdown() override;
  double rtt_seconds() const override;

 protected:
  TcpLink(Socket socket, LinkKind kind, std::string remote);
  size_t send_raw(const iovec* iov, int iovcnt) override;
  size_t recv_raw(void* buf, size_t len) override;

 private:
  Socket socket_;
};

class RelayedLink : public TcpLink {
 public:
  RelayedLink(Socket socket, std::string relay_address)
      : TcpLink(std::move(socket), LinkKind::kRelayed, "relay " + relay_address), relay_(std::move(relay_address)) {}
  const std::string& relay_address() const { return relay_; }

 private:
  std::string relay_;
};

}  // namespace pcomm::net
