// Relay; see relay.h.
#include "net/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "core/errors.h"
#include "net/address.h"
#include "net/link_frames.h"
#include "net/run_keys.h"
#include "net/tcp_link.h"
#include "net/tls_link.h"
#include "proto/relay_messages.h"

namespace pcomm::net {

namespace {
// A connection must join or register within this.
constexpr std::chrono::seconds kFirstFrameTimeout{10};
// Frames before pairing are tiny: a registration of 64 tokens fits easily.
constexpr uint32_t kMaxRelayFrame = 8 * 1024;
// How much one splice moves at most, and the pipe size asked for per direction.
constexpr size_t kSpliceChunk = 1 << 20;
constexpr Millis kTickInterval{500};
constexpr uint8_t kTlsHandshakeRecord = 22;  // the first byte of a TLS ClientHello
// Sending RelayPaired to both sides must finish within this.
constexpr std::chrono::seconds kPairTimeout{5};

std::string host_of(const std::string& endpoint) {
  auto colon = endpoint.rfind(':');
  return colon == std::string::npos ? endpoint : endpoint.substr(0, colon);
}

// One direction of a circuit: socket -> pipe -> socket.
struct Direction {
  Link* in;
  Link* out;
  int pipe_rd = -1, pipe_wr = -1;
  size_t pending = 0;  // bytes in the pipe
  size_t capacity = 0;  // the pipe's size (the kernel may grant less than asked)
  bool eof = false;
  bool out_closed = false;
  double tokens = 0;   // rate cap: bytes that may move now
};
}  // namespace

Relay::Relay(RelayOptions options)
    : options_(std::move(options)), log_([this] { return "relay " + address_; }) {
  parse_host_port(options_.listen, /*allow_port_zero=*/true);
  if (options_.max_circuits == 0 || options_.max_circuits_per_peer == 0 || options_.max_per_source == 0) {
    throw InvalidArgument("relay limits must be at least 1");
  }
  if (options_.idle_timeout <= Duration::zero()) throw InvalidArgument("idle_timeout must be positive");
  check_secure_listen("relay", options_.listen, options_.secret, options_.insecure);
  if (!options_.secret.empty()) relay_key_ = derive_key(options_.secret, kRelayPsk);
}

Relay::~Relay() { stop(); }

void Relay::start() {
  if (running_) return;
  listener_ = Socket::listen_on(parse_host_port(options_.listen, true));
  address_ = format_sockaddr(listener_.local_address());
  running_ = true;
  loop_.start();
  loop_.post([this] {
    loop_.add_fd(listener_.fd(), EPOLLIN, [this](uint32_t) { on_accept(); });
    loop_.run_after(kTickInterval, [this] { tick(); });
  });
  log_.info("relaying; at most ", options_.max_circuits, " circuits");
}

void Relay::stop() {
  if (!running_.exchange(false)) return;
  stopping_.fire("the relay is stopping");
  loop_.post([this] {
    std::vector<std::shared_ptr<FramedConnection>> all;
    for (auto& [id, c] : conns_) all.push_back(c.frames);
    for (auto& c : all) c->close("the relay is stopping");
  });
  loop_.stop();
  std::vector<Circuit> circuits;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    circuits.swap(circuits_);
  }
  for (auto& c : circuits) c.thread.join();
  conns_.clear();
  unsorted_.clear();
  tokens_.clear();
  listener_.close();
}

Relay::Stats Relay::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Relay::on_accept() {
  for (;;) {
    Socket s = listener_.accept_one();
    if (!s.valid()) return;
    std::string source = host_of(format_sockaddr(s.remote_address()));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (conns_.size() + unsorted_.size() + circuits_.size() * 2 >= options_.max_circuits * 2 + 64 ||
          per_source_[source] >= options_.max_per_source) {
        ++stats_.refused;
        continue;  // the socket closes here: over a limit
      }
      ++per_source_[source];
    }
    uint64_t id = next_id_++;
    int fd = s.fd();
    unsorted_.emplace(id, std::make_pair(std::move(s), source));
    loop_.add_fd(fd, EPOLLIN, [this, id](uint32_t) { on_first_bytes(id); });
    loop_.run_after(kFirstFrameTimeout, [this, id] {
      auto u = unsorted_.find(id);
      if (u != unsorted_.end()) {
        loop_.remove_fd(u->second.first.fd());
        conns_[id] = Conn{nullptr, u->second.second, "", false};
        unsorted_.erase(u);
        on_closed(id);
        return;
      }
      auto it = conns_.find(id);
      if (it != conns_.end() && it->second.token.empty()) it->second.frames->close("nothing said in time");
    });
  }
}

