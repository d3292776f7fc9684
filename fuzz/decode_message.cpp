// decode_message: one case per message type, each the decoder its receiver calls; see
// decode_message.h. The switch lists every MsgType and has no default, so a new message
// type does not build (-Werror=switch in fuzz/build.sh) until it is fuzzed here too.
#include "fuzz/decode_message.h"

#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/errors.h"
#include "proto/fields.h"
#include "proto/key_messages.h"
#include "proto/status_messages.h"
#include "proto/term_messages.h"
#include "proto/waiting_messages.h"
#include "proto/messages.h"
#include "proto/path_messages.h"
#include "proto/relay_messages.h"
#include "proto/state_messages.h"

namespace pcomm::fuzz {

namespace {

// Messages with encode() and a static decode() (messages.h, state_messages.h).
struct Coded {
  template <typename M>
  static M decode(const uint8_t* data, size_t size) { return M::decode(data, size); }
  template <typename M>
  static std::vector<uint8_t> encode(const M& m) { return m.encode(); }
};

// Messages that list their fields once (fields.h: path_messages.h, relay_messages.h).
struct Listed {
  template <typename M>
  static M decode(const uint8_t* data, size_t size) { return proto::decode_fields<M>(data, size); }
  template <typename M>
  static std::vector<uint8_t> encode(const M& m) { return proto::encode_fields(m); }
};

bool same_bytes(const std::vector<uint8_t>& a, const uint8_t* data, size_t size) {
  return a.size() == size && (size == 0 || std::memcmp(a.data(), data, size) == 0);
}

template <typename Codec, typename M>
M round_trip(const uint8_t* data, size_t size) {
  M first = Codec::template decode<M>(data, size);
  std::vector<uint8_t> again = Codec::encode(first);
  FUZZ_CHECK(same_bytes(again, data, size), "re-encoding a decoded message changed its bytes");
  M second = Codec::template decode<M>(again.data(), again.size());
  FUZZ_CHECK(Codec::encode(second) == again, "decoding a re-encoded message changed it");
  return first;
}

template <typename M>
bool coded(const uint8_t* data, size_t size) {
  round_trip<Coded, M>(data, size);
  return true;
}

template <typename M>
bool listed(const uint8_t* data, size_t size) {
  round_trip<Listed, M>(data, size);
  return true;
}

// FetchAck and RelayPaired carry nothing; their receivers refuse any payload.
bool empty(const uint8_t*, size_t size) {
  if (size != 0) throw ProtocolError("a message without payload carries " + std::to_string(size) + " bytes");
  return true;
}

}  // namespace

bool decode_message(uint16_t type, const uint8_t* data, size_t size) {
  using proto::MsgType;
  switch (static_cast<MsgType>(type)) {
    case MsgType::kError: return coded<proto::ErrorMsg>(data, size);
    case MsgType::kHello: return coded<proto::Hello>(data, size);
    case MsgType::kWelcome: return coded<proto::Welcome>(data, size);
    case MsgType::kHeartbeat: return coded<proto::Heartbeat>(data, size);
    case MsgType::kUpdateTopology:
    case MsgType::kCancelUpdateTopology: return coded<proto::UpdateTopology>(data, size);
    case MsgType::kTopology: return coded<proto::Topology>(data, size);
    case MsgType::kLinksReady:
    case MsgType::kEpochReady:
    case MsgType::kLeave:
    case MsgType::kLinkAck: return coded<proto::EpochMsg>(data, size);
    case MsgType::kLinksFailed: return coded<proto::LinksFailed>(data, size);
    case MsgType::kTopologyDone: return coded<proto::TopologyDone>(data, size);
    case MsgType::kAnnounce: {
      // The coordinator refuses unknown codes before anyone acts on them.
      auto m = round_trip<Coded, proto::Announce>(data, size);
      dtype_from_code(m.dtype);
      reduce_op_from_code(m.op);
      quantization_from_code(m.quantization);
      return true;
    }
    case MsgType::kCollGo: return coded<proto::CollGo>(data, size);
    case MsgType::kCollDone:
    case MsgType::kCollResult: return coded<proto::CollOutcome>(data, size);
    case MsgType::kStateVote: {
      auto m = round_trip<Coded, proto::StateVote>(data, size);
      for (const auto& t : m.tensors) dtype_from_code(t.dtype);
      return true;
    }
    case MsgType::kStatePlan: return coded<proto::StatePlan>(data, size);
    case MsgType::kStateDone:
    case MsgType::kStateResult: return coded<proto::StateOutcome>(data, size);
    case MsgType::kLinkHello: return coded<proto::LinkHello>(data, size);
    case MsgType::kFetchHello: return coded<proto::FetchHello>(data, size);
    case MsgType::kFetchRequest: return coded<proto::FetchRequest>(data, size);
    case MsgType::kFetchAck:
    case MsgType::kRelayPaired: return empty(data, size);
    case MsgType::kFetchData:
    case MsgType::kData: return false;  // raw tensor bytes: no decoder reads them
    case MsgType::kObserve: return listed<proto::Observe>(data, size);
    case MsgType::kProbeHello: return listed<proto::ProbeHello>(data, size);
    case MsgType::kPathRequest: return listed<proto::PathRequest>(data, size);
    case MsgType::kPunchPrepare: return listed<proto::PunchPrepare>(data, size);
    case MsgType::kPunchReady: return listed<proto::PunchReady>(data, size);
    case MsgType::kPunchGo: return listed<proto::PunchGo>(data, size);
    case MsgType::kRelayOffer: return listed<proto::RelayOffer>(data, size);
    case MsgType::kPathFailed: return listed<proto::PathFailed>(data, size);
    case MsgType::kRelayRegister: return listed<proto::RelayRegister>(data, size);
    case MsgType::kRelayRegistered: return listed<proto::RelayRegistered>(data, size);
    case MsgType::kRelayJoin: return listed<proto::RelayJoin>(data, size);
    case MsgType::kLinkKeys: return listed<proto::LinkKeys>(data, size);
    case MsgType::kStatusRequest: return listed<proto::StatusRequest>(data, size);
    case MsgType::kStatusReply: return listed<proto::StatusReply>(data, size);
    case MsgType::kPeerReport: return listed<proto::PeerReport>(data, size);
    case MsgType::kWaiting: return listed<proto::Waiting>(data, size);
    case MsgType::kRejoin: return listed<proto::Rejoin>(data, size);
  }
  return false;  // a number no MsgType names: receivers refuse it before decoding
}

}  // namespace pcomm::fuzz
