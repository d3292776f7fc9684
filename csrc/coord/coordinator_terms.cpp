// Coordinator, failover part: re-registration after a coordinator was lost, terms,
// the standby that watches its primary, and fencing (docs/failover.md). The rule for
// when a term forms is the pure decide_term (terms.h); this file carries it out.
//
// Roles: serving (the run's coordinator), gathering (peers of a lost coordinator are
// re-registering; hellos wait), standby (watches `peer_of`; refuses peers). Fencing:
// a coordinator that learns of a newer term (a watcher's StatusRequest, or a peer's
// Rejoin) gives up its peers, which move on to the newer one; peers refuse a Welcome of
// a term older than theirs.
#include <algorithm>
#include <set>

#include "coord/coordinator.h"
#include "coord/state_file.h"
#include "coord/status_client.h"
#include "core/errors.h"
#include "net/address.h"

namespace pcomm::coord {

namespace {
// Hellos held while a term gathers, at most; more are refused (they retry).
constexpr size_t kMaxDeferredHellos = 1024;
}  // namespace

const char* Coordinator::role_name(Role role) {
  switch (role) {
    case Role::kServing: return "serving";
    case Role::kGathering: return "gathering";
    case Role::kStandby: return "standby";
  }
  return "?";
}

std::string Coordinator::run_id() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_.run_id;
}

uint64_t Coordinator::term() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_.term;
}

std::string Coordinator::role() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_.role;
}

void Coordinator::persist() {
  if (options_.state_dir.empty()) return;
  try {
    save_state(options_.state_dir, PersistedState{options_.run, run_id_, std::max(term_, known_term_),
                                                  membership_.epoch(), membership_.ring()});
  } catch (const Error& e) {
    log_.error("could not persist the coordinator state in ", options_.state_dir, ": ", e.what());
  }
}

void Coordinator::on_rejoin(uint64_t conn_id, const proto::Rejoin& rejoin) {
  Conn& conn = conns_.at(conn_id);
  if (rejoin.run != options_.run) {
    conn.link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kRunMismatch),
                                    "run name mismatch: this coordinator serves run '" + options_.run +
                                        "', the peer asked for run '" + rejoin.run + "'");
    return;
  }
  release_stranger(conn);
  conn.link->set_max_payload(proto::kMaxControlPayload);
  auto now = Clock::now();
  const std::string& peer = rejoin.peer_id;
  switch (role_) {
    case Role::kStandby: {
      // Peers that lost the primary are evidence that it is gone: a majority of its ring
      // here within a heartbeat timeout is enough to take over without waiting.
      lost_claims_[peer] = now;
      size_t claims = 0;
      for (const auto& id : watched_ring_) {
        auto it = lost_claims_.find(id);
        claims += it != lost_claims_.end() && now - it->second <= options_.heartbeat_timeout;
      }
      if (watched_ring_.empty() || 2 * claims <= watched_ring_.size()) {
        conn.link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kNotPrimary),
                                        "this coordinator is a standby for " + options_.peer_of +
                                            ", which still answers; try the next address");
        return;
      }
      take_over(std::to_string(claims) + " of the primary's " + std::to_string(watched_ring_.size()) +
                " peers lost it and came here");
      break;
    }
    case Role::kServing: {
      if (rejoin.term > term_) {
        log_.warn("peer ", peer, " is in term ", rejoin.term, ", newer than this coordinator's ", term_,
                  ": giving up this term and gathering a new one");
        reset_run(proto::ErrorCode::kStaleTerm, "this coordinator's term " + std::to_string(term_) +
                                                    " is older than the run's; try the next address");
        role_ = Role::kGathering;
        gather_since_ = now;
        break;
      }
      if (unconfirmed_.count(peer) && membership_.knows(peer) && !conn_of_peer_.count(peer)) {
        // In the ring of this term, but it gave up on the connection its Welcome went to.
        log_.warn("peer ", peer, " re-registered before it heard term ", term_, ": taken back");
        conn.peer_id = peer;
        conn.last_sent = now;
        conn_of_peer_[peer] = conn_id;
        membership_.on_heard(peer, now);
        send_term_welcome(conn, peer);
        resolve_pending_of(peer, rejoin);
        apply(membership_.relink());  // its topology went to the closed connection
        return;
      }
      bool mates_here = membership_.knows(peer);
      for (const auto& id : rejoin.ring) mates_here = mates_here || membership_.knows(id);
      if (mates_here) {
        // Its ring went on in this term without it: it is late, or it was lost meanwhile.
        log_.warn("peer ", peer, " re-registered after term ", term_, " formed without it: refused");
        conn.link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kDropped),
                                        "it re-registered after term " + std::to_string(term_) +
                                            " formed without it");
        return;
      }
      log_.warn("peer ", peer, " of a lost coordinator (term ", rejoin.term, ", epoch ", rejoin.epoch,
                ") re-registers: gathering a new term");
      role_ = Role::kGathering;
      gather_since_ = now;
      break;
    }
    case Role::kGathering:
      break;
  }
  auto old = gathered_.find(peer);
  if (old != gathered_.end() && old->second.conn_id != conn_id) {
    auto c = conns_.find(old->second.conn_id);
    if (c != conns_.end()) {
      c->second.rejoining.clear();
      c->second.link->close("replaced by a newer re-registration");
    }
  }
  conn.rejoining = peer;
  if (gathered_.empty()) first_rejoin_ = now;  // the gathering window runs from here (terms.h)
  gathered_[peer] = Gathered{conn_id, rejoin};
  log_.info("peer ", peer, " re-registered (term ", rejoin.term, ", epoch ", rejoin.epoch, ", ring of ",
            rejoin.ring.size(), ", ", rejoin.pending.size() / 4, " op(s)",
            rejoin.state_pending.empty() ? "" : " and a sync", " awaiting a decision)");
  publish_snapshot();
  // Decided once this round of socket events is handled: a Rejoin read from the backlog
  // of a coordinator that was frozen may come with its connection's end (the peer gave
  // up on it long ago), which try_form_term then sees.
  loop_.post([this] { try_form_term(Clock::now()); });
}

