// Ring all-reduce; see allreduce_ring.h and ring_plan.h.
//
// Each lane runs two cursors over its plan: the send cursor and the receive cursor.
// A send item of step s > 0 may start once the receive item it depends on has finished.
// Data frames: the usual 12-byte frame header (type kData) + u64 op id + u32 item index,
// then the chunk (raw elements, or a minmax_u8 block when quantized).
#include "collectives/allreduce_ring.h"

#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
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

class Lane {
 public:
  Lane(const AllReduceArgs& a, const LanePlan& plan, size_t lane, net::Transport& t)
      : a_(a), plan_(plan), lane_(lane), t_(t), esize_(dtype_size(a.dtype)),
        quant_(a.quantization == Quantization::kMinMaxU8), rs_steps_(a.world - 1),
        last_step_(2 * (a.world - 1) - 1) {}

  bool finished() const { return si_ == plan_.sends.size() && ri_ == plan_.recvs.size(); }
  bool send_ready() const {
    if (si_ == plan_.sends.size()) return false;
    const RingItem& it = plan_.sends[si_];
    return sending_ || it.dep < 0 || static_cast<size_t>(it.dep) < ri_;
  }
  bool recv_ready() const {
    // Receiving never waits on sending, so the ring cannot deadlock; quantized chunks to
    // forward queue up instead (a chunk or two in practice: all-gather is chunk-major).
    return ri_ < plan_.recvs.size();
  }
  size_t id() const { return lane_; }

  // Each moves as many bytes as the socket takes now; true if anything moved.
  bool pump_send();
  bool pump_recv();

  AllReduceStats stats;

 private:
  bool is_forwarded(const RingItem& it) const { return it.step >= a_.world - 1 && it.step < last_step_; }
  uint8_t* scratch(const RingItem& it) const { return static_cast<uint8_t*>(a_.result) + it.begin * esize_; }
  const uint8_t* input(const RingItem& it) const {
    return static_cast<const uint8_t*>(a_.input) + it.begin * esize_;
  }
  size_t wire_size(const RingItem& it) const { return quant_ ? quantized_size(it.count) : it.count * esize_; }
  void write_header(uint8_t* h, size_t item, size_t payload) const;
  void start_send();
  void check_header() const;
  void finish_recv();

  const AllReduceArgs& a_;
  const LanePlan& plan_;
  size_t lane_;
  net::Transport& t_;
  size_t esize_;
  bool quant_;
  size_t rs_steps_;
  size_t last_step_;

  size_t si_ = 0;  // send cursor
  bool sending_ = false;
  uint8_t send_hdr_[kDataHeader];
  const uint8_t* send_payload_ = nullptr;
  size_t send_len_ = 0;
  size_t sent_ = 0;
  bool send_from_forward_ = false;
  std::vector<uint8_t> send_buf_;

  size_t ri_ = 0;  // receive cursor
  bool receiving_ = false;
  uint8_t recv_hdr_[kDataHeader];
  uint8_t* recv_target_ = nullptr;
  size_t recv_len_ = 0;
  size_t got_ = 0;
  std::vector<uint8_t> recv_buf_;
  std::deque<std::vector<uint8_t>> forward_;  // quantized chunks waiting to go right
  std::vector<std::vector<uint8_t>> spare_;   // recycled forward buffers
};

void Lane::write_header(uint8_t* h, size_t item, size_t payload) const {
  proto::encode_header(proto::Header{proto::kProtocolVersion, static_cast<uint16_t>(proto::MsgType::kData),
                                     static_cast<uint32_t>(12 + payload)},
                       h);
  proto::Writer w;
  w.u64(a_.op_id);
  w.u32(static_cast<uint32_t>(item));
  std::memcpy(h + proto::kHeaderSize, w.bytes().data(), 12);
}

void Lane::start_send() {
  const RingItem& it = plan_.sends[si_];
  send_from_forward_ = false;
  if (!quant_) {
    send_payload_ = it.step == 0 ? input(it) : scratch(it);
  } else if (it.step > rs_steps_) {
    send_payload_ = forward_.front().data();  // forward the bytes exactly as received
    send_from_forward_ = true;
  } else {
    send_buf_.resize(quantized_size(it.count));
    const void* src = it.step == 0 ? static_cast<const void*>(input(it)) : static_cast<const void*>(scratch(it));
    quantize_minmax_u8(a_.dtype, src, it.count, send_buf_.data());
    if (it.step == rs_steps_) {
      // The owner keeps what everyone else will reconstruct, so all peers hold equal bytes.
      dequantize_minmax_u8(a_.dtype, send_buf_.data(), it.count, scratch(it));
    }
    send_payload_ = send_buf_.data();
  }
  send_len_ = wire_size(it);
  write_header(send_hdr_, si_, send_len_);
  sent_ = 0;
  sending_ = true;
}

