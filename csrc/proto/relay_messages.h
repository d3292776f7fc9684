// The relay's protocol (net/relay.h). A connection's first frame says what it is:
//
//   coordinator -> RelayRegister{tokens, peers, ttl}, answered by RelayRegistered{tokens}
//                  (the connection stays open for more registrations);
//   peer        -> RelayJoin{token}: the relay holds it until the other side joins with
//                  the same token, sends both RelayPaired, and from then on forwards raw
//                  bytes both ways without parsing them.
//
// A token admits exactly two joins before its expiry; unknown, expired or reused tokens
// get an Error frame and the connection is closed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/fields.h"
#include "proto/messages.h"

namespace pcomm::proto {

struct RelayRegister {
  static constexpr MsgType kType = MsgType::kRelayRegister;
  std::vector<std::string> tokens;
  std::string peer_a, peer_b;  // the pair the tokens are for (limits per peer)
  uint32_t ttl_ms = 0;
  template <typename V> void fields(V& v) { v(tokens); v(peer_a); v(peer_b); v(ttl_ms); }
  void validate() const {
    if (tokens.empty() || tokens.size() > 64) throw ProtocolError("RelayRegister needs 1 to 64 tokens");
    for (const auto& t : tokens) {
      if (t.size() < 16 || t.size() > 64) throw ProtocolError("relay tokens are 16 to 64 bytes");
    }
    if (ttl_ms == 0 || ttl_ms > 600000) throw ProtocolError("RelayRegister.ttl_ms must be 1 ms to 10 min");
  }
};

struct RelayRegistered {
  static constexpr MsgType kType = MsgType::kRelayRegistered;
  std::vector<std::string> tokens;
  template <typename V> void fields(V& v) { v(tokens); }
  void validate() const {}
};

struct RelayJoin {
  static constexpr MsgType kType = MsgType::kRelayJoin;
  std::string token;
  template <typename V> void fields(V& v) { v(token); }
  void validate() const {
    if (token.size() > 64) throw ProtocolError("relay token longer than 64 bytes");
  }
};

}  // namespace pcomm::proto
