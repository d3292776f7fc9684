// RemotePeer and RemotePeers; see remote_peer.h.
#include "peer/remote_peer.h"

#include <algorithm>
#include <random>

#include "core/errors.h"
#include "net/address.h"
#include "net/link_frames.h"
#include "net/tcp_link.h"

namespace pcomm::peer {

namespace {
// How many peers the directory remembers (inbound pools create entries, so it is capped).
constexpr size_t kMaxRemotePeers = 4096;

uint64_t random_pool_id() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  uint64_t v = 0;
  while (v == 0) v = rng();
  return v;
}

std::string host_of(const std::string& address) {
  auto colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

bool reachable(const proto::RingMember& m) { return (m.nat & proto::kReachable) != 0; }
bool randomizing(const proto::RingMember& m) { return (m.nat & proto::kRandomizing) != 0; }

// Addresses this side can dial directly to reach remote, in order.
std::vector<std::string> direct_candidates(const proto::RingMember& self, const proto::RingMember& remote) {
  std::vector<std::string> out;
  if (reachable(remote) && !remote.observed_address.empty()) out.push_back(remote.observed_address);
  // Behind the same public address: the local address may be reachable (same LAN).
  bool same_nat = !self.observed_address.empty() && host_of(self.observed_address) == host_of(remote.observed_address);
  if (same_nat && !remote.data_address.empty() && remote.data_address != remote.observed_address) {
    out.push_back(remote.data_address);
  }
  return out;
}
}  // namespace

PathChoice choose_path(const proto::RingMember& self, const proto::RingMember& remote) {
  PathChoice c;
  bool self_up = reachable(self), remote_up = reachable(remote);
  if (self_up != remote_up) {
    c.self_drives = remote_up;  // the unreachable side can dial out to the reachable one
  } else {
    c.self_drives = self.peer_id < remote.peer_id;
  }
  if (c.self_drives) c.direct = direct_candidates(self, remote);
  c.punchable = !randomizing(self) && !randomizing(remote);
  return c;
}

bool Pool::broken() const {
  for (const auto& l : links) {
    if (!l || l->broken()) return true;
  }
  return links.empty();
}

void Pool::shutdown() {
  for (auto& l : links) {
    if (l) l->shutdown();  // a pool still arriving has empty slots
  }
}

void RemotePeer::set_info(const proto::RingMember& info) {
  std::lock_guard<std::mutex> lock(mutex_);
  info_ = info;
}

bool RemotePeer::self_drives(const proto::RingMember& self) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return info_ && choose_path(self, *info_).self_drives;
}

void RemotePeer::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  if (current_) current_->shutdown();
  current_.reset();
  for (auto& [id, p] : partial_) p.shutdown();
  partial_.clear();
  cv_.notify_all();
}

void RemotePeer::adopt(std::shared_ptr<Pool> pool) {
  if (current_ && current_ != pool) current_->shutdown();
  current_ = std::move(pool);
  env_.log->info("link to ", id_, ": ", net::link_kind_name(current_->kind), " via ",
                current_->links.front()->remote(), " (", current_->links.size(), " connection",
                current_->links.size() == 1 ? "" : "s", ")");
  cv_.notify_all();
}

