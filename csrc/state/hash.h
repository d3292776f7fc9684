// Content hashing for shared state: a 64-bit hash of a byte range, the same on every
// platform and byte order (input words are read as little-endian), fast enough to hash
// model state every sync (several GB/s per core: four independent multiply-rotate lanes
// over 32-byte stripes, then a final avalanche). Not cryptographic: it detects drift and
// corruption, not an adversary.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pcomm::state {

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed = 0);

// Combines hashes in order (for a whole state: revision, then each tensor's hash).
uint64_t hash_combine(uint64_t a, uint64_t b);

}  // namespace pcomm::state
