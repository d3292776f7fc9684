// Messages of shared-state sync (see docs/protocol.md):
//   peer -> coordinator : StateVote, StateDone
//   coordinator -> peer : StatePlan, StateResult
//   receiver -> source (data port) : FetchHello (answered by FetchAck), then FetchRequests,
//   each answered by FetchData
//   (a frame header of type kFetchData followed by exactly the requested bytes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/messages.h"

namespace pcomm::proto {

// The shared-state message types live in MsgType (one numbering for the protocol).
using StateMsg = MsgType;

// kOffer: a checkpoint offered to the run; the newest offer wins (coord/state_sync.h).
enum class SyncStrategy : uint8_t { kEnforcePopular = 0, kReceiveOnly = 1, kSendOnly = 2, kOffer = 3 };
inline constexpr uint8_t kLastSyncStrategy = static_cast<uint8_t>(SyncStrategy::kOffer);

struct TensorMeta {
  std::string name;
  uint8_t dtype = 0;
  std::vector<uint64_t> shape;
  uint64_t nbytes = 0;
  uint64_t hash = 0;
};

struct StateVote {
  uint64_t call = 0;
  SyncStrategy strategy = SyncStrategy::kEnforcePopular;
  uint64_t revision = 0;
  std::vector<TensorMeta> tensors;
  std::vector<uint8_t> encode() const;
  static StateVote decode(const uint8_t* data, size_t size);
};

struct StatePlan {
  uint64_t call = 0;
  uint64_t sync_id = 0;
  uint64_t revision = 0;               // the chosen content's revision
  std::vector<uint64_t> hashes;        // the chosen content, one hash per tensor
  std::vector<uint32_t> fetch;         // tensors this peer must fetch
  std::vector<RingMember> sources;     // peers holding the chosen content
  std::vector<uint8_t> encode() const;
  static StatePlan decode(const uint8_t* data, size_t size);
};

// StateDone (peer -> coordinator) and StateResult (coordinator -> peer).
struct StateOutcome {
  uint64_t call = 0;
  uint64_t sync_id = 0;
  Outcome outcome = Outcome::kCommit;
  std::string message;
  std::vector<uint8_t> encode() const;
  static StateOutcome decode(const uint8_t* data, size_t size);
};

struct FetchHello {
  std::string run;
  std::string from_peer;
  uint64_t sync_id = 0;
  std::vector<uint8_t> encode() const;
  static FetchHello decode(const uint8_t* data, size_t size);
};

struct FetchRequest {
  uint32_t tensor = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::vector<uint8_t> encode() const;
  static FetchRequest decode(const uint8_t* data, size_t size);
};

}  // namespace pcomm::proto
