// Blocking frame helpers over a Link; see link_frames.h.
#include "net/link_frames.h"

#include <algorithm>
#include <string>

#include "core/errors.h"

namespace pcomm::net {

void send_frame(Link& link, uint16_t type, const std::vector<uint8_t>& payload, TimePoint deadline,
                const Cancel* cancel) {
  auto frame = proto::make_frame(type, payload);
  link.send_all(frame.data(), frame.size(), deadline, cancel);
}

proto::Header read_header(Link& link, TimePoint deadline, const Cancel* cancel) {
  uint8_t h[proto::kHeaderSize];
  link.recv_all(h, sizeof h, deadline, cancel);
  proto::Header header = proto::decode_header(h);
  if (header.version != proto::kProtocolVersion) {
    throw ProtocolError("protocol version mismatch: remote speaks version " + std::to_string(header.version) +
                        ", this side speaks version " + std::to_string(proto::kProtocolVersion));
  }
  return header;
}

std::vector<uint8_t> read_frame(Link& link, uint16_t* type, uint32_t max_payload, TimePoint deadline,
                                const Cancel* cancel) {
  proto::Header h = read_header(link, deadline, cancel);
  if (h.length > max_payload) {
    throw ProtocolError("frame of " + std::to_string(h.length) + " bytes exceeds the limit of " +
                        std::to_string(max_payload));
  }
  // Grows with the bytes that arrived, not with the length the header claims.
  constexpr size_t kStep = 64 * 1024;
  std::vector<uint8_t> payload;
  while (payload.size() < h.length) {
    size_t at = payload.size();
    payload.resize(at + std::min<size_t>(kStep, h.length - at));
    link.recv_all(payload.data() + at, payload.size() - at, deadline, cancel);
  }
  *type = h.type;
  return payload;
}

}  // namespace pcomm::net
