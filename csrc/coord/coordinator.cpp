// Coordinator server; see coordinator.h. Decisions live in membership.cpp.
#include "coord/coordinator.h"

#include <sys/epoll.h>

#include <netinet/in.h>

#include <malloc.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <set>

#include "coord/state_file.h"
#include "core/dtype.h"
#include "core/errors.h"
#include "core/failpoint.h"
#include "net/address.h"
#include "net/tcp_link.h"
#include "net/tls_link.h"
#include "proto/key_messages.h"
#include "proto/path_messages.h"
#include "proto/status_messages.h"
#include "proto/waiting_messages.h"

namespace pcomm::coord {

namespace {
// How often deadlines are checked and heartbeats considered. Bounds the extra latency of
// noticing a silent peer.
constexpr Millis kTickInterval{25};
// Heartbeats go out this many times per heartbeat timeout, so a few may be lost or late.
constexpr int kHeartbeatsPerTimeout = 4;
// NAT observation: how long the dial-back to a peer's observed endpoint may take (a
// reachable peer answers within one round trip), and how long its probe may take.
constexpr Millis kDialBackTimeout{700};
constexpr Millis kProbeTimeout{2000};
// Probe connections open at once, at most (each lives at most kProbeTimeout).
constexpr int kMaxProbeConnections = 256;
// Connections that have not said hello (not authenticated, with a secret): at most this
// many in total and from one host; their frames are small until the hello is taken.
constexpr int kMaxStrangers = 256;
constexpr int kMaxStrangersPerSource = 64;
constexpr uint32_t kMaxStrangerPayload = 16 * 1024;

std::string random_hex(std::mt19937_64& rng) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

}  // namespace


Coordinator::Coordinator(CoordinatorOptions options)
    : options_(std::move(options)),
      log_([this] { return "coordinator " + address_; }),
      heartbeat_interval_(options_.heartbeat_timeout / kHeartbeatsPerTimeout),
      membership_(options_.heartbeat_timeout),
      rng_(std::random_device{}()),
      run_id_(random_hex(rng_)) {
  if (options_.heartbeat_timeout < Millis(50)) {
    throw InvalidArgument("heartbeat_timeout must be at least 0.05 seconds");
  }
  if (options_.run.empty() || options_.run.size() > 256) {
    throw InvalidArgument("run name must be 1 to 256 characters");
  }
  // Parse now so a malformed address fails at construction.
  net::parse_host_port(options_.listen, /*allow_port_zero=*/true);
  if (!options_.secret.empty()) coordinator_key_ = net::derive_key(options_.secret, net::kCoordinatorPsk);
  net::check_secure_listen("coordinator", options_.listen, options_.secret, options_.insecure);
  for (const auto& r : options_.relays) net::parse_host_port(r, false);
  relays_ = std::make_unique<RelayRegistry>(loop_, log_, options_.secret);
  paths_ = std::make_unique<PathBroker>(
      log_, [this](const std::string& peer, std::vector<uint8_t> frame) { send_to_peer(peer, std::move(frame)); },
      [this](const std::string& peer) { return membership_.member(peer); }, *relays_);
  relay_list_ = options_.relays;
  // Failover (coordinator_terms.cpp): a restart never reuses a term; a restart that knew
  // a ring gathers its peers first; a standby serves nobody until it takes over.
  if (options_.gather_window <= Duration::zero()) throw InvalidArgument("gather_window must be positive");
  if (!options_.peer_of.empty()) {
    net::parse_host_port(options_.peer_of, false);
    watched_ = options_.peer_of;
  } else if (options_.standby) {
    throw InvalidArgument("a standby coordinator needs peer_of='host:port' (the primary it watches)");
  }
  std::vector<std::string> last_ring;
  if (!options_.state_dir.empty()) {
    if (auto state = load_state(options_.state_dir, options_.run)) {
      known_term_ = state->term;
      run_id_ = state->run_id;
      last_ring = state->ring;
    }
  }
  if (options_.standby) {
    role_ = Role::kStandby;
  } else if (!last_ring.empty()) {
    role_ = Role::kGathering;
  } else {
    role_ = Role::kServing;
    term_ = known_term_ = known_term_ ? next_term(known_term_, rng_()) : 1;  // a new run starts at 1
  }
  snapshot_.term = term_;
  snapshot_.role = role_name(role_);
  snapshot_.run_id = run_id_;
}

void Coordinator::add_relay(const std::string& address) {
  net::parse_host_port(address, false);
  {
    std::lock_guard<std::mutex> lock(relays_mutex_);
    if (std::find(relay_list_.begin(), relay_list_.end(), address) != relay_list_.end()) return;
    relay_list_.push_back(address);
  }
  if (running_) loop_.post([this, address] { relays_->add(address); });
}

std::vector<std::string> Coordinator::relays() const {
  std::lock_guard<std::mutex> lock(relays_mutex_);
  return relay_list_;
}

Coordinator::~Coordinator() { stop(); }

void Coordinator::start() {
  if (running_) return;
  auto hp = net::parse_host_port(options_.listen, true);
  listener_ = net::Socket::listen_on(hp);
  address_ = net::format_sockaddr(listener_.local_address());
  probe_listener_ = net::Socket::listen_on(net::HostPort{hp.host, 0});
  probe_port_ = ntohs(probe_listener_.local_address().sin_port);
  running_ = true;
  loop_.start();
  loop_.post([this] {
    loop_.add_fd(listener_.fd(), EPOLLIN, [this](uint32_t) { on_accept(); });
    loop_.add_fd(probe_listener_.fd(), EPOLLIN, [this](uint32_t) { on_probe_accept(); });
    for (const auto& r : relays()) relays_->add(r);
    loop_.run_after(kTickInterval, [this] { tick(); });
    gather_since_ = watched_ok_ = Clock::now();
    persist();
  });
  if (!watched().empty()) watcher_ = std::thread([this] { watch_loop(); });
  log_.info("listening for run '", options_.run, "', heartbeat timeout ", format_seconds(options_.heartbeat_timeout),
            ", ", role_name(role_), term_ ? " term " + std::to_string(term_) : std::string(),
            watched().empty() ? "" : ", watching " + watched());
}

void Coordinator::stop() {
  if (!running_.exchange(false)) return;
  {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    watch_stop_ = true;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  loop_.post([this] {
    // Accept nobody from now on: a peer told of the shutdown tries this address again
    // first, and must not re-register with a coordinator that is going away.
    loop_.remove_fd(listener_.fd());
    listener_.close();
    // Closing a connection erases it from conns_: iterate over a copy.
    std::vector<std::shared_ptr<net::FramedConnection>> links;
    for (auto& [id, conn] : conns_) links.push_back(conn.link);
    for (auto& link : links) {
      link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kShutdown),
                                 "the coordinator is shutting down");
    }
    relays_->close();
  });
  // Give the shutdown notices a moment to leave before the sockets close.
  std::this_thread::sleep_for(Millis(20));
  loop_.stop();
  conns_.clear();
  conn_of_peer_.clear();
  conn_of_nonce_.clear();
  listener_.close();
  probe_listener_.close();
}

