#pragma once
// Minimal leveled logging to stderr, plus a rate limiter for guest-triggered messages.
// Thread-safe: each message is written with one write(2) call.

#include <chrono>
#include <cstdint>
#include <fmt/format.h>
#include <mutex>
#include <string>
#include <string_view>

namespace lamina {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Writes one formatted line "lamina: <level>: <message>" to stderr.
void log_line(LogLevel level, std::string_view message);

template <typename... Args>
void log_warn(fmt::format_string<Args...> format, Args&&... args) {
  log_line(LogLevel::kWarn, fmt::format(format, std::forward<Args>(args)...));
}

template <typename... Args>
void log_error(fmt::format_string<Args...> format, Args&&... args) {
  log_line(LogLevel::kError, fmt::format(format, std::forward<Args>(args)...));
}

// Lets through at most `burst` events per `period`, and counts what it suppressed, so a guest
// hammering a bad register cannot flood the host's log. Owned by the device that logs.
class RateLimiter {
 public:
  explicit RateLimiter(uint32_t burst = 10,
                       std::chrono::milliseconds period = std::chrono::seconds(5))
      : burst_(burst), period_(period) {}

  // True when the caller may log now; false when the event is only counted.
  bool allow();
  uint64_t suppressed() const;

 private:
  const uint32_t burst_;
  const std::chrono::milliseconds period_;
  mutable std::mutex mutex_;
  std::chrono::steady_clock::time_point window_start_{};
  uint32_t in_window_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace lamina
