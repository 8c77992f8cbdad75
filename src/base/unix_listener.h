#pragma once
// A listening Unix stream socket at a path that only its user may connect to, replacing a
// stale socket an earlier run left (nobody listens) and refusing anything else there. For the
// console port and the VNC display. Stateless; thread-safe.

#include <filesystem>
#include <string_view>

#include "base/error.h"
#include "base/unique_fd.h"

namespace lamina {

// Non-blocking, close-on-exec, mode 0600. `option` names the setting in errors
// ("--console-port").
Result<UniqueFd> listen_unix_socket(const std::filesystem::path& path, std::string_view option);

}  // namespace lamina
