// Bindings for the coordinator: the server, and its pure decision logic (Membership) so
// tests can drive decisions with made-up times and no sockets.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/register.h"
#include "coord/collectives.h"
#include "coord/coordinator.h"
#include "coord/terms.h"
#include "coord/status_client.h"
#include "coord/state_sync.h"
#include "coord/membership.h"
#include "coord/path_broker.h"
#include "coord/stalls.h"
#include "peer/remote_peer.h"

namespace py = pybind11;

namespace pcomm::bindings {

namespace {

TimePoint at_seconds(double s) { return TimePoint{} + seconds_to_duration(s); }

const char* kind_name(coord::Action::Kind kind) {
  using K = coord::Action::Kind;
  switch (kind) {
    case K::kWelcome: return "welcome";
    case K::kTopology: return "topology";
    case K::kEpochReady: return "epoch_ready";
    case K::kTopologyDone: return "topology_done";
    case K::kPendingChanged: return "pending_changed";
    case K::kDrop: return "drop";
    case K::kCollGo: return "coll_go";
    case K::kCollResult: return "coll_result";
    case K::kRelink: return "relink";
    case K::kStatePlan: return "state_plan";
    case K::kStateResult: return "state_result";
  }
  return "?";
}

// Actions as plain dicts: {"kind": ..., "peer": ..., and the fields of that kind}.
py::list to_python(const coord::Actions& actions) {
  py::list out;
  for (const auto& a : actions) {
    py::dict d;
    d["kind"] = kind_name(a.kind);
    d["peer"] = a.peer;
    using K = coord::Action::Kind;
    if (a.kind == K::kWelcome) d["accepted"] = a.accepted;
    if (a.kind == K::kTopology) {
      py::list ring;
      for (const auto& m : a.topology.ring) ring.append(m.peer_id);
      d["epoch"] = a.topology.epoch;
      d["ring"] = ring;
      py::dict gone;
      for (const auto& g : a.topology.gone) gone[py::str(g.peer_id)] = g.reason;
      d["gone"] = gone;
    }
    if (a.kind == K::kEpochReady || a.kind == K::kTopologyDone) d["epoch"] = a.epoch;
    if (a.kind == K::kTopologyDone) d["seq"] = a.seq;
    if (a.kind == K::kPendingChanged) d["pending"] = a.pending;
    if (a.kind == K::kDrop) d["reason"] = a.reason;
    if (a.kind == K::kCollGo || a.kind == K::kCollResult) {
      d["tag"] = a.tag;
      d["op_id"] = a.op_id;
    }
    if (a.kind == K::kCollGo) d["epoch"] = a.epoch;
    if (a.kind == K::kCollResult) {
      d["outcome"] = static_cast<int>(a.outcome);
      d["message"] = a.reason;
    }
    out.append(d);
  }
  return out;
}

// A Stall as (kind, tag, since seconds, entered peers, missing peers).
py::tuple stall_to_python(const coord::Stall& s) {
  std::vector<std::string> entered;
  for (const auto& [peer, call] : s.entered) entered.push_back(peer);
  return py::make_tuple(static_cast<int>(s.kind), s.tag, duration_to_seconds(s.since - TimePoint{}), entered,
                        s.missing);
}

}  // namespace

// `pcomm status`: the run's status as its coordinator at address sees it.
py::dict coordinator_status(const std::string& address, const py::bytes& secret, double timeout) {
  std::string key = secret;  // with the GIL, before it is released
  proto::StatusReply r;
  {
    py::gil_scoped_release release;
    r = coord::query_status(address, key, seconds_to_duration(timeout));
  }
  auto optional = [](uint64_t v) -> py::object { return v == proto::kNoValue ? py::object(py::none()) : py::int_(v); };
  py::dict d;
  d["run"] = r.run;
  d["run_id"] = r.run_id;
  d["term"] = r.term;
  d["role"] = r.role;
  d["epoch"] = r.epoch;
  py::list peers;
  for (size_t i = 0; i < r.peers.size(); ++i) {
    py::dict p;
    p["peer_id"] = r.peers[i];
    p["address"] = r.addresses[i];
    py::list links;
    std::string text = r.links[i];
    for (size_t start = 0; start < text.size();) {
      size_t end = text.find(',', start);
      if (end == std::string::npos) end = text.size();
      std::string one = text.substr(start, end - start);
      size_t colon = one.rfind(':');
      if (colon != std::string::npos) links.append(py::make_tuple(one.substr(0, colon), one.substr(colon + 1)));
      start = end + 1;
    }
    p["links"] = links;
    p["ops_done"] = r.ops_done[i];
    p["last_op_age"] = r.last_age_ms[i] == proto::kNoValue ? py::object(py::none()) : py::float_(r.last_age_ms[i] / 1000.0);
    p["last_op"] = r.last_op[i];
    p["step"] = optional(r.steps[i]);
    p["send_rate"] = r.send_rate[i];
    peers.append(p);
  }
  d["peers"] = peers;
  d["pending"] = r.pending;
  d["collectives_running"] = r.collectives_running;
  return d;
}

void register_coord(py::module_& m) {
  m.def("coordinator_status", &coordinator_status, py::arg("address"), py::arg("secret"), py::arg("timeout"));
  py::class_<coord::Coordinator>(m, "Coordinator")
      .def(py::init([](const std::string& listen, const std::string& run, double heartbeat_timeout,
                       const std::vector<std::string>& relays, const py::bytes& secret, bool insecure,
                       double straggler_timeout, const std::string& state_dir, bool standby,
                       const std::string& peer_of, double gather_window) {
             coord::CoordinatorOptions o;
             o.straggler_timeout = seconds_to_duration(straggler_timeout);
             o.state_dir = state_dir;
             o.standby = standby;
             o.peer_of = peer_of;
             o.gather_window = seconds_to_duration(gather_window);
             o.secret = std::string(secret);
             o.insecure = insecure;
             o.listen = listen;
             o.run = run;
             o.heartbeat_timeout = seconds_to_duration(heartbeat_timeout);
             o.relays = relays;
             return std::make_unique<coord::Coordinator>(o);
           }),
           py::arg("listen"), py::arg("run"), py::arg("heartbeat_timeout"), py::arg("relays"),
           py::arg("secret"), py::arg("insecure"), py::arg("straggler_timeout"), py::arg("state_dir"),
           py::arg("standby"), py::arg("peer_of"), py::arg("gather_window"))
      .def("add_relay", &coord::Coordinator::add_relay, py::arg("address"))
      .def("_pair_key", [](const coord::Coordinator& c, uint64_t epoch, const std::string& a, const std::string& b) {
             auto k = c.pair_key(epoch, a, b);
             return py::bytes(reinterpret_cast<const char*>(k.data()), k.size());
           }, py::arg("epoch"), py::arg("a"), py::arg("b"))
      .def_property_readonly("relays", &coord::Coordinator::relays)
      .def("start", &coord::Coordinator::start)
      // stop() joins the loop thread, which never needs the GIL: release it while waiting.
      .def("stop", &coord::Coordinator::stop, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("address", &coord::Coordinator::address)
      .def_property_readonly("running", &coord::Coordinator::running)
      .def_property_readonly("run_id", &coord::Coordinator::run_id)
      .def("snapshot", [](const coord::Coordinator& c) {
        auto s = c.snapshot();
        py::dict d;
        d["term"] = s.term;
        d["role"] = s.role;
        d["epoch"] = s.epoch;
        d["ring"] = s.ring;
        d["pending"] = s.pending;
        d["collectives_running"] = s.collectives_running;
        d["state_sync_planned"] = s.state_sync_planned;
        d["punch_requests"] = s.punch_requests;
        d["relay_requests"] = s.relay_requests;
        return d;
      });

  py::class_<coord::Membership>(m, "_Membership")
      .def(py::init([](double heartbeat_timeout) {
             return std::make_unique<coord::Membership>(seconds_to_duration(heartbeat_timeout));
           }),
           py::arg("heartbeat_timeout"))
      .def("on_hello", [](coord::Membership& ms, const std::string& p, const std::string& addr, double now) {
        return to_python(ms.on_hello(p, addr, at_seconds(now)));
      })
      .def("on_heard", [](coord::Membership& ms, const std::string& p, double now) { ms.on_heard(p, at_seconds(now)); })
      .def("on_update_topology", [](coord::Membership& ms, const std::string& p, uint64_t seq, double now) {
        return to_python(ms.on_update_topology(p, seq, at_seconds(now)));
      })
      .def("on_cancel_update_topology", [](coord::Membership& ms, const std::string& p, uint64_t seq) {
        ms.on_cancel_update_topology(p, seq);
      })
      .def("on_links_ready", [](coord::Membership& ms, const std::string& p, uint64_t epoch, double now) {
        return to_python(ms.on_links_ready(p, epoch, at_seconds(now)));
      })
      .def("on_links_failed",
           [](coord::Membership& ms, const std::string& p, uint64_t epoch, const std::string& nb, double now) {
             return to_python(ms.on_links_failed(p, epoch, nb, at_seconds(now)));
           })
      .def("on_lost",
           [](coord::Membership& ms, const std::string& p, double now, const std::string& reason) {
             return to_python(ms.on_lost(p, at_seconds(now), reason));
           },
           py::arg("peer"), py::arg("now"), py::arg("reason") = "lost")
      .def("on_tick", [](coord::Membership& ms, double now) { return to_python(ms.on_tick(at_seconds(now))); })
      .def("stall", [](const coord::Membership& ms) -> py::object {
        auto st = ms.stall();
        return st ? py::object(stall_to_python(*st)) : py::object(py::none());
      })
      .def("drop", [](coord::Membership& ms, const std::map<std::string, std::string>& reasons) {
        return to_python(ms.drop(reasons));
      })
      .def_property_readonly("epoch", &coord::Membership::epoch)
      .def_property_readonly("ring", &coord::Membership::ring)
      .def_property_readonly("epoch_ready", &coord::Membership::epoch_ready)
      .def_property_readonly("pending_count", &coord::Membership::pending_count);

  // The pure parts of NAT traversal: how two peers choose their path from what the
  // coordinator observed ((peer_id, local, observed, nat flags) each), and the punch timing.
  m.def("_choose_path", [](const std::tuple<std::string, std::string, std::string, uint8_t>& self,
                           const std::tuple<std::string, std::string, std::string, uint8_t>& remote) {
    auto member = [](const auto& t) {
      return proto::RingMember{std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t)};
    };
    auto c = peer::choose_path(member(self), member(remote));
    py::dict d;
    d["self_drives"] = c.self_drives;
    d["direct"] = c.direct;
    d["punchable"] = c.punchable;
    return d;
  });
  m.def("_punch_delays", [](double rtt_a, double rtt_b) {
    return coord::punch_delays(seconds_to_duration(rtt_a), seconds_to_duration(rtt_b));
  });
  // Views cross as (epoch, ring, ready); announcements as (tag, count, dtype, op, quant).
  auto view = [](uint64_t epoch, std::vector<std::string> ring, bool ready) {
    return coord::View{epoch, std::move(ring), ready, {}};
  };
  // choose_content over (strategy, revision, hashes) votes: the index of a winning voter.
  m.def("_choose_content", [](const std::vector<std::tuple<uint8_t, uint64_t, std::vector<uint64_t>>>& votes) {
    std::vector<std::pair<std::string, proto::StateVote>> v;
    for (const auto& [strategy, revision, hashes] : votes) {
      proto::StateVote vote;
      vote.strategy = static_cast<proto::SyncStrategy>(strategy);
      vote.revision = revision;
      for (uint64_t h : hashes) vote.tensors.push_back(proto::TensorMeta{"t", 3, {1}, 4, h});
      v.emplace_back("p" + std::to_string(v.size()), vote);
    }
    return coord::choose_content(v);
  });
  py::class_<coord::Collectives>(m, "_Collectives")
      .def(py::init<>())
      .def("on_announce",
           [view](coord::Collectives& c, const std::string& peer, uint32_t tag, uint64_t count, uint8_t dtype,
                  uint8_t op, uint8_t quant, uint64_t epoch, std::vector<std::string> ring, bool ready, double now) {
             proto::Announce a{tag, 0, count, dtype, op, quant};
             return to_python(c.on_announce(peer, a, view(epoch, std::move(ring), ready), at_seconds(now)));
           },
           py::arg("peer"), py::arg("tag"), py::arg("count"), py::arg("dtype"), py::arg("op"), py::arg("quant"),
           py::arg("epoch"), py::arg("ring"), py::arg("ready"), py::arg("now") = 0.0)
      .def("on_report",
           [view](coord::Collectives& c, const std::string& peer, uint32_t tag, uint64_t op_id, int outcome,
                  const std::string& message, uint64_t epoch, std::vector<std::string> ring, bool ready) {
             proto::CollOutcome r{tag, 0, op_id, static_cast<proto::Outcome>(outcome), message};
             return to_python(c.on_report(peer, r, view(epoch, std::move(ring), ready)));
           })
      .def("on_view_changed",
           [view](coord::Collectives& c, uint64_t epoch, std::vector<std::string> ring, bool ready) {
             return to_python(c.on_view_changed(view(epoch, std::move(ring), ready)));
           })
      .def("stalls", [](const coord::Collectives& c) {
        py::list out;
        for (const auto& st : c.stalls()) out.append(stall_to_python(st));
        return out;
      })
      .def_property_readonly("busy", &coord::Collectives::busy)
      .def_property_readonly("running", &coord::Collectives::running);
  // The straggler rule over stalls given as (kind, tag, since, entered, missing);
  // last_not_idle maps a peer to the last time it was seen in a barrier or busy.
  m.def(
      "_stragglers",
      [](const std::vector<std::tuple<int, uint32_t, double, std::vector<std::string>, std::vector<std::string>>>&
             stalls,
         const std::vector<std::string>& busy, double now, double timeout,
         const std::map<std::string, double>& last_not_idle) {
    std::vector<coord::Stall> v;
    for (const auto& [kind, tag, since, entered, missing] : stalls) {
      coord::Stall st;
      st.kind = static_cast<coord::Stall::Kind>(kind);
      st.tag = tag;
      st.since = at_seconds(since);
      for (const auto& p : entered) st.entered[p] = 1;
      st.missing = missing;
      v.push_back(st);
    }
    std::map<std::string, TimePoint> seen;
    for (const auto& [peer, at] : last_not_idle) seen[peer] = at_seconds(at);
    auto active = coord::not_idle(v, std::set<std::string>(busy.begin(), busy.end()));
    return coord::stragglers(v, active, seen, at_seconds(now), seconds_to_duration(timeout));
      },
      py::arg("stalls"), py::arg("busy"), py::arg("now"), py::arg("timeout"),
      py::arg("last_not_idle") = std::map<std::string, double>{});
  // The term rule (coord/terms.h) over re-registrations given as (peer, term, epoch, ring).
  // Returns (form, ring, epoch, reason).
  m.def("_decide_term", [](const std::vector<std::tuple<std::string, uint64_t, uint64_t, std::vector<std::string>>>& regs,
                           double since, double now, double window) {
    std::vector<coord::Registration> v;
    for (const auto& [peer, term, epoch, ring] : regs) v.push_back({peer, term, epoch, ring});
    auto d = coord::decide_term(v, at_seconds(since), at_seconds(now), seconds_to_duration(window));
    return py::make_tuple(d.form, d.ring, d.epoch, d.reason);
  });
  m.def("_next_term", [](uint64_t highest_known, uint64_t random) { return coord::next_term(highest_known, random); });
}

}  // namespace pcomm::bindings
