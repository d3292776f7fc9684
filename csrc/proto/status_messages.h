// A run's status, for `pcomm status`: any client that holds the run's credentials (the
// secret, in a run with one) sends StatusRequest as its first frame instead of Hello; the
// coordinator answers StatusReply and the client closes. No peer is needed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/fields.h"
#include "proto/messages.h"

namespace pcomm::proto {

struct StatusRequest {
  static constexpr MsgType kType = MsgType::kStatusRequest;
  template <typename V> void fields(V&) {}
  void validate() const {}
};

struct StatusReply {
  static constexpr MsgType kType = MsgType::kStatusReply;
  std::string run;
  uint64_t epoch = 0;
  std::vector<std::string> peers;      // ring order
  std::vector<std::string> addresses;  // each peer's observed address, same order
  uint32_t pending = 0;                // peers waiting to be admitted
  uint32_t collectives_running = 0;
  template <typename V> void fields(V& v) {
    v(run); v(epoch); v(peers); v(addresses); v(pending); v(collectives_running);
  }
  void validate() const {
    if (peers.size() != addresses.size()) throw ProtocolError("StatusReply needs one address per peer");
  }
};

}  // namespace pcomm::proto