std::shared_ptr<Pool> RemotePeer::pool(const proto::RingMember& self, TimePoint deadline, const net::Cancel& cancel,
                                       bool allow_upgrade) {
  proto::RingMember remote;
  std::shared_ptr<Pool> working;
  bool try_upgrade = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!info_) throw IoError("no address known for peer " + id_);
    remote = *info_;
    if (current_ && !current_->broken()) working = current_;
  }
  PathChoice choice = choose_path(self, remote);
  if (!choice.self_drives) {
    // Follower: the driver's pool, whichever path it took. A broken one is closed here so
    // the driver, which may not have noticed, sees its end and opens a new one.
    std::unique_lock<std::mutex> lock(mutex_);
    if (current_ && current_->broken()) current_->shutdown();
    for (;;) {
      if (closed_) throw Aborted("the communicator was closed");
      if (current_ && !current_->broken()) return current_;
      if (cancel.fired()) throw Aborted(cancel.reason());
      if (Clock::now() >= deadline) {
        throw TimeoutError("peer " + id_ + " did not open its links to this peer in time");
      }
      cv_.wait_until(lock, std::min(deadline, Clock::now() + Millis(50)));
    }
  }
  if (working) {
    std::lock_guard<std::mutex> lock(mutex_);
    try_upgrade = allow_upgrade && working->kind == net::LinkKind::kRelayed && choice.punchable &&
                  Clock::now() - last_upgrade_try_ >= kUpgradeInterval;
    if (try_upgrade) last_upgrade_try_ = Clock::now();
  }
  if (working && !try_upgrade) return working;
  if (working) {
    // A relayed pool works; one punch attempt, bounded well inside the deadline.
    try {
      auto punched = try_punch(self, false, std::min(deadline, Clock::now() + kPunchRequestTimeout), cancel);
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) {
        punched->shutdown();
        throw Aborted("the communicator was closed");
      }
      adopt(punched);
      return punched;
    } catch (const Aborted&) {
      throw;
    } catch (const Error& e) {
      env_.log->debug("upgrade of the relayed path to ", id_, " failed: ", e.what());
      return working;
    }
  }
  auto fresh = establish(self, choice, deadline, cancel);
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) {
    fresh->shutdown();
    throw Aborted("the communicator was closed");
  }
  adopt(fresh);
  return fresh;
}

