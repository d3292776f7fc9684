// libFuzzer target for the frame readers: the header decoder (proto::decode_header), the
// event loop's reassembly (net::FramedConnection::parse_frames, fed through an in-memory
// Link in chunks of fuzzer-chosen sizes) and the blocking reader (net::read_frame). Each
// frame a reader delivers goes through decode_message, as the real handlers do.
//
// Both readers are checked against a reference parse of the whole stream written here
// from the layout in proto/wire.h: the same frames, in order, byte for byte; the same end
// (bad magic, version, oversized payload, or a truncated frame at EOF); exactly the Error
// frame the connection owes the remote; and after a handshake detaches the connection,
// exactly the bytes past the first frame left in the link. Input format: frame_input.h.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "core/errors.h"
#include "fuzz/decode_message.h"
#include "fuzz/frame_input.h"
#include "fuzz/mem_link.h"
#include "net/event_loop.h"
#include "net/frame_conn.h"
#include "net/link_frames.h"
#include "proto/messages.h"
#include "proto/wire.h"

namespace pcomm::fuzz {
namespace {

struct Frame {
  uint16_t type;
  std::vector<uint8_t> payload;
  bool operator==(const Frame&) const = default;
};

enum class StreamEnd { kTruncated, kBadMagic, kBadVersion, kTooLong };

struct Parsed {
  std::vector<Frame> frames;
  std::vector<size_t> ends;  // offset just past each frame
  StreamEnd end = StreamEnd::kTruncated;
};

uint32_t le(const uint8_t* p, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

// The reference: wire.h's layout read byte by byte, independent of proto::Reader.
Parsed parse_stream(const uint8_t* data, size_t size, uint32_t max_payload) {
  Parsed out;
  size_t pos = 0;
  while (size - pos >= proto::kHeaderSize) {
    const uint8_t* h = data + pos;
    if (std::memcmp(h, "PCOM", 4) != 0) {
      out.end = StreamEnd::kBadMagic;
      return out;
    }
    if (le(h + 4, 2) != proto::kProtocolVersion) {
      out.end = StreamEnd::kBadVersion;
      return out;
    }
    uint32_t length = le(h + 8, 4);
    if (length > max_payload) {
      out.end = StreamEnd::kTooLong;
      return out;
    }
    if (size - pos - proto::kHeaderSize < length) break;
    const uint8_t* body = h + proto::kHeaderSize;
    out.frames.push_back(Frame{static_cast<uint16_t>(le(h + 6, 2)), std::vector<uint8_t>(body, body + length)});
    pos += proto::kHeaderSize + length;
    out.ends.push_back(pos);
  }
  return out;
}

// How a handler's decode of one frame ends, as FramedConnection maps it to an Error code.
// Any other exception escapes LLVMFuzzerTestOneInput: libFuzzer reports it as a crash.
std::optional<proto::ErrorCode> refusal(const Frame& f) {
  try {
    decode_message(f.type, f.payload.data(), f.payload.size());
  } catch (const ProtocolError&) {
    return proto::ErrorCode::kProtocol;
  } catch (const InvalidArgument&) {
    return proto::ErrorCode::kBadRequest;
  }
  return std::nullopt;
}

void check_header(const uint8_t* data, size_t size) {
  if (size < proto::kHeaderSize) return;
  bool magic = std::memcmp(data, "PCOM", 4) == 0;
  try {
    proto::Header h = proto::decode_header(data);
    FUZZ_CHECK(magic, "decode_header accepted a bad magic");
    FUZZ_CHECK(h.version == le(data + 4, 2) && h.type == le(data + 6, 2) && h.length == le(data + 8, 4),
               "decode_header misread a field");
    uint8_t again[proto::kHeaderSize];
    proto::encode_header(h, again);
    FUZZ_CHECK(std::memcmp(again, data, proto::kHeaderSize) == 0, "encode_header(decode_header(x)) != x");
  } catch (const ProtocolError&) {
    FUZZ_CHECK(!magic, "decode_header refused a good magic");
  }
}

// The event loop's reader. The loop is never started: pump() runs the connection's
// callbacks on this thread, and the handler's errors take the path they take in a run.
void check_framed_connection(const uint8_t* data, size_t size, uint8_t chunk_seed, uint32_t limit, bool detach) {
  Parsed want = parse_stream(data, size, limit);
  net::EventLoop loop;
  auto link = std::make_shared<MemLink>(data, size, chunk_seed);
  auto conn = net::FramedConnection::create(loop, link, limit);
  std::weak_ptr<net::FramedConnection> weak = conn;
  std::vector<Frame> got;
  bool detached = false;
  conn->start(
      [&](uint16_t type, const uint8_t* p, size_t n) {
        got.push_back(Frame{type, std::vector<uint8_t>(p, p + n)});
        // As a real handler: a typed error becomes the Error frame checked below. (An
        // untyped one would only close the connection; refusal() lets it escape.)
        decode_message(type, p, n);
        if (detach && got.size() == 1) {
          weak.lock()->detach();
          detached = true;
        }
      },
      [](const std::string&) {});
  while (!conn->closed() && !link->drained()) conn->pump();
  link->end_stream();
  conn->pump();  // the remote closed: a frame cut short ends the connection too
  FUZZ_CHECK(conn->closed(), "a connection outlived the end of its stream");

  // What the connection should have delivered, and why it should have stopped.
  std::vector<Frame> delivered;
  std::optional<proto::ErrorCode> owed;
  size_t detached_at = 0;
  for (size_t i = 0; i < want.frames.size(); ++i) {
    delivered.push_back(want.frames[i]);
    owed = refusal(want.frames[i]);
    if (owed) break;
    if (detach && i == 0) {
      detached_at = want.ends[0];
      break;
    }
  }
  if (!owed && !detached_at && want.end == StreamEnd::kBadVersion) owed = proto::ErrorCode::kVersionMismatch;
  FUZZ_CHECK(got == delivered, "FramedConnection delivered other frames than the stream holds");
  FUZZ_CHECK(detached == (detached_at != 0), "detach happened when it should not, or not at all");

  Parsed sent = parse_stream(link->sent().data(), link->sent().size(), proto::kMaxControlPayload);
  FUZZ_CHECK(sent.end == StreamEnd::kTruncated && (sent.ends.empty() ? 0 : sent.ends.back()) == link->sent().size(),
             "the connection sent bytes that are not whole frames");
  if (!owed) {
    FUZZ_CHECK(sent.frames.empty(), "an Error frame was sent without a reason");
  } else {
    FUZZ_CHECK(sent.frames.size() == 1 && sent.frames[0].type == static_cast<uint16_t>(proto::MsgType::kError),
               "a refused stream did not get exactly one Error frame");
    auto err = proto::ErrorMsg::decode(sent.frames[0].payload.data(), sent.frames[0].payload.size());
    FUZZ_CHECK(err.code == *owed, "the Error frame carries the wrong code");
  }

  if (detached_at) {
    // The bytes read past the first frame must be back in the link, once and in order.
    FUZZ_CHECK(!link->was_shut(), "detach shut the link it hands over");
    std::vector<uint8_t> rest;
    uint8_t buf[4096];
    for (;;) {
      size_t n = 0;
      try {
        n = link->recv_some(buf, sizeof buf);
      } catch (const IoError&) {
        break;  // end_stream() above: everything was read
      }
      rest.insert(rest.end(), buf, buf + n);
    }
    FUZZ_CHECK(rest == std::vector<uint8_t>(data + detached_at, data + size),
               "detach lost or repeated bytes after the handshake frame");
  }
}

// The blocking reader: frames until the stream ends or breaks the rules.
void check_read_frame(const uint8_t* data, size_t size, uint8_t chunk_seed, uint32_t limit) {
  Parsed want = parse_stream(data, size, limit);
  MemLink link(data, size, chunk_seed);
  link.end_stream();
  auto deadline = Clock::now() + std::chrono::hours(1);  // never reached: the link never waits
  std::vector<Frame> got;
  bool refused = false;
  for (;;) {
    uint16_t type = 0;
    try {
      auto payload = net::read_frame(link, &type, limit, deadline);
      got.push_back(Frame{type, std::move(payload)});
    } catch (const ProtocolError&) {
      refused = true;
      break;
    } catch (const IoError&) {
      break;
    }
  }
  FUZZ_CHECK(got == want.frames, "read_frame returned other frames than the stream holds");
  FUZZ_CHECK(refused == (want.end != StreamEnd::kTruncated), "read_frame ended the stream for the wrong reason");
  for (size_t i = 0; i < want.frames.size(); ++i) {
    auto frame = proto::make_frame(want.frames[i].type, want.frames[i].payload);
    size_t start = i == 0 ? 0 : want.ends[i - 1];
    FUZZ_CHECK(frame.size() == want.ends[i] - start && std::memcmp(frame.data(), data + start, frame.size()) == 0,
               "make_frame does not rebuild a frame it was read from");
  }
}

// kStampVersion: every header the stream's own lengths lead to gets this build's version.
void stamp_version(std::vector<uint8_t>& stream) {
  size_t pos = 0;
  while (stream.size() - pos >= proto::kHeaderSize && std::memcmp(&stream[pos], "PCOM", 4) == 0) {
    stream[pos + 4] = static_cast<uint8_t>(proto::kProtocolVersion);
    stream[pos + 5] = static_cast<uint8_t>(proto::kProtocolVersion >> 8);
    uint32_t length = le(&stream[pos + 8], 4);
    if (stream.size() - pos - proto::kHeaderSize < length) return;
    pos += proto::kHeaderSize + length;
  }
}

}  // namespace
}  // namespace pcomm::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pcomm::fuzz;
  if (size < kFrameInputPrefix) return 0;
  uint8_t chunk_seed = data[0];
  uint8_t options = data[1];
  uint32_t limit = kLimits[options & kLimitMask];
  std::vector<uint8_t> bytes(data + kFrameInputPrefix, data + size);  // exactly the size: ASan sees overreads
  if (options & kStampVersion) stamp_version(bytes);
  const uint8_t* stream = bytes.data();
  size_t n = bytes.size();
  check_header(stream, n);
  check_framed_connection(stream, n, chunk_seed, limit, (options & kDetachAfterFirst) != 0);
  check_read_frame(stream, n, chunk_seed, limit);
  return 0;
}