std::string Coordinator::address() const { return address_; }

Coordinator::Snapshot Coordinator::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_;
}

void Coordinator::publish_snapshot() {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  snapshot_.epoch = membership_.epoch();
  snapshot_.ring = membership_.ring();
  snapshot_.pending = membership_.pending_count();
  snapshot_.collectives_running = collectives_.running();
  snapshot_.state_sync_planned = state_sync_.planned();
  snapshot_.punch_requests = paths_->punch_requests();
  snapshot_.relay_requests = paths_->relay_requests();
  snapshot_.term = term_;
  snapshot_.role = role_name(role_);
  snapshot_.run_id = run_id_;
}

std::string Coordinator::new_peer_id() {
  for (;;) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%012llx",
                  static_cast<unsigned long long>(rng_() & 0xffffffffffffULL));
    std::string id(buf);
    if (!membership_.knows(id)) return id;
  }
}

void Coordinator::on_accept() {
  for (;;) {
    net::Socket s = listener_.accept_one();
    if (!s.valid()) return;
    std::string source = net::parse_host_port(net::format_sockaddr(s.remote_address()), false).host;
    if (strangers_ >= kMaxStrangers || strangers_per_source_[source] >= kMaxStrangersPerSource) {
      log_.debug("refused a connection from ", source, ": too many connections before hello");
      continue;  // closed here
    }
    std::shared_ptr<net::FramedConnection> link;
    try {
      std::shared_ptr<net::Link> raw = std::make_shared<net::TcpLink>(std::move(s), net::LinkKind::kDirect);
      if (!options_.secret.empty()) {
        raw = net::TlsLink::server(
            raw, net::single_key(net::coordinator_identity(), coordinator_key_),
            proto::frame_of(proto::ErrorMsg{proto::ErrorCode::kUnauthenticated,
                                            "this run needs its secret: give secret= / --secret-file / "
                                            "PCOMM_SECRET_FILE (the same as the coordinator's)"}));
      }
      link = net::FramedConnection::create(loop_, raw, kMaxStrangerPayload);
    } catch (const std::exception& e) {
      log_.warn("could not take a connection from ", source, ": ", e.what());
      continue;
    }
    ++strangers_;
    ++strangers_per_source_[source];
    uint64_t id = next_conn_id_++;
    conns_[id] = Conn{link, "", Clock::now(), Clock::now(), nullptr, source, "", false};
    link->start([this, id](uint16_t type, const uint8_t* p, size_t n) { on_frame(id, type, p, n); },
                [this, id](const std::string& reason) { on_closed(id, reason); });
    log_.debug("connection ", id, " from ", link->remote());
  }
}

