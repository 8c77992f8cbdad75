#include "cli/disk_support.h"

#include <pthread.h>
#include <sys/signalfd.h>
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

storage::ImageAccess AccessArguments::access() const {
  storage::ImageAccess access;
  access.force_share = force_share;
  access.references.allow_parent_folder = allow_parent_dir;
  access.references.allowed_folders.assign(allowed_dirs.begin(), allowed_dirs.end());
  return access;
}

void add_access_options(CLI::App& command, AccessArguments& arguments, bool offer_force_share) {
  command.add_flag("--allow-parent-dir", arguments.allow_parent_dir,
                   "Let parents, backing files and extents lie in the folder above the image's "
                   "(by default they must be in the image's own folder)");
  command.add_option("--allow-reference-dir", arguments.allowed_dirs,
                     "Let parents, backing files and extents lie in DIR or below (repeatable)")
      ->type_name("DIR");
  if (offer_force_share) {
    command.add_flag("--force-share", arguments.force_share,
                     "Read an image that another process holds, without a lock (it may be "
                     "changing while it is read)");
  }
}

uint64_t parse_size_option(std::string_view command, std::string_view option,
                           std::string_view text) {
  auto size = parse_size(text);
  if (!size) fail_disk_command(command, size.error().with_context(option));
  return *size;
}

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) == 1) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  if (::pthread_sigmask(SIG_BLOCK, &mask, &previous_mask_) == 0) {
    signal_fd_ = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  }
}

ProgressBar::~ProgressBar() {
  if (drawn_) fmt::print(stderr, "\r\033[K");
  if (signal_fd_ >= 0) ::close(signal_fd_);
  // A signal that arrived after the last check is delivered here, with its default action.
  ::pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr);
}

bool ProgressBar::update(uint64_t done, uint64_t total) {
  signalfd_siginfo info{};
  if (signal_fd_ >= 0 && ::read(signal_fd_, &info, sizeof info) == sizeof info) interrupted_ = true;
  if (interrupted_) return false;
  if (!enabled_ || total == 0) return true;
  auto now = std::chrono::steady_clock::now();
  if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return true;
  last_ = now;
  drawn_ = true;
  constexpr int kWidth = 30;
  int filled = static_cast<int>(done * kWidth / total);
  fmt::print(stderr, "\r{} [{}{}] {:3}%", label_, std::string(static_cast<size_t>(filled), '#'),
             std::string(static_cast<size_t>(kWidth - filled), ' '), done * 100 / total);
  std::fflush(stderr);
  return true;
}

}  // namespace lamina::cli
