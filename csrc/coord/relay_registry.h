// RelayRegistry: the coordinator's side of the relays it knows (--relay HOST:PORT, and
// those announced in the DHT, added through add()). It keeps one control connection per
// relay, opened on first use, and registers the one-time tokens of a relayed path there
// before the peers are told (proto/relay_messages.h). A relay whose connection fails is
// marked down; the next registration goes to another, so when a relay dies the next
// relink of its pairs moves them to a live one.
//
// Loop-thread only (the coordinator's EventLoop).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "net/event_loop.h"
#include "net/frame_conn.h"
#include "net/socket.h"

namespace pcomm::coord {

// How long a relay may take to connect and confirm a registration.
inline constexpr Millis kRelayRegisterTimeout{2000};
// How long registered tokens stay valid: the peers must join within this.
inline constexpr Millis kRelayTokenTtl{20000};

class RelayRegistry {
 public:
  // ok: the relay's address, or empty with a reason.
  using Done = std::function<void(const std::string& relay, const std::string& error)>;

  // secret: the run's (empty: none); with it registrations go over TLS keyed by it, and
  // only relays holding the same secret accept them.
  RelayRegistry(net::EventLoop& loop, const Logger& log, std::string secret)
      : secret_(std::move(secret)), loop_(loop), log_(log) {}
  void add(const std::string& address);  // known already: no-op
  // Registers the tokens for the pair at the first relay that confirms (live relays
  // first, in order), then calls done.
  void register_tokens(const std::vector<std::string>& tokens, const std::string& peer_a, const std::string& peer_b,
                       Done done);
  void close();

 private:
  std::string secret_;
  struct Pending {
    std::vector<std::string> tokens;
    std::string peer_a, peer_b;
    Done done;
    std::vector<std::string> tried;
    net::EventLoop::TimerId timer = 0;
  };
  struct Relay {
    std::string address;
    bool down = false;  // its last connection failed; tried last
    net::Socket connecting;
    std::shared_ptr<net::FramedConnection> conn;
    std::map<std::string, std::shared_ptr<Pending>> waiting;  // by first token
    std::vector<std::shared_ptr<Pending>> queued;  // until connected
  };
  void attempt(const std::shared_ptr<Pending>& p);
  void send_registration(Relay& relay, const std::shared_ptr<Pending>& p);
  void connect(Relay& relay);
  void fail_relay(const std::string& address, const std::string& reason);
  void retry_elsewhere(const std::shared_ptr<Pending>& p, const std::string& reason);

  net::EventLoop& loop_;
  const Logger& log_;
  std::vector<std::string> order_;
  std::map<std::string, Relay> relays_;
};

}  // namespace pcomm::coord
