// pcomm's 64-bit content hash; see hash.h. The constants are odd 64-bit numbers with
// well-mixed bits (from the golden ratio and similar irrational expansions).
#include "state/hash.h"

#include <cstring>
#include <initializer_list>

namespace pcomm::state {

namespace {

constexpr uint64_t kM1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kM2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kM3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kM4 = 0x85EBCA77C2B2AE63ULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t load64(const uint8_t* p) {
  // Little-endian regardless of the host: assemble explicitly (compilers turn this into
  // one load on little-endian machines).
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

inline uint64_t mix_lane(uint64_t acc, uint64_t word) {
  acc += word * kM2;
  acc = rotl(acc, 31);
  return acc * kM1;
}

inline uint64_t avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kM2;
  h ^= h >> 29;
  h *= kM3;
  h ^= h >> 32;
  return h;
}

}  // namespace

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  const uint8_t* end = p + size;
  uint64_t h;
  if (size >= 32) {
    uint64_t a = seed + kM1 + kM2, b = seed + kM2, c = seed, d = seed - kM1;
    const uint8_t* stop = end - 32;
    do {
      a = mix_lane(a, load64(p));
      b = mix_lane(b, load64(p + 8));
      c = mix_lane(c, load64(p + 16));
      d = mix_lane(d, load64(p + 24));
      p += 32;
    } while (p <= stop);
    h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);
    for (uint64_t lane : {a, b, c, d}) h = (h ^ mix_lane(0, lane)) * kM1 + kM4;
  } else {
    h = seed + kM3;
  }
  h += static_cast<uint64_t>(size);
  while (end - p >= 8) {
    h ^= mix_lane(0, load64(p));
    h = rotl(h, 27) * kM1 + kM4;
    p += 8;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * kM3;
    h = rotl(h, 11) * kM1;
    ++p;
  }
  return avalanche(h);
}

uint64_t hash_combine(uint64_t a, uint64_t b) { return avalanche(a ^ (b + kM3 + (a << 6) + (a >> 2))); }

}  // namespace pcomm::state