void Coordinator::try_form_term(TimePoint now) {
  if (role_ != Role::kGathering) return;
  // A connection closed in this round still has its close handler queued: not counted.
  for (auto it = gathered_.begin(); it != gathered_.end();) {
    auto c = conns_.find(it->second.conn_id);
    it = c == conns_.end() || c->second.link->closed() ? gathered_.erase(it) : std::next(it);
  }
  if (gathered_.empty()) {
    if (now - gather_since_ >= 3 * options_.gather_window) serve_fresh("nobody re-registered within 3 gathering windows");
    return;
  }
  std::vector<Registration> registered;
  for (const auto& [peer, g] : gathered_) registered.push_back({peer, g.rejoin.term, g.rejoin.epoch, g.rejoin.ring});
  auto decision = decide_term(registered, first_rejoin_, now, options_.gather_window);
  if (decision.form) form_term(decision, now);
}

void Coordinator::form_term(const TermDecision& decision, TimePoint now) {
  const Gathered* newest = nullptr;
  for (const auto& [peer, g] : gathered_) {
    known_term_ = std::max(known_term_, g.rejoin.term);
    if (!newest || std::make_pair(g.rejoin.term, g.rejoin.epoch) > std::make_pair(newest->rejoin.term, newest->rejoin.epoch)) {
      newest = &g;
    }
  }
  term_ = known_term_ = next_term(known_term_, rng_());
  if (!newest->rejoin.run_id.empty()) run_id_ = newest->rejoin.run_id;  // the same incarnation goes on
  role_ = Role::kServing;
  std::vector<proto::RingMember> members;
  for (const auto& id : decision.ring) {
    const Gathered& g = gathered_.at(id);
    Conn& c = conns_.at(g.conn_id);
    c.rejoining.clear();
    c.peer_id = id;
    c.last_sent = now;
    conn_of_peer_[id] = g.conn_id;
    members.push_back({id, g.rejoin.data_address, g.rejoin.observed_address, g.rejoin.nat});
    send_term_welcome(c, id);
  }
  // The last ring's members that did not come back, so survivors log why they are gone
  // (before gathered_, which holds `newest`, is cleared).
  std::vector<proto::Departure> gone;
  for (const auto& id : newest->rejoin.ring) {
    if (std::find(decision.ring.begin(), decision.ring.end(), id) == decision.ring.end()) {
      gone.push_back({id, "did not re-register with the coordinator that took over (" + decision.reason + ")"});
    }
  }
  unconfirmed_ = std::set<std::string>(decision.ring.begin(), decision.ring.end());
  std::string ids;
  for (const auto& id : decision.ring) ids += (ids.empty() ? "" : ", ") + id;
  log_.warn("term ", term_, " formed (", decision.reason, "): ring of ", decision.ring.size(), ": ", ids);
  resolve_pending_ops();  // before the topology, so every pending op is decided first
  gathered_.clear();
  lost_claims_.clear();
  apply(membership_.restore(members, decision.epoch, now, gone));
  persist();
  take_deferred_hellos();
  publish_snapshot();
}

