// The coordinator's membership decisions; see membership.h for the rules.
#include "coord/membership.h"

#include <algorithm>

namespace pcomm::coord {


std::vector<std::string> ring_order(const std::vector<std::string>& current,
                                    const std::vector<std::string>& admitted,
                                    const std::map<std::string, PeerRecord>& peers) {
  std::vector<std::string> ring = current;
  std::vector<std::string> newcomers = admitted;
  auto seq = [&](const std::string& id) {
    auto it = peers.find(id);
    return it == peers.end() ? UINT64_MAX : it->second.join_seq;
  };
  std::sort(newcomers.begin(), newcomers.end(),
            [&](const std::string& a, const std::string& b) { return seq(a) < seq(b); });
  for (auto& id : newcomers) {
    if (std::find(ring.begin(), ring.end(), id) == ring.end()) ring.push_back(id);
  }
  return ring;
}

std::vector<std::string> expired_peers(const std::map<std::string, PeerRecord>& peers,
                                       TimePoint now, Duration timeout) {
  std::vector<std::string> out;
  for (const auto& [id, rec] : peers) {
    if (now - rec.last_heard > timeout) out.push_back(id);
  }
  return out;
}

std::string peer_to_drop_on_link_failure(const std::string& reporter, const std::string& neighbour,
                                         const std::map<std::string, PeerRecord>& peers) {
  auto r = peers.find(reporter);
  auto n = peers.find(neighbour);
  if (n == peers.end()) return neighbour;
  if (r == peers.end()) return reporter;
  return r->second.join_seq > n->second.join_seq ? reporter : neighbour;
}

uint32_t Membership::pending_count() const {
  uint32_t n = 0;
  for (const auto& [id, rec] : peers_) n += rec.accepted ? 0 : 1;
  return n;
}

proto::RingMember Membership::member(const std::string& peer) const {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return {};
  return proto::RingMember{peer, it->second.data_address, it->second.observed_address, it->second.nat};
}

std::string Membership::data_address(const std::string& peer) const {
  auto it = peers_.find(peer);
  return it == peers_.end() ? "" : it->second.data_address;
}

bool Membership::is_accepted(const std::string& peer) const {
  auto it = peers_.find(peer);
  return it != peers_.end() && it->second.accepted;
}

std::vector<std::string> Membership::pending_in_join_order() const {
  std::vector<std::string> pending;
  for (const auto& [id, rec] : peers_) {
    if (!rec.accepted) pending.push_back(id);
  }
  return ring_order({}, pending, peers_);
}

Actions Membership::on_hello(const std::string& peer, const std::string& data_address, TimePoint now,
                             const std::string& observed_address, uint8_t nat) {
  Actions out;
  peers_[peer] = PeerRecord{data_address, observed_address.empty() ? data_address : observed_address, nat,
                            next_join_seq_++, false, now};
  if (ring_.empty()) {
    out.push_back(make_action(Action::Kind::kWelcome, peer, true));
    new_epoch(ring_order({}, pending_in_join_order(), peers_), out);
  } else {
    out.push_back(make_action(Action::Kind::kWelcome, peer, false));
    Action changed = make_action(Action::Kind::kPendingChanged);
    changed.pending = pending_count();
    out.push_back(changed);
  }
  return out;
}

void Membership::on_heard(const std::string& peer, TimePoint now) {
  auto it = peers_.find(peer);
  if (it != peers_.end()) it->second.last_heard = now;
}

Actions Membership::on_update_topology(const std::string& peer, uint64_t seq, TimePoint now) {
  Actions out;
  on_heard(peer, now);
  if (!is_accepted(peer)) return out;  // the server refuses this before it gets here
  if (waiters_.empty()) barrier_since_ = now;
  waiters_[peer] = seq;
  evaluate(out);
  return out;
}

void Membership::on_cancel_update_topology(const std::string& peer, uint64_t seq) {
  auto it = waiters_.find(peer);
  if (it != waiters_.end() && it->second == seq) waiters_.erase(it);
}

Actions Membership::on_links_ready(const std::string& peer, uint64_t epoch, TimePoint now) {
  Actions out;
  on_heard(peer, now);
  if (epoch != epoch_ || epoch_ready_) return out;  // stale report of an older epoch
  if (std::find(ring_.begin(), ring_.end(), peer) == ring_.end()) return out;
  links_ready_.insert(peer);
  if (links_ready_.size() == ring_.size()) {
    epoch_ready_ = true;
    for (const auto& id : ring_) {
      Action ready = make_action(Action::Kind::kEpochReady, id);
      ready.epoch = epoch_;
      out.push_back(ready);
    }
    evaluate(out);
  }
  return out;
}

Actions Membership::on_links_failed(const std::string& peer, uint64_t epoch,
                                    const std::string& neighbour, TimePoint now) {
  Actions out;
  on_heard(peer, now);
  if (epoch != epoch_ || epoch_ready_) return out;
  std::string victim = peer_to_drop_on_link_failure(peer, neighbour, peers_);
  if (!knows(victim)) return out;
  Action drop = make_action(Action::Kind::kDrop, victim);
  drop.reason = "dropped: peers " + peer + " and " + neighbour + " could not open a data link in epoch " +
                std::to_string(epoch) + "; the later joiner leaves";
  out.push_back(drop);
  remove(victim, out, drop.reason);
  return out;
}

Actions Membership::on_lost(const std::string& peer, TimePoint, const std::string& reason) {
  Actions out;
  if (knows(peer)) remove(peer, out, reason);
  return out;
}

Actions Membership::on_tick(TimePoint now) {
  Actions out;
  for (const auto& id : expired_peers(peers_, now, heartbeat_timeout_)) {
    if (!knows(id)) continue;
    Action drop = make_action(Action::Kind::kDrop, id);
    drop.reason = "dropped: no heartbeat for more than " +
                  std::to_string(to_millis(heartbeat_timeout_)) + " ms";
    out.push_back(drop);
    remove(id, out, drop.reason);
  }
  return out;
}

Actions Membership::set_collectives_busy(bool busy) {
  Actions out;
  if (busy == collectives_busy_) return out;
  collectives_busy_ = busy;
  if (!busy) evaluate(out);
  return out;
}

std::optional<Stall> Membership::stall() const {
  if (waiters_.empty()) return std::nullopt;
  Stall s;
  s.kind = Stall::Kind::kTopology;
  s.since = barrier_since_;
  s.entered = waiters_;
  for (const auto& id : ring_) {
    if (!waiters_.count(id)) s.missing.push_back(id);
  }
  if (s.missing.empty()) return std::nullopt;  // everyone is in: it waits for links or collectives
  return s;
}

std::vector<std::string> Membership::releasing() const {
  std::vector<std::string> out;
  for (const auto& [id, seq] : releasing_) out.push_back(id);
  return out;
}

Actions Membership::drop(const std::map<std::string, std::string>& reasons) {
  Actions out;
  std::vector<std::string> survivors;
  for (const auto& id : ring_) {
    if (!reasons.count(id)) survivors.push_back(id);
  }
  for (const auto& [peer, reason] : reasons) {
    if (!peers_.count(peer)) continue;
    out.push_back(make_action(Action::Kind::kDrop, peer));
    out.back().reason = "dropped: it " + reason;
    if (is_accepted(peer)) departed_.push_back({peer, out.back().reason});
    peers_.erase(peer);
    waiters_.erase(peer);
    releasing_.erase(peer);
  }
  if (survivors.size() == ring_.size()) {
    evaluate(out);
    return out;
  }
  if (survivors.empty()) survivors = pending_in_join_order();
  if (survivors.empty()) {
    ring_.clear();
    departed_.clear();
    epoch_ready_ = false;
    links_ready_.clear();
    return out;
  }
  new_epoch(std::move(survivors), out);
  return out;
}

Actions Membership::restore(const std::vector<proto::RingMember>& ring, uint64_t epoch, TimePoint now,
                            const std::vector<proto::Departure>& gone) {
  Actions out;
  departed_.insert(departed_.end(), gone.begin(), gone.end());
  std::vector<std::string> ids;
  for (const auto& m : ring) {
    peers_[m.peer_id] = PeerRecord{m.data_address, m.observed_address.empty() ? m.data_address : m.observed_address,
                                   m.nat, next_join_seq_++, true, now};
    ids.push_back(m.peer_id);
  }
  for (const auto& id : ring_) {  // peers that joined this coordinator before the others came back
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  waiters_.clear();
  releasing_.clear();
  epoch_ = std::max(epoch, epoch_ + 1) - 1;  // new_epoch() counts up to it
  new_epoch(std::move(ids), out);
  return out;
}

Actions Membership::relink() {
  Actions out;
  if (!ring_.empty()) new_epoch(ring_, out);
  return out;
}

void Membership::remove(const std::string& peer, Actions& out, const std::string& reason) {
  bool was_accepted = is_accepted(peer);
  if (was_accepted) departed_.push_back({peer, reason});
  peers_.erase(peer);
  waiters_.erase(peer);
  releasing_.erase(peer);
  if (!was_accepted) {
    Action changed = make_action(Action::Kind::kPendingChanged);
    changed.pending = pending_count();
    out.push_back(changed);
    return;
  }
  std::vector<std::string> survivors;
  for (const auto& id : ring_) {
    if (id != peer) survivors.push_back(id);
  }
  if (survivors.empty()) survivors = pending_in_join_order();  // nobody left to admit them
  if (survivors.empty()) {
    ring_.clear();
    departed_.clear();
    epoch_ready_ = false;
    links_ready_.clear();
    return;
  }
  new_epoch(std::move(survivors), out);
}

void Membership::new_epoch(std::vector<std::string> ring, Actions& out) {
  ++epoch_;
  ring_ = std::move(ring);
  epoch_ready_ = false;
  links_ready_.clear();
  proto::Topology topology;
  topology.epoch = epoch_;
  topology.gone = std::move(departed_);
  departed_.clear();
  for (const auto& id : ring_) {
    peers_[id].accepted = true;
    topology.ring.push_back(member(id));
  }
  for (const auto& id : ring_) {
    Action a = make_action(Action::Kind::kTopology, id);
    a.topology = topology;
    out.push_back(a);
  }
  Action changed = make_action(Action::Kind::kPendingChanged);
  changed.pending = pending_count();
  out.push_back(changed);
}

void Membership::evaluate(Actions& out) {
  if (!epoch_ready_) return;
  auto release = [&](std::map<std::string, uint64_t>& who) {
    for (const auto& [id, seq] : who) {
      Action done = make_action(Action::Kind::kTopologyDone, id);
      done.seq = seq;
      done.epoch = epoch_;
      out.push_back(done);
    }
    who.clear();
  };
  release(releasing_);
  bool everyone_in = !ring_.empty() && std::all_of(ring_.begin(), ring_.end(), [&](const std::string& id) {
    return waiters_.count(id) != 0;
  });
  if (!everyone_in) return;
  auto pending = pending_in_join_order();
  if (pending.empty()) {
    release(waiters_);
    return;
  }
  if (collectives_busy_) return;  // admit once the collectives in flight are done
  releasing_ = std::move(waiters_);
  waiters_.clear();
  new_epoch(ring_order(ring_, pending, peers_), out);
}

}  // namespace pcomm::coord
