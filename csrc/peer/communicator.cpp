// Communicator implementation; see communicator.h.
#include "peer/communicator.h"

#include <sys/epoll.h>

#include <netinet/in.h>

#include <thread>

#include "core/errors.h"
#include "net/address.h"
#include "net/tcp_link.h"
#include "net/tls_link.h"
#include "proto/key_messages.h"
#include "proto/path_messages.h"
#include "proto/status_messages.h"

namespace pcomm::peer {

namespace {
// How often the peer checks the coordinator's silence and considers sending a heartbeat.
constexpr Millis kTickInterval{25};
constexpr int kHeartbeatsPerTimeout = 4;
// How often an accepted peer sends its PeerReport (it stands in for a heartbeat).
constexpr std::chrono::seconds kReportInterval{1};
// Pause between attempts to reach a coordinator that refused the connection, and when
// connect() warns that it is still retrying.
constexpr Millis kConnectRetry{100};
constexpr std::chrono::seconds kConnectWarnAfter{3};
constexpr uint32_t kMaxConnectionsPerPeer = proto::kMaxPoolConnections;
// How long past its deadline an op that finished its ring waits for the coordinator's
// decision before giving up (a dead coordinator is normally noticed much sooner).
constexpr std::chrono::seconds kDecisionGrace{10};
// How often a waiting call runs the interrupt check (Ctrl-C latency).
constexpr Millis kInterruptCheck{100};
}  // namespace

Communicator::Communicator(CommunicatorOptions options)
    : options_(std::move(options)), log_([this] {
        std::lock_guard<std::mutex> lock(log_mutex_);
        return log_context_;
      }) {
  net::parse_host_port(options_.coordinator, /*allow_port_zero=*/false);
  for (const auto& a : options_.more_coordinators) net::parse_host_port(a, false);
  if (options_.coordinator_grace < Duration::zero()) throw InvalidArgument("coordinator_grace must not be negative");
  net::parse_host_port(options_.data_listen, /*allow_port_zero=*/true);
  if (options_.connections_per_peer < 1 || options_.connections_per_peer > kMaxConnectionsPerPeer) {
    throw InvalidArgument("connections_per_peer must be between 1 and " + std::to_string(kMaxConnectionsPerPeer) +
                          ", got " + std::to_string(options_.connections_per_peer));
  }
  if (options_.timeout <= Duration::zero()) throw InvalidArgument("timeout must be positive");
  if (options_.run.empty() || options_.run.size() > 256) throw InvalidArgument("run name must be 1 to 256 characters");
  data_plane_ = std::make_unique<DataPlane>(
      [this](const AllReduceRequest& r, uint64_t op_id, proto::Outcome outcome, const std::string& message) {
        send_coll_report(r.tag, r.call, op_id, outcome, message);
      },
      kDecisionGrace);
  agent_ = std::make_unique<PathAgent>(
      log_,
      [this](std::vector<uint8_t> frame) {
        loop_.post([this, frame = std::move(frame)]() mutable {
          if (coord_ && welcomed_) coord_->send(std::move(frame));
        });
      },
      [this](std::shared_ptr<net::Link> link) { loop_.post([this, link] { on_inbound_link(link); }); });
  remotes_ = std::make_unique<RemotePeers>(
      PathEnv{options_.run, options_.connections_per_peer, agent_.get(), &log_,
              [this](const std::string& peer) { on_pool_replaced(peer); },
              options_.secret.empty() ? PathEnv::Secure()
                                      : [this](std::shared_ptr<net::Link> link, const std::string& peer,
                                               TimePoint deadline, const net::Cancel* cancel) {
                                          return secure_link(std::move(link), peer, deadline, cancel);
                                        }});
}

Communicator::~Communicator() { close(); }

void Communicator::update_log_context(const std::string& peer_id, uint64_t epoch) {
  std::lock_guard<std::mutex> lock(log_mutex_);
  log_context_ = "peer " + (peer_id.empty() ? std::string("-") : peer_id) + " epoch " + std::to_string(epoch);
}

// ---- caller thread -------------------------------------------------------------------

void Communicator::connect(Duration timeout) {
  Deadline deadline(timeout);
  // A coordinator lost while this peer joins (or a standby that refuses it): the join
  // starts over with the next address, within the same deadline.
  for (size_t attempt = 0;; ++attempt) {
    try {
      connect_once(deadline, timeout, attempt);
      return;
    } catch (const CoordinatorLostError& e) {
      if (deadline.remaining() <= kConnectRetry * 3) throw;
      log_.warn("joining again: ", e.what());
      std::this_thread::sleep_for(kConnectRetry * 2);
      check_interrupt("connect");
    }
  }
}

void Communicator::connect_once(const Deadline& deadline, Duration timeout, size_t attempt) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ == State::kClosed) throw InvalidArgument("this communicator is closed; create a new one");
    if (state_ == State::kActive || state_ == State::kJoining || state_ == State::kReconnecting) {
      throw InvalidArgument("already connected as peer " + peer_id_ + "; close() first");
    }
  }
  if (!loop_started_) {
    loop_.start();
    loop_started_ = true;
  }
  // One local port for the data listener and the coordinator connection (and punches):
  // the coordinator then observes the NAT mapping that other peers must reach.
  auto listen_hp = net::parse_host_port(options_.data_listen, true);
  auto listener = std::make_shared<net::Socket>(net::Socket::listen_on(listen_hp, 512, /*share_port=*/true));
  uint16_t shared_port = ntohs(listener->local_address().sin_port);
  // Reach the coordinator from this thread (the GIL is released by the binding); retry
  // refusals so a peer may start a moment before its coordinator.
  auto addresses = coordinator_addresses();
  size_t next_address = attempt;
  std::string address;
  // A refusal of our credentials (AuthenticationError) ends the attempt; a connection that
  // fails or closes before it is through (a coordinator busy with many joiners) is retried.
  std::shared_ptr<net::Link> coord_link;
  std::string local_address, last_error;
  bool warned = false;
  auto started = Clock::now();
  while (!coord_link) {
    try {
      address = addresses[next_address++ % addresses.size()];
      // In slices, so that Ctrl-C gets through while the coordinator does not answer.
      auto sock = net::Socket::connect_blocking(net::resolve(net::parse_host_port(address, false)), deadline,
                                                shared_port, nullptr,
                                                [this] { check_interrupt("connect"); }, kInterruptCheck);
      local_address = net::format_sockaddr(sock.local_address());
      coord_link = coordinator_link(std::move(sock), deadline, address);
    } catch (const TimeoutError&) {
      last_error = "connection attempt timed out";
    } catch (const IoError& e) {
      last_error = e.what();
    }
    if (coord_link) break;
    if (deadline.remaining() <= kConnectRetry) {
      throw TimeoutError("could not reach the coordinator at " + address + " within " +
                         format_seconds(timeout) + ": " + last_error);
    }
    if (!warned && Clock::now() - started >= kConnectWarnAfter) {
      warned = true;
      log_.warn(last_error.find("refused") != std::string::npos
                    ? "nothing listens at " + address + " (still retrying): " + last_error
                    : "cannot reach the coordinator at " + address + " (still retrying): " + last_error);
    }
    std::this_thread::sleep_for(kConnectRetry);
    check_interrupt("connect");
  }
  // Advertise the local address we reach the coordinator from.
  auto local = net::parse_host_port(local_address, true);
  std::string advertised = (listen_hp.host == "0.0.0.0" ? local.host : listen_hp.host) + ":" +
                           std::to_string(shared_port);
  agent_->set_shared_port(shared_port);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_ = State::kJoining;
    fail_message_.clear();
    peer_id_.clear();
    run_id_.clear();
    term_ = 0;
    coordinator_address_ = address;
    committed_.clear();
    state_committed_.clear();
    state_revision_ = state_hash_ = 0;
    activity_ = Activity{};
    data_address_ = advertised;
    epoch_ = ready_epoch_ = 0;
    ring_.clear();
    rank_ = -1;
    pending_peers_ = 0;
    links_.reset();
  }
  update_log_context("", 0);
  loop_.post([this, coord_link, listener, advertised] {
    ++session_;
    if (coord_) coord_->close("reconnecting");
    teardown_links();
    remotes_->clear();  // a new session has a new peer id: no pool survives it
    keyring_->clear();
    if (data_listener_.valid()) loop_.remove_fd(data_listener_.fd());
    data_listener_ = std::move(*listener);
    loop_.add_fd(data_listener_.fd(), EPOLLIN, [this](uint32_t) { on_data_accept(); });
    heartbeat_timeout_ = Duration::zero();
    install_coordinator(coord_link, proto::frame_of(proto::Hello{options_.run, advertised, ""}));
  });
  std::unique_lock<std::mutex> lock(mutex_);
  try {
    wait_until(lock, deadline, "connect", [this] { return state_ == State::kActive; });
  } catch (const Error& e) {
    // Give up the half-made membership so the coordinator does not admit a peer that left.
    bool pending = dynamic_cast<const TimeoutError*>(&e) && state_ == State::kJoining && !peer_id_.empty();
    std::string pending_id = peer_id_;
    state_ = state_ == State::kClosed ? State::kClosed : State::kIdle;
    lock.unlock();
    loop_.post([this] {
      ++session_;
      if (coord_) coord_->close("connect gave up");
      coord_.reset();
      teardown_links();
    });
    if (pending) {
      throw TimeoutError("connect timed out after " + format_seconds(timeout) + " while still pending: the coordinator "
                         "welcomed this peer (" + pending_id + ") but the peers already in the run had not called "
                         "update_topology() yet, which admits joiners (DiLoCo calls it at each outer step); give "
                         "connect() a timeout longer than the run's outer round");
    }
    throw;
  }
  log_.info("connected: rank ", rank_, " of ", ring_.size());
}