void Coordinator::send_term_welcome(Conn& conn, const std::string& peer) {
  proto::Welcome w;
  w.peer_id = peer;
  w.accepted = true;
  w.heartbeat_timeout_ms = static_cast<uint32_t>(to_millis(options_.heartbeat_timeout));
  w.observed_address = conn.link->remote();
  w.run_id = run_id_;
  w.term = term_;
  conn.link->send(proto::frame_of(w));
}

void Coordinator::resolve_pending_ops() {
  // An op or a sync commits on a peer only after every participant reported success, so
  // when anyone saw it committed, everyone else awaits its decision: commit it for them.
  // When nobody did, nobody committed it: abort it everywhere (the callers retry).
  auto pairs = [](const std::vector<uint64_t>& flat) {
    std::set<std::pair<uint64_t, uint64_t>> out;
    for (size_t i = 0; i + 1 < flat.size(); i += 2) out.insert({flat[i], flat[i + 1]});
    return out;
  };
  formation_commits_.clear();
  formation_syncs_.clear();
  for (const auto& [peer, g] : gathered_) {
    formation_commits_.merge(pairs(g.rejoin.committed));
    formation_syncs_.merge(pairs(g.rejoin.state_committed));
  }
  for (const auto& [peer, g] : gathered_) resolve_pending_of(peer, g.rejoin);
  log_shared_state();
}

void Coordinator::resolve_pending_of(const std::string& peer, const proto::Rejoin& rejoin) {
  const auto& q = rejoin.pending;
  for (size_t i = 0; i + 3 < q.size(); i += 4) {
    bool commit = formation_commits_.count({q[i + 2], q[i + 3]}) != 0;
    proto::CollOutcome outcome{static_cast<uint32_t>(q[i]), q[i + 1], q[i + 3],
                               commit ? proto::Outcome::kCommit : proto::Outcome::kAborted,
                               commit ? "" : "the coordinator was lost before this all-reduce was decided (no "
                                             "peer saw it committed): retry it"};
    log_.info("op ", q[i + 3], " of term ", q[i + 2], " (tag ", q[i], ") of peer ", peer, ": ",
              commit ? "committed" : "aborted", " by the new term");
    send_to_peer(peer, proto::frame_of(proto::MsgType::kCollResult, outcome.encode()));
  }
  const auto& s = rejoin.state_pending;
  if (s.size() == 3) {
    bool commit = formation_syncs_.count({s[1], s[2]}) != 0;
    proto::StateOutcome outcome{s[0], s[2], commit ? proto::Outcome::kCommit : proto::Outcome::kAborted,
                                commit ? "" : "the coordinator was lost before this shared-state sync was decided "
                                              "(no peer saw it committed): retry it"};
    log_.info("sync ", s[2], " of term ", s[1], " of peer ", peer, ": ", commit ? "committed" : "aborted",
              " by the new term");
    send_to_peer(peer, proto::frame_of(proto::StateMsg::kStateResult, outcome.encode()));
  }
}

