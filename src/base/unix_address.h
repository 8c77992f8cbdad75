#pragma once
// The sockaddr_un for a Unix socket path, with the length check every bind and connect needs.
// Stateless; thread-safe.

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "base/error.h"

namespace lamina {

// kInvalidArgument when the path is empty or does not fit sun_path with its NUL.
inline Result<sockaddr_un> unix_socket_address(const std::filesystem::path& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string& text = path.native();
  if (text.empty() || text.size() >= sizeof(address.sun_path)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("socket path '{}' is empty or longer than {} bytes", text,
                            sizeof(address.sun_path) - 1));
  }
  std::memcpy(address.sun_path, text.c_str(), text.size() + 1);
  return address;
}

}  // namespace lamina