void Relay::on_first_bytes(uint64_t id) {
  auto u = unsorted_.find(id);
  if (u == unsorted_.end()) return;
  uint8_t first = 0;
  ssize_t n = ::recv(u->second.first.fd(), &first, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  Socket s = std::move(u->second.first);
  std::string source = std::move(u->second.second);
  unsorted_.erase(u);
  loop_.remove_fd(s.fd());
  if (n <= 0) {  // closed or failed before a byte
    conns_[id] = Conn{nullptr, source, "", false};
    on_closed(id);
    return;
  }
  bool tls = first == kTlsHandshakeRecord && !options_.secret.empty();
  try {
    std::shared_ptr<Link> link = std::make_shared<TcpLink>(std::move(s), LinkKind::kDirect);
    if (tls) link = TlsLink::server(link, single_key(relay_identity(), relay_key_));
    start_conn(id, std::move(link), source, tls);
  } catch (const std::exception& e) {
    log_.warn("could not take a connection from ", source, ": ", e.what());
    conns_[id] = Conn{nullptr, source, "", false};
    on_closed(id);  // releases its place in the limits
  }
}

void Relay::start_conn(uint64_t id, std::shared_ptr<Link> link, std::string source, bool tls) {
  auto frames = FramedConnection::create(loop_, std::move(link), kMaxRelayFrame);
  conns_[id] = Conn{frames, source, "", tls};
  frames->start([this, id](uint16_t type, const uint8_t* p, size_t n) { on_frame(id, type, p, n); },
                [this, id](const std::string&) { on_closed(id); });
}

void Relay::refuse(uint64_t id, const std::string& why) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.refused;
  }
  log_.debug("refused a connection from ", it->second.source, ": ", why);
  it->second.frames->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest), why);
}

void Relay::on_frame(uint64_t id, uint16_t type, const uint8_t* payload, size_t size) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  auto now = Clock::now();
  if (type == static_cast<uint16_t>(proto::MsgType::kRelayRegister)) {
    if (!options_.secret.empty() && !it->second.tls) {
      return refuse(id, "this relay takes registrations only from its run's coordinator, over TLS with the run "
                        "secret (start the coordinator with the same secret)");
    }
    auto reg = proto::decode_fields<proto::RelayRegister>(payload, size);
    for (const auto& t : reg.tokens) {
      if (tokens_.count(t)) return refuse(id, "a token registered twice");
    }
    if (tokens_.size() + reg.tokens.size() > 64ull * options_.max_circuits) return refuse(id, "too many tokens");
    for (const auto& t : reg.tokens) tokens_[t] = Token{reg.peer_a, reg.peer_b, now + Millis(reg.ttl_ms), 0};
    it->second.frames->send(proto::frame_of_fields(proto::RelayRegistered{{reg.tokens.front()}}));
    it->second.token = "(control)";  // a coordinator's connection: no first-frame timeout
    return;
  }
  if (type != static_cast<uint16_t>(proto::MsgType::kRelayJoin)) {
    throw ProtocolError("expected RelayJoin or RelayRegister, got message type " + std::to_string(type));
  }
  if (!it->second.token.empty()) throw ProtocolError("a second RelayJoin on one connection");
  if (it->second.tls) throw ProtocolError("a RelayJoin on a registration channel");
  auto join = proto::decode_fields<proto::RelayJoin>(payload, size);
  auto tok = tokens_.find(join.token);
  if (tok == tokens_.end()) return refuse(id, "unknown relay token");
  if (tok->second.expires <= now) return refuse(id, "expired relay token");
  if (tok->second.waiting_conn == UINT64_MAX) return refuse(id, "relay token already used");
  it->second.token = join.token;
  if (tok->second.waiting_conn == 0 || !conns_.count(tok->second.waiting_conn)) {
    tok->second.waiting_conn = id;  // the first side waits for the second
    return;
  }
  uint64_t first = tok->second.waiting_conn;
  tok->second.waiting_conn = UINT64_MAX;  // spent; kept until expiry to say "used"
  pair(first, id, join.token);
}

