#include "net/switch_paths.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace lamina::net {

Result<void> validate_switch_name(std::string_view name) {
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  };
  bool ok = !name.empty() && name.size() <= kMaxSwitchNameLength && name != "." && name != "..";
  for (char c : name) ok = ok && allowed(c);
  if (!ok) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is not a switch name: use 1-{} letters, digits, '_', '.' or "
                            "'-'",
                            name, kMaxSwitchNameLength));
  }
  return {};
}

Result<void> ensure_private_directory(const std::filesystem::path& path, bool create) {
  // Fix for every refusal: the folder is the user's to remove, or XDG_RUNTIME_DIR avoids /tmp.
  const std::string fix = fmt::format(
      "remove it (rm -r {}) if it is yours, or set XDG_RUNTIME_DIR to a private "
      "folder",
      path.string());
  if (create) {
    if (::mkdir(path.c_str(), 0700) == 0) {
      // Ours, just made: the umask may have taken bits we need.
      if (::chmod(path.c_str(), 0700) != 0) {
        return fail(ErrorCode::kIo, fmt::format("cannot set the mode of {}: {}", path.string(),
                                                std::strerror(errno)));
      }
    } else if (errno != EEXIST) {
      return fail(ErrorCode::kIo,
                  fmt::format("cannot make {}: {}", path.string(), std::strerror(errno)));
    }
  }
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) {
    if (errno == ENOENT) {
      return fail(ErrorCode::kNotFound, fmt::format("{} does not exist", path.string()));
    }
    return fail(ErrorCode::kIo, fmt::format("{}: {}", path.string(), std::strerror(errno)));
  }
  // Whoever made the folder controls what is in it: another user's folder, a link or a folder
  // others could write (someone may already have placed a socket there) is never used.
  if (!S_ISDIR(status.st_mode)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} is not a folder (a symbolic link or file is refused); {}",
                            path.string(), fix));
  }
  if (status.st_uid != ::getuid()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} belongs to uid {}, not to you (uid {}): someone else may have "
                            "made it to intercept your switches; {}",
                            path.string(), status.st_uid, ::getuid(), fix));
  }
  if ((status.st_mode & 07777) != 0700) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} has mode {:04o}, not 0700 (others could have placed files in "
                            "it); {}",
                            path.string(), status.st_mode & 07777, fix));
  }
  return {};
}

Result<std::filesystem::path> switch_directory(bool create) {
  std::filesystem::path base;
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && runtime[0] == '/') {
    // XDG base directory spec: the runtime folder is the user's own (0700); ours sits inside.
    base = std::filesystem::path(runtime) / "lamina";
  } else {
    base = fmt::format("/tmp/lamina-{}", ::getuid());
  }
  if (auto ok = ensure_private_directory(base, create); !ok) return fail(ok.error());
  std::filesystem::path directory = base / "switch";
  if (auto ok = ensure_private_directory(directory, create); !ok) return fail(ok.error());
  return directory;
}

Result<SwitchPaths> switch_paths(std::string_view name, bool create) {
  if (auto valid = validate_switch_name(name); !valid) return fail(valid.error());
  auto directory = switch_directory(create);
  if (!directory) return fail(directory.error());
  SwitchPaths paths;
  paths.name = std::string(name);
  paths.socket = *directory / (paths.name + ".sock");
  paths.lock = *directory / (paths.name + ".lock");
  paths.log = *directory / (paths.name + ".log");
  if (paths.socket.native().size() >= sizeof(sockaddr_un{}.sun_path)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the socket path {} is longer than a Unix socket allows ({} bytes); "
                            "use a shorter switch name or XDG_RUNTIME_DIR",
                            paths.socket.string(), sizeof(sockaddr_un{}.sun_path) - 1));
  }
  return paths;
}

}  // namespace lamina::net
