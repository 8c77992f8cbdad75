#pragma once
// Shared pieces of the `lamina disk` subcommands: failing with a one-line reason, parsing
// sizes, and a progress bar on stderr.

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "storage/image_operations.h"
#include "storage/image_reference_policy.h"

namespace lamina::cli {

// Registration of the disk subcommands (disk_inspect.cc, disk_transform.cc).
void add_disk_info_and_check(CLI::App& disk);
void add_disk_transforms(CLI::App& disk);

// Exit status of a disk command that failed (bad image, I/O error, refused overwrite).
inline constexpr int kDiskFailureExitCode = 1;
// Exit status of `disk check` when problems remain.
inline constexpr int kDiskCheckProblemsExitCode = 2;

// Prints "lamina disk <command>: <message>" and throws CLI::RuntimeError(exit_code).
[[noreturn]] void fail_disk_command(std::string_view command, const Error& error,
                                    int exit_code = kDiskFailureExitCode);

// The options that say how an image and the files it references are opened: the reference
// policy (--allow-parent-dir, --allow-reference-dir DIR) and, for commands that only read,
// --force-share (no shared lock, like qemu-img -U).
struct AccessArguments {
  bool force_share = false;
  bool allow_parent_dir = false;
  std::vector<std::string> allowed_dirs;
  storage::ImageAccess access() const;
};
void add_access_options(CLI::App& command, AccessArguments& arguments, bool offer_force_share);

// parse_size, failing the command with the option's name on bad input.
uint64_t parse_size_option(std::string_view command, std::string_view option,
                           std::string_view text);

// Draws "label [#####     ] 42%" on stderr when it is a terminal, at most ten times a second;
// silent otherwise. Clears its line when destroyed. While it lives, SIGINT, SIGTERM and SIGHUP
// are blocked and read from a signalfd (no global handler state): the progress callback then
// cancels the operation, which removes its staged output. Owned by the command that runs.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Returns false once a termination signal has arrived.
  bool update(uint64_t done, uint64_t total);
  storage::Progress callback() {
    return [this](uint64_t done, uint64_t total) { return update(done, total); };
  }

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  bool interrupted_ = false;
  int signal_fd_ = -1;
  sigset_t previous_mask_{};
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace lamina::cli
