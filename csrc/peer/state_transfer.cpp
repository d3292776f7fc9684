// Shared-state transfer; see state_transfer.h.
#include "peer/state_transfer.h"

#include <poll.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <optional>
#include <set>

#include "core/errors.h"
#include "net/link_frames.h"
#include "proto/wire.h"

namespace pcomm::peer {

namespace {
// The largest piece a source serves in one answer (a receiver asks for less).
constexpr uint64_t kMaxPiece = 64ull << 20;
}  // namespace

std::vector<FetchPiece> make_pieces(const std::vector<uint32_t>& tensors, const std::vector<uint64_t>& sizes,
                                    const std::vector<uint8_t*>& buffers, uint64_t piece_bytes) {
  std::vector<FetchPiece> pieces;
  for (size_t i = 0; i < tensors.size(); ++i) {
    for (uint64_t off = 0; off < sizes[i]; off += piece_bytes) {
      pieces.push_back(FetchPiece{tensors[i], off, std::min(piece_bytes, sizes[i] - off), buffers[i] + off});
    }
  }
  return pieces;
}

uint64_t fetch_pieces(const FetchSpec& spec, const std::vector<FetchPiece>& pieces) {
  if (pieces.empty()) return 0;
  if (spec.sources.empty()) throw PeerLostError("no peer holds the chosen shared state");
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<size_t> queue;
  for (size_t i = 0; i < pieces.size(); ++i) queue.push_back(i);
  size_t done = 0;
  size_t workers = 0;
  uint64_t received = 0;
  std::set<std::string> lost;
  std::string last_error;

  auto worker = [&](const proto::RingMember& source) {
    std::optional<size_t> holding;
    try {
      auto link = spec.open(source.peer_id, spec.deadline);
      net::Link& sock = *link;
      net::send_frame(sock, static_cast<uint16_t>(proto::StateMsg::kFetchHello),
                      proto::FetchHello{spec.run, spec.self_id, spec.sync_id}.encode(), spec.deadline);
      proto::Header ack = net::read_header(sock, spec.deadline);
      if (ack.type != static_cast<uint16_t>(proto::StateMsg::kFetchAck) || ack.length != 0) {
        throw ProtocolError("source " + source.peer_id + " refused the fetch (message type " +
                            std::to_string(ack.type) + ")");
      }
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (queue.empty() || lost.count(source.peer_id)) break;
          holding = queue.front();
          queue.pop_front();
        }
        const FetchPiece& p = pieces[*holding];
        net::send_frame(sock, static_cast<uint16_t>(proto::StateMsg::kFetchRequest),
                        proto::FetchRequest{p.tensor, p.offset, p.length}.encode(), spec.deadline);
        proto::Header h = net::read_header(sock, spec.deadline);
        if (h.type != static_cast<uint16_t>(proto::StateMsg::kFetchData) || h.length != p.length) {
          throw ProtocolError("source " + source.peer_id + " answered with type " + std::to_string(h.type) +
                              " and " + std::to_string(h.length) + " bytes for a request of " + std::to_string(p.length));
        }
        sock.recv_all(p.dest, p.length, spec.deadline);
        std::lock_guard<std::mutex> lock(mutex);
        ++done;
        received += p.length + proto::kHeaderSize;
        holding.reset();
        cv.notify_all();
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex);
      if (holding) queue.push_front(*holding);  // another connection takes it
      lost.insert(source.peer_id);
      last_error = "source " + source.peer_id + ": " + e.what();
    }
    std::lock_guard<std::mutex> lock(mutex);
    --workers;
    cv.notify_all();
  };

  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mutex);
    workers = spec.sources.size() * spec.connections_per_source;
  }
  for (const auto& source : spec.sources) {
    for (uint32_t k = 0; k < spec.connections_per_source; ++k) threads.emplace_back(worker, std::cref(source));
  }
  bool interrupted = false;
  {
    std::unique_lock<std::mutex> lock(mutex);
    auto finished = [&] { return done == pieces.size() || workers == 0; };
    while (!finished()) {
      cv.wait_for(lock, std::chrono::milliseconds(100), finished);
      if (finished() || !spec.interrupt) continue;
      lock.unlock();
      interrupted = spec.interrupt();
      lock.lock();
      if (interrupted) {
        queue.clear();  // workers stop after the piece they hold
        break;
      }
    }
  }
  for (auto& t : threads) t.join();
  if (interrupted) throw Interrupted("shared-state transfer interrupted");
  if (done == pieces.size()) return received;
  if (Clock::now() >= spec.deadline) throw TimeoutError("shared-state transfer timed out: " + last_error);
  throw PeerLostError("every source of the shared state failed; last: " + last_error);
}

StateServer::StateServer(const std::vector<StateTensor>& tensors, TimePoint deadline)
    : tensors_(tensors), deadline_(deadline) {}

StateServer::~StateServer() { stop(); }

void StateServer::serve(std::shared_ptr<net::Link> link) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) {
    link->shutdown();
    return;
  }
  links_.push_back(link);
  threads_.emplace_back([this, link] { run(*link); });
}

void StateServer::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    for (auto& l : links_) l->shutdown();  // wakes every blocked thread
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  std::lock_guard<std::mutex> lock(mutex_);
  links_.clear();
}

void StateServer::run(net::Link& view) {
  try {
    for (;;) {
      proto::Header h = net::read_header(view, deadline_);
      if (h.type != static_cast<uint16_t>(proto::StateMsg::kFetchRequest) || h.length > 64) {
        throw ProtocolError("expected a FetchRequest");
      }
      std::vector<uint8_t> payload(h.length);
      view.recv_all(payload.data(), payload.size(), deadline_);
      auto req = proto::FetchRequest::decode(payload.data(), payload.size());
      if (req.tensor >= tensors_.size() || req.length > kMaxPiece || req.offset > tensors_[req.tensor].nbytes ||
          req.length > tensors_[req.tensor].nbytes - req.offset) {
        throw ProtocolError("FetchRequest out of range");
      }
      uint8_t header[proto::kHeaderSize];
      proto::encode_header(proto::Header{proto::kProtocolVersion, static_cast<uint16_t>(proto::StateMsg::kFetchData),
                                         static_cast<uint32_t>(req.length)},
                           header);
      view.send_all(header, sizeof header, deadline_);
      view.send_all(static_cast<const uint8_t*>(tensors_[req.tensor].data) + req.offset, req.length, deadline_);
      bytes_sent_ += req.length + sizeof header;
    }
  } catch (const std::exception&) {
    // The receiver is done (closed), broke the protocol, or we are stopping: either way
    // this connection ends here and nothing else is affected.
  }
  view.shutdown();
}

}  // namespace pcomm::peer
