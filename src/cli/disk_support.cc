#include "cli/disk_support.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/format.h>

#include "base/size.h"

namespace lamina::cli {

void fail_disk_command(std::string_view command, const Error& error, int exit_code) {
  fmt::print(stderr, "lamina disk {}: {}\n", command, error.message());
  throw CLI::RuntimeError(exit_code);
}

uint64_t parse_size_option(std::string_view command, std::string_view option,
                           std::string_view text) {
  auto size = parse_size(text);
  if (!size) fail_disk_command(command, size.error().with_context(option));
  return *size;
}

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) == 1) {}

ProgressBar::~ProgressBar() {
  if (drawn_) fmt::print(stderr, "\r\033[K");
}

void ProgressBar::update(uint64_t done, uint64_t total) {
  if (!enabled_ || total == 0) return;
  auto now = std::chrono::steady_clock::now();
  if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  constexpr int kWidth = 30;
  int filled = static_cast<int>(done * kWidth / total);
  fmt::print(stderr, "\r{} [{}{}] {:3}%", label_, std::string(static_cast<size_t>(filled), '#'),
             std::string(static_cast<size_t>(kWidth - filled), ' '), done * 100 / total);
  std::fflush(stderr);
}

}  // namespace lamina::cli
