// Key derivation; see run_keys.h.
#include "net/run_keys.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

#include "core/errors.h"
#include "net/address.h"

namespace pcomm::net {

namespace {
constexpr std::string_view kSalt = "pcomm run secret v1";
constexpr std::string_view kPairPrefix = "pcomm pair v1 ";
}  // namespace

Key hmac_sha256(const uint8_t* key, size_t key_size, const void* data, size_t size) {
  Key out{};
  unsigned len = 0;
  if (!HMAC(EVP_sha256(), key, static_cast<int>(key_size), static_cast<const uint8_t*>(data), size, out.data(),
            &len) ||
      len != out.size()) {
    throw Error("HMAC-SHA256 failed in OpenSSL");
  }
  return out;
}

Key derive_key(const std::string& secret, std::string_view purpose) {
  Key prk = hmac_sha256(reinterpret_cast<const uint8_t*>(kSalt.data()), kSalt.size(), secret.data(), secret.size());
  std::string info(purpose);
  info.push_back('\x01');
  return hmac_sha256(prk.data(), prk.size(), info.data(), info.size());
}

Key random_key() {
  Key k{};
  if (RAND_bytes(k.data(), static_cast<int>(k.size())) != 1) throw Error("OpenSSL's random generator failed");
  return k;
}

Key pair_key(const Key& master, uint64_t epoch, const std::string& a, const std::string& b) {
  const std::string& lo = a < b ? a : b;
  const std::string& hi = a < b ? b : a;
  // Length-prefixed so that no two (epoch, lo, hi) give the same message.
  std::string msg = "pair " + std::to_string(epoch) + " " + std::to_string(lo.size()) + ":" + lo + " " + hi;
  return hmac_sha256(master.data(), master.size(), msg.data(), msg.size());
}

std::string coordinator_identity() { return "pcomm coordinator v1"; }
std::string relay_identity() { return "pcomm relay v1"; }

std::string pair_identity(uint64_t epoch, const std::string& from_peer) {
  return std::string(kPairPrefix) + std::to_string(epoch) + " " + from_peer;
}

bool parse_pair_identity(const std::string& identity, uint64_t* epoch, std::string* from_peer) {
  if (identity.compare(0, kPairPrefix.size(), kPairPrefix) != 0) return false;
  size_t start = kPairPrefix.size(), space = identity.find(' ', start);
  if (space == std::string::npos || space == start || space - start > 19) return false;
  uint64_t e = 0;
  for (size_t i = start; i < space; ++i) {
    if (identity[i] < '0' || identity[i] > '9') return false;
    e = e * 10 + static_cast<uint64_t>(identity[i] - '0');
  }
  *epoch = e;
  *from_peer = identity.substr(space + 1);
  return !from_peer->empty();
}

static bool is_loopback_host(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0; }

void check_secure_listen(const std::string& what, const std::string& listen, const std::string& secret, bool insecure) {
  if (!secret.empty() && secret.size() < kMinSecretBytes) {
    throw InvalidArgument("the run secret must be at least " + std::to_string(kMinSecretBytes) + " bytes");
  }
  auto hp = parse_host_port(listen, true);
  if (secret.empty() && !insecure && !is_loopback_host(hp.host)) {
    throw InvalidArgument("a " + what + " listening on " + listen +
                          " (not loopback) needs the run secret, or anyone who reaches it joins the run: give "
                          "secret= / --secret-file FILE / PCOMM_SECRET_FILE (make one with: openssl rand -hex 32 > "
                          "run.secret), or insecure=True / --insecure to run without");
  }
}

}  // namespace pcomm::net