void Communicator::check_interrupt(const char* what) {
  if (interrupt_check_ && interrupt_check_()) throw Interrupted(std::string(what) + " interrupted");
}

std::shared_ptr<net::Link> Communicator::coordinator_link(net::Socket socket, const Deadline& deadline,
                                                          const std::string& address) {
  std::shared_ptr<net::Link> link = std::make_shared<net::TcpLink>(std::move(socket), net::LinkKind::kDirect);
  try {
    return net::coordinator_client(std::move(link), options_.secret, deadline.at());
  } catch (const AuthenticationError& e) {
    throw AuthenticationError("the coordinator at " + address + " did not accept this run's secret: " +
                              e.what());
  } catch (const IoError& e) {
    // Closed before the handshake was through: a coordinator without a secret does that
    // (it cannot parse TLS), and so does one too busy to take us now. Retried.
    throw IoError(std::string(e.what()) + " (does the coordinator hold this run's secret?)");
  }
}

std::shared_ptr<net::Link> Communicator::secure_link(std::shared_ptr<net::Link> link, const std::string& peer,
                                                     TimePoint deadline, const net::Cancel* cancel) {
  std::string self;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    self = peer_id_;
  }
  auto key = keyring_->for_dial(self, peer);
  if (!key) throw IoError("no link key for peer " + peer + " yet (the coordinator sends them with each topology)");
  auto tls = net::TlsLink::client(std::move(link), key->identity, key->key);
  tls->handshake(deadline, cancel);
  return tls;
}

