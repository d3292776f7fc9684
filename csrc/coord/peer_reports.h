// PeerReports: what each peer last told the coordinator about itself (PeerReport, about
// once a second), kept for `pcomm status`. Pure: no sockets, time passed in.
//
// Throughput is the growth of a peer's sent-bytes counter over the reports of the last
// kRateWindow (so one all-reduce every few seconds still shows a steady rate).
#pragma once

#include <deque>
#include <map>
#include <string>
#include <utility>

#include "core/clock.h"
#include "proto/status_messages.h"

namespace pcomm::coord {

class PeerReports {
 public:
  static constexpr Duration kRateWindow = std::chrono::seconds(10);

  void on_report(const std::string& peer, const proto::PeerReport& report, TimePoint now);
  // The peer left the run: its reports go with it.
  void forget(const std::string& peer);
  // Fills the per-peer columns of `reply` for the peers already in reply.peers.
  void fill(proto::StatusReply& reply, TimePoint now) const;

 private:
  struct Entry {
    proto::PeerReport last;
    TimePoint at;
    std::deque<std::pair<TimePoint, uint64_t>> sent;  // (when, bytes_sent), newest last
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace pcomm::coord
