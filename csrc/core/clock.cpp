// Duration formatting; see clock.h.
#include "core/clock.h"

#include <cstdio>

namespace pcomm {

std::string format_seconds(Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", duration_to_seconds(d));
  return buf;
}

}  // namespace pcomm
