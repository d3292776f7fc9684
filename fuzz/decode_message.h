// The receiving side of every wire decoder in csrc/proto, in one function the fuzz
// targets share: decode_message(type, payload) decodes a payload as the receiver of a
// frame of that type would, then checks that the codec round-trips: re-encoding the
// decoded message gives back exactly the input bytes (every pcomm encoding is canonical:
// fixed-width integers, booleans as 0/1, strings as u32 length + bytes, no slack), and
// decoding that again gives the same encoding.
//
// Bad input must end in one of the typed errors the receivers expect (ProtocolError from
// the decoders, InvalidArgument from the dtype/op code checks); a failed round trip is a
// finding and aborts, so libFuzzer keeps the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

// Aborts with the violated condition: libFuzzer reports the input as a crash.
#define FUZZ_CHECK(cond, what)                                                           \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s [violated: %s] at %s:%d\n", what, #cond, \
                   __FILE__, __LINE__);                                                  \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace pcomm::fuzz {

// Returns true when a decoder accepted the payload (and the round trip held), false for
// types whose payload no decoder reads (raw data chunks, unknown numbers). Throws
// ProtocolError or InvalidArgument for a payload the receiver refuses.
bool decode_message(uint16_t type, const uint8_t* data, size_t size);

}  // namespace pcomm::fuzz
