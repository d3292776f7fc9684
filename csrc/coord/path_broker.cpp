// PathBroker; see path_broker.h.
#include "coord/path_broker.h"

#include <cstdio>

#include "net/address.h"

namespace pcomm::coord {

std::pair<uint32_t, uint32_t> punch_delays(Duration rtt_a, Duration rtt_b) {
  Duration at = std::max(rtt_a, rtt_b) / 2 + kPunchMargin;
  auto ms = [](Duration d) { return static_cast<uint32_t>(std::max<int64_t>(0, to_millis(d))); };
  return {ms(at - rtt_a / 2), ms(at - rtt_b / 2)};
}

std::string PathBroker::new_token() {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng_()),
                static_cast<unsigned long long>(rng_()));
  return buf;
}

void PathBroker::fail(const std::string& requester, uint64_t intent, const std::string& reason) {
  log_.info("path request of ", requester, " failed: ", reason);
  send_(requester, proto::frame_of_fields(proto::PathFailed{intent, reason}));
}

void PathBroker::on_request(const std::string& requester, const proto::PathRequest& request, TimePoint now) {
  proto::RingMember other = lookup_(request.peer);
  if (other.peer_id.empty() || request.peer == requester) {
    fail(requester, request.intent, "peer " + request.peer + " is not in the run");
    return;
  }
  auto kind = static_cast<proto::PathKind>(request.kind);
  if (kind == proto::PathKind::kPunch) {
    if (punches_.count(request.intent)) return;  // a duplicate: the first one runs
    ++punch_requests_;
    Punch p;
    p.requester.peer = requester;
    p.responder.peer = request.peer;
    p.purpose = request.purpose;
    p.sent = now;
    punches_[request.intent] = p;
    send_(request.peer, proto::frame_of_fields(proto::PunchPrepare{request.intent, requester, request.purpose, false}));
    send_(requester, proto::frame_of_fields(proto::PunchPrepare{request.intent, request.peer, request.purpose, true}));
    return;
  }
  ++relay_requests_;
  std::vector<std::string> tokens;
  for (uint32_t i = 0; i < request.count; ++i) tokens.push_back(new_token());
  std::string peer = request.peer;
  uint64_t intent = request.intent;
  uint8_t purpose = request.purpose;
  relays_.register_tokens(tokens, requester, peer,
                          [this, requester, peer, intent, purpose, tokens](const std::string& relay,
                                                                          const std::string& error) {
                            if (!error.empty()) {
                              fail(requester, intent, error);
                              return;
                            }
                            log_.info("relaying ", requester, " <-> ", peer, " via ", relay, " (", tokens.size(),
                                      " connection", tokens.size() == 1 ? "" : "s", ")");
                            send_(peer, proto::frame_of_fields(proto::RelayOffer{intent, requester, relay, tokens,
                                                                                 purpose, false}));
                            send_(requester, proto::frame_of_fields(proto::RelayOffer{intent, peer, relay, tokens,
                                                                                      purpose, true}));
                          });
}

std::string PathBroker::endpoint_of(const proto::RingMember& member, uint16_t port) const {
  auto observed = net::parse_host_port(member.observed_address, false);
  auto advertised = net::parse_host_port(member.data_address, false);
  if (port == advertised.port) return member.observed_address;  // the shared port's own mapping
  return observed.host + ":" + std::to_string(port);           // a fresh port: assume it is kept
}

void PathBroker::on_punch_ready(const std::string& peer, const proto::PunchReady& ready, TimePoint now) {
  auto it = punches_.find(ready.intent);
  if (it == punches_.end()) return;
  Punch& p = it->second;
  Side* side = peer == p.requester.peer ? &p.requester : peer == p.responder.peer ? &p.responder : nullptr;
  if (!side || side->ready) return;
  side->ready = true;
  side->port = ready.local_port;
  side->rtt = now - p.sent;
  if (!p.requester.ready || !p.responder.ready) return;
  proto::RingMember a = lookup_(p.requester.peer), b = lookup_(p.responder.peer);
  Punch done = p;
  punches_.erase(it);
  if (a.peer_id.empty() || b.peer_id.empty()) return;
  std::string to_b, to_a;
  try {
    to_b = endpoint_of(b, done.responder.port);
    to_a = endpoint_of(a, done.requester.port);
  } catch (const std::exception& e) {
    fail(done.requester.peer, ready.intent, std::string("no endpoint to punch: ") + e.what());
    return;
  }
  auto [delay_a, delay_b] = punch_delays(done.requester.rtt, done.responder.rtt);
  log_.debug("punch ", a.peer_id, " (", to_a, ", rtt ", to_millis(done.requester.rtt), " ms) <-> ", b.peer_id, " (",
             to_b, ", rtt ", to_millis(done.responder.rtt), " ms)");
  send_(a.peer_id, proto::frame_of_fields(proto::PunchGo{ready.intent, b.peer_id, to_b, done.requester.port, delay_a,
                                                         done.purpose, true}));
  send_(b.peer_id, proto::frame_of_fields(proto::PunchGo{ready.intent, a.peer_id, to_a, done.responder.port, delay_b,
                                                         done.purpose, false}));
}

void PathBroker::on_tick(TimePoint now) {
  for (auto it = punches_.begin(); it != punches_.end();) {
    if (now - it->second.sent > kPunchPrepareTimeout) {
      it = punches_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace pcomm::coord
