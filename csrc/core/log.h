// Logging to stderr, level from PCOMM_LOG_LEVEL (debug, info, warning, error, off;
// default warning). Each component logs through a Logger whose context callback supplies
// the prefix, so a peer's lines always name its peer id and epoch.
#pragma once

#include <functional>
#include <sstream>
#include <string>

namespace pcomm {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

// The process-wide level, read once from PCOMM_LOG_LEVEL (re-read by reload_log_level).
LogLevel log_level();
void reload_log_level();
void set_log_level(LogLevel level);
void log_line(LogLevel level, const std::string& context, const std::string& message);

class Logger {
 public:
  using Context = std::function<std::string()>;
  explicit Logger(Context context) : context_(std::move(context)) {}

  template <typename... Args>
  void log(LogLevel level, const Args&... args) const {
    if (level < log_level()) return;
    std::ostringstream out;
    (out << ... << args);
    log_line(level, context_(), out.str());
  }
  template <typename... Args> void debug(const Args&... a) const { log(LogLevel::kDebug, a...); }
  template <typename... Args> void info(const Args&... a) const { log(LogLevel::kInfo, a...); }
  template <typename... Args> void warn(const Args&... a) const { log(LogLevel::kWarning, a...); }
  template <typename... Args> void error(const Args&... a) const { log(LogLevel::kError, a...); }

 private:
  Context context_;
};

}  // namespace pcomm
