// Communicator, failover part: what a peer does when it loses its coordinator
// (docs/failover.md). An accepted peer keeps its peer id, data links, shared state and
// keys, and a reconnect thread looks for a coordinator for coordinator_grace: the same
// address first (a restarted coordinator), then the other addresses it was given, then
// the run's newest record in the DHT. To each it sends Rejoin; a coordinator of the run
// answers with a Welcome of a new term (coord/coordinator_terms.cpp). Meanwhile:
//  - calls in progress end with AbortedError (input intact), except all-reduces and
//    shared-state syncs that finished their part and await the decision: the new term
//    decides them (commit if any peer saw the commit), so every peer still agrees on
//    every outcome;
//  - new calls wait, within their own deadline, until the peer is active again;
//  - a Welcome of a term older than the one this peer follows is refused (fencing).
// CoordinatorLostError is raised only when the grace period ends without a coordinator.
#include <algorithm>

#include "core/errors.h"
#include "net/address.h"
#include "net/tcp_link.h"
#include "net/tls_link.h"
#include "peer/communicator.h"
#include "proto/term_messages.h"

namespace pcomm::peer {

namespace {
// One attempt's connection and handshake, at most; and the pause between rounds.
constexpr std::chrono::seconds kAttemptConnect{2};
constexpr Millis kRoundPause{200};
}  // namespace

uint64_t Communicator::term() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return term_;
}

std::string Communicator::coordinator() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return coordinator_address_.empty() ? options_.coordinator : coordinator_address_;
}

std::vector<std::string> Communicator::coordinator_addresses() const {
  std::vector<std::string> out{coordinator()};
  for (const auto& a : options_.more_coordinators) {
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  if (std::find(out.begin(), out.end(), options_.coordinator) == out.end()) out.push_back(options_.coordinator);
  return out;
}

void Communicator::install_coordinator(std::shared_ptr<net::Link> link, std::vector<uint8_t> first) {
  ++session_;
  if (coord_) coord_->close("replaced");
  welcomed_ = false;
  coord_ = net::FramedConnection::create(loop_, std::move(link));
  auto conn = coord_;
  coord_->start([this](uint16_t t, const uint8_t* p, size_t n) { on_coordinator_frame(t, p, n); },
                [this, conn](const std::string& reason) {
                  if (conn == coord_) on_coordinator_closed(reason);
                });
  last_heard_ = Clock::now();
  coord_->send(std::move(first));
  uint64_t session = session_;
  if (heartbeat_timeout_ > Duration::zero()) loop_.run_after(Millis(25), [this, session] { heartbeat_tick(session); });
}

void Communicator::drop_coordinator_link(const char* why) {
  ++session_;  // its timers stop
  if (auto conn = std::exchange(coord_, nullptr)) conn->close(why);
  welcomed_ = false;
}

void Communicator::lose_coordinator(const std::string& reason) {
  drop_coordinator_link("coordinator lost");
  std::string where = coordinator();
  bool start = false;
  std::map<uint32_t, std::shared_ptr<CollectiveOp>> ops;
  std::shared_ptr<StateSession> session;
  std::string message;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ == State::kReconnecting) {  // this attempt ended; the reconnect thread moves on
      attempt_ = Attempt::kEnded;
      attempt_error_ = reason;
      cv_.notify_all();
      return;
    }
    if (state_ == State::kActive && options_.coordinator_grace > Duration::zero()) {
      state_ = State::kReconnecting;
      lost_since_ = Clock::now();
      lost_reason_ = reason;
      ++losses_;
      attempt_ = Attempt::kNone;
      start = true;
      ops = ops_;
      session = state_session_;
      message = "the coordinator at " + where + " was lost (" + reason + "); this peer is reconnecting (up to " +
                format_seconds(options_.coordinator_grace) + ", keeping its id and links): call again";
    }
  }
  if (!start) {
    fail(ErrorKind::kCoordinatorLost, "lost the coordinator at " + where + ": " + reason);
    teardown_links();
    return;
  }
  log_.warn("lost the coordinator at ", where, " (", reason, "): reconnecting for up to ",
            format_seconds(options_.coordinator_grace));
  teardown_links();
  cv_.notify_all();
  for (auto& [tag, op] : ops) {
    if (!op->awaiting_decision()) op->decide(ErrorKind::kAborted, "all_reduce aborted: " + message);
  }
  if (session && !session->awaiting_decision()) session->fail(ErrorKind::kAborted, "sync_shared_state aborted: " + message);
  if (reconnect_thread_.joinable()) reconnect_thread_.join();  // the last one ended as the peer became active
  reconnect_thread_ = std::thread([this] { reconnect_loop(); });
}