void Relay::pair(uint64_t first, uint64_t second, const std::string& token) {
  const Token& t = tokens_.at(token);
  if (conns_.at(first).frames->closed() || conns_.at(second).frames->closed()) {
    // One side went away in the same round (its close is still queued): no circuit.
    for (uint64_t id : {first, second}) conns_.at(id).frames->close("the other side is gone");
    return;
  }
  bool full = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto count = [this](const std::string& peer) {
      auto it = per_peer_.find(peer);
      return it == per_peer_.end() ? 0u : it->second;
    };
    full = circuits_.size() >= options_.max_circuits || count(t.peer_a) >= options_.max_circuits_per_peer ||
           count(t.peer_b) >= options_.max_circuits_per_peer;
    if (full) {
      ++stats_.refused;
    } else {
      ++per_peer_[t.peer_a];
      ++per_peer_[t.peer_b];
    }
  }
  if (full) {
    for (uint64_t id : {first, second}) {
      conns_.at(id).frames->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest),
                                                 "the relay is full");
    }
    return;
  }
  Conn a = conns_.at(first), b = conns_.at(second);
  conns_.erase(first);
  conns_.erase(second);
  auto link_a = a.frames->detach();
  auto link_b = b.frames->detach();
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.circuits_open;
  ++stats_.circuits_total;
  reap_circuits();
  circuits_.push_back(Circuit{std::thread([this, link_a, link_b, pa = t.peer_a, pb = t.peer_b, sa = a.source,
                                           sb = b.source, done] { forward(link_a, link_b, pa, pb, sa, sb, done); }),
                              done});
}

void Relay::reap_circuits() {
  for (auto it = circuits_.begin(); it != circuits_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = circuits_.erase(it);
    } else {
      ++it;
    }
  }
}

void Relay::on_closed(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--per_source_[it->second.source] == 0) per_source_.erase(it->second.source);
  }
  conns_.erase(it);
}

