// Messages of NAT observation and path signalling, all on the coordinator link except
// ProbeHello (see peer/remote_peer.h for the whole protocol):
//
//   join:   peer -> Hello;  coord -> Observe{nonce, probe_port};  peer connects from its
//           shared port to probe_port and sends ProbeHello{nonce};  the coordinator also
//           dials the observed endpoint back; then Welcome.
//   punch:  requester -> PathRequest{punch};  coord -> PunchPrepare to both;  both ->
//           PunchReady{local_port} (the coordinator measures each RTT);  coord ->
//           PunchGo{endpoint, delay} to both, timed so that the SYNs cross.
//   relay:  requester -> PathRequest{relay, count};  coord registers `count` one-time
//           tokens with a relay, then RelayOffer{relay, tokens} to both.
//   coord -> PathFailed{intent, reason} when it cannot help (peer gone, no relay).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/fields.h"
#include "proto/messages.h"

namespace pcomm::proto {

enum class PathKind : uint8_t { kPunch = 1, kRelay = 2 };
// What a path is for: a ring pool (LinkHello follows) or one state-transfer stream
// (FetchHello follows). Either way the requester speaks first.
enum class PathPurpose : uint8_t { kPool = 0, kStream = 1 };

struct Observe {
  static constexpr MsgType kType = MsgType::kObserve;
  uint64_t nonce = 0;
  uint16_t probe_port = 0;
  template <typename V> void fields(V& v) { v(nonce); v(probe_port); }
  void validate() const {}
};

struct ProbeHello {
  static constexpr MsgType kType = MsgType::kProbeHello;
  uint64_t nonce = 0;
  template <typename V> void fields(V& v) { v(nonce); }
  void validate() const {}
};

struct PathRequest {
  static constexpr MsgType kType = MsgType::kPathRequest;
  uint64_t intent = 0;  // the requester's id for this attempt; echoed in every answer
  std::string peer;     // the other side
  uint8_t kind = 0;     // PathKind
  uint8_t purpose = 0;  // PathPurpose
  uint32_t count = 1;   // relayed connections wanted
  template <typename V> void fields(V& v) { v(intent); v(peer); v(kind); v(purpose); v(count); }
  void validate() const {
    if (kind < 1 || kind > 2) throw ProtocolError("PathRequest.kind must be 1 (punch) or 2 (relay)");
    if (purpose > 1) throw ProtocolError("PathRequest.purpose must be 0 or 1");
    if (count < 1 || count > 64) throw ProtocolError("PathRequest.count must be 1 to 64");
  }
};

struct PunchPrepare {
  static constexpr MsgType kType = MsgType::kPunchPrepare;
  uint64_t intent = 0;
  std::string peer;  // the other side
  uint8_t purpose = 0;
  bool requester = false;
  template <typename V> void fields(V& v) { v(intent); v(peer); v(purpose); v(requester); }
  void validate() const {
    if (purpose > 1) throw ProtocolError("PunchPrepare.purpose must be 0 or 1");
  }
};

struct PunchReady {
  static constexpr MsgType kType = MsgType::kPunchReady;
  uint64_t intent = 0;
  std::string peer;
  uint16_t local_port = 0;  // the port this side dials from
  template <typename V> void fields(V& v) { v(intent); v(peer); v(local_port); }
  void validate() const {
    if (local_port == 0) throw ProtocolError("PunchReady.local_port is 0");
  }
};

struct PunchGo {
  static constexpr MsgType kType = MsgType::kPunchGo;
  uint64_t intent = 0;
  std::string peer;
  std::string endpoint;  // "host:port" to dial: the other side's mapping
  uint16_t local_port = 0;
  uint32_t delay_ms = 0;  // dial this long after receipt, so the SYNs cross
  uint8_t purpose = 0;
  bool requester = false;
  template <typename V> void fields(V& v) {
    v(intent); v(peer); v(endpoint); v(local_port); v(delay_ms); v(purpose); v(requester);
  }
  void validate() const {
    if (delay_ms > 10000) throw ProtocolError("PunchGo.delay_ms above 10 s");
    if (purpose > 1) throw ProtocolError("PunchGo.purpose must be 0 or 1");
  }
};

struct RelayOffer {
  static constexpr MsgType kType = MsgType::kRelayOffer;
  uint64_t intent = 0;
  std::string peer;
  std::string relay;  // "host:port"
  std::vector<std::string> tokens;
  uint8_t purpose = 0;
  bool requester = false;
  template <typename V> void fields(V& v) { v(intent); v(peer); v(relay); v(tokens); v(purpose); v(requester); }
  void validate() const {
    if (tokens.empty() || tokens.size() > 64) throw ProtocolError("RelayOffer needs 1 to 64 tokens");
    if (purpose > 1) throw ProtocolError("RelayOffer.purpose must be 0 or 1");
  }
};

struct PathFailed {
  static constexpr MsgType kType = MsgType::kPathFailed;
  uint64_t intent = 0;
  std::string reason;
  template <typename V> void fields(V& v) { v(intent); v(reason); }
  void validate() const {}
};

}  // namespace pcomm::proto
