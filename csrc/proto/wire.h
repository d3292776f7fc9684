// The pcomm wire format: every byte between pcomm processes travels in frames.
//
//   offset  size  field
//   0       4     magic "PCOM"
//   4       2     protocol version (little-endian)
//   6       2     message type (little-endian)
//   8       4     payload length in bytes (little-endian)
//   12      n     payload
//
// The header layout and the Error message (type 1: u16 code, string text) are frozen
// across protocol versions, so a peer speaking another version still gets a readable
// reply naming both versions. Payloads are built by Writer and parsed by Reader: fixed-
// width little-endian integers, strings as u32 length + bytes. Reader checks every bound
// and every decoder must consume the payload exactly; anything else is a ProtocolError.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/errors.h"

namespace pcomm::proto {

inline constexpr std::array<uint8_t, 4> kMagic = {'P', 'C', 'O', 'M'};
inline constexpr uint16_t kProtocolVersion = 6;  // 2: NAT traversal; 3: TLS, link keys, AuthenticationError; 4: run id, peer reports; 5: terms, Rejoin; 6: the offer sync strategy, Topology.gone
inline constexpr size_t kHeaderSize = 12;
// Control frames (coordinator link, link handshakes) never need more than this.
inline constexpr uint32_t kMaxControlPayload = 1u << 20;
// Longest string field accepted anywhere (ids, run names, addresses, messages).
inline constexpr uint32_t kMaxString = 4096;
// Longest list accepted in a control message (ring members).
inline constexpr uint32_t kMaxListEntries = 1u << 16;

// The first bytes of the markers that re-synchronise a pool's streams at a new epoch
// (peer/link_resync.h). A data receiver that meets them where a frame should start knows
// its neighbour moved on to a new epoch: the op is aborted, not a protocol violation.
inline constexpr char kResyncPrefix[] = "PCOMM/RESYNC/v2";
inline constexpr size_t kResyncPrefixSize = 15;

struct Header {
  uint16_t version = kProtocolVersion;
  uint16_t type = 0;
  uint32_t length = 0;
};

// Checks the magic and returns the header. Version and length policy is the caller's.
Header decode_header(const uint8_t* bytes);
void encode_header(const Header& header, uint8_t* out);

class Writer {
 public:
  void u8(uint8_t v) { bytes_.push_back(v); }
  void u16(uint16_t v) { put(v); }
  void u32(uint32_t v) { put(v); }
  void u64(uint64_t v) { put(v); }
  void str(const std::string& s);
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  template <typename T>
  void put(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> bytes_;
};

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t u8() { return get<uint8_t>(); }
  uint16_t u16() { return get<uint16_t>(); }
  uint32_t u32() { return get<uint32_t>(); }
  uint64_t u64() { return get<uint64_t>(); }
  std::string str();
  // A list length, checked against kMaxListEntries and against the bytes left given
  // the smallest possible entry, so a hostile count cannot make us allocate.
  uint32_t count(size_t min_entry_size);
  // Every decoder ends with this: trailing bytes are a protocol violation.
  void finish() const;

 private:
  void need(size_t n) const;
  template <typename T>
  T get() {
    need(sizeof(T));
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(data_[pos_ + i]) << (8 * i));
    pos_ += sizeof(T);
    return v;
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// One complete frame, header fields plus payload, ready to send.
std::vector<uint8_t> make_frame(uint16_t type, const std::vector<uint8_t>& payload,
                                uint16_t version = kProtocolVersion);

}  // namespace pcomm::proto