void Coordinator::on_frame(uint64_t conn_id, uint16_t type, const uint8_t* payload, size_t size) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end()) return;
  Conn& conn = it->second;
  auto now = Clock::now();
  using proto::MsgType;
  auto msg_type = static_cast<MsgType>(type);
  if (conn.observing) throw ProtocolError("a message before the Welcome");
  if (conn.peer_id.empty()) {
    if (!conn.rejoining.empty() || conn.deferred) throw ProtocolError("a message before the Welcome");
    if (msg_type == MsgType::kStatusRequest) {
      on_status_request(conn_id, proto::decode_fields<proto::StatusRequest>(payload, size));
      return;  // the client closes (or the hello timeout does)
    }
    if (msg_type == MsgType::kRejoin) {
      on_rejoin(conn_id, proto::decode_fields<proto::Rejoin>(payload, size));
      return;
    }
    if (msg_type != MsgType::kHello) throw ProtocolError("the first message must be Hello, Rejoin or StatusRequest");
    auto hello = proto::Hello::decode(payload, size);
    if (role_ == Role::kServing) {
      on_hello(conn_id, hello);
    } else {
      defer_hello(conn_id, hello);
    }
    return;
  }
  const std::string peer = conn.peer_id;
  membership_.on_heard(peer, now);
  unconfirmed_.erase(peer);  // it heard its term
  switch (msg_type) {
    case MsgType::kHeartbeat:
      proto::Heartbeat::decode(payload, size);
      return;
    case MsgType::kPeerReport:
      reports_.on_report(peer, proto::decode_fields<proto::PeerReport>(payload, size), now);
      return;
    case MsgType::kUpdateTopology: {
      auto m = proto::UpdateTopology::decode(payload, size);
      if (!membership_.is_accepted(peer)) {
        throw InvalidArgument("update_topology from a peer that is not accepted yet");
      }
      apply(membership_.on_update_topology(peer, m.seq, now));
      return;
    }
    case MsgType::kCancelUpdateTopology:
      membership_.on_cancel_update_topology(peer, proto::UpdateTopology::decode(payload, size).seq);
      return;
    case MsgType::kLinksReady:
      apply(membership_.on_links_ready(peer, proto::EpochMsg::decode(payload, size).epoch, now));
      return;
    case MsgType::kLinksFailed: {
      auto m = proto::LinksFailed::decode(payload, size);
      log_.warn("peer ", peer, " cannot link to ", m.neighbour_id, " in epoch ", m.epoch, ": ", m.reason);
      apply(membership_.on_links_failed(peer, m.epoch, m.neighbour_id, now));
      return;
    }
    case MsgType::kAnnounce: {
      auto m = proto::Announce::decode(payload, size);
      dtype_from_code(m.dtype);  // refuse nonsense before anyone acts on it
      reduce_op_from_code(m.op);
      quantization_from_code(m.quantization);
      apply(collectives_.on_announce(peer, m, view(), now));
      return;
    }
    case MsgType::kCollDone:
      apply(collectives_.on_report(peer, proto::CollOutcome::decode(payload, size), view()));
      return;
    case static_cast<MsgType>(proto::StateMsg::kStateVote): {
      auto vote = proto::StateVote::decode(payload, size);
      for (const auto& t : vote.tensors) dtype_from_code(t.dtype);
      apply(state_sync_.on_vote(peer, vote, view(), now));
      return;
    }
    case static_cast<MsgType>(proto::StateMsg::kStateDone):
      apply(state_sync_.on_report(peer, proto::StateOutcome::decode(payload, size), view()));
      return;
    case MsgType::kPathRequest:
      paths_->on_request(peer, proto::decode_fields<proto::PathRequest>(payload, size), now);
      publish_snapshot();
      return;
    case MsgType::kPunchReady:
      paths_->on_punch_ready(peer, proto::decode_fields<proto::PunchReady>(payload, size), now);
      return;
    case MsgType::kLeave:
      proto::EpochMsg::decode(payload, size);
      log_.info("peer ", peer, " left");
      conn.left = true;
      conn.link->close("peer left");
      return;
    default:
      throw ProtocolError("unexpected message type " + std::to_string(type) + " on the coordinator link");
  }
}

