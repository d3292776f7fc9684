// Ring all-reduce; see allreduce_ring.h and ring_plan.h.
//
// Striping is dynamic: whichever connection (lane) is free takes the next send item
// whose input is ready, so a slow or stalled connection delays only the chunks it
// carries instead of a fixed share of the op. Every data frame names its item (its
// index in the plan, which sender and receiver share), so the receiver places a chunk
// by its header, whatever lane it came on:
//   frame header (12 bytes, type kData) + u64 op id + u32 item index, then the chunk
//   (raw elements, or a minmax_u8 block when quantized).
// Receiving never waits for sending, so the ring cannot deadlock.
#include "collectives/allreduce_ring.h"

#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "collectives/quantize.h"
#include "collectives/reduce_kernels.h"
#include "collectives/ring_plan.h"
#include "core/errors.h"
#include "proto/messages.h"
#include "proto/wire.h"

namespace pcomm::collectives {

namespace {

constexpr size_t kDataHeader = proto::kHeaderSize + 8 + 4;
// With lanes on several threads, a thread whose next send waits on a receive made by
// another thread re-checks this often (a thread only sleeps on its own sockets).
constexpr Millis kCrossThreadRecheck{1};
// How far past the oldest unsent item a free lane may look for one that is ready.
constexpr size_t kSendWindow = 64;

// What all lanes share: the send cursor, which items arrived, quantized chunks waiting
// to be forwarded. Guarded by mutex (held only for bookkeeping, never for I/O).
class Ring {
 public:
  Ring(const AllReduceArgs& args, net::Transport& transport, size_t chunk)
      : a(args), t(transport), plan(args.count, args.world, args.rank, chunk), esize(dtype_size(args.dtype)),
        quant(args.quantization == Quantization::kMinMaxU8), rs_steps(args.world - 1),
        last_step(2 * (args.world - 1) - 1), started(plan.sends().size(), 0), claimed(plan.recvs().size(), 0),
        received(plan.recvs().size(), 0) {}

  // The first send item, among the next few not yet started, whose input is ready:
  // chunks arrive out of order over several connections, and a strict order would make
  // every lane wait for the slowest one.
  bool take_send(size_t* index) {
    std::lock_guard<std::mutex> lock(mutex);
    const auto& sends = plan.sends();
    size_t end = std::min(sends.size(), next_send + kSendWindow);
    for (size_t i = next_send; i < end; ++i) {
      if (started[i]) continue;
      int64_t dep = sends[i].dep;
      if (dep >= 0 && !received[static_cast<size_t>(dep)]) continue;
      started[i] = 1;
      while (next_send < sends.size() && started[next_send]) ++next_send;
      *index = i;
      return true;
    }
    return false;
  }
  void send_finished(int64_t forwarded_from) {
    std::lock_guard<std::mutex> lock(mutex);
    ++sends_done;
    if (forwarded_from >= 0) forward.erase(static_cast<size_t>(forwarded_from));
  }
  void claim(size_t index) {
    std::lock_guard<std::mutex> lock(mutex);
    if (claimed[index]) throw ProtocolError("data item " + std::to_string(index) + " arrived twice");
    claimed[index] = 1;
  }
  void received_item(size_t index, std::vector<uint8_t>* to_forward) {
    std::lock_guard<std::mutex> lock(mutex);
    if (to_forward) forward[index] = std::move(*to_forward);
    received[index] = 1;
    ++recvs_done;
  }
  const uint8_t* forward_bytes(size_t recv_index) {
    std::lock_guard<std::mutex> lock(mutex);
    return forward.at(recv_index).data();  // node-based map: the pointer stays valid
  }
  bool all_received() {
    std::lock_guard<std::mutex> lock(mutex);
    return recvs_done == plan.recvs().size();
  }
  bool finished() {
    std::lock_guard<std::mutex> lock(mutex);
    return recvs_done == plan.recvs().size() && sends_done == plan.sends().size();
  }

  uint8_t* scratch(const RingItem& it) const { return static_cast<uint8_t*>(a.result) + it.begin * esize; }
  const uint8_t* input(const RingItem& it) const { return static_cast<const uint8_t*>(a.input) + it.begin * esize; }
  size_t wire_size(const RingItem& it) const { return quant ? quantized_size(it.count) : it.count * esize; }
  bool forwarded(const RingItem& it) const { return it.step >= rs_steps && it.step < last_step; }

  const AllReduceArgs& a;
  net::Transport& t;
  RingPlan plan;
  size_t esize;
  bool quant;
  size_t rs_steps;
  size_t last_step;

