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
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
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
  for (auto& t : workers) t.join();
}

void PathAgent::spawn(std::function<void()> work) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopped_) return;
  workers_.emplace_back([this, work = std::move(work)] {
    try {
      work();
    } catch (const std::exception& e) {
      log_.debug("path worker ended: ", e.what());
    }
  });
}

std::vector<std::shared_ptr<net::Link>> PathAgent::request(const std::string& peer, proto::PathKind kind,
                                                           proto::PathPurpose purpose, uint32_t count,
                                                           TimePoint deadline, const net::Cancel* cancel) {
  uint64_t intent = random_intent();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) throw Aborted("the communicator was closed");
    waiters_[intent] = Waiter{};
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
  if (static_cast<proto::PathPurpose>(m.purpose) == proto::PathPurpose::kStream) {
    // A stream gets a fresh port (the shared one already carries this pair's pool): hold
    // it bound until the punch, so nothing else takes it meanwhile.
    try {
      net::Socket reserve = net::Socket::listen_on(net::HostPort{"0.0.0.0", 0}, 1, /*share_port=*/true);
      port = ntohs(reserve.local_address().sin_port);
      std::lock_guard<std::mutex> lock(mutex_);
      reserved_[m.intent] = std::move(reserve);
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
  auto sock = net::Socket::connect_blocking(addr, Deadline(deadline - Clock::now()));
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
