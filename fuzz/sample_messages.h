// Valid instances of every message with a decoder, encoded: the seeds of the fuzz corpus
// (fuzz/write_seeds.cpp writes them as files). Each sample is a message a real run sends,
// so libFuzzer starts from inputs that get past the first length check.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pcomm::fuzz {

struct SampleMessage {
  std::string name;  // file name in the corpus: [a-z0-9_]
  uint16_t type;     // MsgType
  std::vector<uint8_t> payload;
};

std::vector<SampleMessage> sample_messages();

}  // namespace pcomm::fuzz