std::shared_ptr<Pool> RemotePeer::establish(const proto::RingMember& self, const PathChoice& choice,
                                            TimePoint deadline, const net::Cancel& cancel) {
  std::string why;
  for (const auto& address : choice.direct) {
    try {
      auto addr = net::resolve(net::parse_host_port(address, false));
      std::vector<std::shared_ptr<net::Link>> links;
      for (uint32_t i = 0; i < env_.connections; ++i) {
        auto until = std::min(deadline, Clock::now() + kDirectDialTimeout);
        auto s = net::Socket::connect_blocking(addr, Deadline(until - Clock::now()), 0, &cancel);
        links.push_back(std::make_shared<net::TcpLink>(std::move(s), net::LinkKind::kDirect));
      }
      return handshake(self.peer_id, std::move(links), net::LinkKind::kDirect, deadline, &cancel);
    } catch (const Aborted&) {
      throw;
    } catch (const Error& e) {
      why = "direct to " + address + ": " + e.what();
      env_.log->debug("link to ", id_, ": ", why);
    }
  }
  if (cancel.fired()) throw Aborted(cancel.reason());
  bool backing_off;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    backing_off = punch_failed_at_ != TimePoint{} && Clock::now() - punch_failed_at_ < kPunchBackoff;
  }
  if (choice.punchable && !backing_off) {
    TimePoint punch_until = Clock::now() + std::chrono::duration_cast<Duration>((deadline - Clock::now()) * kPunchShare);
    for (int attempt = 1; attempt <= kPunchAttempts && Clock::now() < punch_until; ++attempt) {
      try {
        return try_punch(self, attempt > 1, std::min(punch_until, Clock::now() + kPunchRequestTimeout), cancel);
      } catch (const Aborted&) {
        throw;
      } catch (const Error& e) {
        why = std::string("punch attempt ") + std::to_string(attempt) + ": " + e.what();
        env_.log->debug("link to ", id_, ": ", why);
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    punch_failed_at_ = Clock::now();  // the next pools go to a relay for a while
  }
  try {
    auto links = env_.agent->request(id_, proto::PathKind::kRelay, proto::PathPurpose::kPool, env_.connections,
                                     deadline, &cancel);
    return handshake(self.peer_id, std::move(links), net::LinkKind::kRelayed, deadline, &cancel);
  } catch (const Error& e) {
    if (dynamic_cast<const Aborted*>(&e)) throw;
    throw IoError("no path to peer " + id_ + " (" + why + (why.empty() ? "" : "; ") + "relay: " + e.what() + ")");
  }
}

std::shared_ptr<Pool> RemotePeer::try_punch(const proto::RingMember& self, bool fresh_port, TimePoint deadline,
                                            const net::Cancel& cancel) {
  {
    // The shared port's 4-tuple to this peer may linger (TIME_WAIT, a half-open
    // attempt) after any punch from it: every later punch uses a fresh port.
    std::lock_guard<std::mutex> lock(mutex_);
    fresh_port = fresh_port || punched_before_;
    punched_before_ = true;
  }
  auto links = env_.agent->request(id_, proto::PathKind::kPunch, proto::PathPurpose::kPool, 1, deadline, &cancel,
                                   fresh_port);
  return handshake(self.peer_id, std::move(links), net::LinkKind::kPunched, Clock::now() + kHandshakeTimeout,
                   &cancel);
}

std::shared_ptr<Pool> RemotePeer::handshake(const std::string& self_id, std::vector<std::shared_ptr<net::Link>> links,
                                            net::LinkKind kind, TimePoint deadline, const net::Cancel* cancel) {
  auto pool = std::make_shared<Pool>();
  pool->id = random_pool_id();
  pool->peer = id_;
  pool->kind = kind;
  pool->links = std::move(links);
  try {
    for (auto& link : pool->links) link = secured(link, deadline, cancel);
    auto count = static_cast<uint32_t>(pool->links.size());
    for (uint32_t i = 0; i < count; ++i) {
      proto::LinkHello hello{env_.run, self_id, pool->id, i, count};
      net::send_frame(*pool->links[i], static_cast<uint16_t>(proto::MsgType::kLinkHello), hello.encode(), deadline,
                      cancel);
    }
    for (auto& link : pool->links) {
      uint16_t type = 0;
      auto payload = net::read_frame(*link, &type, proto::kMaxString + 64, deadline, cancel);
      if (type == static_cast<uint16_t>(proto::MsgType::kError)) {
        throw IoError("peer " + id_ + " refused the link: " + proto::ErrorMsg::decode(payload.data(), payload.size()).text);
      }
      if (type != static_cast<uint16_t>(proto::MsgType::kLinkAck) ||
          proto::EpochMsg::decode(payload.data(), payload.size()).epoch != pool->id) {
        throw ProtocolError("peer " + id_ + " answered the link hello with message type " + std::to_string(type));
      }
    }
  } catch (...) {
    pool->shutdown();
    throw;
  }
  return pool;
}

std::shared_ptr<net::Link> RemotePeer::secured(std::shared_ptr<net::Link> link, TimePoint deadline,
                                               const net::Cancel* cancel) {
  return env_.secure ? env_.secure(std::move(link), id_, deadline, cancel) : link;
}

std::shared_ptr<net::Link> RemotePeer::open_stream(const proto::RingMember& self, TimePoint deadline,
                                                   const net::Cancel* cancel) {
  proto::RingMember remote;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!info_) throw IoError("no address known for peer " + id_);
    remote = *info_;
  }
  std::string why;
  for (const auto& address : direct_candidates(self, remote)) {
    try {
      auto until = std::min(deadline, Clock::now() + kDirectDialTimeout);
      auto s = net::Socket::connect_blocking(net::resolve(net::parse_host_port(address, false)),
                                             Deadline(until - Clock::now()), 0, cancel);
      return secured(std::make_shared<net::TcpLink>(std::move(s), net::LinkKind::kDirect), deadline, cancel);
    } catch (const Aborted&) {
      throw;
    } catch (const Error& e) {
      why = "direct to " + address + ": " + e.what();
    }
  }
  if (choose_path(self, remote).punchable) {
    try {
      auto links = env_.agent->request(id_, proto::PathKind::kPunch, proto::PathPurpose::kStream, 1,
                                       std::min(deadline, Clock::now() + kPunchRequestTimeout), cancel, true);
      return secured(links.front(), deadline, cancel);
    } catch (const Aborted&) {
      throw;
    } catch (const Error& e) {
      why = std::string("punch: ") + e.what();
    }
  }
  try {
    auto links = env_.agent->request(id_, proto::PathKind::kRelay, proto::PathPurpose::kStream, 1, deadline, cancel);
    return secured(links.front(), deadline, cancel);
  } catch (const Error& e) {
    if (dynamic_cast<const Aborted*>(&e)) throw;
    throw IoError("no path to peer " + id_ + " (" + why + (why.empty() ? "" : "; ") + "relay: " + e.what() + ")");
  }
}

bool RemotePeer::accepts(const proto::RingMember& self, uint64_t pool, uint32_t index, uint32_t count) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_ || (current_ && current_->id == pool)) return false;
  // This side drives the pair: nobody else opens its pool (an unknown peer is not
  // refused yet: its topology may still be on the way; sweep() ends its stay).
  if (info_ && !self.peer_id.empty() && choose_path(self, *info_).self_drives) return false;
  auto it = partial_.find(pool);
  if (it == partial_.end()) return true;
  return it->second.links.size() == count && index < count && !it->second.links[index];
}

