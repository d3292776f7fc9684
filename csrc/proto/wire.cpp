// Frame header and payload codec; see wire.h.
#include "proto/wire.h"

namespace pcomm::proto {

Header decode_header(const uint8_t* bytes) {
  if (std::memcmp(bytes, kMagic.data(), kMagic.size()) != 0) {
    throw ProtocolError("bad frame magic: not a pcomm connection");
  }
  Reader r(bytes + 4, kHeaderSize - 4);
  Header h;
  h.version = r.u16();
  h.type = r.u16();
  h.length = r.u32();
  return h;
}

void encode_header(const Header& header, uint8_t* out) {
  std::memcpy(out, kMagic.data(), kMagic.size());
  Writer w;
  w.u16(header.version);
  w.u16(header.type);
  w.u32(header.length);
  std::memcpy(out + 4, w.bytes().data(), w.bytes().size());
}

void Writer::str(const std::string& s) {
  PCOMM_CHECK(s.size() <= kMaxString, InvalidArgument, "string field too long to send");
  u32(static_cast<uint32_t>(s.size()));
  bytes_.insert(bytes_.end(), s.begin(), s.end());
}

void Reader::need(size_t n) const {
  if (size_ - pos_ < n) {
    throw ProtocolError("truncated message: needs " + std::to_string(n) + " more bytes, " +
                        std::to_string(size_ - pos_) + " left");
  }
}

std::string Reader::str() {
  uint32_t len = u32();
  if (len > kMaxString) throw ProtocolError("string field of " + std::to_string(len) + " bytes exceeds the limit");
  need(len);
  std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
  pos_ += len;
  return s;
}

uint32_t Reader::count(size_t min_entry_size) {
  uint32_t n = u32();
  if (n > kMaxListEntries) throw ProtocolError("list of " + std::to_string(n) + " entries exceeds the limit");
  need(static_cast<size_t>(n) * min_entry_size);
  return n;
}

void Reader::finish() const {
  if (pos_ != size_) {
    throw ProtocolError(std::to_string(size_ - pos_) + " unexpected trailing bytes in message");
  }
}

std::vector<uint8_t> make_frame(uint16_t type, const std::vector<uint8_t>& payload, uint16_t version) {
  std::vector<uint8_t> frame(kHeaderSize + payload.size());
  encode_header(Header{version, type, static_cast<uint32_t>(payload.size())}, frame.data());
  if (!payload.empty()) std::memcpy(frame.data() + kHeaderSize, payload.data(), payload.size());  // data() may be null
  return frame;
}

}  // namespace pcomm::proto