void Coordinator::on_hello(uint64_t conn_id, const proto::Hello& hello) {
  Conn& conn = conns_.at(conn_id);
  if (hello.run != options_.run) {
    log_.warn("refused ", conn.link->remote(), ": run '", hello.run, "' instead of '", options_.run, "'");
    conn.link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kRunMismatch),
                                    "run name mismatch: this coordinator serves run '" + options_.run +
                                        "', the peer asked for run '" + hello.run + "'");
    return;
  }
  release_stranger(conn);  // known to the run now: its frames may be large
  conn.link->set_max_payload(proto::kMaxControlPayload);
  auto hp = net::parse_host_port(hello.data_address, false);
  if (hp.host == "0.0.0.0") {
    // The peer listens on every interface: reach it at the address we see it from.
    auto observed = net::parse_host_port(conn.link->remote(), false);
    hp.host = observed.host;
  }
  auto obs = std::make_shared<Observation>();
  obs->data_address = hp.str();
  do {
    obs->nonce = rng_();
  } while (obs->nonce == 0 || conn_of_nonce_.count(obs->nonce));
  conn.observing = obs;
  conn_of_nonce_[obs->nonce] = conn_id;
  conn.link->send(proto::frame_of_fields(proto::Observe{obs->nonce, probe_port_}));
  start_dial_back(conn_id);
  loop_.run_after(kProbeTimeout, [this, conn_id, nonce = obs->nonce] {
    auto it = conns_.find(conn_id);
    if (it == conns_.end() || !it->second.observing || it->second.observing->nonce != nonce) return;
    it->second.observing->probed = true;  // no probe came: assume a well-behaved NAT
    finish_observation(conn_id);
  });
}

void Coordinator::start_dial_back(uint64_t conn_id) {
  Conn& conn = conns_.at(conn_id);
  auto obs = conn.observing;
  try {
    obs->dial_back = net::Socket::connect_start(net::resolve(net::parse_host_port(conn.link->remote(), false)));
  } catch (const Error&) {
    obs->dialed = true;
    return;
  }
  int fd = obs->dial_back.fd();
  auto end = [this, conn_id, obs, fd](bool writable) {
    if (obs->dialed) return;
    obs->dialed = true;
    loop_.remove_fd(fd);
    obs->reachable = writable && obs->dial_back.finish_connect().empty();
    obs->dial_back.close();
    finish_observation(conn_id);
  };
  loop_.add_fd(fd, EPOLLOUT, [end](uint32_t) { end(true); });
  loop_.run_after(kDialBackTimeout, [end] { end(false); });
}

