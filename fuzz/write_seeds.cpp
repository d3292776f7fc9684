// Writes the seed corpus: write_seeds <dir> fills <dir>/messages and <dir>/frames (the
// input formats of fuzz_messages.cpp and frame_input.h). fuzz/build.sh --write-seeds runs
// it on fuzz/corpus; tests/test_fuzz.py checks the committed files are what it writes.
//
// It refuses to write a corpus that misses a decoder: every sample must decode, and every
// type number decode_message knows must have a sample.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/errors.h"
#include "fuzz/decode_message.h"
#include "fuzz/frame_input.h"
#include "fuzz/sample_messages.h"
#include "proto/messages.h"
#include "proto/wire.h"

namespace {

using pcomm::fuzz::SampleMessage;
using Bytes = std::vector<uint8_t>;
namespace proto = pcomm::proto;

void write_file(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

Bytes frame_input(uint8_t chunk_seed, uint8_t options, const std::vector<Bytes>& frames) {
  Bytes in{chunk_seed, options};
  for (const auto& f : frames) in.insert(in.end(), f.begin(), f.end());
  return in;
}

const SampleMessage& sample(const std::vector<SampleMessage>& all, const std::string& name) {
  for (const auto& s : all) {
    if (s.name == name) return s;
  }
  throw std::runtime_error("no sample named " + name);
}

Bytes frame(const SampleMessage& s) { return proto::make_frame(s.type, s.payload); }

// Streams for fuzz_frames: every message in one stream, read whole and in pieces, and
// the ways a stream ends (refusals, limits, a handshake handing its link over).
std::vector<std::pair<std::string, Bytes>> frame_seeds(const std::vector<SampleMessage>& all) {
  using pcomm::fuzz::kDetachAfterFirst;
  using pcomm::fuzz::kStampVersion;  // seeds keep reaching the decoders after a version bump
  std::vector<Bytes> every;
  for (const auto& s : all) every.push_back(frame(s));
  Bytes hello = frame(sample(all, "hello"));
  Bytes data_header(12, 0);  // a ring data frame after the handshake: op id, item, bytes
  data_header[0] = 5;
  Bytes data = proto::make_frame(static_cast<uint16_t>(proto::MsgType::kData), data_header);
  data.insert(data.end(), 16, 0xab);
  Bytes welcome_refused = proto::Welcome{"peer-a", true, 0, ""}.encode();  // a 0 ms heartbeat is refused
  Bytes oversized = frame(sample(all, "probe_hello"));
  oversized[8] = 65;  // claims 65 bytes on a connection that allows 64
  Bytes truncated(hello.begin(), hello.end() - 3);
  std::string http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  return {
      {"all_messages_whole", frame_input(0, kStampVersion, every)},
      {"all_messages_in_pieces", frame_input(7, kStampVersion, every)},
      {"link_handshake_detach",
       frame_input(0, kDetachAfterFirst | kStampVersion, {frame(sample(all, "link_hello")), data})},
      {"probe_limit", frame_input(0, 1 | kStampVersion, {frame(sample(all, "probe_hello"))})},
      {"reply_limit",
       frame_input(5, 2 | kStampVersion, {frame(sample(all, "relay_paired")), frame(sample(all, "error"))})},
      {"no_payload_limit", frame_input(0, 3 | kStampVersion, {frame(sample(all, "fetch_ack"))})},
      {"version_mismatch", frame_input(0, 0, {proto::make_frame(2, sample(all, "hello").payload, 1)})},
      {"bad_magic", frame_input(0, 0, {Bytes(http.begin(), http.end())})},
      {"oversized", frame_input(0, 1 | kStampVersion, {oversized})},
      {"truncated", frame_input(2, kStampVersion, {truncated})},
      {"refused_then_more",
       frame_input(0, kStampVersion, {proto::make_frame(3, welcome_refused), frame(sample(all, "heartbeat"))})},
  };
}

void check_samples(const std::vector<SampleMessage>& all) {
  for (const auto& s : all) {
    if (!pcomm::fuzz::decode_message(s.type, s.payload.data(), s.payload.size())) {
      throw std::runtime_error("sample " + s.name + " has a type no decoder reads");
    }
  }
  for (unsigned type = 0; type < 256; ++type) {
    bool known = true;
    try {
      known = pcomm::fuzz::decode_message(static_cast<uint16_t>(type), nullptr, 0);
    } catch (const pcomm::Error&) {
      // a decoder refused the empty payload: still a decoder
    }
    bool sampled = false;
    for (const auto& s : all) sampled = sampled || s.type == type;
    if (known && !sampled) {
      throw std::runtime_error("message type " + std::to_string(type) +
                               " has a decoder but no sample in fuzz/sample_messages.cpp");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  try {
    auto all = pcomm::fuzz::sample_messages();
    check_samples(all);
    std::filesystem::path root(argv[1]);
    std::filesystem::create_directories(root / "messages");
    std::filesystem::create_directories(root / "frames");
    for (const auto& s : all) {
      Bytes in{static_cast<uint8_t>(s.type)};
      in.insert(in.end(), s.payload.begin(), s.payload.end());
      write_file(root / "messages" / s.name, in);
    }
    for (const auto& [name, bytes] : frame_seeds(all)) write_file(root / "frames" / name, bytes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "write_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