bool Lane::pump_send() {
  bool moved = false;
  while (send_ready()) {
    if (!sending_) start_send();
    size_t total = kDataHeader + send_len_;
    iovec iov[2];
    int n = 0;
    if (sent_ < kDataHeader) iov[n++] = iovec{send_hdr_ + sent_, kDataHeader - sent_};
    size_t body_off = sent_ > kDataHeader ? sent_ - kDataHeader : 0;
    iov[n++] = iovec{const_cast<uint8_t*>(send_payload_) + body_off, send_len_ - body_off};
    size_t k = t_.send_some(lane_, iov, n);
    if (k == 0) return moved;
    moved = true;
    sent_ += k;
    stats.bytes_sent += k;
    if (sent_ == total) {
      if (send_from_forward_) {
        spare_.push_back(std::move(forward_.front()));
        forward_.pop_front();
      }
      sending_ = false;
      ++si_;
    }
  }
  return moved;
}

void Lane::check_header() const {
  proto::Header h = proto::decode_header(recv_hdr_);
  proto::Reader r(recv_hdr_ + proto::kHeaderSize, 12);
  uint64_t op_id = r.u64();
  uint32_t item = r.u32();
  size_t expect = wire_size(plan_.recvs[ri_]);
  if (h.version != proto::kProtocolVersion || h.type != static_cast<uint16_t>(proto::MsgType::kData) ||
      h.length != 12 + expect || op_id != a_.op_id || item != ri_) {
    throw ProtocolError("unexpected data frame on lane " + std::to_string(lane_) + ": op " + std::to_string(op_id) +
                        " item " + std::to_string(item) + " length " + std::to_string(h.length) + ", expected op " +
                        std::to_string(a_.op_id) + " item " + std::to_string(ri_) + " length " +
                        std::to_string(12 + expect));
  }
}

bool Lane::pump_recv() {
  bool moved = false;
  while (recv_ready()) {
    const RingItem& it = plan_.recvs[ri_];
    if (!receiving_) {
      receiving_ = true;
      got_ = 0;
      recv_len_ = wire_size(it);
      if (!quant_) {
        recv_target_ = scratch(it);
      } else if (is_forwarded(it)) {
        if (spare_.empty()) spare_.emplace_back();
        forward_.push_back(std::move(spare_.back()));
        spare_.pop_back();
        forward_.back().resize(recv_len_);
        recv_target_ = forward_.back().data();
      } else {
        recv_buf_.resize(recv_len_);
        recv_target_ = recv_buf_.data();
      }
    }
    size_t k;
    if (got_ < kDataHeader) {
      k = t_.recv_some(lane_, recv_hdr_ + got_, kDataHeader - got_);
    } else {
      k = t_.recv_some(lane_, recv_target_ + (got_ - kDataHeader), recv_len_ - (got_ - kDataHeader));
    }
    if (k == 0) return moved;
    moved = true;
    bool header_done_now = got_ < kDataHeader && got_ + k >= kDataHeader;
    got_ += k;
    stats.bytes_received += k;
    if (header_done_now) check_header();
    if (got_ == kDataHeader + recv_len_) finish_recv();
  }
  return moved;
}

void Lane::finish_recv() {
  const RingItem& it = plan_.recvs[ri_];
  if (quant_) dequantize_minmax_u8(a_.dtype, recv_target_, it.count, scratch(it));
  if (it.step < rs_steps_) {
    reduce(a_.dtype, a_.op, scratch(it), input(it), scratch(it), it.count);
    if (it.step == rs_steps_ - 1 && a_.op == ReduceOp::kAvg) divide(a_.dtype, scratch(it), it.count, a_.world);
  }
  receiving_ = false;
  ++ri_;
}

// Drives a set of lanes on this thread until all finish.
void run_lanes(std::vector<Lane*>& lanes, net::Transport& t, TimePoint deadline) {
  std::vector<net::Transport::Interest> interests;
  for (;;) {
    bool moved = false;
    bool all_done = true;
    for (Lane* lane : lanes) {
      moved |= lane->pump_recv();
      moved |= lane->pump_send();
      all_done = all_done && lane->finished();
    }
    if (all_done) return;
    if (moved) continue;
    interests.clear();
    for (Lane* lane : lanes) {
      if (lane->finished()) continue;
      interests.push_back({lane->id(), lane->send_ready(), lane->recv_ready()});
    }
    PCOMM_CHECK(!interests.empty(), ProtocolError, "ring stalled with nothing to wait for");
    t.wait(interests, deadline);
  }
}

}  // namespace

AllReduceStats allreduce_ring(net::Transport& transport, const AllReduceArgs& a) {
  size_t esize = dtype_size(a.dtype);
  if (a.world == 1 || a.count == 0) {
    if (a.count > 0) std::memcpy(a.result, a.input, a.count * esize);
    return {};
  }
  size_t lanes = transport.lanes();
  size_t chunk = std::max<size_t>(1, a.chunk_bytes / esize);
  RingPlan plan(a.count, a.world, a.rank, lanes, chunk);
  std::vector<std::unique_ptr<Lane>> all;
  for (size_t l = 0; l < lanes; ++l) all.push_back(std::make_unique<Lane>(a, plan.lanes()[l], l, transport));

  size_t threads = std::max<size_t>(1, std::min(a.threads, lanes));
  std::vector<std::vector<Lane*>> groups(threads);
  for (size_t l = 0; l < lanes; ++l) groups[l % threads].push_back(all[l].get());

  std::mutex error_mutex;
  std::exception_ptr first_error;
  auto run_group = [&](size_t g) {
    try {
      run_lanes(groups[g], transport, a.deadline);
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
