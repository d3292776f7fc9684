// PathAgent; see path_agent.h.
#include "peer/path_agent.h"

#include <netinet/in.h>
#include <poll.h>

#include <cerrno>
#include <random>

#include "core/errors.h"
#include "net/address.h"
#include "net/link_frames.h"
#include "net/tcp_link.h"
#include "proto/relay_messages.h"

namespace pcomm::peer {

namespace {
uint64_t random_intent() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  uint64_t v = 0;
  while (v == 0) v = rng();
  return v;
}

// Sleeps until `until` unless cancel fires first (then Aborted).
void sleep_until(TimePoint until, const net::Cancel& cancel) {
  while (Clock::now() < until) {
    if (cancel.fired()) throw Aborted(cancel.reason());
    auto left = std::chrono::ceil<Millis>(until - Clock::now()).count();
    pollfd p{cancel.fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, left)));
  }
  if (cancel.fired()) throw Aborted(cancel.reason());
}
}  // namespace

PathAgent::PathAgent(const Logger& log, Send send_to_coordinator, Inbound inbound)
    : log_(log), send_(std::move(send_to_coordinator)), inbound_(std::move(inbound)) {}

PathAgent::~PathAgent() { stop(); }

void PathAgent::stop() {
  std::vector<Worker> workers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    backlog_.clear();
    for (auto& [intent, w] : waiters_) {
      if (!w.done) {
        w.done = true;
        w.error = "the communicator was closed";
      }
    }
    reserved_.clear();
    workers.swap(workers_);
  }
  stopping_.fire("the communicator was closed");
  cv_.notify_all();
  for (auto& w : workers) w.thread.join();
}

void PathAgent::spawn(std::function<void()> work) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopped_) return;
  // Join the workers that are done; past the cap, the work waits for one to finish.
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  if (workers_.size() >= kMaxWorkers) {
    backlog_.push_back(std::move(work));
    return;
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  workers_.push_back(Worker{std::thread([this, done, work = std::move(work)]() mutable {
                              for (;;) {
                                try {
                                  work();
                                } catch (const std::exception& e) {
                                  log_.debug("path worker ended: ", e.what());
                                }
                                std::lock_guard<std::mutex> lock(mutex_);
                                if (stopped_ || backlog_.empty()) break;
                                work = std::move(backlog_.front());  // take the next one waiting
                                backlog_.pop_front();
                              }
                              done->store(true);
                            }),
                            done});
}

std::vector<std::shared_ptr<net::Link>> PathAgent::request(const std::string& peer, proto::PathKind kind,
                                                           proto::PathPurpose purpose, uint32_t count,
                                                           TimePoint deadline, const net::Cancel* cancel,
                                                           bool fresh_port) {
  uint64_t intent = random_intent();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) throw Aborted("the communicator was closed");
    Waiter w;
    w.fresh_port = fresh_port;
    waiters_[intent] = std::move(w);
  }
  proto::PathRequest req{intent, peer, static_cast<uint8_t>(kind), static_cast<uint8_t>(purpose), count};
  send_(proto::frame_of_fields(req));
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    Waiter& w = waiters_.at(intent);
    if (w.done) {
      Waiter result = std::move(w);
      waiters_.erase(intent);
      if (result.error) throw IoError(*result.error);
      return std::move(result.links);
    }
    if (cancel && cancel->fired()) {
      waiters_.erase(intent);
      throw Aborted(cancel->reason());
    }
    if (Clock::now() >= deadline) {
      waiters_.erase(intent);  // a late answer finds no waiter and its links are closed
      throw TimeoutError(std::string(kind == proto::PathKind::kPunch ? "hole punch" : "relayed path") + " to peer " +
                         peer + " timed out");
    }
    cv_.wait_until(lock, std::min(deadline, Clock::now() + Millis(50)));
  }
}

void PathAgent::deliver(uint64_t intent, bool requester, std::vector<std::shared_ptr<net::Link>> links,
                        const std::string& error) {
  if (!requester) {
    for (auto& link : links) inbound_(std::move(link));
    return;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = waiters_.find(intent);
  if (it == waiters_.end() || it->second.done) {
    for (auto& link : links) link->shutdown();  // nobody waits for them any more
    return;
  }
  it->second.done = true;
  if (error.empty()) {
    it->second.links = std::move(links);
  } else {
    it->second.error = error;
  }
  cv_.notify_all();
}

void PathAgent::on_punch_prepare(const proto::PunchPrepare& m) {
  uint16_t port = shared_port_;
  bool fresh = static_cast<proto::PathPurpose>(m.purpose) == proto::PathPurpose::kStream;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = waiters_.find(m.intent);
    if (m.requester && it != waiters_.end() && it->second.fresh_port) fresh = true;
    // Reservations whose PunchGo never came (the other side did not answer in time).
    auto now = Clock::now();
    for (auto r = reserved_.begin(); r != reserved_.end();) {
      r = now - r->second.since > kReservedPortTtl ? reserved_.erase(r) : std::next(r);
    }
  }
  if (fresh) {
    // A stream, or a replacement pool, gets a fresh port (the shared one's 4-tuple to
    // this peer is taken, or may be): hold it bound until the punch so nothing takes it.
    try {
      net::Socket reserve = net::Socket::reserve_port();
      port = ntohs(reserve.local_address().sin_port);
      std::lock_guard<std::mutex> lock(mutex_);
      if (reserved_.size() >= 4 * kMaxWorkers) return;  // too many punches at once: let this one fail
      reserved_[m.intent] = Reserved{std::move(reserve), Clock::now()};
    } catch (const Error& e) {
      log_.warn("cannot reserve a port for a punch with ", m.peer, ": ", e.what());
      return;
    }
  }
  send_(proto::frame_of_fields(proto::PunchReady{m.intent, m.peer, port}));
}