void Relay::tick() {
  auto now = Clock::now();
  for (auto it = tokens_.begin(); it != tokens_.end();) {
    if (it->second.expires <= now) {
      uint64_t waiting = it->second.waiting_conn;
      if (waiting != 0 && waiting != UINT64_MAX && conns_.count(waiting)) {
        conns_.at(waiting).frames->send_error_and_close(static_cast<uint16_t>(proto::ErrorCode::kBadRequest),
                                                        "the other side never joined");
      }
      it = tokens_.erase(it);
    } else {
      ++it;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reap_circuits();
  }
  loop_.run_after(kTickInterval, [this] { tick(); });
}

void Relay::forward(std::shared_ptr<Link> a, std::shared_ptr<Link> b, std::string peer_a, std::string peer_b,
                    std::string source_a, std::string source_b, std::shared_ptr<std::atomic<bool>> done) {
  Direction dirs[2] = {{a.get(), b.get()}, {b.get(), a.get()}};
  try {
    TimePoint deadline = Clock::now() + kPairTimeout;
    for (Link* l : {a.get(), b.get()}) send_frame(*l, static_cast<uint16_t>(proto::MsgType::kRelayPaired), {}, deadline, &stopping_);
    for (auto& d : dirs) {
      int fds[2];
      if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw IoError("pipe2 failed: " + errno_text(errno));
      d.pipe_rd = fds[0];
      d.pipe_wr = fds[1];
      ::fcntl(d.pipe_wr, F_SETPIPE_SZ, static_cast<int>(kSpliceChunk));
      int size = ::fcntl(d.pipe_wr, F_GETPIPE_SZ);
      d.capacity = size > 0 ? static_cast<size_t>(size) : 4096;
      // Bytes a side sent before it was paired were read with its join: pass them on.
      uint8_t buf[4096];
      while (d.in->recv_ready()) {
        size_t n = d.in->recv_some(buf, sizeof buf);
        d.out->send_all(buf, n, deadline, &stopping_);
      }
    }
    const double rate = static_cast<double>(options_.rate_bytes_per_second);
    TimePoint last_refill = Clock::now(), last_moved = Clock::now();
    for (;;) {
      auto now = Clock::now();
      if (rate > 0) {
        double add = rate * duration_to_seconds(now - last_refill);
        for (auto& d : dirs) d.tokens = std::min(rate / 10 + kSpliceChunk, d.tokens + add);
        last_refill = now;
      }
      bool moved = false;
      for (auto& d : dirs) {
        size_t budget = d.capacity - d.pending;
        if (rate > 0) budget = std::min(budget, static_cast<size_t>(d.tokens));
        if (!d.eof && budget > 0) {
          ssize_t n = ::splice(d.in->fd(), nullptr, d.pipe_wr, nullptr, budget, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
          if (n > 0) {
            d.pending += static_cast<size_t>(n);
            d.tokens -= static_cast<double>(n);
            moved = true;
          } else if (n == 0) {
            d.eof = true;
          } else if (errno != EAGAIN && errno != EINTR) {
            throw IoError("splice from a peer failed: " + errno_text(errno));
          }
        }
        if (d.pending > 0) {
          ssize_t n = ::splice(d.pipe_rd, nullptr, d.out->fd(), nullptr, d.pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
          if (n > 0) {
            d.pending -= static_cast<size_t>(n);
            moved = true;
            std::lock_guard<std::mutex> lock(mutex_);
            stats_.bytes_forwarded += static_cast<uint64_t>(n);
          } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            throw IoError("splice to a peer failed: " + errno_text(errno));
          }
        }
        if (d.eof && d.pending == 0 && !d.out_closed) {
          ::shutdown(d.out->fd(), SHUT_WR);  // pass the end of the stream on
          d.out_closed = true;
        }
      }
      if (dirs[0].out_closed && dirs[1].out_closed) break;
      if (moved) {
        last_moved = now;
        continue;
      }
      if (now - last_moved >= options_.idle_timeout) throw IoError("circuit idle");
      pollfd fds[3];
      int nfds = 0;
      fds[nfds++] = pollfd{stopping_.fd(), POLLIN, 0};
      for (Link* l : {a.get(), b.get()}) {
        short ev = 0;
        for (auto& d : dirs) {
          if (d.in == l && !d.eof && d.pending < d.capacity) ev |= POLLIN;
          if (d.out == l && d.pending > 0) ev |= POLLOUT;
        }
        // A socket we want nothing from is left out: poll would report its hang-up or
        // error again and again (a reset side of an idle circuit) and spin this thread.
        fds[nfds++] = pollfd{ev ? l->fd() : -1, ev, 0};
      }
      Duration wait = options_.idle_timeout - (now - last_moved);
      if (rate > 0) wait = std::min<Duration>(wait, Millis(5));  // refill the buckets
      ::poll(fds, static_cast<nfds_t>(nfds), static_cast<int>(std::max<int64_t>(1, to_millis(wait))));
      if (stopping_.fired()) break;
    }
  } catch (const std::exception& e) {
    log_.debug("circuit ", peer_a, " <-> ", peer_b, " ended: ", e.what());
  }
  for (auto& d : dirs) {
    if (d.pipe_rd >= 0) ::close(d.pipe_rd);
    if (d.pipe_wr >= 0) ::close(d.pipe_wr);
  }
  a->shutdown();
  b->shutdown();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --stats_.circuits_open;
    for (const auto& p : {peer_a, peer_b}) {
      if (--per_peer_[p] == 0) per_peer_.erase(p);
    }
    for (const auto& s : {source_a, source_b}) {
      if (--per_source_[s] == 0) per_source_.erase(s);
    }
  }
  done->store(true);
}

}  // namespace pcomm::net
