// Messages whose fields are listed once: a struct declares
//     template <typename V> void fields(V& v) { v(a); v(b); ... }
// and encode_fields/decode_fields walk that list with a Writer or a Reader, so encoder
// and decoder can never drift apart. Field types: u8, u16, u32, u64, bool, string, and
// lists of strings or of u64.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/wire.h"

namespace pcomm::proto {

struct FieldWriter {
  Writer w;
  void operator()(const uint8_t& v) { w.u8(v); }
  void operator()(const uint16_t& v) { w.u16(v); }
  void operator()(const uint32_t& v) { w.u32(v); }
  void operator()(const uint64_t& v) { w.u64(v); }
  void operator()(const bool& v) { w.u8(v ? 1 : 0); }
  void operator()(const std::string& v) { w.str(v); }
  void operator()(const std::vector<std::string>& v) {
    w.u32(static_cast<uint32_t>(v.size()));
    for (const auto& s : v) w.str(s);
  }
  void operator()(const std::vector<uint64_t>& v) {
    w.u32(static_cast<uint32_t>(v.size()));
    for (uint64_t x : v) w.u64(x);
  }
};

struct FieldReader {
  Reader r;
  void operator()(uint8_t& v) { v = r.u8(); }
  void operator()(uint16_t& v) { v = r.u16(); }
  void operator()(uint32_t& v) { v = r.u32(); }
  void operator()(uint64_t& v) { v = r.u64(); }
  void operator()(bool& v) {
    uint8_t b = r.u8();
    if (b > 1) throw ProtocolError("a boolean field must be 0 or 1");
    v = b == 1;
  }
  void operator()(std::string& v) { v = r.str(); }
  void operator()(std::vector<std::string>& v) {
    uint32_t n = r.count(4);
    v.clear();
    for (uint32_t i = 0; i < n; ++i) v.push_back(r.str());
  }
  void operator()(std::vector<uint64_t>& v) {
    uint32_t n = r.count(8);
    v.clear();
    for (uint32_t i = 0; i < n; ++i) v.push_back(r.u64());
  }
};

template <typename M>
std::vector<uint8_t> encode_fields(const M& m) {
  FieldWriter fw;
  const_cast<M&>(m).fields(fw);  // fields() only reads through a FieldWriter
  return fw.w.take();
}

template <typename M>
M decode_fields(const uint8_t* data, size_t size) {
  M m;
  FieldReader fr{Reader(data, size)};
  m.fields(fr);
  fr.r.finish();
  m.validate();
  return m;
}

// A full frame for a fields() message with a kType.
template <typename M>
std::vector<uint8_t> frame_of_fields(const M& m) {
  return make_frame(static_cast<uint16_t>(M::kType), encode_fields(m));
}

}  // namespace pcomm::proto
