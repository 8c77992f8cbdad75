#pragma once
// Where the virtual switch named NAME lives on this host: its control socket, its lock file
// and its daemon's log, all in one private folder of the user:
//   $XDG_RUNTIME_DIR/lamina/switch/        when XDG_RUNTIME_DIR is set (systemd's per-user /run),
//   /tmp/lamina-<uid>/switch/              otherwise.
// The folders are made with mode 0700 and must be folders (not links) owned by the user with
// mode exactly 0700: one in /tmp another user prepared (squatted), or one others could write,
// is refused with the fix, never repaired, so only the user (and root) can reach a switch: the
// folder's mode is the switch's access control. Free functions, no state.

#include <filesystem>
#include <string>
#include <string_view>

#include "base/error.h"

namespace lamina::net {

inline constexpr size_t kMaxSwitchNameLength = 64;

// Makes `path` (one level, mode 0700) when `create` is set and it is missing, then checks it is
// a folder of the user's with mode 0700. kNotFound when missing and not created;
// kInvalidArgument, with how to fix it, when it is anything else.
[[nodiscard]] Result<void> ensure_private_directory(const std::filesystem::path& path, bool create);

// A switch name is 1-64 of [A-Za-z0-9_.-], not "." or ".." (it becomes a file name).
[[nodiscard]] Result<void> validate_switch_name(std::string_view name);

// The folder holding every switch of this user; made (0700) when `create` is set. kNotFound
// when it does not exist and create is false; kIo/kInvalidArgument when it is unsafe.
[[nodiscard]] Result<std::filesystem::path> switch_directory(bool create);

struct SwitchPaths {
  std::string name;
  std::filesystem::path socket;  // NAME.sock: SOCK_SEQPACKET control and port socket
  std::filesystem::path lock;    // NAME.lock: flock(2)ed by the one daemon serving NAME
  std::filesystem::path log;     // NAME.log: stderr of a daemon started in the background
};

// Validates `name` and computes its paths (making the folder when `create` is set). Fails when
// the socket path would not fit a sockaddr_un.
[[nodiscard]] Result<SwitchPaths> switch_paths(std::string_view name, bool create);

}  // namespace lamina::net
