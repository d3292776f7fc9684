// Keys of a run. Every member of a run knows its secret; each purpose gets its own key,
// derived with HKDF-SHA256 (RFC 5869, one output block) so that a key for one purpose
// can never serve another. python/pcomm/_secret.py derives the same keys (docs/security.md):
//
//   prk = HMAC-SHA256(key = "pcomm run secret v1", msg = secret)
//   key(purpose) = HMAC-SHA256(key = prk, msg = purpose || 0x01)
//
// The coordinator additionally issues a key per pair of peers and epoch (pair_key) for
// their data links, so that one member cannot pose as another on a data link.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace pcomm::net {

inline constexpr size_t kKeyBytes = 32;
using Key = std::array<uint8_t, kKeyBytes>;

// Purposes of the keys derived from the run secret.
inline constexpr std::string_view kCoordinatorPsk = "coordinator psk";  // peers <-> coordinator
inline constexpr std::string_view kRelayPsk = "relay psk";              // coordinator -> relay

// The shortest secret accepted (the Python layer refuses shorter ones with a hint).
inline constexpr size_t kMinSecretBytes = 16;

// Refuses to serve a non-loopback address without a secret unless insecure: what a
// coordinator and a relay both check ("coordinator", "relay" name it); also refuses a
// secret shorter than kMinSecretBytes.
void check_secure_listen(const std::string& what, const std::string& listen, const std::string& secret, bool insecure);

Key derive_key(const std::string& secret, std::string_view purpose);
Key hmac_sha256(const uint8_t* key, size_t key_size, const void* data, size_t size);
Key random_key();

// The key two peers use for links opened in an epoch; issued by the coordinator from its
// own random master key. Symmetric in the two ids.
Key pair_key(const Key& master, uint64_t epoch, const std::string& a, const std::string& b);

// PSK identities (sent in the clear in the ClientHello): what a key is for.
std::string coordinator_identity();
std::string relay_identity();
std::string pair_identity(uint64_t epoch, const std::string& from_peer);
// Parses a pair identity; false when it is not one.
bool parse_pair_identity(const std::string& identity, uint64_t* epoch, std::string* from_peer);

}  // namespace pcomm::net
