// Communicator, links part: each epoch's pools to the ring neighbours (through
// RemotePeers), connections other peers open to us, and the NAT probe at join. See
// remote_peer.h for the path choice and link_resync.h for the per-epoch step.
#include <netinet/in.h>
#include <sys/epoll.h>

#include <algorithm>
#include <thread>

#include "core/errors.h"
#include "net/address.h"
#include "net/tcp_link.h"
#include "net/tls_link.h"
#include "peer/communicator.h"
#include "peer/link_resync.h"
#include "proto/path_messages.h"

namespace pcomm::peer {

namespace {
// Link setup for an epoch must finish within this (or the heartbeat timeout, if longer).
constexpr std::chrono::seconds kLinkSetupTimeout{15};
// A connection must say what it is for within this.
constexpr std::chrono::seconds kInboundHelloTimeout{10};
// Connections on the data port that have not said what they are for yet, at most.
constexpr int kMaxInboundHandshakes = 256;
// Frames before a link's hello is taken are small: a stranger cannot make us hold more.
constexpr uint32_t kMaxHandshakePayload = 16 * 1024;

// Holds one of those places while its connection's handlers live.
struct HandshakeSlot {
  explicit HandshakeSlot(std::shared_ptr<std::atomic<int>> n) : count(std::move(n)) { ++*count; }
  ~HandshakeSlot() { --*count; }
  std::shared_ptr<std::atomic<int>> count;
};
}  // namespace

void Communicator::on_topology(const proto::Topology& topology) {
  std::string self;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    self = peer_id_;
  }
  int rank = -1;
  std::vector<std::string> ids;
  for (size_t i = 0; i < topology.ring.size(); ++i) {
    ids.push_back(topology.ring[i].peer_id);
    if (topology.ring[i].peer_id == self) rank = static_cast<int>(i);
  }
  if (rank < 0) throw ProtocolError("topology for epoch " + std::to_string(topology.epoch) + " does not include this peer");
  size_t n = ids.size();
  std::string left = ids[(static_cast<size_t>(rank) + n - 1) % n];
  std::string right = ids[(static_cast<size_t>(rank) + 1) % n];
  std::vector<std::string> gone;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& id : ring_) {
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) gone.push_back(id);
    }
    epoch_ = topology.epoch;
    ring_ = ids;
    rank_ = rank;
    links_.reset();
    self_member_ = topology.ring[static_cast<size_t>(rank)];
    neighbours_ = n == 1 ? std::vector<std::string>{} : left == right ? std::vector<std::string>{left}
                                                                      : std::vector<std::string>{left, right};
  }
  update_log_context(self, topology.epoch);
  log_.info("topology: rank ", rank, " of ", ids.size());
  // A lost peer is a warning; one that left cleanly is not. The coordinator says which
  // (Topology.gone); a coordinator that took over after the change may not know.
  for (const auto& id : gone) {
    auto said = std::find_if(topology.gone.begin(), topology.gone.end(),
                             [&](const proto::Departure& d) { return d.peer_id == id; });
    if (said == topology.gone.end()) {
      log_.warn("peer ", id, " is no longer in the ring (epoch ", topology.epoch, ")");
    } else if (said->reason == proto::kLeftReason) {
      log_.info("peer ", id, " left the ring (epoch ", topology.epoch, ")");
    } else {
      log_.warn("peer ", id, " is no longer in the ring (epoch ", topology.epoch, "): ", said->reason);
    }
  }
  cv_.notify_all();
  remotes_->update(topology.ring);
  uint64_t epoch = topology.epoch;
  auto cancel = std::make_shared<net::Cancel>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ == State::kClosed) return;  // close() fires prepare_cancel_ under this lock
    if (prepare_cancel_) prepare_cancel_->fire("superseded by epoch " + std::to_string(epoch));
    prepare_cancel_ = cancel;
  }
  if (n == 1) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      links_ = std::make_shared<LinkSet>(LinkSet{epoch, self, self, {}, {}});
    }
    coord_->send(proto::frame_of(proto::MsgType::kLinksReady, proto::EpochMsg{epoch}.encode()));
    return;
  }
  auto prep = std::make_shared<Preparation>();
  prep->epoch = epoch;
  prep->self = topology.ring[static_cast<size_t>(rank)];
  prep->left = left;
  prep->right = right;
  prep->cancel = cancel;
  prep->resync = std::make_shared<Resync>(epoch);
  preparation_ = prep;
  // Ops of older epochs still queued run (and fail) first; none runs during this step.
  data_plane_->enqueue_task([this, prep] { prepare_links(prep, true); });
}

void Communicator::on_pool_replaced(const std::string& peer) {
  auto prep = preparation_;
  if (!prep || prep->cancel->fired() || (peer != prep->left && peer != prep->right)) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_ != prep->epoch || !links_ || links_->epoch != prep->epoch) return;  // not reported yet
  }
  log_.debug("pool to ", peer, " replaced after epoch ", prep->epoch, " was ready here; re-synchronising");
  data_plane_->enqueue_task([this, prep] { prepare_links(prep, false); });
}