void Communicator::on_link_keys(const proto::LinkKeys& keys) {
  keyring_->add(keys);
  std::vector<std::weak_ptr<net::FramedConnection>> still;
  for (auto& weak : inbound_tls_) {
    auto conn = weak.lock();
    if (!conn || conn->closed()) continue;
    auto tls = std::dynamic_pointer_cast<net::TlsLink>(conn->link());
    if (!tls || tls->handshake_done()) continue;
    tls->resume();
    conn->pump();
    still.push_back(weak);
  }
  inbound_tls_ = std::move(still);
}

void Communicator::update_topology(Duration timeout) {
  Deadline deadline(timeout);
  std::unique_lock<std::mutex> lock(mutex_);
  await_reconnected(lock, deadline, "update_topology");
  if (state_ == State::kFailed) raise_failure();
  if (state_ != State::kActive) throw InvalidArgument("not connected: call connect() first");
  uint64_t seq = ++topo_seq_;
  uint64_t losses = losses_;
  loop_.post([this, seq] {
    if (coord_ && welcomed_) coord_->send(proto::frame_of(proto::UpdateTopology{seq}));
  });
  topo_waiting_.clear();
  try {
    wait_until(lock, deadline, "update_topology",
               [this, seq, losses] { return topo_done_seq_ >= seq || losses_ != losses; });
    if (topo_done_seq_ < seq) {
      throw Aborted("update_topology aborted: the coordinator was lost (" + lost_reason_ +
                    "); this peer is reconnecting, keeping its id and links: call update_topology() again");
    }
  } catch (const Error& e) {
    if (!dynamic_cast<const TimeoutError*>(&e) && !dynamic_cast<const Interrupted*>(&e)) throw;
    std::string waiting = topo_waiting_;
    // Withdraw from the barrier, so a retry is a fresh call rather than a second one.
    loop_.post([this, seq] {
      if (coord_ && welcomed_) {
        coord_->send(proto::frame_of(proto::MsgType::kCancelUpdateTopology, proto::UpdateTopology{seq}.encode()));
      }
    });
    if (dynamic_cast<const TimeoutError*>(&e) && !waiting.empty()) throw TimeoutError(std::string(e.what()) + "; " + waiting);
    throw;
  }
}