void PathAgent::on_punch_go(const proto::PunchGo& m) {
  TimePoint received = Clock::now();
  spawn([this, m, received] {
    std::shared_ptr<net::Link> link;
    std::string error;
    try {
      sleep_until(received + Millis(m.delay_ms), stopping_);
      link = punch(m);
    } catch (const Error& e) {
      error = std::string("hole punch to peer ") + m.peer + " at " + m.endpoint + " failed: " + e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reserved_.erase(m.intent);
    }
    if (link) {
      log_.debug("punched a link to ", m.peer, " at ", m.endpoint, " from port ", m.local_port);
      deliver(m.intent, m.requester, {link}, "");
    } else {
      log_.debug(error);
      deliver(m.intent, m.requester, {}, error);
    }
  });
}

std::shared_ptr<net::Link> PathAgent::punch(const proto::PunchGo& go) {
  auto addr = net::resolve(net::parse_host_port(go.endpoint, false));
  TimePoint end = Clock::now() + kPunchAttempt;
  std::string last = "no answer";
  while (Clock::now() < end) {
    if (stopping_.fired()) throw Aborted(stopping_.reason());
    net::Socket s;
    try {
      s = net::Socket::connect_start_from(go.local_port, addr);
    } catch (const IoError& e) {
      last = e.what();  // e.g. the 4-tuple is still in use: try again shortly
      sleep_until(Clock::now() + kPunchRedial, stopping_);
      continue;
    }
    pollfd fds[2] = {{s.fd(), POLLOUT, 0}, {stopping_.fd(), POLLIN, 0}};
    auto left = std::chrono::ceil<Millis>(end - Clock::now()).count();
    ::poll(fds, 2, static_cast<int>(std::max<int64_t>(0, left)));
    if (stopping_.fired()) throw Aborted(stopping_.reason());
    if (!(fds[0].revents & (POLLOUT | POLLERR | POLLHUP))) break;  // the attempt's time is up
    std::string err = s.finish_connect();
    if (err.empty()) return std::make_shared<net::TcpLink>(std::move(s), net::LinkKind::kPunched);
    last = err;  // refused by RST: redial from the same port
    sleep_until(Clock::now() + kPunchRedial, stopping_);
  }
  throw IoError("no connection within " + std::to_string(kPunchAttempt.count()) + " ms (" + last + ")");
}

void PathAgent::on_relay_offer(const proto::RelayOffer& m) {
  spawn([this, m] {
    std::vector<std::shared_ptr<net::Link>> links;
    std::string error;
    TimePoint deadline = Clock::now() + std::chrono::seconds(10);
    try {
      for (const auto& token : m.tokens) links.push_back(join_relay(m.relay, token, deadline, &stopping_));
    } catch (const Error& e) {
      error = "relayed path to peer " + m.peer + " via " + m.relay + " failed: " + e.what();
      for (auto& l : links) l->shutdown();
      links.clear();
    }
    if (error.empty()) log_.debug("relayed ", links.size(), " link(s) to ", m.peer, " via ", m.relay);
    deliver(m.intent, m.requester, std::move(links), error);
  });
}

void PathAgent::on_path_failed(const proto::PathFailed& m) { deliver(m.intent, true, {}, m.reason); }

std::shared_ptr<net::Link> join_relay(const std::string& relay, const std::string& token, TimePoint deadline,
                                      const net::Cancel* cancel) {
  auto addr = net::resolve(net::parse_host_port(relay, false));
  auto sock = net::Socket::connect_blocking(addr, Deadline(deadline - Clock::now()), 0, cancel);
  auto link = std::make_shared<net::RelayedLink>(std::move(sock), relay);
  net::send_frame(*link, static_cast<uint16_t>(proto::MsgType::kRelayJoin), proto::encode_fields(proto::RelayJoin{token}),
                  deadline, cancel);
  uint16_t type = 0;
  auto payload = net::read_frame(*link, &type, proto::kMaxString + 64, deadline, cancel);
  if (type == static_cast<uint16_t>(proto::MsgType::kError)) {
    throw IoError("the relay at " + relay + " refused: " + proto::ErrorMsg::decode(payload.data(), payload.size()).text);
  }
  if (type != static_cast<uint16_t>(proto::MsgType::kRelayPaired) || !payload.empty()) {
    throw ProtocolError("unexpected answer from the relay at " + relay + " (message type " + std::to_string(type) + ")");
  }
  return link;
}

}  // namespace pcomm::peer