void Communicator::prepare_links(const std::shared_ptr<Preparation>& prep, bool first) {
  const uint64_t epoch = prep->epoch;
  const proto::RingMember& self = prep->self;
  const std::string& left = prep->left;
  const std::string& right = prep->right;
  const auto& cancel = prep->cancel;
  Resync& resync = *prep->resync;  // kept across attempts and runs: links already through stay through
  // The budget starts when the task does, not when the topology arrived.
  TimePoint deadline = Clock::now() + std::max<Duration>(kLinkSetupTimeout, heartbeat_timeout_);
  std::string failed_peer = right;
  std::string reason;
  bool allow_upgrade = first;
  while (reason.empty()) {
    if (cancel->fired()) return;  // a newer epoch (or close) took over
    std::vector<std::shared_ptr<Pool>> held;
    try {
      // The pools this side opens first, then those it waits for: a follower waits for
      // its driver, so a driver that first waited itself would chain delays along the ring.
      auto left_peer = remotes_->get(left);
      auto right_peer = remotes_->get(right);
      std::shared_ptr<Pool> left_pool, right_pool;
      bool left_first = left_peer->self_drives(self) || !right_peer->self_drives(self);
      for (int k = 0; k < 2; ++k) {
        bool do_left = (k == 0) == left_first;
        failed_peer = do_left ? left : right;
        if (do_left) {
          left_pool = left_peer->pool(self, deadline, *cancel, allow_upgrade);
        } else if (right != left) {
          right_pool = right_peer->pool(self, deadline, *cancel, allow_upgrade);
        }
      }
      allow_upgrade = false;  // a retry must not replace a pool the other side is done with
      if (right == left) right_pool = left_pool;
      held = {left_pool};
      if (right_pool != left_pool) held.push_back(right_pool);
      resync.run(held, deadline, *cancel);
      for (const auto& p : held) {
        // A pool may have been replaced (closed) after its streams were through here.
        if (p->broken()) throw IoError("the pool to " + p->peer + " was replaced during the resynchronisation");
      }
      auto set = std::make_shared<LinkSet>(LinkSet{epoch, left, right, right_pool->links, left_pool->links});
      loop_.post([this, epoch, set, prep] {
        for (const auto& links : {set->to_right, set->from_left}) {
          for (const auto& l : links) {
            if (l->broken()) {  // replaced meanwhile (see on_pool_replaced): once more
              data_plane_->enqueue_task([this, prep] { prepare_links(prep, false); });
              return;
            }
          }
        }
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (epoch_ != epoch) return;
          links_ = set;
        }
        if (coord_ && welcomed_) coord_->send(proto::frame_of(proto::MsgType::kLinksReady, proto::EpochMsg{epoch}.encode()));
      });
      return;
    } catch (const Aborted&) {
      return;  // a newer epoch (or close) took over
    } catch (const IoError& e) {
      // A pool broke (now marked): the next round replaces it, within the deadline.
      log_.debug("links of epoch ", epoch, ": ", e.what(), "; retrying");
      if (Clock::now() >= deadline) reason = e.what();
      std::this_thread::sleep_for(Millis(50));
    } catch (const ResyncTimeout& e) {
      // The other side never answered on these links: they may be dead without a reset
      // (a NAT mapping gone, a relay host lost). Do not trust them next epoch; the pools
      // that got through are kept.
      for (const auto& p : e.stuck) p->shutdown();
      if (!e.stuck.empty()) failed_peer = e.stuck.front()->peer;
      reason = e.what();
    } catch (const Error& e) {
      reason = e.what();
    }
  }
  loop_.post([this, epoch, failed_peer, reason] {
    log_.warn("links of epoch ", epoch, " failed: ", reason);
    if (coord_ && welcomed_) coord_->send(proto::frame_of(proto::LinksFailed{epoch, failed_peer, reason}));
  });
}

void Communicator::on_data_accept() {
  for (;;) {
    net::Socket s = data_listener_.accept_one();
    if (!s.valid()) return;
    on_inbound_link(std::make_shared<net::TcpLink>(std::move(s), net::LinkKind::kDirect));
  }
}

