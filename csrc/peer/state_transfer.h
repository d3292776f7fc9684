// Moving shared-state bytes between peers, outside the ring: a receiver opens streams to
// the peers that hold the chosen content (through their RemotePeer: direct, punched or
// relayed) and pulls pieces over all of them at once; a source answers each FetchRequest with the
// bytes of its tensors. A source that dies mid-transfer only loses the piece it was
// sending: the piece goes back to the queue and another source's connection takes it.
#pragma once

#include <atomic>
#include <memory>
#include <functional>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "net/link.h"
#include "proto/state_messages.h"

namespace pcomm::peer {

struct StateTensor {
  std::string name;
  uint8_t dtype = 0;
  std::vector<uint64_t> shape;
  void* data = nullptr;
  uint64_t nbytes = 0;
};

// A contiguous range of one tensor to fetch into dest.
struct FetchPiece {
  uint32_t tensor = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* dest = nullptr;
};

struct FetchSpec {
  std::string run;
  std::string self_id;
  uint64_t sync_id = 0;
  std::vector<proto::RingMember> sources;
  uint32_t connections_per_source = 4;
  TimePoint deadline;
  std::function<bool()> interrupt;  // checked every 100 ms while waiting (Ctrl-C); may be empty
  // Opens a new stream to a source (RemotePeer::open_stream); throws on failure.
  std::function<std::shared_ptr<net::Link>(const std::string& peer, TimePoint deadline)> open;
};

// Fetches every piece; returns the bytes received. Throws PeerLostError when every
// source failed, TimeoutError at the deadline.
uint64_t fetch_pieces(const FetchSpec& spec, const std::vector<FetchPiece>& pieces);

// Splits tensors into pieces of at most piece_bytes, pointing into the given buffers.
std::vector<FetchPiece> make_pieces(const std::vector<uint32_t>& tensors, const std::vector<uint64_t>& sizes,
                                    const std::vector<uint8_t*>& buffers, uint64_t piece_bytes);

// Serves FetchRequests on connections handed to it, from a fixed table of tensors,
// until stop(). One thread per connection.
class StateServer {
 public:
  StateServer(const std::vector<StateTensor>& tensors, TimePoint deadline);
  ~StateServer();
  void serve(std::shared_ptr<net::Link> link);
  void stop();  // closes every connection and joins the threads; idempotent
  uint64_t bytes_sent() const { return bytes_sent_.load(); }

 private:
  void run(net::Link& link);

  std::vector<StateTensor> tensors_;
  TimePoint deadline_;
  std::mutex mutex_;
  bool stopping_ = false;
  std::vector<std::shared_ptr<net::Link>> links_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> bytes_sent_{0};
};

}  // namespace pcomm::peer