proto::Rejoin Communicator::rejoin_message() const {
  proto::Rejoin r;
  r.run = options_.run;
  r.run_id = run_id_;
  r.peer_id = peer_id_;
  r.term = term_;
  r.epoch = epoch_;
  r.ring = ring_;
  r.data_address = data_address_;
  r.observed_address = self_member_.observed_address;
  r.nat = self_member_.nat;
  for (const auto& [tag, op] : ops_) {
    if (!op->awaiting_decision() || r.pending.size() / 4 >= proto::kMaxRejoinOps) continue;
    r.pending.insert(r.pending.end(), {tag, op->request().call, term_, op->op_id()});
  }
  for (const auto& [term, op_id] : committed_) r.committed.insert(r.committed.end(), {term, op_id});
  if (state_session_ && state_session_->awaiting_decision()) {
    r.state_pending = {state_session_->call(), term_, state_session_->sync_id()};
  }
  for (const auto& [term, sync_id] : state_committed_) r.state_committed.insert(r.state_committed.end(), {term, sync_id});
  r.state_revision = state_revision_;
  r.state_hash = state_hash_;
  return r;
}

void Communicator::reconnect_loop() {
  TimePoint until;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    until = lost_since_ + options_.coordinator_grace;
  }
  std::vector<std::string> tried;
  std::string last_error;
  for (;;) {
    auto addresses = coordinator_addresses();
    if (options_.find_coordinator) {
      std::string found;
      try {
        found = options_.find_coordinator();
      } catch (const std::exception& e) {
        last_error = std::string("the DHT lookup failed: ") + e.what();
      }
      if (!found.empty() && std::find(addresses.begin(), addresses.end(), found) == addresses.end()) {
        addresses.push_back(found);
      }
    }
    for (const auto& address : addresses) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (state_ != State::kReconnecting) return;
      }
      if (Clock::now() >= until) break;
      if (std::find(tried.begin(), tried.end(), address) == tried.end()) tried.push_back(address);
      if (try_rejoin(address, until)) return;
      std::lock_guard<std::mutex> lock(mutex_);
      last_error = address + ": " + attempt_error_;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (state_ != State::kReconnecting) return;
    if (Clock::now() >= until) {
      std::string list;
      for (const auto& a : tried) list += (list.empty() ? "" : ", ") + a;
      std::string message = "no coordinator took this peer back within coordinator_grace (" +
                            format_seconds(options_.coordinator_grace) + ") after the coordinator was lost (" +
                            lost_reason_ + "); tried " + list + (last_error.empty() ? "" : "; last: " + last_error);
      lock.unlock();
      fail(ErrorKind::kCoordinatorLost, message);
      loop_.post([this] { drop_coordinator_link("gave up"); });
      return;
    }
    cv_.wait_for(lock, kRoundPause, [this] { return state_ != State::kReconnecting; });
  }
}

bool Communicator::try_rejoin(const std::string& address, TimePoint until) {
  auto set_error = [this](const std::string& e) {
    std::lock_guard<std::mutex> lock(mutex_);
    attempt_error_ = e;
  };
  std::shared_ptr<net::Link> link;
  try {
    Deadline attempt(std::min<Duration>(kAttemptConnect, until - Clock::now()));
    auto closing = [this] {
      std::lock_guard<std::mutex> lock(mutex_);
      if (state_ != State::kReconnecting) throw Aborted("reconnecting stopped");
    };
    auto sock = net::Socket::connect_blocking(net::resolve(net::parse_host_port(address, false)), attempt, 0, nullptr,
                                              closing, Millis(100));
    link = net::coordinator_client(std::make_shared<net::TcpLink>(std::move(sock), net::LinkKind::kDirect),
                                   options_.secret, attempt.at());
  } catch (const Error& e) {
    set_error(e.what());
    return false;
  }
  std::vector<uint8_t> frame;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ != State::kReconnecting) return false;
    attempt_ = Attempt::kWaiting;
    attempt_error_.clear();
    frame = proto::frame_of_fields(rejoin_message());
  }
  log_.info("re-registering with the coordinator at ", address);
  loop_.post([this, link, frame = std::move(frame), address]() mutable {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (state_ != State::kReconnecting) return;
      coordinator_address_ = address;
    }
    install_coordinator(link, std::move(frame));
  });
  // A gathering coordinator sends heartbeats, so a silent one ends the attempt (the loop
  // thread's heartbeat check); a Welcome is followed by the new term's topology.
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait_until(lock, until, [this] { return state_ != State::kReconnecting || attempt_ == Attempt::kEnded; });
  if (state_ == State::kActive) return true;
  if (state_ != State::kReconnecting) return true;  // failed or closed: nothing more to try
  if (attempt_ != Attempt::kEnded) attempt_error_ = "no answer before the grace period ended";
  lock.unlock();
  loop_.post([this, address] {
    if (coordinator() == address && !welcomed_) drop_coordinator_link("attempt ended");
  });
  return false;
}

void Communicator::await_reconnected(std::unique_lock<std::mutex>& lock, const Deadline& deadline, const char* what) {
  if (state_ != State::kReconnecting) return;
  wait_until(lock, deadline, what, [this] { return state_ != State::kReconnecting; });
}

}  // namespace pcomm::peer
