// RelayRegistry; see relay_registry.h.
#include "coord/relay_registry.h"

#include "net/tcp_link.h"
#include "net/tls_link.h"

#include <sys/epoll.h>

#include <algorithm>

#include "core/errors.h"
#include "net/address.h"
#include "proto/relay_messages.h"

namespace pcomm::coord {

void RelayRegistry::add(const std::string& address) {
  if (relays_.count(address)) return;
  net::parse_host_port(address, false);  // refuse nonsense at once
  relays_[address].address = address;
  order_.push_back(address);
  log_.info("relay ", address, " known");
}

void RelayRegistry::register_tokens(const std::vector<std::string>& tokens, const std::string& peer_a,
                                    const std::string& peer_b, Done done) {
  auto p = std::make_shared<Pending>();
  p->tokens = tokens;
  p->peer_a = peer_a;
  p->peer_b = peer_b;
  p->done = std::move(done);
  attempt(p);
}

void RelayRegistry::attempt(const std::shared_ptr<Pending>& p) {
  // Live relays first, in the order they became known; those marked down after them.
  std::string pick;
  for (int pass = 0; pass < 2 && pick.empty(); ++pass) {
    for (const auto& a : order_) {
      bool tried = std::find(p->tried.begin(), p->tried.end(), a) != p->tried.end();
      if (!tried && relays_.at(a).down == (pass == 1)) {
        pick = a;
        break;
      }
    }
  }
  if (pick.empty()) {
    auto done = std::move(p->done);
    p->done = nullptr;
    if (done) {
      done("", order_.empty() ? "no relay is known to the coordinator (start one with `pcomm relay` and pass "
                                "its address to the coordinator with --relay)"
                              : "no relay accepted the registration");
    }
    return;
  }
  p->tried.push_back(pick);
  Relay& relay = relays_.at(pick);
  std::weak_ptr<Pending> weak = p;
  p->timer = loop_.run_after(kRelayRegisterTimeout, [this, weak, pick] {
    auto self = weak.lock();
    if (!self || !self->done) return;
    fail_relay(pick, "no answer within " + std::to_string(kRelayRegisterTimeout.count()) + " ms");
  });
  if (relay.conn && !relay.conn->closed()) {
    send_registration(relay, p);
  } else {
    relay.queued.push_back(p);
    if (!relay.connecting.valid()) connect(relay);
  }
}

void RelayRegistry::send_registration(Relay& relay, const std::shared_ptr<Pending>& p) {
  relay.waiting[p->tokens.front()] = p;
  proto::RelayRegister reg{p->tokens, p->peer_a, p->peer_b, static_cast<uint32_t>(kRelayTokenTtl.count())};
  relay.conn->send(proto::frame_of_fields(reg));
}

void RelayRegistry::connect(Relay& relay) {
  std::string address = relay.address;
  try {
    relay.connecting = net::Socket::connect_start(net::resolve(net::parse_host_port(address, false)));
  } catch (const Error& e) {
    fail_relay(address, e.what());
    return;
  }
  loop_.add_fd(relay.connecting.fd(), EPOLLOUT, [this, address](uint32_t) {
    Relay& r = relays_.at(address);
    net::Socket s = std::move(r.connecting);
    loop_.remove_fd(s.fd());
    std::string err = s.finish_connect();
    if (!err.empty()) {
      fail_relay(address, err);
      return;
    }
    std::shared_ptr<net::Link> link = std::make_shared<net::TcpLink>(std::move(s), net::LinkKind::kDirect);
    if (!secret_.empty()) {
      link = net::TlsLink::client(link, net::relay_identity(), net::derive_key(secret_, net::kRelayPsk));
    }
    r.conn = net::FramedConnection::create(loop_, link);
    auto conn = r.conn;
    conn->start(
        [this, address](uint16_t type, const uint8_t* payload, size_t size) {
          if (type != static_cast<uint16_t>(proto::MsgType::kRelayRegistered)) {
            throw ProtocolError("unexpected message type " + std::to_string(type) + " from the relay");
          }
          auto m = proto::decode_fields<proto::RelayRegistered>(payload, size);
          Relay& rr = relays_.at(address);
          if (m.tokens.empty()) return;
          auto it = rr.waiting.find(m.tokens.front());
          if (it == rr.waiting.end()) return;
          auto p = it->second;
          rr.waiting.erase(it);
          rr.down = false;
          loop_.cancel_timer(p->timer);
          auto done = std::move(p->done);
          p->done = nullptr;
          if (done) done(address, "");
        },
        [this, address, conn](const std::string& reason) {
          if (relays_.at(address).conn == conn) fail_relay(address, reason);
        });
    auto queued = std::move(r.queued);
    r.queued.clear();
    for (auto& p : queued) {
      if (p->done) send_registration(r, p);
    }
  });
}

void RelayRegistry::fail_relay(const std::string& address, const std::string& reason) {
  Relay& relay = relays_.at(address);
  if (!relay.down) log_.warn("relay ", address, " is down: ", reason);
  relay.down = true;
  if (relay.connecting.valid()) {
    loop_.remove_fd(relay.connecting.fd());
    relay.connecting.close();
  }
  auto conn = std::move(relay.conn);
  relay.conn.reset();
  std::vector<std::shared_ptr<Pending>> orphans = std::move(relay.queued);
  relay.queued.clear();
  for (auto& [token, p] : relay.waiting) orphans.push_back(p);
  relay.waiting.clear();
  if (conn) conn->close("relay marked down");
  for (auto& p : orphans) retry_elsewhere(p, reason);
}

void RelayRegistry::retry_elsewhere(const std::shared_ptr<Pending>& p, const std::string& reason) {
  if (!p->done) return;
  loop_.cancel_timer(p->timer);
  log_.debug("relay registration moves on: ", reason);
  attempt(p);
}

void RelayRegistry::close() {
  for (auto& [address, relay] : relays_) {
    if (relay.connecting.valid()) {
      loop_.remove_fd(relay.connecting.fd());
      relay.connecting.close();
    }
    if (relay.conn) relay.conn->close("coordinator stopping");
    relay.conn.reset();
    relay.queued.clear();
    relay.waiting.clear();
  }
}

}  // namespace pcomm::coord
