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

namespace {

// Makes `path` (one level) with mode 0700 if missing, then checks it is a real folder of ours
// that nobody else can enter.
Result<void> ensure_private_directory(const std::filesystem::path& path, bool create) {
  if (create && ::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(ErrorCode::kIo,
                fmt::format("cannot make {}: {}", path.string(), std::strerror(errno)));
  }
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) {
    if (errno == ENOENT) {
      return fail(ErrorCode::kNotFound, fmt::format("{} does not exist", path.string()));
    }
    return fail(ErrorCode::kIo, fmt::format("{}: {}", path.string(), std::strerror(errno)));
  }
  if (!S_ISDIR(status.st_mode)) {
    return fail(
        ErrorCode::kInvalidArgument,
        fmt::format("{} is not a folder (a symbolic link or file is refused)", path.string()));
  }
  if (status.st_uid != ::getuid()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} belongs to uid {}, not to you (uid {}); remove it", path.string(),
                            status.st_uid, ::getuid()));
  }
  if ((status.st_mode & 077) != 0) {
    // Our own folder with loose permissions: tighten it rather than fail.
    if (::chmod(path.c_str(), 0700) != 0) {
      return fail(ErrorCode::kIo, fmt::format("{} is open to other users and chmod failed: {}",
                                              path.string(), std::strerror(errno)));
    }
  }
  return {};
}

}  // namespace

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