void Coordinator::on_probe_accept() {
  for (;;) {
    net::Socket s = probe_listener_.accept_one();
    if (!s.valid()) return;
    if (probe_conns_ >= kMaxProbeConnections) continue;  // closed here: a flood
    ++probe_conns_;
    auto link = net::FramedConnection::create(loop_, std::move(s), 64);
    std::weak_ptr<net::FramedConnection> weak = link;
    link->start(
        [this, weak](uint16_t type, const uint8_t* p, size_t n) {
          auto c = weak.lock();
          if (!c) return;
          if (type != static_cast<uint16_t>(proto::MsgType::kProbeHello)) throw ProtocolError("expected ProbeHello");
          auto m = proto::decode_fields<proto::ProbeHello>(p, n);
          std::string seen = c->remote();
          c->close("probe done");
          auto it = conn_of_nonce_.find(m.nonce);
          if (it == conn_of_nonce_.end()) return;
          auto conn = conns_.find(it->second);
          if (conn == conns_.end() || !conn->second.observing || conn->second.observing->probed) return;
          conn->second.observing->probed = true;
          conn->second.observing->probe_seen = seen;
          finish_observation(it->second);
        },
        [this](const std::string&) { --probe_conns_; });
    loop_.run_after(kProbeTimeout, [weak] {
      if (auto c = weak.lock()) c->close("probe timed out");
    });
  }
}

void Coordinator::finish_observation(uint64_t conn_id) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end() || !it->second.observing) return;
  Conn& conn = it->second;
  auto obs = conn.observing;
  if (!obs->probed || !obs->dialed) return;
  conn.observing.reset();
  conn_of_nonce_.erase(obs->nonce);
  std::string observed = conn.link->remote();
  uint8_t nat = 0;
  if (obs->reachable) nat |= proto::kReachable;
  if (!obs->probe_seen.empty() && obs->probe_seen != observed) nat |= proto::kRandomizing;
  std::string peer = new_peer_id();
  conn.peer_id = peer;
  conn_of_peer_[peer] = conn_id;
  log_.info("hello from ", observed, ": peer ", peer, " data ", obs->data_address,
            (nat & proto::kReachable) ? ", reachable" : ", not reachable",
            (nat & proto::kRandomizing) ? ", port-randomising NAT (mapped to " + obs->probe_seen + ")" : "");
  apply(membership_.on_hello(peer, obs->data_address, Clock::now(), observed, nat));
}

void Coordinator::on_closed(uint64_t conn_id, const std::string& reason) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end()) return;
  std::string peer = it->second.peer_id;
  if (auto obs = it->second.observing) {
    conn_of_nonce_.erase(obs->nonce);
    if (!obs->dialed) {
      obs->dialed = true;
      loop_.remove_fd(obs->dial_back.fd());
      obs->dial_back.close();
    }
  }
  release_stranger(it->second);
  if (!it->second.rejoining.empty()) {
    auto g = gathered_.find(it->second.rejoining);
    if (g != gathered_.end() && g->second.conn_id == conn_id) gathered_.erase(g);
  }
  bool left = it->second.left;
  conns_.erase(it);
  if (peer.empty()) {
    log_.debug("connection ", conn_id, " closed before hello: ", reason);
    return;
  }
  conn_of_peer_.erase(peer);
  reports_.forget(peer);
  if (unconfirmed_.count(peer) && membership_.knows(peer)) {
    // Its Welcome of the new term went out as it gave up on this connection (the term
    // formed from a frozen coordinator's backlog): keep its place until the heartbeat
    // timeout, for it to re-register (coordinator_terms.cpp, on_rejoin).
    log_.info("peer ", peer, " closed its connection before it heard term ", term_, ": keeping its place");
    return;
  }
  if (membership_.knows(peer)) {
    if (!left) log_.info("peer ", peer, " lost: ", reason);
    apply(membership_.on_lost(peer, Clock::now(), left ? proto::kLeftReason : "lost: " + reason));
  }
}

