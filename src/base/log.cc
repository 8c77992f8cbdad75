#include "base/log.h"

#include <unistd.h>

namespace lamina {

namespace {
std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warning";
    case LogLevel::kError: return "error";
  }
  return "log";
}
}  // namespace

void log_line(LogLevel level, std::string_view message) {
  std::string line = "lamina: ";
  line += level_name(level);
  line += ": ";
  line += message;
  line += '\n';
  // One write keeps lines from different vCPU threads whole; a failed log write has no remedy.
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
}

bool RateLimiter::allow() {
  std::lock_guard lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= period_) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ < burst_) {
    ++in_window_;
    return true;
  }
  ++suppressed_;
  return false;
}

uint64_t RateLimiter::suppressed() const {
  std::lock_guard lock(mutex_);
  return suppressed_;
}

}  // namespace lamina
