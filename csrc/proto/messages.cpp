// Encoders and validating decoders for the control messages; see messages.h.
#include "proto/messages.h"

namespace pcomm::proto {

Outcome outcome_from_wire(uint8_t value) {
  if (value > static_cast<uint8_t>(Outcome::kProtocol)) throw ProtocolError("unknown outcome " + std::to_string(value));
  return static_cast<Outcome>(value);
}

std::vector<uint8_t> ErrorMsg::encode() const {
  Writer w;
  w.u16(static_cast<uint16_t>(code));
  w.str(text.size() > kMaxString ? text.substr(0, kMaxString) : text);
  return w.take();
}
ErrorMsg ErrorMsg::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  ErrorMsg m;
  m.code = static_cast<ErrorCode>(r.u16());
  m.text = r.str();
  r.finish();
  return m;
}

std::vector<uint8_t> Hello::encode() const {
  Writer w;
  w.str(run);
  w.str(data_address);
  w.str(credentials);
  return w.take();
}
Hello Hello::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  Hello m;
  m.run = r.str();
  m.data_address = r.str();
  m.credentials = r.str();
  r.finish();
  return m;
}

std::vector<uint8_t> Welcome::encode() const {
  Writer w;
  w.str(peer_id);
  w.u8(accepted ? 1 : 0);
  w.u32(heartbeat_timeout_ms);
  w.str(observed_address);
  w.str(run_id);
  w.u64(term);
  return w.take();
}
Welcome Welcome::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  Welcome m;
  m.peer_id = r.str();
  uint8_t accepted = r.u8();
  if (accepted > 1) throw ProtocolError("Welcome.accepted must be 0 or 1");
  m.accepted = accepted == 1;
  m.heartbeat_timeout_ms = r.u32();
  if (m.heartbeat_timeout_ms == 0) throw ProtocolError("Welcome.heartbeat_timeout_ms is 0");
  m.observed_address = r.str();
  m.run_id = r.str();
  m.term = r.u64();
  r.finish();
  return m;
}

std::vector<uint8_t> Heartbeat::encode() const {
  Writer w;
  w.u32(pending_peers);
  return w.take();
}
Heartbeat Heartbeat::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  Heartbeat m;
  m.pending_peers = r.u32();
  r.finish();
  return m;
}

std::vector<uint8_t> UpdateTopology::encode() const {
  Writer w;
  w.u64(seq);
  return w.take();
}
UpdateTopology UpdateTopology::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  UpdateTopology m;
  m.seq = r.u64();
  r.finish();
  return m;
}

std::vector<uint8_t> Topology::encode() const {
  Writer w;
  w.u64(epoch);
  w.u32(static_cast<uint32_t>(ring.size()));
  for (const auto& member : ring) {
    w.str(member.peer_id);
    w.str(member.data_address);
    w.str(member.observed_address);
    w.u8(member.nat);
  }
  w.u32(static_cast<uint32_t>(gone.size()));
  for (const auto& departure : gone) {
    w.str(departure.peer_id);
    w.str(departure.reason);
  }
  return w.take();
}
Topology Topology::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  Topology m;
  m.epoch = r.u64();
  uint32_t n = r.count(13);  // three empty strings and the flags at least
  if (n == 0) throw ProtocolError("Topology with an empty ring");
  m.ring.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    RingMember member;
    member.peer_id = r.str();
    member.data_address = r.str();
    member.observed_address = r.str();
    member.nat = r.u8();
    if (member.nat > 3) throw ProtocolError("RingMember.nat has unknown flags");
    m.ring.push_back(std::move(member));
  }
  uint32_t gone = r.count(8);  // two empty strings at least
  m.gone.reserve(gone);
  for (uint32_t i = 0; i < gone; ++i) {
    Departure departure;
    departure.peer_id = r.str();
    departure.reason = r.str();
    m.gone.push_back(std::move(departure));
  }
  r.finish();
  return m;
}

std::vector<uint8_t> EpochMsg::encode() const {
  Writer w;
  w.u64(epoch);
  return w.take();
}
EpochMsg EpochMsg::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  EpochMsg m;
  m.epoch = r.u64();
  r.finish();
  return m;
}

std::vector<uint8_t> LinksFailed::encode() const {
  Writer w;
  w.u64(epoch);
  w.str(neighbour_id);
  w.str(reason);
  return w.take();
}
LinksFailed LinksFailed::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  LinksFailed m;
  m.epoch = r.u64();
  m.neighbour_id = r.str();
  m.reason = r.str();
  r.finish();
  return m;
}

std::vector<uint8_t> TopologyDone::encode() const {
  Writer w;
  w.u64(seq);
  w.u64(epoch);
  return w.take();
}
TopologyDone TopologyDone::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  TopologyDone m;
  m.seq = r.u64();
  m.epoch = r.u64();
  r.finish();
  return m;
}

std::vector<uint8_t> LinkHello::encode() const {
  Writer w;
  w.str(run);
  w.str(from_peer);
  w.u64(pool);
  w.u32(index);
  w.u32(count);
  return w.take();
}
LinkHello LinkHello::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  LinkHello m;
  m.run = r.str();
  m.from_peer = r.str();
  m.pool = r.u64();
  m.index = r.u32();
  m.count = r.u32();
  if (m.count == 0 || m.count > kMaxPoolConnections || m.index >= m.count) {
    throw ProtocolError("LinkHello index/count out of range");
  }
  r.finish();
  return m;
}

std::vector<uint8_t> Announce::encode() const {
  Writer w;
  w.u32(tag);
  w.u64(call);
  w.u64(count);
  w.u8(dtype);
  w.u8(op);
  w.u8(quantization);
  return w.take();
}
Announce Announce::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  Announce m;
  m.tag = r.u32();
  m.call = r.u64();
  m.count = r.u64();
  m.dtype = r.u8();
  m.op = r.u8();
  m.quantization = r.u8();
  r.finish();
  return m;
}

std::vector<uint8_t> CollGo::encode() const {
  Writer w;
  w.u32(tag);
  w.u64(call);
  w.u64(op_id);
  w.u64(epoch);
  return w.take();
}
CollGo CollGo::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  CollGo m;
  m.tag = r.u32();
  m.call = r.u64();
  m.op_id = r.u64();
  m.epoch = r.u64();
  r.finish();
  return m;
}

std::vector<uint8_t> CollOutcome::encode() const {
  Writer w;
  w.u32(tag);
  w.u64(call);
  w.u64(op_id);
  w.u8(static_cast<uint8_t>(outcome));
  w.str(message.size() > kMaxString ? message.substr(0, kMaxString) : message);
  return w.take();
}
CollOutcome CollOutcome::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  CollOutcome m;
  m.tag = r.u32();
  m.call = r.u64();
  m.op_id = r.u64();
  m.outcome = outcome_from_wire(r.u8());
  m.message = r.str();
  r.finish();
  return m;
}

}  // namespace pcomm::proto