void Coordinator::release_stranger(Conn& conn) {
  if (conn.source.empty()) return;
  auto it = strangers_per_source_.find(conn.source);
  if (it != strangers_per_source_.end() && --it->second <= 0) strangers_per_source_.erase(it);
  --strangers_;
  conn.source.clear();
  trim_due_ = true;
}

void Coordinator::send_link_keys(const std::string& peer, const proto::Topology& topology) {
  proto::LinkKeys keys;
  keys.epoch = topology.epoch;
  for (const auto& m : topology.ring) {
    if (m.peer_id == peer) continue;
    auto k = net::pair_key(pair_master_, topology.epoch, peer, m.peer_id);
    keys.peers.push_back(m.peer_id);
    keys.keys.emplace_back(k.begin(), k.end());
  }
  send_to_peer(peer, proto::frame_of_fields(keys));
}

void Coordinator::send_to_peer(const std::string& peer, std::vector<uint8_t> frame) {
  if (dying_) return;
  auto it = conn_of_peer_.find(peer);
  if (it == conn_of_peer_.end()) return;
  auto conn = conns_.find(it->second);
  if (conn == conns_.end()) return;
  conn->second.link->send(std::move(frame));
  conn->second.last_sent = Clock::now();
}

void Coordinator::die_after_last_send(const std::string& what) {
  log_.warn("failpoint: dying after ", what, " (PCOMM_FAILPOINT)");
  dying_ = true;
  loop_.run_after(Millis(300), [] { std::raise(SIGKILL); });  // once the bytes have left
}

View Coordinator::view() const {
  View v{membership_.epoch(), membership_.ring(), membership_.epoch_ready(), {}};
  for (const auto& peer : v.ring) v.addresses[peer] = membership_.data_address(peer);
  return v;
}

void Coordinator::apply(const Actions& actions) {
  execute(actions);
  // Converges in a few rounds: each round either changes nothing or moves an op/epoch on.
  for (int round = 0; round < 16; ++round) {
    Actions more;
    View now = view();
    if (now.epoch != last_view_.epoch || now.ready != last_view_.ready || now.ring != last_view_.ring) {
      last_view_ = now;
      auto reactions = collectives_.on_view_changed(now);
      more.insert(more.end(), reactions.begin(), reactions.end());
      auto state = state_sync_.on_view_changed(now);
      more.insert(more.end(), state.begin(), state.end());
    }
    auto admission = membership_.set_collectives_busy(collectives_.busy() || state_sync_.busy());
    more.insert(more.end(), admission.begin(), admission.end());
    if (more.empty()) break;
    execute(more);
  }
  publish_snapshot();
}

