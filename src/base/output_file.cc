#include "base/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace lamina {

namespace {

Result<UniqueFd> open_output_path(const std::filesystem::path& path, std::string_view option) {
  // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of hanging the open.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == ELOOP) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: '{}' is a symbolic link; lamina does not follow links for "
                              "output files (give the file's real path)",
                              option, path.string()));
    }
    if (errno == ENXIO) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: '{}' is a FIFO or socket, not a file", option, path.string()));
    }
    return fail(ErrorCode::kIo, fmt::format("{}: cannot open '{}': {}", option, path.string(),
                                            std::strerror(errno)));
  }
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) {
    return fail(ErrorCode::kIo, fmt::format("{}: cannot inspect '{}': {}", option, path.string(),
                                            std::strerror(errno)));
  }
  if (S_ISREG(status.st_mode)) {
    if (::ftruncate(fd.get(), 0) != 0) {
      return fail(ErrorCode::kIo, fmt::format("{}: cannot truncate '{}': {}", option, path.string(),
                                              std::strerror(errno)));
    }
  } else if (!S_ISCHR(status.st_mode)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: '{}' is neither a regular file nor a character device", option,
                            path.string()));
  }
  // Writes may block from here on, as they always did for a terminal or file.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return fail(ErrorCode::kIo,
                fmt::format("{}: '{}': {}", option, path.string(), std::strerror(errno)));
  }
  return fd;
}

}  // namespace

Result<UniqueFd> open_output_file(const std::filesystem::path& path, std::string_view option,
                                  GrantedFiles* granted) {
  if (!granted) return open_output_path(path, option);
  auto obtained = granted->obtain(path.string(), FileAccess::kOutput,
                                  [&] { return open_output_path(path, option); });
  if (!obtained) return fail(obtained.error());
  return std::move(obtained->fd);
}

}  // namespace lamina