void Communicator::on_inbound_link(std::shared_ptr<net::Link> link) {
  if (*handshakes_ >= kMaxInboundHandshakes) {
    link->shutdown();  // a flood of silent connections: refuse, do not queue
    return;
  }
  auto slot = std::make_shared<HandshakeSlot>(handshakes_);
  bool secure = !options_.secret.empty();
  if (secure) {
    // The opener proves the key the coordinator issued for this pair (and epoch).
    link = net::TlsLink::server(std::move(link), [keyring = keyring_](const std::string& identity) {
      return keyring->lookup(identity);
    });
  }
  auto conn = net::FramedConnection::create(loop_, std::move(link), kMaxHandshakePayload);
  std::weak_ptr<net::FramedConnection> weak = conn;
  if (secure) {
    std::erase_if(inbound_tls_, [](const std::weak_ptr<net::FramedConnection>& w) {
      auto c = w.lock();
      return !c || c->closed();
    });
    inbound_tls_.push_back(weak);
  }
  // With a secret, the peer a hello names must be the one whose key opened the link.
  auto check_sender = [secure](const net::FramedConnection& c, const std::string& from) {
    if (!secure) return;
    uint64_t epoch = 0;
    std::string keyed;
    auto tls = std::dynamic_pointer_cast<net::TlsLink>(c.link());
    if (!tls || !net::parse_pair_identity(tls->identity(), &epoch, &keyed) || keyed != from) {
      throw AuthenticationError("a hello naming peer " + from + " on a link keyed for peer " + keyed);
    }
  };
  conn->start(
      [this, weak, slot, check_sender](uint16_t type, const uint8_t* p, size_t n) {
        auto c = weak.lock();
        if (!c) return;
        if (type == static_cast<uint16_t>(proto::StateMsg::kFetchHello)) {
          auto hello = proto::FetchHello::decode(p, n);
          if (hello.run != options_.run) throw InvalidArgument("run name mismatch on the data port");
          check_sender(*c, hello.from_peer);
          route_fetch_hello(hello, c);
          return;
        }
        if (type != static_cast<uint16_t>(proto::MsgType::kLinkHello)) {
          throw ProtocolError("expected LinkHello or FetchHello on the data port, got message type " +
                              std::to_string(type));
        }
        auto hello = proto::LinkHello::decode(p, n);
        if (hello.run != options_.run) {
          throw InvalidArgument("run name mismatch: this peer is in run '" + options_.run + "', not '" + hello.run +
                                "'");
        }
        check_sender(*c, hello.from_peer);
        route_link_hello(hello, c);
      },
      [](const std::string&) {});
  // A connection that never completes its handshake is closed.
  loop_.run_after(kInboundHelloTimeout, [weak] {
    if (auto c = weak.lock()) c->close("link handshake timed out");
  });
}

void Communicator::route_link_hello(const proto::LinkHello& hello,
                                    const std::shared_ptr<net::FramedConnection>& conn) {
  std::shared_ptr<RemotePeer> remote;
  proto::RingMember self;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    self = self_member_;
  }
  try {
    remote = remotes_->get(hello.from_peer);
  } catch (const InvalidArgument& e) {
    conn->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest), e.what());
    return;
  }
  if (!remote->accepts(self, hello.pool, hello.index, hello.count)) {
    conn->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest),
                               "this peer does not take pool " + std::to_string(hello.pool) + " from " + hello.from_peer);
    return;
  }
  // Acknowledged only once it will be taken: the opener counts acknowledged links as open.
  conn->send(proto::frame_of(proto::MsgType::kLinkAck, proto::EpochMsg{hello.pool}.encode()));
  remote->offer(hello.pool, hello.index, hello.count, conn->detach());
  // A pool that is not complete by then, or from a peer no topology names by then, is
  // closed (its sender may be ahead of our topology, but not by that much).
  loop_.run_after(kInboundHelloTimeout, [this] { remotes_->sweep(Clock::now() - kInboundHelloTimeout); });
}

void Communicator::on_observe(const proto::Observe& observe) {
  // Connect from the shared port to the coordinator's second port and name ourselves:
  // the coordinator compares the two mappings it saw of this port (randomizing NAT?).
  if (!coord_) return;
  auto host = net::parse_host_port(options_.coordinator, false).host;
  uint16_t port = ntohs(data_listener_.local_address().sin_port);
  auto sock = std::make_shared<net::Socket>();
  try {
    auto addr = net::resolve(net::HostPort{host, observe.probe_port});
    *sock = net::Socket::connect_start_from(port, addr);
  } catch (const Error& e) {
    log_.warn("NAT probe to the coordinator failed: ", e.what());
    return;
  }
  int fd = sock->fd();
  auto frame = proto::frame_of_fields(proto::ProbeHello{observe.nonce});
  auto finish = [this, sock, fd, frame](bool connected) {
    loop_.remove_fd(fd);
    if (connected && sock->finish_connect().empty()) {
      [[maybe_unused]] auto n = ::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL);
    }
    sock->close();
  };
  auto done = std::make_shared<bool>(false);
  loop_.add_fd(fd, EPOLLOUT, [finish, done](uint32_t) {
    if (*done) return;
    *done = true;
    finish(true);
  });
  loop_.run_after(std::chrono::seconds(3), [finish, done] {
    if (*done) return;
    *done = true;
    finish(false);
  });
}

std::vector<LinkInfo> Communicator::links() const {
  std::vector<std::string> neighbours;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    neighbours = neighbours_;
  }
  return remotes_->links(neighbours);
}

}  // namespace pcomm::peer
