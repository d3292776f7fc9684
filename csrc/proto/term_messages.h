// Re-registration after the coordinator was lost (coord/terms.h): a peer that keeps its
// links, peer id and state sends Rejoin, instead of Hello, as its first frame to a
// restarted or standby coordinator. The coordinator answers with a Welcome carrying the
// new term once it has formed it, or with an Error (kNotPrimary: a standby whose primary
// is alive; kStaleTerm: a coordinator older than the peer's term), and the peer tries the
// next address.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/fields.h"
#include "proto/messages.h"

namespace pcomm::proto {

inline constexpr size_t kMaxRejoinOps = 64;

struct Rejoin {
  static constexpr MsgType kType = MsgType::kRejoin;
  std::string run;
  std::string run_id;   // the incarnation it belongs to
  std::string peer_id;  // kept
  uint64_t term = 0;    // the last term it knew
  uint64_t epoch = 0;   // and its last epoch and ring
  std::vector<std::string> ring;
  std::string data_address;
  std::string observed_address;
  uint8_t nat = 0;
  // All-reduces this peer finished its part of and awaits a decision for, as
  // (tag, call, term, op id) quadruples; and the (term, op id) pairs of its last commits.
  // The new coordinator commits a pending op that anyone reports committed, and aborts
  // the rest, so every peer still agrees on every outcome.
  std::vector<uint64_t> pending;
  std::vector<uint64_t> committed;
  // The same for sync_shared_state: the (call, term, sync id) of a sync this peer
  // reported success for and awaits the decision of (empty when none), and the
  // (term, sync id) pairs of its last committed syncs.
  std::vector<uint64_t> state_pending;
  std::vector<uint64_t> state_committed;
  // The revision and content hash (SyncResult.content_hash) of its last committed
  // sync; 0 and 0 before the first. The coordinator logs whether the peers agree.
  uint64_t state_revision = 0;
  uint64_t state_hash = 0;
  template <typename V> void fields(V& v) {
    v(run); v(run_id); v(peer_id); v(term); v(epoch); v(ring); v(data_address); v(observed_address); v(nat);
    v(pending); v(committed); v(state_pending); v(state_committed); v(state_revision); v(state_hash);
  }
  void validate() const {
    if (peer_id.empty()) throw ProtocolError("Rejoin needs the peer's id");
    if (pending.size() % 4 || pending.size() / 4 > kMaxRejoinOps) throw ProtocolError("Rejoin.pending is malformed");
    if (committed.size() % 2 || committed.size() / 2 > kMaxRejoinOps) {
      throw ProtocolError("Rejoin.committed is malformed");
    }
    if (state_pending.size() != 0 && state_pending.size() != 3) throw ProtocolError("Rejoin.state_pending is malformed");
    if (state_committed.size() % 2 || state_committed.size() / 2 > kMaxRejoinOps) {
      throw ProtocolError("Rejoin.state_committed is malformed");
    }
  }
};

}  // namespace pcomm::proto
