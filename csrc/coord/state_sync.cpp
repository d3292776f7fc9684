// The coordinator's shared-state decisions; see state_sync.h.
#include "coord/state_sync.h"

#include <algorithm>
#include <tuple>

#include "core/dtype.h"
#include "core/errors.h"

namespace pcomm::coord {

namespace {

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::string dtype_text(uint8_t code) {
  try {
    return dtype_name(dtype_from_code(code));
  } catch (const Error&) {
    return "dtype code " + std::to_string(code);
  }
}

using Content = std::pair<uint64_t, std::vector<uint64_t>>;  // revision, hashes

Content content_of(const proto::StateVote& v) {
  Content c{v.revision, {}};
  for (const auto& t : v.tensors) c.second.push_back(t.hash);
  return c;
}

}  // namespace

std::string layout_difference(const std::string& peer_a, const proto::StateVote& a, const std::string& peer_b,
                              const proto::StateVote& b) {
  std::string prefix = "shared state layouts differ: ";
  for (size_t i = 0; i < std::max(a.tensors.size(), b.tensors.size()); ++i) {
    if (i >= a.tensors.size()) return prefix + "peer " + peer_b + " has tensor '" + b.tensors[i].name + "', peer " + peer_a + " does not";
    if (i >= b.tensors.size()) return prefix + "peer " + peer_a + " has tensor '" + a.tensors[i].name + "', peer " + peer_b + " does not";
    const auto& x = a.tensors[i];
    const auto& y = b.tensors[i];
    if (x.name != y.name) {
      return prefix + "tensor " + std::to_string(i) + " is '" + x.name + "' on peer " + peer_a + " and '" + y.name +
             "' on peer " + peer_b;
    }
    if (x.dtype != y.dtype) {
      return prefix + "tensor '" + x.name + "' is " + dtype_text(x.dtype) + " on peer " + peer_a + " and " +
             dtype_text(y.dtype) + " on peer " + peer_b;
    }
    if (x.shape != y.shape || x.nbytes != y.nbytes) {
      return prefix + "tensor '" + x.name + "' has shape " + shape_text(x.shape) + " on peer " + peer_a + " and " +
             shape_text(y.shape) + " on peer " + peer_b;
    }
  }
  return "";
}

size_t choose_content(const std::vector<std::pair<std::string, proto::StateVote>>& votes) {
  std::map<Content, size_t> popularity;
  std::map<Content, size_t> offered;  // content -> how many peers offer it
  std::map<Content, size_t> holder;
  std::set<Content> authoritative;
  for (size_t i = 0; i < votes.size(); ++i) {
    const auto& v = votes[i].second;
    if (v.strategy == proto::SyncStrategy::kReceiveOnly) continue;
    Content c = content_of(v);
    ++popularity[c];
    holder.emplace(c, i);
    if (v.strategy == proto::SyncStrategy::kSendOnly) authoritative.insert(c);
    if (v.strategy == proto::SyncStrategy::kOffer) ++offered[c];
  }
  if (popularity.empty()) throw InvalidArgument("no peer offers state: every participant synced with receive_only");
  if (authoritative.size() > 1) {
    throw InvalidArgument("send_only peers hold different content (revisions " +
                          std::to_string(authoritative.begin()->first) + " and " +
                          std::to_string(std::next(authoritative.begin())->first) +
                          "); at most one content may be authoritative");
  }
  if (authoritative.size() == 1) return holder.at(*authoritative.begin());
  const Content* best = nullptr;
  if (!offered.empty()) {
    for (const auto& [c, n] : offered) {
      // A higher revision, then more offers, then the smaller hash list (map order).
      if (!best || c.first > best->first || (c.first == best->first && n > offered.at(*best))) best = &c;
    }
    // An offer never rolls back a run that is further ahead (a peer restarted from an
    // old checkpoint into a live run): then it is one vote among the others.
    uint64_t newest = popularity.rbegin()->first.first;  // Content orders by revision first
    if (best->first >= newest) return holder.at(*best);
    best = nullptr;
  }
  for (const auto& [c, n] : popularity) {
    if (!best) {
      best = &c;
      continue;
    }
    size_t best_n = popularity.at(*best);
    // More votes, then a higher revision, then the smaller hash list (map order).
    if (n > best_n || (n == best_n && c.first > best->first)) best = &c;
  }
  return holder.at(*best);
}

Actions StateSync::on_vote(const std::string& peer, const proto::StateVote& vote, const View& view, TimePoint now) {
  Actions out;
  auto reject = [&](const std::string& why) {
    out.push_back(refusal(Action::Kind::kStateResult, peer, vote.call, why));
  };
  if (!view.has(peer)) {
    reject("this peer is not an accepted member of the run");
    return out;
  }
  if (!active_) {
    active_ = true;
    sync_id_ = 0;
    participants_ = std::set<std::string>(view.ring.begin(), view.ring.end());
    since_ = now;
    votes_.clear();
    succeeded_.clear();
  }
  if (sync_id_ != 0 || votes_.count(peer) || !participants_.count(peer)) {
    reject("a shared-state sync is already in progress for this peer");
    return out;
  }
  votes_[peer] = vote;
  try_plan(view, out);
  return out;
}

std::optional<Stall> StateSync::stall() const {
  if (!active_ || sync_id_ != 0 || votes_.empty() || votes_.size() == participants_.size()) return std::nullopt;
  Stall s;
  s.kind = Stall::Kind::kStateSync;
  s.since = since_;
  for (const auto& [peer, v] : votes_) s.entered[peer] = v.call;
  for (const auto& p : participants_) {
    if (!votes_.count(p)) s.missing.push_back(p);
  }
  return s;
}

void StateSync::try_plan(const View& view, Actions& out) {
  if (!active_ || sync_id_ != 0 || participants_.empty() || votes_.size() != participants_.size()) return;
  const auto& first = *votes_.begin();
  for (const auto& [peer, v] : votes_) {
    std::string diff = layout_difference(first.first, first.second, peer, v);
    if (!diff.empty()) return finish(proto::Outcome::kInvalid, diff, out);
  }
  std::vector<std::pair<std::string, proto::StateVote>> ordered(votes_.begin(), votes_.end());
  size_t chosen;
  try {
    chosen = choose_content(ordered);
  } catch (const InvalidArgument& e) {
    return finish(proto::Outcome::kInvalid, e.what(), out);
  }
  Content target = content_of(ordered[chosen].second);
  std::vector<proto::RingMember> sources;
  for (const auto& [peer, v] : ordered) {
    if (v.strategy == proto::SyncStrategy::kReceiveOnly || content_of(v) != target) continue;
    auto addr = view.addresses.find(peer);
    sources.push_back(proto::RingMember{peer, addr == view.addresses.end() ? "" : addr->second, "", 0});
  }
  sync_id_ = next_sync_id_++;
  for (const auto& [peer, v] : ordered) {
    proto::StatePlan plan;
    plan.call = v.call;
    plan.sync_id = sync_id_;
    plan.revision = target.first;
    plan.hashes = target.second;
    for (size_t i = 0; i < v.tensors.size(); ++i) {
      if (v.tensors[i].hash != target.second[i]) plan.fetch.push_back(static_cast<uint32_t>(i));
    }
    for (const auto& s : sources) {
      if (s.peer_id != peer) plan.sources.push_back(s);
    }
    Action a = make_action(Action::Kind::kStatePlan, peer);
    a.state_plan = std::move(plan);
    out.push_back(a);
  }
}

void StateSync::finish(proto::Outcome outcome, const std::string& message, Actions& out) {
  for (const auto& [peer, v] : votes_) {
    Action a = make_action(Action::Kind::kStateResult, peer);
    a.seq = v.call;
    a.op_id = sync_id_;
    a.outcome = outcome;
    a.reason = message;
    out.push_back(a);
  }
  active_ = false;
  sync_id_ = 0;
  participants_.clear();
  votes_.clear();
  succeeded_.clear();
}

Actions StateSync::on_report(const std::string& peer, const proto::StateOutcome& report, const View& view) {
  Actions out;
  auto vote = votes_.find(peer);
  if (!active_ || vote == votes_.end() || vote->second.call != report.call) return out;  // stale
  if (report.sync_id == 0 && sync_id_ == 0) {
    // The peer gave up before the plan came.
    finish(proto::Outcome::kAborted, "peer " + peer + " gave up on the sync: " + report.message, out);
    return out;
  }
  if (report.sync_id != sync_id_) return out;
  if (report.outcome != proto::Outcome::kCommit) {
    proto::Outcome outcome = report.outcome == proto::Outcome::kTimeout ? proto::Outcome::kAborted : report.outcome;
    if (outcome == proto::Outcome::kProtocol) outcome = proto::Outcome::kPeerLost;
    finish(outcome, "peer " + peer + " reported: " + report.message, out);
    return out;
  }
  succeeded_.insert(peer);
  if (succeeded_ == participants_) finish(proto::Outcome::kCommit, "", out);
  (void)view;
  return out;
}

Actions StateSync::on_view_changed(const View& view) {
  Actions out;
  if (!active_) return out;
  std::set<std::string> ring(view.ring.begin(), view.ring.end());
  for (auto it = participants_.begin(); it != participants_.end();) {
    if (ring.count(*it)) {
      ++it;
      continue;
    }
    votes_.erase(*it);
    succeeded_.erase(*it);
    it = participants_.erase(it);
  }
  if (participants_.empty()) {
    active_ = false;
    sync_id_ = 0;
    return out;
  }
  if (sync_id_ == 0) {
    try_plan(view, out);
  } else if (succeeded_ == participants_) {
    // A lost source is not a failure: receivers fetch from the others (or report one).
    finish(proto::Outcome::kCommit, "", out);
  }
  return out;
}

}  // namespace pcomm::coord
