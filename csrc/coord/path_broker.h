// PathBroker: the coordinator's part in connecting two peers that cannot simply dial
// each other (see peer/remote_peer.h for when they ask, proto/path_messages.h for the
// messages). It holds no sockets: it sends frames through the server and registers relay
// tokens through the RelayRegistry.
//
// Hole punch, DCUtR's scheme with the coordinator as the rendezvous: on a request it
// sends PunchPrepare to both sides at once and times each PunchReady: that is each side's
// RTT, and the side's answer names the port it will dial from. Then both get PunchGo
// with the other's endpoint and a delay (punch_delays) so that both dial at the same
// moment and the SYNs cross. A side's endpoint is its observed mapping when it dials from
// its shared port, else the observed host with the port it named (port-preserving NAT).
//
// Relay: `count` fresh random tokens are registered with a relay; once it confirms, both
// sides get RelayOffer. Either way an answer that cannot come (a side is gone, no relay)
// is a PathFailed to the requester; punches whose sides do not answer in time are
// forgotten (the requester's own deadline ends its wait).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <utility>

#include "coord/relay_registry.h"
#include "core/clock.h"
#include "core/log.h"
#include "proto/path_messages.h"

namespace pcomm::coord {

// Margin added to the later side's half RTT before both dial.
inline constexpr Millis kPunchMargin{15};
// A punch whose sides have not both answered PunchPrepare within this is dropped.
inline constexpr Millis kPunchPrepareTimeout{3000};

// How long each side waits after receiving PunchGo, so that both dial at once: the
// coordinator's send time plus the slower side's one-way delay, plus a margin. Pure.
std::pair<uint32_t, uint32_t> punch_delays(Duration rtt_a, Duration rtt_b);

class PathBroker {
 public:
  using Send = std::function<void(const std::string& peer, std::vector<uint8_t> frame)>;
  // The peer as the last topology describes it (empty peer_id: not a member).
  using Lookup = std::function<proto::RingMember(const std::string& peer)>;

  PathBroker(const Logger& log, Send send, Lookup lookup, RelayRegistry& relays)
      : log_(log), send_(std::move(send)), lookup_(std::move(lookup)), relays_(relays), rng_(std::random_device{}()) {}

  void on_request(const std::string& requester, const proto::PathRequest& request, TimePoint now);
  void on_punch_ready(const std::string& peer, const proto::PunchReady& ready, TimePoint now);
  void on_tick(TimePoint now);
  uint64_t punch_requests() const { return punch_requests_; }
  uint64_t relay_requests() const { return relay_requests_; }

 private:
  struct Side {
    std::string peer;
    uint16_t port = 0;
    Duration rtt{};
    bool ready = false;
  };
  struct Punch {
    Side requester, responder;
    uint8_t purpose = 0;
    TimePoint sent;
  };
  void fail(const std::string& requester, uint64_t intent, const std::string& reason);
  std::string endpoint_of(const proto::RingMember& member, uint16_t port) const;
  std::string new_token();

  const Logger& log_;
  Send send_;
  Lookup lookup_;
  RelayRegistry& relays_;
  std::mt19937_64 rng_;
  std::map<uint64_t, Punch> punches_;  // by the requester's intent
  uint64_t punch_requests_ = 0, relay_requests_ = 0;
};

}  // namespace pcomm::coord