void Communicator::on_waiting(const proto::Waiting& w) {
  using Kind = proto::BarrierKind;
  std::shared_ptr<CollectiveOp> op;
  std::shared_ptr<StateSession> session;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    switch (static_cast<Kind>(w.kind)) {
      case Kind::kTopology:
        if (w.call == topo_seq_) topo_waiting_ = proto::waiting_text(w, "update_topology");
        return;
      case Kind::kCollective: {
        auto it = ops_.find(w.tag);
        if (it != ops_.end() && it->second->request().call == w.call) op = it->second;
        break;
      }
      case Kind::kStateSync:
        if (state_session_ && state_session_->call() == w.call) session = state_session_;
        break;
    }
  }
  if (op) op->note_waiting(proto::waiting_text(w, "all_reduce with tag " + std::to_string(w.tag)));
  if (session) session->note_waiting(proto::waiting_text(w, "sync_shared_state"));
}

void Communicator::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    links_.reset();
  }
  cv_.notify_all();
  fail_ops(ErrorKind::kAborted, "the communicator was closed");
  {
    std::shared_ptr<StateSession> session;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      session = state_session_;
    }
    if (session) session->fail(ErrorKind::kAborted, "the communicator was closed");
  }
  // Unblock an epoch's link preparation first: it runs on the data-plane thread.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (prepare_cancel_) prepare_cancel_->fire("the communicator was closed");
  }
  if (reconnect_thread_.joinable()) reconnect_thread_.join();  // it sees kClosed within a slice
  agent_->stop();
  remotes_->clear();
  data_plane_->stop();
  if (!loop_started_) return;
  loop_.post([this] {
    ++session_;
    if (coord_ && !coord_->closed()) {
      coord_->send(proto::frame_of(proto::MsgType::kLeave, proto::EpochMsg{0}.encode()));
      coord_->close("closed by the user");
    }
    coord_.reset();
    teardown_links();
    if (data_listener_.valid()) loop_.remove_fd(data_listener_.fd());
    data_listener_.close();
  });
  loop_.stop();
}

void Communicator::wait_until(std::unique_lock<std::mutex>& lock, const Deadline& deadline, const char* what,
                              const std::function<bool()>& done) {
  for (;;) {
    if (done()) return;
    if (state_ == State::kFailed) raise_failure();
    if (state_ == State::kClosed) throw Aborted(std::string(what) + " interrupted: the communicator was closed");
    if (interrupt_check_) {
      cv_.wait_until(lock, std::min(deadline.at(), Clock::now() + kInterruptCheck));
      if (done()) return;
      lock.unlock();  // the check may take the GIL: never while holding mutex_
      bool interrupted = interrupt_check_();
      lock.lock();
      if (interrupted) throw Interrupted(std::string(what) + " interrupted");
      if (!deadline.expired()) continue;
    }
    if (cv_.wait_until(lock, deadline.at()) == std::cv_status::timeout && !done()) {
      if (state_ == State::kFailed) raise_failure();
      throw TimeoutError(std::string(what) + " timed out (peer " + (peer_id_.empty() ? "-" : peer_id_) +
                         ", epoch " + std::to_string(epoch_) + ")");
    }
  }
}

void Communicator::raise_failure() const { throw_error(fail_kind_, fail_message_); }