void Coordinator::log_shared_state() const {
  // What the peers hold after the decisions above (a committed pending sync moves its
  // peer to that sync's revision, which the peers that saw the commit report).
  std::map<std::pair<uint64_t, uint64_t>, std::vector<std::string>> holders;
  std::map<std::pair<uint64_t, uint64_t>, std::pair<uint64_t, uint64_t>> content_of;  // (term, sync) -> content
  for (const auto& [peer, g] : gathered_) {
    if (!g.rejoin.state_committed.empty() && g.rejoin.state_pending.empty()) {
      const auto& c = g.rejoin.state_committed;
      content_of[{c[c.size() - 2], c.back()}] = {g.rejoin.state_revision, g.rejoin.state_hash};
    }
  }
  for (const auto& [peer, g] : gathered_) {
    std::pair<uint64_t, uint64_t> content{g.rejoin.state_revision, g.rejoin.state_hash};
    const auto& s = g.rejoin.state_pending;
    if (s.size() == 3 && content_of.count({s[1], s[2]})) content = content_of.at({s[1], s[2]});
    holders[content].push_back(peer);
  }
  if (holders.size() <= 1) {
    if (!holders.empty() && holders.begin()->first.first) {
      log_.info("shared state: revision ", holders.begin()->first.first, " on all ", gathered_.size(), " peer(s)");
    }
    return;
  }
  std::string text;
  for (const auto& [content, peers] : holders) {
    std::string ids;
    for (const auto& id : peers) ids += (ids.empty() ? "" : ", ") + id;
    text += (text.empty() ? "" : "; ") + std::string("revision ") + std::to_string(content.first) + " on " + ids;
  }
  log_.info("shared state differs among the re-registered peers (the next sync_shared_state settles it): ", text);
}

void Coordinator::serve_fresh(const std::string& why) {
  role_ = Role::kServing;
  term_ = known_term_ = next_term(known_term_, rng_());
  log_.warn("serving term ", term_, " with an empty ring: ", why);
  persist();
  take_deferred_hellos();
  publish_snapshot();
}

void Coordinator::take_deferred_hellos() {
  auto hellos = std::move(deferred_hellos_);
  deferred_hellos_.clear();
  for (auto& [conn_id, hello] : hellos) {
    auto it = conns_.find(conn_id);
    if (it == conns_.end()) continue;
    it->second.deferred = false;
    on_hello(conn_id, hello);
  }
}

void Coordinator::defer_hello(uint64_t conn_id, const proto::Hello& hello) {
  Conn& conn = conns_.at(conn_id);
  if (role_ == Role::kStandby) {
    conn.link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kNotPrimary),
                                    "this coordinator is a standby for " + watched() + "; connect there");
    return;
  }
  if (deferred_hellos_.size() >= kMaxDeferredHellos) {
    conn.link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kNotPrimary),
                                    "this coordinator is forming a new term; try again in a moment");
    return;
  }
  release_stranger(conn);
  conn.deferred = true;
  deferred_hellos_.emplace_back(conn_id, hello);
}

void Coordinator::reset_run(proto::ErrorCode code, const std::string& why) {
  std::vector<std::shared_ptr<net::FramedConnection>> links;
  for (auto& [id, conn] : conns_) {
    if (conn.peer_id.empty() && conn.rejoining.empty() && !conn.deferred) continue;
    conn.peer_id.clear();
    conn.rejoining.clear();
    conn.deferred = false;
    links.push_back(conn.link);
  }
  for (auto& link : links) link->send_error_and_close(static_cast<uint16_t>(code), why);
  for (const auto& peer : membership_.ring()) reports_.forget(peer);
  conn_of_peer_.clear();
  gathered_.clear();
  deferred_hellos_.clear();
  membership_ = Membership(options_.heartbeat_timeout);
  collectives_ = Collectives();
  state_sync_ = StateSync();
  last_view_ = View{};
  logged_ring_.clear();
  notified_.clear();
  last_not_idle_.clear();
  unconfirmed_.clear();
}

