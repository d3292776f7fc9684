// Activity: what this peer's collectives have done since connect(), reported to the
// coordinator about once a second (PeerReport) so `pcomm status` can show it.
#pragma once

#include <optional>
#include <string>

#include "core/clock.h"
#include "peer/collective_op.h"
#include "proto/status_messages.h"

namespace pcomm::peer {

struct Activity {
  uint64_t ops_done = 0;
  uint64_t ops_failed = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint32_t last_tag = 0;
  int last_world = 0;
  std::string last_error;
  std::optional<TimePoint> last_at;
  uint64_t step = proto::kNoValue;  // set by the application (Communicator::set_step)

  void record(uint32_t tag, bool failed, const std::string& message, const ReduceInfo& info) {
    (failed ? ops_failed : ops_done) += 1;
    bytes_sent += info.bytes_sent;
    bytes_received += info.bytes_received;
    last_tag = tag;
    last_world = info.world_size;
    last_error = failed ? message.substr(0, proto::kMaxReportText) : std::string();
    last_at = Clock::now();
  }

  proto::PeerReport report(TimePoint now) const {
    proto::PeerReport r;
    r.ops_done = ops_done;
    r.ops_failed = ops_failed;
    r.bytes_sent = bytes_sent;
    r.bytes_received = bytes_received;
    r.last_tag = last_tag;
    r.last_world = static_cast<uint32_t>(last_world);
    r.last_error = last_error;
    if (last_at) r.last_age_ms = static_cast<uint64_t>(std::max<int64_t>(0, to_millis(now - *last_at)));
    r.step = step;
    return r;
  }
};

}  // namespace pcomm::peer