void Coordinator::execute(const Actions& actions) {
  for (const auto& a : actions) {
    switch (a.kind) {
      case Action::Kind::kWelcome: {
        proto::Welcome w;
        w.peer_id = a.peer;
        w.accepted = a.accepted;
        w.heartbeat_timeout_ms = static_cast<uint32_t>(to_millis(options_.heartbeat_timeout));
        auto it = conn_of_peer_.find(a.peer);
        if (it != conn_of_peer_.end()) w.observed_address = conns_.at(it->second).link->remote();
        w.run_id = run_id_;
        w.term = term_;
        send_to_peer(a.peer, proto::frame_of(w));
        break;
      }
      case Action::Kind::kTopology:
        if (!options_.secret.empty()) send_link_keys(a.peer, a.topology);
        send_to_peer(a.peer, proto::frame_of(a.topology));
        break;
      case Action::Kind::kEpochReady:
        send_to_peer(a.peer, proto::frame_of(proto::MsgType::kEpochReady, proto::EpochMsg{a.epoch}.encode()));
        break;
      case Action::Kind::kTopologyDone:
        send_to_peer(a.peer, proto::frame_of(proto::TopologyDone{a.seq, a.epoch}));
        break;
      case Action::Kind::kPendingChanged:
        for (const auto& id : membership_.ring()) send_to_peer(id, proto::frame_of(proto::Heartbeat{a.pending}));
        break;
      case Action::Kind::kDrop: {
        log_.warn("peer ", a.peer, " ", a.reason);
        auto it = conn_of_peer_.find(a.peer);
        if (it == conn_of_peer_.end()) break;
        uint64_t conn_id = it->second;
        conn_of_peer_.erase(it);
        reports_.forget(a.peer);
        conns_.at(conn_id).peer_id.clear();  // membership already forgot it
        conns_.at(conn_id).link->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kDropped), a.reason);
        break;
      }
      case Action::Kind::kCollGo:
        send_to_peer(a.peer, proto::frame_of(proto::CollGo{a.tag, a.seq, a.op_id, a.epoch}));
        break;
      case Action::Kind::kCollResult:
        send_to_peer(a.peer, proto::frame_of(proto::MsgType::kCollResult,
                                             proto::CollOutcome{a.tag, a.seq, a.op_id, a.outcome, a.reason}.encode()));
        if (a.outcome == proto::Outcome::kCommit && core::failpoint("coordinator.op_commit")) {
          die_after_last_send("the commit of op " + std::to_string(a.op_id) + " to peer " + a.peer);
        }
        break;
      case Action::Kind::kStatePlan:
        send_to_peer(a.peer, proto::frame_of(proto::StateMsg::kStatePlan, a.state_plan.encode()));
        break;
      case Action::Kind::kStateResult:
        send_to_peer(a.peer, proto::frame_of(proto::StateMsg::kStateResult,
                                             proto::StateOutcome{a.seq, a.op_id, a.outcome, a.reason}.encode()));
        if (a.outcome == proto::Outcome::kCommit && core::failpoint("coordinator.sync_commit")) {
          die_after_last_send("the commit of sync " + std::to_string(a.op_id) + " to peer " + a.peer);
        }
        break;
      case Action::Kind::kRelink:
        log_.info("relinking the ring after an aborted collective");
        execute(membership_.relink());
        break;
    }
  }
  for (const auto& a : actions) {
    if (a.kind == Action::Kind::kTopology) {
      log_ring_change();
      persist();
      break;
    }
  }
}

void Coordinator::check_stalls(TimePoint now) {
  auto collect = [this] {
    std::vector<Stall> stalls = collectives_.stalls();
    if (auto s = membership_.stall()) stalls.push_back(*s);
    if (auto s = state_sync_.stall()) stalls.push_back(*s);
    return stalls;
  };
  std::vector<Stall> stalls = collect();
  if (options_.straggler_timeout > Duration::zero()) {
    std::set<std::string> busy = collectives_.running_peers();
    for (const auto& p : state_sync_.running_peers()) busy.insert(p);
    for (const auto& p : membership_.releasing()) busy.insert(p);
    std::set<std::string> active = not_idle(stalls, busy);
    auto drop = stragglers(stalls, active, last_not_idle_, now, options_.straggler_timeout);
    // Sampled every tick: a peer that leaves a call is idle from (at most a tick after) then.
    // Kept for ring members only.
    std::map<std::string, TimePoint> seen;
    for (const auto& peer : membership_.ring()) {
      auto it = last_not_idle_.find(peer);
      if (active.count(peer)) {
        seen.emplace(peer, now);
      } else if (it != last_not_idle_.end()) {
        seen.emplace(peer, it->second);
      }
    }
    last_not_idle_ = std::move(seen);
    if (!drop.empty()) {
      std::string who;
      for (const auto& [peer, why] : drop) who += (who.empty() ? "" : ", ") + peer;
      log_.warn("dropping ", drop.size(), " straggler(s) at once: ", who, " (", drop.begin()->second, ")");
      apply(membership_.drop(drop));
      stalls = collect();
    }
  }
  std::map<std::pair<uint8_t, uint32_t>, std::vector<std::string>> current;
  for (const auto& s : stalls) {
    if (now - s.since < kWaitingNotice) continue;
    auto key = std::make_pair(static_cast<uint8_t>(s.kind), s.tag);
    current[key] = s.missing;
    auto it = notified_.find(key);
    if (it != notified_.end() && it->second == s.missing) continue;
    proto::Waiting w;
    w.kind = key.first;
    w.tag = s.tag;
    for (const auto& p : s.missing) {
      if (w.peers.size() < proto::kMaxWaitingNames) {
        w.peers.push_back(p);
      } else {
        ++w.more;
      }
    }
    for (const auto& [peer, call] : s.entered) {
      w.call = call;
      send_to_peer(peer, proto::frame_of_fields(w));
    }
  }
  notified_ = std::move(current);
}

