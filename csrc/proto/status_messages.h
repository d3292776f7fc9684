// A run's status, for `pcomm status`: any client that holds the run's credentials (the
// secret, in a run with one) sends StatusRequest as its first frame instead of Hello; the
// coordinator answers StatusReply and the client closes. No peer is needed.
//
// What the coordinator cannot see itself (a peer's links, its last operation, its
// training step) each accepted peer tells it in a PeerReport about once a second; the
// coordinator keeps the latest per peer and derives throughput from the byte counters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/fields.h"
#include "proto/messages.h"

namespace pcomm::proto {

// A coordinator watching another (a standby, or one that took over) sends its term and
// address: a coordinator of an older term that serves steps down to be its standby.
// `pcomm status` sends term 0.
struct StatusRequest {
  static constexpr MsgType kType = MsgType::kStatusRequest;
  uint64_t term = 0;
  std::string from;
  template <typename V> void fields(V& v) { v(term); v(from); }
  void validate() const {}
};

inline constexpr uint64_t kNoValue = ~0ULL;  // a u64 field with nothing to report
inline constexpr size_t kMaxReportText = 200;  // bytes of an error message in a report

struct PeerReport {
  static constexpr MsgType kType = MsgType::kPeerReport;
  uint64_t ops_done = 0;  // all-reduces completed successfully since connect()
  uint64_t ops_failed = 0;
  uint64_t bytes_sent = 0;  // data-link payload of those operations
  uint64_t bytes_received = 0;
  uint32_t last_tag = 0;
  uint64_t last_age_ms = kNoValue;  // since the last operation ended; kNoValue: none yet
  uint32_t last_world = 0;
  std::string last_error;           // "" when the last operation succeeded
  uint64_t step = kNoValue;         // the application's step (DiLoCo: the outer step)
  std::vector<std::string> link_peers;  // this peer's neighbours ...
  std::vector<std::string> link_kinds;  // ... and how each is reached (direct, punched, relayed)
  template <typename V> void fields(V& v) {
    v(ops_done); v(ops_failed); v(bytes_sent); v(bytes_received); v(last_tag); v(last_age_ms); v(last_world);
    v(last_error); v(step); v(link_peers); v(link_kinds);
  }
  void validate() const {
    if (link_peers.size() != link_kinds.size()) throw ProtocolError("PeerReport needs one link kind per link peer");
    if (link_peers.size() > 2) throw ProtocolError("PeerReport names at most 2 neighbours");
    if (last_error.size() > kMaxReportText) throw ProtocolError("PeerReport.last_error is too long");
  }
};

// Per ring member, in ring order; a peer that has not reported yet has empty links,
// kNoValue ages and steps, and rate 0.
struct StatusReply {
  static constexpr MsgType kType = MsgType::kStatusReply;
  std::string run;
  std::string run_id;
  uint64_t term = 0;
  std::string role;  // "serving", "gathering" (forming a term), "standby"
  uint64_t epoch = 0;
  std::vector<std::string> peers;      // ring order
  std::vector<std::string> addresses;  // each peer's observed address, same order
  uint32_t pending = 0;                // peers waiting to be admitted
  uint32_t collectives_running = 0;
  std::vector<std::string> links;        // "id:kind,id:kind"
  std::vector<uint64_t> ops_done;
  std::vector<uint64_t> last_age_ms;
  std::vector<std::string> last_op;      // "tag 0, world 3" or the error
  std::vector<uint64_t> steps;
  std::vector<uint64_t> send_rate;       // data bytes sent per second, over the last 10 s
  template <typename V> void fields(V& v) {
    v(run); v(run_id); v(term); v(role); v(epoch); v(peers); v(addresses); v(pending); v(collectives_running);
    v(links); v(ops_done); v(last_age_ms); v(last_op); v(steps); v(send_rate);
  }
  void validate() const {
    size_t n = peers.size();
    if (addresses.size() != n || links.size() != n || ops_done.size() != n || last_age_ms.size() != n ||
        last_op.size() != n || steps.size() != n || send_rate.size() != n) {
      throw ProtocolError("StatusReply needs one entry per peer in every column");
    }
  }
};

}  // namespace pcomm::proto
