// DataPlane; see data_plane.h.
#include "peer/data_plane.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "collectives/allreduce_ring.h"
#include "core/errors.h"
#include "net/link_lanes.h"

namespace pcomm::peer {

namespace {
// Tunables, each overridable by an environment variable for operators.
// Chunk: the unit of pipelining and of striping over the pool's connections.
constexpr size_t kDefaultChunkBytes = 256 * 1024;
size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  unsigned long long n = std::strtoull(v, &end, 10);
  return (end != v && *end == '\0' && n > 0) ? static_cast<size_t>(n) : fallback;
}
}  // namespace

DataPlane::DataPlane(Report report, Duration decision_grace)
    : report_(std::move(report)), decision_grace_(decision_grace) {
  // Lanes share the reduction work over threads: half the cores by default (the other
  // half is for the kernel's TCP work and the other peers on the machine).
  size_t cores = std::max(1u, std::thread::hardware_concurrency());
  threads_ = env_size("PCOMM_DATA_THREADS", std::max<size_t>(1, cores / 2));
  chunk_bytes_ = env_size("PCOMM_CHUNK_BYTES", kDefaultChunkBytes);
  thread_ = std::thread([this] { run(); });
}

DataPlane::~DataPlane() { stop(); }

void DataPlane::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    for (auto& item : queue_) {
      if (item.op) item.op->decide(ErrorKind::kAborted, "the communicator was closed");
    }
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DataPlane::enqueue(std::shared_ptr<CollectiveOp> op, std::shared_ptr<LinkSet> links) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      op->decide(ErrorKind::kAborted, "the communicator was closed");
      return;
    }
    queue_.push_back(Item{std::move(op), std::move(links), nullptr});
  }
  cv_.notify_all();
}

void DataPlane::enqueue_task(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    queue_.push_back(Item{nullptr, nullptr, std::move(task)});
  }
  cv_.notify_all();
}

void* DataPlane::scratch(size_t bytes) {
  if (bytes > scratch_size_) {
    scratch_.reset();  // release first: never hold two large buffers at once
    scratch_.reset(new uint8_t[bytes]);
    scratch_size_ = bytes;
  }
  return scratch_.get();
}

void DataPlane::run() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    if (item.task) {
      item.task();  // catches its own errors
    } else {
      execute(item.op, item.links);
    }
  }
}

void DataPlane::execute(const std::shared_ptr<CollectiveOp>& op, const std::shared_ptr<LinkSet>& links) {
  const AllReduceRequest& req = op->request();
  uint64_t op_id = op->op_id();
  if (!op->begin_run()) {
    report_(req, op_id, proto::Outcome::kAborted, "the operation ended on this peer before it started");
    return;
  }
  size_t bytes = req.count * dtype_size(req.dtype);
  int world = op->world();
  bool local = world == 1 || req.count == 0;
  void* result = local ? req.data : nullptr;
  std::optional<ErrorKind> error;
  std::string message;
  collectives::AllReduceStats stats;
  try {
    if (!local) {
      PCOMM_CHECK(links && !links->to_right.empty() && !links->from_left.empty(), IoError,
                  "no data links for this epoch");
      result = scratch(bytes);
      net::LinkLanes lanes(links->to_right, links->from_left, op->cancel());
      collectives::AllReduceArgs args;
      args.dtype = req.dtype;
      args.op = req.op;
      args.quantization = req.quantization;
      args.input = req.data;
      args.result = result;
      args.count = req.count;
      args.world = static_cast<size_t>(world);
      args.rank = static_cast<size_t>(op->rank());
      args.op_id = op_id;
      args.deadline = op->deadline();
      args.chunk_bytes = chunk_bytes_;
      args.threads = threads_;
      stats = collectives::allreduce_ring(lanes, args);
    }
  } catch (const IoError& e) {
    error = ErrorKind::kPeerLost;  // kind_of's rule; the message says which link
    message = std::string("a data link failed: ") + e.what();
  } catch (const Error& e) {
    error = kind_of(e);
    message = e.what();
  }
  bool ok = op->end_run(error, message, stats.bytes_sent, stats.bytes_received,
                        [&](proto::Outcome outcome, const std::string& why) { report_(req, op_id, outcome, why); });
  if (!ok) return;
  void* dest = req.out != nullptr ? req.out : req.data;
  TimePoint until = std::max(op->deadline(), Clock::now()) + decision_grace_;
  op->await_decision(until, [&] {
    if (req.count > 0 && dest != result) std::memcpy(dest, result, bytes);
  });
}

}  // namespace pcomm::peer