int Communicator::world_size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(ring_.size());
}
int Communicator::rank() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rank_;
}
uint64_t Communicator::epoch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return epoch_;
}
std::string Communicator::peer_id() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peer_id_;
}
std::string Communicator::run_id() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return run_id_;
}
void Communicator::set_step(uint64_t step) {
  std::lock_guard<std::mutex> lock(mutex_);
  activity_.step = step;
}
std::vector<std::string> Communicator::peers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ring_;
}
uint32_t Communicator::pending_peers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_peers_;
}
std::string Communicator::data_address() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return data_address_;
}
bool Communicator::connected() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_ == State::kActive;
}

// ---- loop thread ---------------------------------------------------------------------

void Communicator::fail(ErrorKind kind, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ != State::kJoining && state_ != State::kActive && state_ != State::kReconnecting) return;
    state_ = State::kFailed;
    fail_kind_ = kind;
    fail_message_ = message;
    links_.reset();
  }
  log_.error(message);
  cv_.notify_all();
  fail_ops(kind, message);
  std::shared_ptr<StateSession> session;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    session = state_session_;
  }
  if (session) session->fail(kind, message);
}

void Communicator::on_coordinator_frame(uint16_t type, const uint8_t* payload, size_t size) {
  last_heard_ = Clock::now();
  using proto::MsgType;
  switch (static_cast<MsgType>(type)) {
    case MsgType::kWelcome: {
      auto w = proto::Welcome::decode(payload, size);
      bool rejoined = false;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (state_ == State::kReconnecting) {
          // Fencing: never follow a coordinator of an older term than the one we know.
          if (w.term < term_ || w.peer_id != peer_id_ || !w.accepted) {
            attempt_error_ = "it answered with term " + std::to_string(w.term) + " (this peer follows term " +
                             std::to_string(term_) + ")" + (w.peer_id != peer_id_ ? " and another peer id" : "");
            attempt_ = Attempt::kEnded;
            cv_.notify_all();
            drop_coordinator_link("refused an older term");
            return;
          }
          attempt_ = Attempt::kWelcomed;
          rejoined = true;
        } else {
          peer_id_ = w.peer_id;
        }
        run_id_ = w.run_id;
        term_ = w.term;
      }
      welcomed_ = true;
      heartbeat_timeout_ = Millis(w.heartbeat_timeout_ms);
      if (rejoined) {
        log_.warn("back with the coordinator at ", coordinator(), ", term ", w.term);
        cv_.notify_all();
        return;
      }
      update_log_context(w.peer_id, 0);
      log_.info("welcomed by the coordinator as ", w.accepted ? "accepted" : "pending", " (seen from ",
                w.observed_address, ")");
      uint64_t session = session_;
      loop_.run_after(kTickInterval, [this, session] { heartbeat_tick(session); });
      return;
    }
    case MsgType::kHeartbeat: {
      auto hb = proto::Heartbeat::decode(payload, size);
      std::lock_guard<std::mutex> lock(mutex_);
      pending_peers_ = hb.pending_peers;
      return;
    }
    case MsgType::kTopology:
      on_topology(proto::Topology::decode(payload, size));
      return;
    case MsgType::kWaiting:
      on_waiting(proto::decode_fields<proto::Waiting>(payload, size));
      return;
    case MsgType::kLinkKeys:
      on_link_keys(proto::decode_fields<proto::LinkKeys>(payload, size));
      return;
    case MsgType::kEpochReady: {
      uint64_t e = proto::EpochMsg::decode(payload, size).epoch;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (e != epoch_) return;  // superseded by a newer topology already
        ready_epoch_ = e;
        if (state_ == State::kJoining || (state_ == State::kReconnecting && attempt_ == Attempt::kWelcomed)) {
          state_ = State::kActive;
        }
      }
      log_.debug("epoch ", e, " ready");
      cv_.notify_all();
      return;
    }
    case MsgType::kTopologyDone: {
      auto done = proto::TopologyDone::decode(payload, size);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (done.seq > topo_done_seq_) topo_done_seq_ = done.seq;
      }
      cv_.notify_all();
      return;
    }
    case static_cast<MsgType>(proto::StateMsg::kStatePlan):
      on_state_plan(proto::StatePlan::decode(payload, size));
      return;
    case static_cast<MsgType>(proto::StateMsg::kStateResult):
      on_state_result(proto::StateOutcome::decode(payload, size));
      return;
    case MsgType::kCollGo:
      on_coll_go(proto::CollGo::decode(payload, size));
      return;
    case MsgType::kObserve:
      on_observe(proto::decode_fields<proto::Observe>(payload, size));
      return;
    case MsgType::kPunchPrepare:
      agent_->on_punch_prepare(proto::decode_fields<proto::PunchPrepare>(payload, size));
      return;
    case MsgType::kPunchGo:
      agent_->on_punch_go(proto::decode_fields<proto::PunchGo>(payload, size));
      return;
    case MsgType::kRelayOffer:
      agent_->on_relay_offer(proto::decode_fields<proto::RelayOffer>(payload, size));
      return;
    case MsgType::kPathFailed:
      agent_->on_path_failed(proto::decode_fields<proto::PathFailed>(payload, size));
      return;
    case MsgType::kCollResult:
      on_coll_result(proto::CollOutcome::decode(payload, size));
      return;
    case MsgType::kError: {
      auto err = proto::ErrorMsg::decode(payload, size);
      switch (err.code) {
        case proto::ErrorCode::kDropped:
          fail(ErrorKind::kPeerLost, "this peer was dropped from the run by the coordinator (" + err.text +
                                        "); call connect() to rejoin as a new peer");
          break;
        case proto::ErrorCode::kShutdown:
          lose_coordinator("it shut down");
          return;
        case proto::ErrorCode::kNotPrimary:
        case proto::ErrorCode::kStaleTerm:
          lose_coordinator(err.text);
          return;
        case proto::ErrorCode::kRunMismatch:
          fail(ErrorKind::kInvalid, err.text);
          break;
        case proto::ErrorCode::kUnauthenticated:
          fail(ErrorKind::kUnauthenticated, "the coordinator at " + coordinator() + " refused this peer: " + err.text);
          break;
        default:
          fail(ErrorKind::kProtocol, "the coordinator refused this peer: " + err.text);
      }
      if (coord_) coord_->close("coordinator sent an error");
      return;
    }
    default:
      throw ProtocolError("unexpected message type " + std::to_string(type) + " from the coordinator");
  }
}

