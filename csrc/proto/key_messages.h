// LinkKeys: the keys of a peer's data links for one epoch, sent by the coordinator over
// its TLS channel to each peer just before that epoch's Topology (runs with a secret
// only). One entry per other ring member: the key both ends of that pair use for links
// opened in this epoch (net/run_keys.h pair_key), so a member cannot pose as another.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/fields.h"
#include "proto/messages.h"

namespace pcomm::proto {

struct LinkKeys {
  static constexpr MsgType kType = MsgType::kLinkKeys;
  uint64_t epoch = 0;
  std::vector<std::string> peers;
  std::vector<std::string> keys;  // 32 bytes each, same order as peers
  template <typename V> void fields(V& v) { v(epoch); v(peers); v(keys); }
  void validate() const {
    if (peers.size() != keys.size()) throw ProtocolError("LinkKeys needs one key per peer");
    for (const auto& k : keys) {
      if (k.size() != 32) throw ProtocolError("a link key is 32 bytes");
    }
  }
};

}  // namespace pcomm::proto
