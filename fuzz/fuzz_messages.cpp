// libFuzzer target for every payload decoder in csrc/proto (messages.cpp,
// state_messages.cpp, the fields() messages of path_messages.h and relay_messages.h) and
// the dtype/op code checks the coordinator applies to an announcement.
//
// Input: byte 0 is the message type (MsgType; every type is below 256), the rest is the
// payload. decode_message decodes it as its receiver would and checks the round trip.
#include <cstddef>
#include <cstdint>

#include "core/errors.h"
#include "fuzz/decode_message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  try {
    pcomm::fuzz::decode_message(data[0], data + 1, size - 1);
  } catch (const pcomm::ProtocolError&) {
    // refused: what a decoder must do with bad bytes
  } catch (const pcomm::InvalidArgument&) {
    // an unknown dtype/op/quantization code
  }
  // Anything else escapes: libFuzzer reports the uncaught exception as a crash.
  return 0;
}
