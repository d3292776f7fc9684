// Control messages of the coordination plane and of data-link handshakes. Each message is
// a struct with encode() and a static decode() that validates every field; message type
// numbers are part of the protocol and never reused.
//
// Coordinator link (peer <-> coordinator):
//   peer -> coord : Hello, Heartbeat, UpdateTopology, CancelUpdateTopology, LinksReady,
//                   LinksFailed, Leave
//   coord -> peer : Welcome, Heartbeat, Topology, EpochReady, TopologyDone, Error
// Data links (the side that opened a pool -> the other): LinkHello, answered by LinkAck
// (an EpochMsg carrying the pool id) or Error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/errors.h"
#include "proto/wire.h"

namespace pcomm::proto {

enum class MsgType : uint16_t {
  kError = 1,  // frozen across versions (see wire.h)
  kHello = 2,
  kWelcome = 3,
  kHeartbeat = 4,
  kUpdateTopology = 5,
  kTopology = 6,
  kLinksReady = 7,
  kLinksFailed = 8,
  kEpochReady = 9,
  kTopologyDone = 10,
  kLeave = 11,
  kCancelUpdateTopology = 12,  // UpdateTopology payload: withdraws that call (it timed out)
  kAnnounce = 13,
  kCollGo = 14,
  kCollDone = 15,
  kCollResult = 16,
  kStateVote = 17,  // 17-19 and 22-26: shared state (state_messages.h)
  kStatePlan = 18,
  kStateDone = 19,
  kLinkHello = 20,
  kLinkAck = 21,
  kStateResult = 22,
  kFetchHello = 23,
  kFetchRequest = 24,
  kFetchData = 25,
  kFetchAck = 26,
  kData = 30,  // a chunk of a collective on a data link (collectives/allreduce_ring.cpp)
  kObserve = 31,  // 31-38: NAT observation and path signalling (path_messages.h)
  kProbeHello = 32,
  kPathRequest = 33,
  kPunchPrepare = 34,
  kPunchReady = 35,
  kPunchGo = 36,
  kRelayOffer = 37,
  kPathFailed = 38,
  kRelayRegister = 40,  // 40-43: the relay's protocol (relay_messages.h)
  kRelayRegistered = 41,
  kRelayJoin = 42,
  kRelayPaired = 43,
  kLinkKeys = 44,  // coordinator -> peer, before each Topology of a run with a secret (key_messages.h)
  kStatusRequest = 45,  // anyone with the run's credentials -> coordinator (status_messages.h)
  kStatusReply = 46,
  kPeerReport = 47,  // peer -> coordinator, about once a second: what `pcomm status` shows (status_messages.h)
  kWaiting = 48,     // coordinator -> peers in a barrier: who has not entered it (waiting_messages.h)
  kRejoin = 49,      // peer -> a new coordinator, first frame: re-registration (term_messages.h)
};

// How a collective or a state sync ended, on the wire (CollDone/StateDone from a peer,
// CollResult/StateResult from the coordinator): 0 for success, else an ErrorKind's value
// (core/errors.h), so a failure keeps one kind end to end.
enum class Outcome : uint8_t {
  kCommit = 0,
  kTimeout = static_cast<uint8_t>(ErrorKind::kTimeout),
  kPeerLost = static_cast<uint8_t>(ErrorKind::kPeerLost),
  kAborted = static_cast<uint8_t>(ErrorKind::kAborted),
  kInvalid = static_cast<uint8_t>(ErrorKind::kInvalid),
  kProtocol = static_cast<uint8_t>(ErrorKind::kProtocol),
};
inline Outcome outcome_of(ErrorKind kind) {
  return kind == ErrorKind::kCoordinatorLost ? Outcome::kAborted : static_cast<Outcome>(kind);
}
inline ErrorKind error_kind(Outcome outcome) { return static_cast<ErrorKind>(outcome); }  // not kCommit
// Decoders: an outcome byte off the wire, refused unless known.
Outcome outcome_from_wire(uint8_t value);

// Why a connection is being closed; carried by ErrorMsg so the far side can raise the
// right typed error.
enum class ErrorCode : uint16_t {
  kVersionMismatch = 1,
  kRunMismatch = 2,
  kProtocol = 3,
  kDropped = 4,     // the coordinator dropped this peer (missed heartbeats, failed links)
  kShutdown = 5,    // the coordinator is stopping
  kBadRequest = 6,  // a well-formed message that makes no sense in this state
  kUnauthenticated = 7,  // sent in the clear to a client that speaks without the run's TLS
  kNotPrimary = 8,       // a standby coordinator whose primary is alive: try the next address
  kStaleTerm = 9,        // a coordinator of an older term than the peer's: try the next address
};

struct ErrorMsg {
  static constexpr MsgType kType = MsgType::kError;
  ErrorCode code = ErrorCode::kProtocol;
  std::string text;
  std::vector<uint8_t> encode() const;
  static ErrorMsg decode(const uint8_t* data, size_t size);
};

struct Hello {
  static constexpr MsgType kType = MsgType::kHello;
  std::string run;
  std::string data_address;  // "host:port" where this peer accepts data links
  std::string credentials;   // reserved for authentication; empty today
  std::vector<uint8_t> encode() const;
  static Hello decode(const uint8_t* data, size_t size);
};

struct Welcome {
  static constexpr MsgType kType = MsgType::kWelcome;
  std::string peer_id;
  bool accepted = false;  // false: pending until the next update_topology admits it
  uint32_t heartbeat_timeout_ms = 0;
  std::string observed_address;  // the peer's address as the coordinator sees it
  std::string run_id;  // this incarnation of the run: drawn by its coordinator at start
  uint64_t term = 0;   // the coordinator's term: a peer refuses one older than it knows
  std::vector<uint8_t> encode() const;
  static Welcome decode(const uint8_t* data, size_t size);
};

struct Heartbeat {
  static constexpr MsgType kType = MsgType::kHeartbeat;
  uint32_t pending_peers = 0;  // meaningful coordinator -> peer only
  std::vector<uint8_t> encode() const;
  static Heartbeat decode(const uint8_t* data, size_t size);
};

struct UpdateTopology {
  static constexpr MsgType kType = MsgType::kUpdateTopology;
  uint64_t seq = 0;  // echoed in TopologyDone so a late answer never satisfies a new call
  std::vector<uint8_t> encode() const;
  static UpdateTopology decode(const uint8_t* data, size_t size);
};

// What the coordinator learned about a peer's network position when it joined (see
// peer/remote_peer.h for how two peers choose their path from it).
enum NatFlags : uint8_t {
  kReachable = 1,    // the coordinator's dial-back to the observed endpoint got through
  kRandomizing = 2,  // two of the coordinator's ports saw different mappings of one local port
};

struct RingMember {
  std::string peer_id;
  std::string data_address;      // as the peer advertised it (its local candidate)
  std::string observed_address;  // the endpoint the coordinator saw (the NAT's mapping)
  uint8_t nat = 0;               // NatFlags
  bool operator==(const RingMember&) const = default;
};

// A ring member that is not in the next epoch, and why (kLeftReason for a clean leave),
// so survivors can tell a departure from a loss in their logs.
inline constexpr const char* kLeftReason = "left";
struct Departure {
  std::string peer_id;
  std::string reason;
  bool operator==(const Departure&) const = default;
};

struct Topology {
  static constexpr MsgType kType = MsgType::kTopology;
  uint64_t epoch = 0;
  std::vector<RingMember> ring;  // ring order; rank = position
  std::vector<Departure> gone;   // members of the previous epoch not in this one
  std::vector<uint8_t> encode() const;
  static Topology decode(const uint8_t* data, size_t size);
};

struct EpochMsg {  // LinksReady and EpochReady carry only an epoch
  uint64_t epoch = 0;
  std::vector<uint8_t> encode() const;
  static EpochMsg decode(const uint8_t* data, size_t size);
};

struct LinksFailed {
  static constexpr MsgType kType = MsgType::kLinksFailed;
  uint64_t epoch = 0;
  std::string neighbour_id;  // the neighbour that could not be reached
  std::string reason;
  std::vector<uint8_t> encode() const;
  static LinksFailed decode(const uint8_t* data, size_t size);
};

struct TopologyDone {
  static constexpr MsgType kType = MsgType::kTopologyDone;
  uint64_t seq = 0;
  uint64_t epoch = 0;
  std::vector<uint8_t> encode() const;
  static TopologyDone decode(const uint8_t* data, size_t size);
};

// The largest pool of connections to one peer (connections_per_peer's upper bound).
inline constexpr uint32_t kMaxPoolConnections = 64;

struct LinkHello {
  static constexpr MsgType kType = MsgType::kLinkHello;
  std::string run;
  std::string from_peer;
  uint64_t pool = 0;   // the pool this connection belongs to (chosen by its opener)
  uint32_t index = 0;  // which connection of the pool this is
  uint32_t count = 0;  // pool size
  std::vector<uint8_t> encode() const;
  static LinkHello decode(const uint8_t* data, size_t size);
};

// A collective as a peer calls it; every participant must announce the same values.
struct Announce {
  static constexpr MsgType kType = MsgType::kAnnounce;
  uint32_t tag = 0;
  uint64_t call = 0;  // this peer's id for the call; echoed in CollGo and CollResult
  uint64_t count = 0;
  uint8_t dtype = 0;
  uint8_t op = 0;
  uint8_t quantization = 0;
  std::vector<uint8_t> encode() const;
  static Announce decode(const uint8_t* data, size_t size);
};

// Coordinator -> peers: every participant announced the same thing; run it now on the
// links of `epoch`. Peers run collectives in the order their Go messages arrive.
struct CollGo {
  static constexpr MsgType kType = MsgType::kCollGo;
  uint32_t tag = 0;
  uint64_t call = 0;  // the receiving peer's call id (from its Announce)
  uint64_t op_id = 0;
  uint64_t epoch = 0;
  std::vector<uint8_t> encode() const;
  static CollGo decode(const uint8_t* data, size_t size);
};

// Peer -> coordinator: this peer's part finished (kCommit = ok) or failed. op_id 0 with a
// failure withdraws an announcement that never started (the caller gave up).
// Coordinator -> peers (as CollResult): the decision, the same for every participant.
struct CollOutcome {
  uint32_t tag = 0;
  uint64_t call = 0;  // the call it concerns (the receiving peer's, for CollResult)
  uint64_t op_id = 0;
  Outcome outcome = Outcome::kCommit;
  std::string message;
  std::vector<uint8_t> encode() const;
  static CollOutcome decode(const uint8_t* data, size_t size);
};

// Builds a full frame for a message struct.
template <typename M>
std::vector<uint8_t> frame_of(const M& m) {
  return make_frame(static_cast<uint16_t>(M::kType), m.encode());
}
inline std::vector<uint8_t> frame_of(MsgType type, const std::vector<uint8_t>& payload) {
  return make_frame(static_cast<uint16_t>(type), payload);
}

}  // namespace pcomm::proto
