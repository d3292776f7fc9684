// Implementation of the stderr logger; see log.h.
#include "core/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string_view>

namespace pcomm {
namespace {

LogLevel parse_level(const char* text) {
  if (text == nullptr) return LogLevel::kWarning;
  std::string_view v(text);
  if (v == "debug" || v == "DEBUG") return LogLevel::kDebug;
  if (v == "info" || v == "INFO") return LogLevel::kInfo;
  if (v == "warning" || v == "WARNING" || v == "warn") return LogLevel::kWarning;
  if (v == "error" || v == "ERROR") return LogLevel::kError;
  if (v == "off" || v == "OFF" || v == "none") return LogLevel::kOff;
  return LogLevel::kWarning;
}

std::atomic<int>& level_storage() {
  static std::atomic<int> level{static_cast<int>(parse_level(std::getenv("PCOMM_LOG_LEVEL")))};
  return level;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARNING";
    case LogLevel::kError: return "ERROR";
    default: return "";
  }
}

}  // namespace

LogLevel log_level() { return static_cast<LogLevel>(level_storage().load(std::memory_order_relaxed)); }

void reload_log_level() { set_log_level(parse_level(std::getenv("PCOMM_LOG_LEVEL"))); }

void set_log_level(LogLevel level) { level_storage().store(static_cast<int>(level)); }

void log_line(LogLevel level, const std::string& context, const std::string& message) {
  // One write per line, under a mutex, so lines from different threads never interleave.
  static std::mutex mutex;
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms));
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "[pcomm %s %s %s] %s\n", stamp, level_name(level), context.c_str(),
               message.c_str());
  std::fflush(stderr);
}

}  // namespace pcomm
