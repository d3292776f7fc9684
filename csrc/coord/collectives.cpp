// The coordinator's collective decisions; see collectives.h for the rules.
#include "coord/collectives.h"

#include <algorithm>

#include "core/dtype.h"

namespace pcomm::coord {

namespace {

std::string describe(const proto::Announce& a) {
  auto safe = [](auto fn, uint8_t code) {
    try {
      return fn(code);
    } catch (...) {
      return std::string("code ") + std::to_string(code);
    }
  };
  std::string dtype = safe([](uint8_t c) { return dtype_name(dtype_from_code(c)); }, a.dtype);
  std::string op = safe([](uint8_t c) { return reduce_op_name(reduce_op_from_code(c)); }, a.op);
  std::string q = safe([](uint8_t c) { return quantization_name(quantization_from_code(c)); }, a.quantization);
  return std::to_string(a.count) + " elements of " + dtype + ", op " + op + ", quantization " + q;
}

}  // namespace

std::string announce_difference(const std::string& peer_a, const proto::Announce& a, const std::string& peer_b,
                                const proto::Announce& b) {
  if (a.count == b.count && a.dtype == b.dtype && a.op == b.op && a.quantization == b.quantization) return "";
  std::string what = a.count != b.count ? "element count" : a.dtype != b.dtype ? "dtype" : a.op != b.op ? "op" : "quantization";
  return "all_reduce calls with tag " + std::to_string(a.tag) + " differ in " + what + ": peer " + peer_a + " has " +
         describe(a) + "; peer " + peer_b + " has " + describe(b);
}

Actions Collectives::on_announce(const std::string& peer, const proto::Announce& announce, const View& view,
                                 TimePoint now) {
  Actions out;
  auto reject = [&](const std::string& why) {
    out.push_back(refusal(Action::Kind::kCollResult, peer, announce.call, why));
    out.back().tag = announce.tag;
  };
  if (!view.has(peer)) {
    reject("this peer is not an accepted member of the run");
    return out;
  }
  auto it = ops_.find(announce.tag);
  if (it == ops_.end()) {
    Op op;
    op.participants.insert(view.ring.begin(), view.ring.end());
    op.since = now;
    it = ops_.emplace(announce.tag, std::move(op)).first;
  }
  Op& op = it->second;
  if (op.op_id != 0 || op.announced.count(peer) || !op.participants.count(peer)) {
    reject("tag " + std::to_string(announce.tag) + " is already in flight for this peer");
    return out;
  }
  op.announced[peer] = announce;
  try_start(announce.tag, view, out);
  return out;
}

void Collectives::try_start(uint32_t tag, const View& view, Actions& out) {
  auto it = ops_.find(tag);
  if (it == ops_.end()) return;
  Op& op = it->second;
  if (op.op_id != 0 || op.participants.empty() || op.announced.size() != op.participants.size()) return;
  const auto& first = *op.announced.begin();
  for (const auto& [peer, a] : op.announced) {
    std::string diff = announce_difference(first.first, first.second, peer, a);
    if (!diff.empty()) {
      finish(tag, proto::Outcome::kInvalid, diff, out);
      return;
    }
  }
  std::set<std::string> ring(view.ring.begin(), view.ring.end());
  if (!view.ready || ring != op.participants) return;  // wait for the epoch
  op.op_id = next_op_id_++;
  op.epoch = view.epoch;
  for (const auto& peer : view.ring) {
    Action a = make_action(Action::Kind::kCollGo, peer);
    a.tag = tag;
    a.seq = op.announced.at(peer).call;
    a.op_id = op.op_id;
    a.epoch = op.epoch;
    out.push_back(a);
  }
}

void Collectives::finish(uint32_t tag, proto::Outcome outcome, const std::string& message, Actions& out) {
  auto it = ops_.find(tag);
  if (it == ops_.end()) return;
  const Op& op = it->second;
  // Everyone who announced hears the outcome (a participant that never announced has no
  // call waiting for it).
  for (const auto& [peer, a] : op.announced) {
    Action r = make_action(Action::Kind::kCollResult, peer);
    r.tag = tag;
    r.seq = a.call;
    r.op_id = op.op_id;
    r.outcome = outcome;
    r.reason = message;
    out.push_back(r);
  }
  bool was_running = op.op_id != 0;
  ops_.erase(it);
  if (was_running && outcome != proto::Outcome::kCommit) out.push_back(make_action(Action::Kind::kRelink));
}

Actions Collectives::on_report(const std::string& peer, const proto::CollOutcome& report, const View& view) {
  Actions out;
  auto it = ops_.find(report.tag);
  if (it == ops_.end()) return out;  // already decided
  Op& op = it->second;
  if (report.op_id == 0) {
    // The peer gave up before the start.
    auto mine = op.announced.find(peer);
    if (op.op_id == 0 && mine != op.announced.end() && mine->second.call == report.call) {
      finish(report.tag, proto::Outcome::kAborted,
             "peer " + peer + " gave up on the all_reduce with tag " + std::to_string(report.tag) + ": " + report.message,
             out);
    }
    return out;
  }
  if (report.op_id != op.op_id || !op.participants.count(peer)) return out;  // stale report
  if (report.outcome == proto::Outcome::kCommit) {
    op.succeeded.insert(peer);
    if (op.succeeded == op.participants) finish(report.tag, proto::Outcome::kCommit, "", out);
    return out;
  }
  proto::Outcome outcome = report.outcome;
  std::string message = "peer " + peer + " reported: " + report.message;
  if (outcome == proto::Outcome::kProtocol) outcome = proto::Outcome::kPeerLost;
  if (outcome == proto::Outcome::kTimeout) outcome = proto::Outcome::kAborted;
  finish(report.tag, outcome, message, out);
  (void)view;
  return out;
}

std::vector<Stall> Collectives::stalls() const {
  std::vector<Stall> out;
  for (const auto& [tag, op] : ops_) {
    if (op.op_id != 0 || op.announced.empty() || op.announced.size() == op.participants.size()) continue;
    Stall s;
    s.kind = Stall::Kind::kCollective;
    s.tag = tag;
    s.since = op.since;
    for (const auto& [peer, a] : op.announced) s.entered[peer] = a.call;
    for (const auto& p : op.participants) {
      if (!op.announced.count(p)) s.missing.push_back(p);
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::set<std::string> Collectives::running_peers() const {
  std::set<std::string> out;
  for (const auto& [tag, op] : ops_) {
    if (op.op_id != 0) out.insert(op.participants.begin(), op.participants.end());
  }
  return out;
}

size_t Collectives::running() const {
  size_t n = 0;
  for (const auto& [tag, op] : ops_) n += op.op_id != 0 ? 1 : 0;
  return n;
}

Actions Collectives::on_view_changed(const View& view) {
  Actions out;
  std::set<std::string> ring(view.ring.begin(), view.ring.end());
  std::vector<uint32_t> tags;
  for (const auto& [tag, op] : ops_) tags.push_back(tag);
  for (uint32_t tag : tags) {
    Op& op = ops_.at(tag);
    std::vector<std::string> lost;
    for (const auto& p : op.participants) {
      if (!ring.count(p)) lost.push_back(p);
    }
    for (const auto& p : lost) {
      op.participants.erase(p);
      op.announced.erase(p);
      op.succeeded.erase(p);
    }
    if (op.op_id != 0 && view.epoch != op.epoch) {
      std::string who;
      for (const auto& p : lost) who += (who.empty() ? "" : ", ") + p;
      finish(tag, proto::Outcome::kPeerLost,
             lost.empty() ? "the data links were rebuilt during the operation"
                          : "peer(s) " + who + " left the run during the operation",
             out);
      continue;
    }
    if (op.participants.empty()) {
      ops_.erase(tag);
      continue;
    }
    try_start(tag, view, out);
  }
  // A relink for an op aborted by the epoch change itself is not needed: the new epoch
  // already brings new links.
  out.erase(std::remove_if(out.begin(), out.end(), [](const Action& a) { return a.kind == Action::Kind::kRelink; }),
            out.end());
  return out;
}

}  // namespace pcomm::coord