void RemotePeer::offer(uint64_t pool, uint32_t index, uint32_t count, std::shared_ptr<net::Link> link) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_ || (current_ && current_->id == pool)) {
    link->shutdown();
    return;
  }
  auto it = partial_.find(pool);
  if (it == partial_.end()) {
    while (partial_.size() >= kMaxPartialPools) {  // drop the oldest straggler
      auto oldest = std::min_element(partial_since_.begin(), partial_since_.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; });
      partial_.at(oldest->first).shutdown();
      partial_.erase(oldest->first);
      partial_since_.erase(oldest);
    }
    it = partial_.emplace(pool, Pool{pool, link->kind(), std::vector<std::shared_ptr<net::Link>>(count), id_}).first;
    partial_since_[pool] = Clock::now();
  }
  Pool& p = it->second;
  if (p.links.size() != count || index >= count || p.links[index]) {
    link->shutdown();  // inconsistent with the pool's first connection
    return;
  }
  p.links[index] = std::move(link);
  for (const auto& l : p.links) {
    if (!l) return;
  }
  auto complete = std::make_shared<Pool>(std::move(p));
  partial_.erase(it);
  partial_since_.erase(pool);
  bool replacing = current_ != nullptr;
  adopt(std::move(complete));
  if (replacing && env_.replaced) {
    // Called under mutex_: the callback only queues work (Communicator::on_pool_replaced).
    env_.replaced(id_);
  }
}

bool RemotePeer::sweep(TimePoint cutoff) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = partial_.begin(); it != partial_.end();) {
    if (partial_since_[it->first] < cutoff) {
      it->second.shutdown();
      partial_since_.erase(it->first);
      it = partial_.erase(it);
    } else {
      ++it;
    }
  }
  return info_.has_value();
}

std::optional<LinkInfo> RemotePeer::info() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!current_ || current_->links.empty()) return std::nullopt;
  LinkInfo info;
  info.peer_id = id_;
  info.kind = current_->broken() ? std::string("broken") : net::link_kind_name(current_->kind);
  info.remote = current_->links.front()->remote();
  info.connections = static_cast<uint32_t>(current_->links.size());
  info.rtt_seconds = current_->links.front()->rtt_seconds();
  return info;
}

std::shared_ptr<RemotePeer> RemotePeers::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = peers_.find(id);
  if (it != peers_.end()) return it->second;
  if (peers_.size() >= kMaxRemotePeers) throw InvalidArgument("too many remote peers known");
  auto rp = std::make_shared<RemotePeer>(id, env_);
  peers_[id] = rp;
  return rp;
}

std::shared_ptr<RemotePeer> RemotePeers::find(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : it->second;
}

void RemotePeers::update(const std::vector<proto::RingMember>& members) {
  std::vector<std::shared_ptr<RemotePeer>> gone;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, std::shared_ptr<RemotePeer>> next;
    for (const auto& m : members) {
      auto it = peers_.find(m.peer_id);
      auto rp = it != peers_.end() ? it->second : std::make_shared<RemotePeer>(m.peer_id, env_);
      rp->set_info(m);
      next[m.peer_id] = rp;
    }
    for (auto& [id, rp] : peers_) {
      if (!next.count(id)) gone.push_back(rp);
    }
    peers_ = std::move(next);
  }
  for (auto& rp : gone) rp->close();  // left the run: its links are of no more use
}

std::vector<LinkInfo> RemotePeers::links(const std::vector<std::string>& neighbours) const {
  std::vector<LinkInfo> out;
  for (const auto& id : neighbours) {
    auto rp = find(id);
    if (!rp) continue;
    if (auto info = rp->info()) out.push_back(*info);
  }
  return out;
}

void RemotePeers::sweep(TimePoint cutoff) {
  std::vector<std::shared_ptr<RemotePeer>> strangers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = peers_.begin(); it != peers_.end();) {
      if (!it->second->sweep(cutoff) && it->second->created() < cutoff) {
        strangers.push_back(it->second);
        it = peers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& rp : strangers) rp->close();
}

void RemotePeers::clear() {
  std::map<std::string, std::shared_ptr<RemotePeer>> all;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    all.swap(peers_);
  }
  for (auto& [id, rp] : all) rp->close();
}

}  // namespace pcomm::peer
