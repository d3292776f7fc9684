// PeerReports; see peer_reports.h.
#include "coord/peer_reports.h"

namespace pcomm::coord {

void PeerReports::on_report(const std::string& peer, const proto::PeerReport& report, TimePoint now) {
  Entry& e = entries_[peer];
  e.last = report;
  e.at = now;
  if (!e.sent.empty() && report.bytes_sent < e.sent.back().second) e.sent.clear();  // counters restarted
  e.sent.emplace_back(now, report.bytes_sent);
  // Keep one sample at or before the window's start, so the window is always spanned.
  while (e.sent.size() > 2 && now - e.sent[1].first >= kRateWindow) e.sent.pop_front();
}

void PeerReports::forget(const std::string& peer) { entries_.erase(peer); }

void PeerReports::fill(proto::StatusReply& reply, TimePoint now) const {
  for (const auto& peer : reply.peers) {
    auto it = entries_.find(peer);
    if (it == entries_.end()) {
      reply.links.emplace_back();
      reply.ops_done.push_back(0);
      reply.last_age_ms.push_back(proto::kNoValue);
      reply.last_op.emplace_back();
      reply.steps.push_back(proto::kNoValue);
      reply.send_rate.push_back(0);
      continue;
    }
    const Entry& e = it->second;
    const proto::PeerReport& r = e.last;
    std::string links;
    for (size_t i = 0; i < r.link_peers.size(); ++i) {
      links += (i ? "," : "") + r.link_peers[i] + ":" + r.link_kinds[i];
    }
    reply.links.push_back(links);
    reply.ops_done.push_back(r.ops_done);
    uint64_t since_report = static_cast<uint64_t>(to_millis(now - e.at));
    reply.last_age_ms.push_back(r.last_age_ms == proto::kNoValue ? proto::kNoValue : r.last_age_ms + since_report);
    std::string op;
    if (r.last_age_ms != proto::kNoValue) {
      op = "tag " + std::to_string(r.last_tag) + ", world " + std::to_string(r.last_world);
      if (!r.last_error.empty()) op += ", failed: " + r.last_error;
    }
    reply.last_op.push_back(op);
    reply.steps.push_back(r.step);
    uint64_t rate = 0;
    if (e.sent.size() >= 2) {
      double seconds = duration_to_seconds(e.sent.back().first - e.sent.front().first);
      if (seconds > 0) rate = static_cast<uint64_t>(double(e.sent.back().second - e.sent.front().second) / seconds);
    }
    reply.send_rate.push_back(rate);
  }
}

}  // namespace pcomm::coord
