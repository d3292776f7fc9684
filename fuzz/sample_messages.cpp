// The seed messages; see sample_messages.h.
#include "fuzz/sample_messages.h"

#include "proto/fields.h"
#include "proto/key_messages.h"
#include "proto/status_messages.h"
#include "proto/term_messages.h"
#include "proto/waiting_messages.h"
#include "proto/messages.h"
#include "proto/path_messages.h"
#include "proto/relay_messages.h"
#include "proto/state_messages.h"

namespace pcomm::fuzz {

namespace {

using proto::MsgType;

template <typename M>
SampleMessage coded(std::string name, MsgType type, const M& m) {
  return {std::move(name), static_cast<uint16_t>(type), m.encode()};
}

template <typename M>
SampleMessage listed(std::string name, const M& m) {
  return {std::move(name), static_cast<uint16_t>(M::kType), proto::encode_fields(m)};
}

const std::string kToken = "0123456789abcdef0123456789abcdef";

}  // namespace

std::vector<SampleMessage> sample_messages() {
  proto::RingMember a{"peer-a", "10.0.0.1:29500", "198.18.0.1:40001", proto::kReachable};
  proto::RingMember b{"peer-b", "10.0.0.2:29500", "198.18.0.2:40002", proto::kRandomizing};
  proto::RingMember c{"peer-c", "10.0.0.3:29500", "", 0};
  proto::TensorMeta weights{"model.weight", 3, {4, 8}, 128, 0x1234abcd5678ef00ull};
  proto::TensorMeta step{"step", 9, {}, 8, 42};
  return {
      coded("error", MsgType::kError, proto::ErrorMsg{proto::ErrorCode::kVersionMismatch, "remote speaks version 1"}),
      coded("hello", MsgType::kHello, proto::Hello{"run-1", "10.0.0.1:29500", ""}),
      coded("welcome", MsgType::kWelcome, proto::Welcome{"peer-a", true, 5000, "198.18.0.1:40001", "0123456789abcdef", 2}),
      coded("heartbeat", MsgType::kHeartbeat, proto::Heartbeat{2}),
      coded("update_topology", MsgType::kUpdateTopology, proto::UpdateTopology{7}),
      coded("cancel_update_topology", MsgType::kCancelUpdateTopology, proto::UpdateTopology{7}),
      coded("topology", MsgType::kTopology, proto::Topology{3, {a, b, c}, {{"d", "left"}, {"e", "lost: reset"}}}),
      coded("links_ready", MsgType::kLinksReady, proto::EpochMsg{3}),
      coded("links_failed", MsgType::kLinksFailed, proto::LinksFailed{3, "peer-b", "connect refused"}),
      coded("epoch_ready", MsgType::kEpochReady, proto::EpochMsg{3}),
      coded("topology_done", MsgType::kTopologyDone, proto::TopologyDone{7, 3}),
      coded("leave", MsgType::kLeave, proto::EpochMsg{0}),
      coded("announce", MsgType::kAnnounce, proto::Announce{1, 11, 1024, 3, 1, 1}),
      coded("coll_go", MsgType::kCollGo, proto::CollGo{1, 11, 5, 3}),
      coded("coll_done", MsgType::kCollDone, proto::CollOutcome{1, 11, 5, proto::Outcome::kCommit, ""}),
      coded("coll_result", MsgType::kCollResult,
            proto::CollOutcome{1, 11, 5, proto::Outcome::kPeerLost, "peer-b lost"}),
      coded("state_vote", MsgType::kStateVote,
            proto::StateVote{4, proto::SyncStrategy::kReceiveOnly, 17, {weights, step}}),
      coded("state_vote_offer", MsgType::kStateVote,
            proto::StateVote{5, proto::SyncStrategy::kOffer, 31, {weights, step}}),
      coded("state_plan", MsgType::kStatePlan, proto::StatePlan{4, 9, 17, {1, 2, 3}, {0, 2}, {a, b}}),
      coded("state_done", MsgType::kStateDone, proto::StateOutcome{4, 9, proto::Outcome::kCommit, ""}),
      coded("state_result", MsgType::kStateResult, proto::StateOutcome{4, 9, proto::Outcome::kTimeout, "late"}),
      coded("link_hello", MsgType::kLinkHello, proto::LinkHello{"run-1", "peer-a", 77, 1, 4}),
      coded("link_ack", MsgType::kLinkAck, proto::EpochMsg{77}),
      coded("fetch_hello", MsgType::kFetchHello, proto::FetchHello{"run-1", "peer-c", 9}),
      coded("fetch_request", MsgType::kFetchRequest, proto::FetchRequest{1, 64, 32}),
      {"fetch_ack", static_cast<uint16_t>(MsgType::kFetchAck), {}},
      listed("observe", proto::Observe{0xfeedULL, 40100}),
      listed("probe_hello", proto::ProbeHello{0xfeedULL}),
      listed("path_request", proto::PathRequest{21, "peer-b", 2, 0, 4}),
      listed("punch_prepare", proto::PunchPrepare{21, "peer-b", 1, true}),
      listed("punch_ready", proto::PunchReady{21, "peer-b", 40200}),
      listed("punch_go", proto::PunchGo{21, "peer-b", "198.18.0.2:40002", 40200, 35, 0, false}),
      listed("relay_offer", proto::RelayOffer{21, "peer-b", "198.18.0.9:7000", {kToken, kToken + "x"}, 0, true}),
      listed("path_failed", proto::PathFailed{21, "no relay"}),
      listed("relay_register", proto::RelayRegister{{kToken}, "peer-a", "peer-b", 30000}),
      listed("relay_registered", proto::RelayRegistered{{kToken}}),
      listed("relay_join", proto::RelayJoin{kToken}),
      {"relay_paired", static_cast<uint16_t>(MsgType::kRelayPaired), {}},
      listed("link_keys", proto::LinkKeys{3, {"peer-b", "peer-c"}, {std::string(32, 'k'), std::string(32, 'K')}}),
      listed("status_request", proto::StatusRequest{3, "198.18.0.9:29500"}),
      listed("status_reply", proto::StatusReply{"default", "0123456789abcdef", 2, "serving", 4, {"peer-a", "peer-b"},
                                                {"198.18.0.1:1", "198.18.0.2:2"}, 1, 0,
                                                {"peer-b:direct,peer-b:direct", ""}, {12, 0}, {350, proto::kNoValue},
                                                {"tag 0, world 2", ""}, {7, proto::kNoValue}, {1 << 20, 0}}),
      listed("peer_report", proto::PeerReport{12, 1, 1 << 20, 1 << 20, 0, 350, 2, "", 7, {"peer-b", "peer-c"},
                                              {"direct", "relayed"}}),
      listed("waiting", proto::Waiting{1, 3, 12, {"peer-b", "peer-c"}, 4}),
      listed("rejoin", proto::Rejoin{"default", "0123456789abcdef", "peer-a", 2, 17, {"peer-a", "peer-b"},
                                     "198.18.0.1:40001", "198.18.0.1:40001", 0, {0, 9, 2, 31}, {2, 30}, {4, 2, 7},
                                     {2, 6}, 12, 0x5eed5eed5eed5eedull}),
  };
}

}  // namespace pcomm::fuzz
