// The input format of fuzz_frames, shared with the seed writer:
//
//   byte 0   how the in-memory link cuts the stream into reads (0: as large as asked;
//            else sizes 1 to 23 from a generator seeded with it)
//   byte 1   options: bits 0-1 pick the payload limit (kLimits), bit 2 makes the frame
//            handler detach the connection after the first frame (a handshake handing
//            its link to the ring), bit 3 stamps the current protocol version into every
//            header of the stream (walking it frame by frame) before it is read, so that
//            seeds and regression inputs still reach the decoders after a version bump
//   2..      the byte stream, as a socket would deliver it
#pragma once

#include <cstdint>

#include "proto/wire.h"

namespace pcomm::fuzz {

inline constexpr size_t kFrameInputPrefix = 2;
inline constexpr uint8_t kLimitMask = 0x3;
inline constexpr uint8_t kDetachAfterFirst = 0x4;
inline constexpr uint8_t kStampVersion = 0x8;
// The limits the readers run with: control frames, probe connections (64 bytes), replies
// read with net::read_frame (kMaxString + 64), and none at all.
inline constexpr uint32_t kLimits[4] = {proto::kMaxControlPayload, 64, proto::kMaxString + 64, 0};

}  // namespace pcomm::fuzz