void Coordinator::on_status_request(uint64_t conn_id, const proto::StatusRequest& request) {
  Conn& conn = conns_.at(conn_id);
  if (request.term > 0 && !request.from.empty()) {
    // A watching coordinator sends its term only while it serves peers or gathers
    // (watch_loop). Term numbers differ in random low bits (terms.h); should two still be
    // equal, the one with no peers yields.
    bool newer = (role_ == Role::kServing && request.term > term_) ||
                 (role_ == Role::kServing && request.term == term_ && membership_.ring().empty()) ||
                 (role_ == Role::kGathering && request.term > known_term_);
    if (newer) {
      auto from = net::parse_host_port(request.from, false);
      if (from.host == "0.0.0.0") from.host = net::parse_host_port(conn.link->remote(), false).host;
      step_down(request.term, from.str());
    }
  }
  conn.link->send(proto::frame_of_fields(status()));
}

void Coordinator::step_down(uint64_t newer_term, const std::string& newer) {
  uint64_t mine = std::max(term_, known_term_);
  log_.warn("the coordinator at ", newer, " serves term ", newer_term,
            newer_term > mine ? ", newer than this one's " + std::to_string(mine)
                              : std::string(" with peers; this one serves none"),
            ": stepping down to be its standby");
  known_term_ = std::max(known_term_, newer_term);
  reset_run(proto::ErrorCode::kStaleTerm, "this coordinator was replaced by the one at " + newer + " (term " +
                                              std::to_string(newer_term) + "); try the next address");
  role_ = Role::kStandby;
  term_ = 0;
  {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    watched_ = newer;
  }
  watched_ok_ = Clock::now();
  watched_ring_.clear();
  if (!watcher_.joinable()) watcher_ = std::thread([this] { watch_loop(); });
  persist();
  publish_snapshot();
}

void Coordinator::take_over(const std::string& why) {
  log_.warn("taking over from ", watched(), ": ", why);
  role_ = Role::kGathering;
  gather_since_ = Clock::now();
  publish_snapshot();
}

std::string Coordinator::watched() const {
  std::lock_guard<std::mutex> lock(watch_mutex_);
  return watched_;
}

void Coordinator::watch_loop() {
  Duration timeout = std::max<Duration>(heartbeat_interval_, Millis(500));
  std::unique_lock<std::mutex> lock(watch_mutex_);
  while (!watch_stop_) {
    std::string target = watched_;
    lock.unlock();
    proto::StatusRequest request;
    {
      // The term is a claim to the run that the watched coordinator yields to when it is
      // newer; serving nobody, this one claims nothing (term 0 asks without a claim).
      auto now = snapshot();
      request.term = now.role == "serving" && now.ring.empty() ? 0 : now.term;
    }
    request.from = address_;
    bool ok = false;
    proto::StatusReply reply;
    std::string error;
    try {
      reply = query_status(target, options_.secret, timeout, request);
      ok = reply.run == options_.run;
      if (!ok) error = "it serves run '" + reply.run + "'";
    } catch (const Error& e) {
      error = e.what();
    }
    loop_.post([this, ok, reply, error] { on_watch_result(ok, reply, error); });
    lock.lock();
    watch_cv_.wait_for(lock, heartbeat_interval_, [this] { return watch_stop_; });
  }
}

void Coordinator::on_watch_result(bool ok, const proto::StatusReply& reply, const std::string& error) {
  auto now = Clock::now();
  if (ok && reply.role != "standby") {
    if (role_ == Role::kStandby) {
      watched_ok_ = now;
      watched_ring_ = reply.peers;
      known_term_ = std::max(known_term_, reply.term);
    } else if (reply.role == "serving") {
      // A newer term wins, unless it serves nobody while this one serves peers (a frozen
      // coordinator that woke up and found nobody); and a coordinator that serves nobody
      // yields to one that serves peers, so new peers cannot start a second run here.
      bool empty = membership_.ring().empty();
      bool newer = reply.term > std::max(term_, known_term_) && (!reply.peers.empty() || empty);
      if (newer || (empty && !reply.peers.empty())) step_down(reply.term, watched());
    }
    return;
  }
  if (role_ == Role::kStandby && now - watched_ok_ > options_.heartbeat_timeout) {
    take_over(ok ? "it is a standby itself" : "it has not answered for " + format_seconds(now - watched_ok_) + " (" +
                                                 error + ")");
  }
}

}  // namespace pcomm::coord
