// Time for pcomm: one steady clock, durations in std::chrono, and Deadline, which every
// blocking wait in the core takes so that nothing waits forever.
#pragma once

#include <chrono>
#include <string>
#include <cstdint>

namespace pcomm {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = std::chrono::nanoseconds;
using Millis = std::chrono::milliseconds;

inline Duration seconds_to_duration(double s) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}

inline double duration_to_seconds(Duration d) {
  return std::chrono::duration<double>(d).count();
}

// "5 s", "0.25 s", "90 s": for messages (never "5.000000 s").
std::string format_seconds(Duration d);

inline int64_t to_millis(Duration d) {
  return std::chrono::duration_cast<Millis>(d).count();
}

// A point in time after which a wait gives up.
class Deadline {
 public:
  explicit Deadline(Duration timeout) : at_(Clock::now() + timeout) {}
  TimePoint at() const { return at_; }
  bool expired() const { return Clock::now() >= at_; }
  Duration remaining() const {
    auto left = at_ - Clock::now();
    return left.count() > 0 ? std::chrono::duration_cast<Duration>(left) : Duration::zero();
  }

 private:
  TimePoint at_;
};

}  // namespace pcomm
