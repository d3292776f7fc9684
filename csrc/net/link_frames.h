// Whole pcomm frames over a Link, blocking-style with a deadline and an optional Cancel:
// the handshakes that open a pool or a fetch stream, and the state transfer. (The event
// loop's FramedConnection does the same without blocking.)
#pragma once

#include <cstdint>
#include <vector>

#include "core/clock.h"
#include "net/link.h"
#include "proto/wire.h"

namespace pcomm::net {

void send_frame(Link& link, uint16_t type, const std::vector<uint8_t>& payload, TimePoint deadline,
                const Cancel* cancel = nullptr);
// Reads one frame's header and checks magic and version; the payload is the caller's.
proto::Header read_header(Link& link, TimePoint deadline, const Cancel* cancel = nullptr);
// Reads one whole frame whose payload may be at most max_payload bytes.
std::vector<uint8_t> read_frame(Link& link, uint16_t* type, uint32_t max_payload, TimePoint deadline,
                                const Cancel* cancel = nullptr);

}  // namespace pcomm::net