void Communicator::on_coordinator_closed(const std::string& reason) { lose_coordinator(reason); }

void Communicator::heartbeat_tick(uint64_t session) {
  if (session != session_ || !coord_ || coord_->closed()) return;
  coord_->pump();  // judge the coordinator by what it sent, not by our own freeze
  if (session != session_ || !coord_ || coord_->closed()) return;
  auto now = Clock::now();
  // A re-registration waits for a coordinator that sends heartbeats four times per
  // timeout while it gathers: half a timeout of silence means a frozen one, move on.
  Duration limit = welcomed_ ? heartbeat_timeout_ : heartbeat_timeout_ / 2;
  if (now - last_heard_ > limit) {
    lose_coordinator("silent for more than " + format_seconds(limit));
    return;
  }
  if (!welcomed_) {  // a re-registration waits for the new term: nothing to send yet
    loop_.run_after(kTickInterval, [this, session] { heartbeat_tick(session); });
    return;
  }
  if (now - last_report_ >= kReportInterval) {
    last_report_ = now;
    send_report(now);
  } else if (now - coord_->last_send_time() >= heartbeat_timeout_ / kHeartbeatsPerTimeout) {
    coord_->send(proto::frame_of(proto::Heartbeat{0}));
  }
  loop_.run_after(kTickInterval, [this, session] { heartbeat_tick(session); });
}

void Communicator::send_report(TimePoint now) {
  proto::PeerReport report;
  std::vector<std::string> neighbours;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ != State::kActive) return;
    report = activity_.report(now);
    neighbours = neighbours_;
  }
  for (const auto& link : remotes_->links(neighbours)) {
    if (report.link_peers.size() == 2) break;
    report.link_peers.push_back(link.peer_id);
    report.link_kinds.push_back(link.kind);
  }
  coord_->send(proto::frame_of_fields(report));
}

void Communicator::teardown_links() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (prepare_cancel_) prepare_cancel_->fire("link setup abandoned");
  prepare_cancel_.reset();
  links_.reset();
}

}  // namespace pcomm::peer