 private:
  std::mutex mutex;
  size_t next_send = 0;
  size_t sends_done = 0;
  size_t recvs_done = 0;
  std::vector<uint8_t> started, claimed, received;
  std::unordered_map<size_t, std::vector<uint8_t>> forward;  // quantized all-gather chunks
};

class Lane {
 public:
  Lane(Ring& ring, size_t id) : r_(ring), id_(id) {}
  size_t id() const { return id_; }
  bool sending() const { return sending_; }
  // Each moves what the socket takes now; true if anything moved.
  bool pump_send();
  bool pump_recv();
  AllReduceStats stats;

 private:
  void start_send(size_t index);
  void on_header();
  void finish_recv();

  Ring& r_;
  size_t id_;

  bool sending_ = false;
  size_t send_index_ = 0;
  uint8_t send_hdr_[kDataHeader];
  const uint8_t* send_payload_ = nullptr;
  size_t send_len_ = 0;
  size_t sent_ = 0;
  std::vector<uint8_t> send_buf_;

  uint8_t recv_hdr_[kDataHeader];
  size_t got_ = 0;  // bytes of the current frame (header included)
  size_t recv_index_ = 0;
  uint8_t* recv_target_ = nullptr;
  size_t recv_len_ = 0;
  std::vector<uint8_t> recv_buf_;
};

void Lane::start_send(size_t index) {
  const RingItem& it = r_.plan.sends()[index];
  send_index_ = index;
  if (!r_.quant) {
    send_payload_ = it.step == 0 ? r_.input(it) : r_.scratch(it);
  } else if (it.step > r_.rs_steps) {
    send_payload_ = r_.forward_bytes(static_cast<size_t>(it.dep));  // forward bytes as received
  } else {
    send_buf_.resize(quantized_size(it.count));
    const void* src = it.step == 0 ? static_cast<const void*>(r_.input(it)) : static_cast<const void*>(r_.scratch(it));
    quantize_minmax_u8(r_.a.dtype, src, it.count, send_buf_.data());
    if (it.step == r_.rs_steps) {
      // The owner keeps what everyone else will reconstruct, so all peers hold equal bytes.
      dequantize_minmax_u8(r_.a.dtype, send_buf_.data(), it.count, r_.scratch(it));
    }
    send_payload_ = send_buf_.data();
  }
  send_len_ = r_.wire_size(it);
  proto::encode_header(proto::Header{proto::kProtocolVersion, static_cast<uint16_t>(proto::MsgType::kData),
                                     static_cast<uint32_t>(12 + send_len_)},
                       send_hdr_);
  proto::Writer w;
  w.u64(r_.a.op_id);
  w.u32(static_cast<uint32_t>(index));
  std::memcpy(send_hdr_ + proto::kHeaderSize, w.bytes().data(), 12);
  sent_ = 0;
  sending_ = true;
}

bool Lane::pump_send() {
  bool moved = false;
  if (!r_.t.sends_on(id_)) return false;  // a receive-only lane
  for (;;) {
    if (!sending_) {
      size_t index;
      if (!r_.take_send(&index)) return moved;
      start_send(index);
    }
    iovec iov[2];
    int n = 0;
    if (sent_ < kDataHeader) iov[n++] = iovec{send_hdr_ + sent_, kDataHeader - sent_};
    size_t body_off = sent_ > kDataHeader ? sent_ - kDataHeader : 0;
    iov[n++] = iovec{const_cast<uint8_t*>(send_payload_) + body_off, send_len_ - body_off};
    size_t k = r_.t.send_some(id_, iov, n);
    if (k == 0) return moved;
    moved = true;
    sent_ += k;
    stats.bytes_sent += k;
    if (sent_ == kDataHeader + send_len_) {
      const RingItem& it = r_.plan.sends()[send_index_];
      sending_ = false;
      r_.send_finished(r_.quant && it.step > r_.rs_steps ? it.dep : -1);
    }
  }
}

void Lane::on_header() {
  if (std::memcmp(recv_hdr_, proto::kResyncPrefix, proto::kHeaderSize) == 0) {
    // The left neighbour gave this op up and re-synchronises for a new epoch.
    throw Aborted("the left neighbour moved on to a new epoch (lane " + std::to_string(id_) + ")");
  }
  proto::Header h = proto::decode_header(recv_hdr_);
  proto::Reader rd(recv_hdr_ + proto::kHeaderSize, 12);
  uint64_t op_id = rd.u64();
  uint32_t index = rd.u32();
  if (h.version != proto::kProtocolVersion || h.type != static_cast<uint16_t>(proto::MsgType::kData) ||
      op_id != r_.a.op_id || index >= r_.plan.recvs().size()) {
    throw ProtocolError("unexpected data frame on lane " + std::to_string(id_) + ": type " + std::to_string(h.type) +
                        ", op " + std::to_string(op_id) + " (expected " + std::to_string(r_.a.op_id) + "), item " +
                        std::to_string(index));
  }
  const RingItem& it = r_.plan.recvs()[index];
  recv_len_ = r_.wire_size(it);
  if (h.length != 12 + recv_len_) {
    throw ProtocolError("data item " + std::to_string(index) + " has length " + std::to_string(h.length) +
                        ", expected " + std::to_string(12 + recv_len_));
  }
  r_.claim(index);
  recv_index_ = index;
  if (!r_.quant) {
    recv_target_ = r_.scratch(it);  // the network writes straight into place
  } else {
    recv_buf_.resize(recv_len_);
    recv_target_ = recv_buf_.data();
  }
}

bool Lane::pump_recv() {
  bool moved = false;
  for (;;) {
    size_t k;
    if (got_ == 0 && r_.all_received()) return moved;  // later bytes belong to a later op
    if (got_ < kDataHeader) {
      k = r_.t.recv_some(id_, recv_hdr_ + got_, kDataHeader - got_);
    } else {
      k = r_.t.recv_some(id_, recv_target_ + (got_ - kDataHeader), recv_len_ - (got_ - kDataHeader));
    }
    if (k == 0) return moved;
    moved = true;
    got_ += k;
    stats.bytes_received += k;
    if (got_ == kDataHeader) on_header();
    if (recv_target_ != nullptr && got_ == kDataHeader + recv_len_) finish_recv();
  }
}

void Lane::finish_recv() {
  const RingItem& it = r_.plan.recvs()[recv_index_];
  const AllReduceArgs& a = r_.a;
  if (r_.quant) dequantize_minmax_u8(a.dtype, recv_target_, it.count, r_.scratch(it));
  if (it.step < r_.rs_steps) {
    reduce(a.dtype, a.op, r_.scratch(it), r_.input(it), r_.scratch(it), it.count);
    if (it.step == r_.rs_steps - 1 && a.op == ReduceOp::kAvg) divide(a.dtype, r_.scratch(it), it.count, a.world);
  }
  bool keep = r_.quant && r_.forwarded(it);
  r_.received_item(recv_index_, keep ? &recv_buf_ : nullptr);
  if (keep) recv_buf_ = std::vector<uint8_t>();
  got_ = 0;
  recv_target_ = nullptr;
  recv_len_ = 0;
}

// Drives a set of lanes on this thread until the whole ring is done.
void run_lanes(Ring& ring, std::vector<Lane*>& lanes, bool shared_with_other_threads) {
  std::vector<net::Transport::Interest> interests;
  for (;;) {
    bool moved = false;
    for (Lane* lane : lanes) {
      moved |= lane->pump_recv();
      moved |= lane->pump_send();
    }
    if (ring.finished()) return;
    if (moved) continue;
    bool more_to_receive = !ring.all_received();
    interests.clear();
    for (Lane* lane : lanes) {
      // A lane in the middle of a send waits for room; an idle one for a receive that
      // makes the next send ready (which arrives on some lane's socket).
      interests.push_back({lane->id(), lane->sending(), more_to_receive});
    }
    // With lanes on several threads, what this thread waits for may arrive on another
    // thread's lanes (the input of its next send, the last item of the ring), which its
    // own sockets never signal: re-check now and then.
    TimePoint wake_by = TimePoint::max();
    if (shared_with_other_threads) wake_by = Clock::now() + kCrossThreadRecheck;
    ring.t.wait(interests, ring.a.deadline, wake_by);
  }
}

}  // namespace

AllReduceStats allreduce_ring(net::Transport& transport, const AllReduceArgs& a) {
  size_t esize = dtype_size(a.dtype);
  if (a.world == 1 || a.count == 0) {
    if (a.count > 0) std::memcpy(a.result, a.input, a.count * esize);
    return {};
  }
  Ring ring(a, transport, std::max<size_t>(1, a.chunk_bytes / esize));
  size_t lanes = transport.lanes();
  std::vector<std::unique_ptr<Lane>> all;
  for (size_t l = 0; l < lanes; ++l) all.push_back(std::make_unique<Lane>(ring, l));

  size_t threads = std::max<size_t>(1, std::min(a.threads, lanes));
  std::vector<std::vector<Lane*>> groups(threads);
  for (size_t l = 0; l < lanes; ++l) groups[l % threads].push_back(all[l].get());

  std::mutex error_mutex;
  std::exception_ptr first_error;
  auto run_group = [&](size_t g) {
    try {
      run_lanes(ring, groups[g], threads > 1);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
      transport.abort(e.what());  // the other threads stop too
    }
  };
  std::vector<std::thread> helpers;
  for (size_t g = 1; g < threads; ++g) helpers.emplace_back(run_group, g);
  run_group(0);
  for (auto& h : helpers) h.join();
  if (first_error) std::rethrow_exception(first_error);

  AllReduceStats total;
  for (auto& lane : all) {
    total.bytes_sent += lane->stats.bytes_sent;
    total.bytes_received += lane->stats.bytes_received;
  }
  return total;
}

}  // namespace pcomm::collectives
