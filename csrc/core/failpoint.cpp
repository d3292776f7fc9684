// Failpoints; see failpoint.h.
#include "core/failpoint.h"

#include <atomic>
#include <cstdlib>
#include <string>

namespace pcomm::core {

namespace {

struct Armed {
  std::string name;  // empty: none armed
  long long at = 0;
  std::atomic<long long> hits{0};
};

Armed& armed() {
  static Armed* a = [] {
    auto* out = new Armed;  // never freed: hits may come from any thread until exit
    const char* env = std::getenv("PCOMM_FAILPOINT");
    std::string spec = env ? env : "";
    auto colon = spec.rfind(':');
    if (colon != std::string::npos && colon > 0) {
      out->at = std::atoll(spec.c_str() + colon + 1);
      if (out->at > 0) out->name = spec.substr(0, colon);
    }
    return out;
  }();
  return *a;
}

}  // namespace

bool failpoint(const char* name) {
  Armed& a = armed();
  if (a.name.empty() || a.name != name) return false;
  return a.hits.fetch_add(1) + 1 == a.at;
}

}  // namespace pcomm::core
