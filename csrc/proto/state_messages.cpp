// Encoders and validating decoders for the shared-state messages; see state_messages.h.
#include "proto/state_messages.h"

namespace pcomm::proto {

namespace {
constexpr uint32_t kMaxDims = 32;
}

std::vector<uint8_t> StateVote::encode() const {
  Writer w;
  w.u64(call);
  w.u8(static_cast<uint8_t>(strategy));
  w.u64(revision);
  w.u32(static_cast<uint32_t>(tensors.size()));
  for (const auto& t : tensors) {
    w.str(t.name);
    w.u8(t.dtype);
    w.u32(static_cast<uint32_t>(t.shape.size()));
    for (uint64_t d : t.shape) w.u64(d);
    w.u64(t.nbytes);
    w.u64(t.hash);
  }
  return w.take();
}

StateVote StateVote::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  StateVote m;
  m.call = r.u64();
  uint8_t strategy = r.u8();
  if (strategy > kLastSyncStrategy) throw ProtocolError("unknown sync strategy " + std::to_string(strategy));
  m.strategy = static_cast<SyncStrategy>(strategy);
  m.revision = r.u64();
  uint32_t n = r.count(4 + 1 + 4 + 8 + 8);
  m.tensors.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    TensorMeta t;
    t.name = r.str();
    t.dtype = r.u8();
    uint32_t dims = r.u32();
    if (dims > kMaxDims) throw ProtocolError("tensor with " + std::to_string(dims) + " dimensions");
    for (uint32_t d = 0; d < dims; ++d) t.shape.push_back(r.u64());
    t.nbytes = r.u64();
    t.hash = r.u64();
    m.tensors.push_back(std::move(t));
  }
  r.finish();
  return m;
}

std::vector<uint8_t> StatePlan::encode() const {
  Writer w;
  w.u64(call);
  w.u64(sync_id);
  w.u64(revision);
  w.u32(static_cast<uint32_t>(hashes.size()));
  for (uint64_t h : hashes) w.u64(h);
  w.u32(static_cast<uint32_t>(fetch.size()));
  for (uint32_t f : fetch) w.u32(f);
  w.u32(static_cast<uint32_t>(sources.size()));
  for (const auto& s : sources) {
    w.str(s.peer_id);
    w.str(s.data_address);
  }
  return w.take();
}

StatePlan StatePlan::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  StatePlan m;
  m.call = r.u64();
  m.sync_id = r.u64();
  m.revision = r.u64();
  uint32_t n = r.count(8);
  for (uint32_t i = 0; i < n; ++i) m.hashes.push_back(r.u64());
  uint32_t f = r.count(4);
  for (uint32_t i = 0; i < f; ++i) {
    uint32_t index = r.u32();
    if (index >= n) throw ProtocolError("StatePlan fetches tensor " + std::to_string(index) + " of " + std::to_string(n));
    m.fetch.push_back(index);
  }
  uint32_t s = r.count(8);
  for (uint32_t i = 0; i < s; ++i) {
    RingMember member;
    member.peer_id = r.str();
    member.data_address = r.str();
    m.sources.push_back(std::move(member));
  }
  r.finish();
  return m;
}

std::vector<uint8_t> StateOutcome::encode() const {
  Writer w;
  w.u64(call);
  w.u64(sync_id);
  w.u8(static_cast<uint8_t>(outcome));
  w.str(message.size() > kMaxString ? message.substr(0, kMaxString) : message);
  return w.take();
}

StateOutcome StateOutcome::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  StateOutcome m;
  m.call = r.u64();
  m.sync_id = r.u64();
  m.outcome = outcome_from_wire(r.u8());
  m.message = r.str();
  r.finish();
  return m;
}

std::vector<uint8_t> FetchHello::encode() const {
  Writer w;
  w.str(run);
  w.str(from_peer);
  w.u64(sync_id);
  return w.take();
}

FetchHello FetchHello::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  FetchHello m;
  m.run = r.str();
  m.from_peer = r.str();
  m.sync_id = r.u64();
  r.finish();
  return m;
}

std::vector<uint8_t> FetchRequest::encode() const {
  Writer w;
  w.u32(tensor);
  w.u64(offset);
  w.u64(length);
  return w.take();
}

FetchRequest FetchRequest::decode(const uint8_t* data, size_t size) {
  Reader r(data, size);
  FetchRequest m;
  m.tensor = r.u32();
  m.offset = r.u64();
  m.length = r.u64();
  r.finish();
  return m;
}

}  // namespace pcomm::proto
