#pragma once
// Starting a switch daemon in the background for a client that found none: runs
// `PROGRAM switch serve NAME --ready-fd 3 ARGUMENTS...` detached (double fork, own session,
// stdin/stdout on /dev/null, stderr appended to NAME.log, no inherited descriptors but the
// ready pipe) and waits for its one-line report on the pipe:
//   "ready"          it listens on NAME.sock;
//   "busy"           another daemon holds NAME.lock (it serves, or is just exiting);
//   "error: <why>"   it could not start.
// fork+exec rather than a forked in-process daemon: the caller (a VM) has threads, and after
// fork only async-signal-safe calls are allowed until exec. Free functions, no state.

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "net/switch_paths.h"

namespace lamina::net {

struct DaemonProgram {
  // A `lamina` binary; /proc/self/exe is right when the caller is lamina itself.
  std::filesystem::path program = "/proc/self/exe";
  // Extra options for `lamina switch serve`, e.g. {"--idle-exit", "10"}.
  std::vector<std::string> arguments;
};

enum class LaunchOutcome { kReady, kBusy };

// Starts a daemon for `paths` and waits up to `timeout` for its report. kIo with the daemon's
// reason (or "see NAME.log") when it failed or said nothing in time.
[[nodiscard]] Result<LaunchOutcome> launch_switch_daemon(const SwitchPaths& paths,
                                                         const DaemonProgram& daemon,
                                                         std::chrono::milliseconds timeout);

// The daemon's side: writes one report line to `ready_fd` and closes it. -1 does nothing.
void report_to_launcher(int ready_fd, std::string_view line);

}  // namespace lamina::net
