#include "base/unix_listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "base/unix_address.h"

namespace lamina {
namespace {

std::string errno_text() { return std::strerror(errno); }

// Removes a socket file at `path` that nobody listens on any more (a run that was killed);
// refuses anything else there: a non-socket, another user's socket, a live socket.
Result<void> remove_stale_socket(std::string_view option, const std::string& path,
                                 const sockaddr_un& address) {
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) != 0) {
    if (errno == ENOENT) return {};
    return fail(ErrorCode::kIo, fmt::format("{}: '{}': {}", option, path, errno_text()));
  }
  if (!S_ISSOCK(existing.st_mode)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: '{}' exists and is not a socket", option, path));
  }
  if (existing.st_uid != ::getuid()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: the socket '{}' belongs to uid {}, not to you", option, path,
                            existing.st_uid));
  }
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return fail(ErrorCode::kIo, fmt::format("{}: socket(): {}", option, errno_text()));
  const bool live =
      ::connect(probe, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  const int connect_error = errno;
  ::close(probe);
  if (live) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: '{}' is in use (another VM listens there); "
                            "choose another path",
                            option, path));
  }
  if (connect_error != ECONNREFUSED) {
    return fail(ErrorCode::kIo, fmt::format("{}: cannot tell whether '{}' is in "
                                            "use: {}",
                                            option, path, std::strerror(connect_error)));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return fail(ErrorCode::kIo,
                fmt::format("{}: cannot remove the stale '{}': {}", option, path, errno_text()));
  }
  return {};
}

}  // namespace

Result<UniqueFd> listen_unix_socket(const std::filesystem::path& path, std::string_view option) {
  auto made = unix_socket_address(path);
  if (!made) return fail(made.error().with_context(option));
  const sockaddr_un& address = *made;
  const std::string text = path.string();
  if (auto replaced = remove_stale_socket(option, text, address); !replaced) {
    return fail(replaced.error());
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail(ErrorCode::kIo, fmt::format("{}: socket(): {}", option, errno_text()));
  // Only the user may connect. bind() creates the file with the socket's own mode less the
  // umask, so this holds from the first moment.
  if (::fchmod(fd.get(), 0600) != 0 ||
      ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
      ::chmod(text.c_str(), 0600) != 0 || ::listen(fd.get(), 1) != 0) {
    return fail(ErrorCode::kIo,
                fmt::format("{}: cannot listen on '{}': {}", option, text, errno_text()));
  }
  return fd;
}

}  // namespace lamina