proto::StatusReply Coordinator::status() const {
  proto::StatusReply r;
  r.run = options_.run;
  r.epoch = membership_.epoch();
  for (const auto& id : membership_.ring()) {
    r.peers.push_back(id);
    auto it = conn_of_peer_.find(id);
    r.addresses.push_back(it == conn_of_peer_.end() ? "" : conns_.at(it->second).link->remote());
  }
  r.pending = membership_.pending_count();
  r.collectives_running = static_cast<uint32_t>(collectives_.running());
  r.run_id = run_id_;
  r.term = term_;
  r.role = role_name(role_);
  reports_.fill(r, Clock::now());
  return r;
}

void Coordinator::log_ring_change() {
  const auto& ring = membership_.ring();
  auto absent_from = [](const std::vector<std::string>& from, const std::vector<std::string>& of) {
    std::string out;
    for (const auto& id : of) {
      if (std::find(from.begin(), from.end(), id) == from.end()) out += (out.empty() ? "" : ", ") + id;
    }
    return out;
  };
  std::string joined = absent_from(logged_ring_, ring), left = absent_from(ring, logged_ring_);
  log_.info("epoch ", membership_.epoch(), ": ring of ", ring.size(), joined.empty() ? "" : "; joined: ", joined,
            left.empty() ? "" : "; gone: ", left);
  logged_ring_ = ring;
}

void Coordinator::tick() {
  // Before dropping a silent peer, take in what it already sent (see pump()): after this
  // process was frozen, its peers' heartbeats may still sit unread in the socket.
  std::vector<std::shared_ptr<net::FramedConnection>> suspects;
  for (const auto& peer : membership_.expired(Clock::now())) {
    auto it = conn_of_peer_.find(peer);
    if (it != conn_of_peer_.end()) suspects.push_back(conns_.at(it->second).link);
  }
  for (auto& link : suspects) link->pump();
  auto now = Clock::now();
  apply(membership_.on_tick(now));
  check_stalls(now);
  try_form_term(now);
  paths_->on_tick(now);
  std::vector<uint64_t> stale;
  uint32_t pending = membership_.pending_count();
  for (auto& [id, conn] : conns_) {
    if (!conn.rejoining.empty()) {  // keeps a re-registered peer from timing us out while we gather
      if (now - conn.last_sent >= heartbeat_interval_) {
        conn.link->send(proto::frame_of(proto::Heartbeat{0}));
        conn.last_sent = now;
      }
      continue;
    }
    if (conn.peer_id.empty()) {
      // A connection must say hello within the heartbeat timeout (its observation that
      // follows ends within kProbeTimeout by itself).
      if (!conn.observing && !conn.deferred && now - conn.opened > options_.heartbeat_timeout) stale.push_back(id);
      continue;
    }
    if (now - conn.last_sent >= heartbeat_interval_) {
      conn.link->send(proto::frame_of(proto::Heartbeat{pending}));
      conn.last_sent = now;
    }
  }
  for (auto id : stale) {  // closing erases from conns_, hence the separate pass
    auto it = conns_.find(id);
    if (it != conns_.end()) it->second.link->close("no hello within the heartbeat timeout");
  }
  if (trim_due_ && strangers_ == 0) {
    trim_due_ = false;
    malloc_trim(0);  // a burst of strangers' buffers goes back to the system, not to our heap
  }
  loop_.run_after(kTickInterval, [this] { tick(); });
}

}  // namespace pcomm::coord
