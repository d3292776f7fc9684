// Ring all-reduce over a Transport: reduce-scatter then all-gather, pipelined per chunk,
// each lane (TCP connection) an independent pipeline (see ring_plan.h). The result goes
// to `result`, never to `input`, so an aborted operation leaves the caller's data intact;
// the caller copies `result` out once the coordinator commits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/clock.h"
#include "core/dtype.h"
#include "net/transport.h"

namespace pcomm::collectives {

struct AllReduceArgs {
  DType dtype = DType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  Quantization quantization = Quantization::kNone;
  const void* input = nullptr;
  void* result = nullptr;  // count elements; distinct from input
  size_t count = 0;
  size_t world = 1;
  size_t rank = 0;
  uint64_t op_id = 0;  // stamped on every data frame and checked by the receiver
  TimePoint deadline;
  size_t chunk_bytes = 256 * 1024;
  size_t threads = 1;  // lanes are spread over this many threads
};

struct AllReduceStats {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
};

// Runs the ring. Throws IoError (a link broke), ProtocolError (unexpected bytes),
// TimeoutError (deadline) or Aborted (cancelled through the transport).
AllReduceStats allreduce_ring(net::Transport& transport, const AllReduceArgs& args);

}  // namespace pcomm::collectives
